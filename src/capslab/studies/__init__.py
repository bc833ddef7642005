"""Studies from the papers, built on the trainer (see docs/fastrcaps.md)."""
