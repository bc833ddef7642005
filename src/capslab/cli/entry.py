"""The ``capslab`` console command. ``capslab --version`` answers before the command modules
(and torch) are imported: it is what scripts call to check an installation."""

from __future__ import annotations

import sys


def main() -> None:
    if sys.argv[1:] == ["--version"]:
        from capslab import __version__

        print(f"capslab {__version__}")
        return
    from capslab.cli.main import app

    app()
