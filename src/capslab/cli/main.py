"""Entry point of the ``capslab`` command.

Every module in ``COMMAND_MODULES`` defines ``register(app)`` and adds its own commands, so a
new command is one new module and one line here. After registration every command, in every
group, is wrapped in :func:`~capslab.cli.output.report_errors`: one error contract for all.
"""

from __future__ import annotations

import importlib
from collections.abc import Iterator
from typing import Annotated

import typer

from capslab import __version__
from capslab.cli.output import DEBUG, report_errors

COMMAND_MODULES = [
    "train",  # train, eval
    "info",
    "datasets",
    "bench",
    "schedule",
    "study",  # study fastrcaps, study pcc
    "hw",
    "export",
    "memory",
    "search",
    "report",
    "repro",
    "explain",
]

app = typer.Typer(
    name="capslab",
    help="Capsule networks: fast training, hardware-aware search, deep and memory-lean.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"capslab {__version__}")
        raise typer.Exit()


@app.callback()
def root(
    debug: Annotated[bool, typer.Option("--debug", help="Show the traceback of CapsLab errors too.")] = False,
    version: Annotated[bool, typer.Option("--version", callback=_version, is_eager=True, help="Print the version and exit.")] = False,
) -> None:
    """Capsule networks: fast training, hardware-aware search, deep and memory-lean."""
    DEBUG["enabled"] = debug or DEBUG["from_env"]


def all_command_infos(typer_app: typer.Typer) -> Iterator[object]:
    """Every command and group callback of ``typer_app`` and of its sub-groups."""
    yield from typer_app.registered_commands
    for group in typer_app.registered_groups:
        sub = group.typer_instance
        if sub.registered_callback is not None:
            yield sub.registered_callback
        yield from all_command_infos(sub)


for _name in COMMAND_MODULES:
    importlib.import_module(f"capslab.cli.{_name}").register(app)

for _info in all_command_infos(app):
    if _info.callback is not None and not getattr(_info.callback, "__capslab_errors__", False):
        _info.callback = report_errors(_info.callback)


def main() -> None:  # pragma: no cover - console entry
    app()


if __name__ == "__main__":  # pragma: no cover
    main()
