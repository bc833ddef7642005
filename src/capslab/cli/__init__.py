"""The ``capslab`` command line (typer). One module per command or command group."""
