"""Command groups that several modules add commands to."""

import typer

study_app = typer.Typer(help="Studies from the papers (FasTrCaps trade-offs, NASCaps PCC).", no_args_is_help=True)
