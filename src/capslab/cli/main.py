"""Entry point of the ``capslab`` command.

Every module listed in ``COMMAND_MODULES`` defines ``register(app)`` and adds its own commands,
so a new command is one new module and one line here.
"""

from __future__ import annotations

import importlib
import importlib.util

import typer

from capslab.cli.groups import study_app

COMMAND_MODULES = [
    "train",  # train, eval
    "info",
    "datasets",
    "bench",
    "schedule",
    "study_fastrcaps",
    "study_pcc",
    "hw",
    "memory",
    "search",
]

app = typer.Typer(
    name="capslab",
    help="Capsule networks: fast training, hardware-aware search, deep and memory-lean.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
app.add_typer(study_app, name="study")

for _name in COMMAND_MODULES:
    _module = f"capslab.cli.{_name}"
    if importlib.util.find_spec(_module) is not None:  # modules still being written are skipped
        importlib.import_module(_module).register(app)


def main() -> None:  # pragma: no cover - console entry
    app()


if __name__ == "__main__":  # pragma: no cover
    main()
