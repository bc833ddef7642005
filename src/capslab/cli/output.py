"""Everything a command prints goes through here: the two consoles, JSON results and errors.

A command either renders tables for people or, with ``--json``, prints one JSON document on
stdout (:func:`emit`). Errors go to stderr: a :class:`~capslab.errors.CapsLabError` as one red
line with exit code 2 (:func:`report_errors`), anything else with its traceback.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Callable
from functools import wraps
from typing import Any, TypeVar

import typer
from rich.console import Console
from rich.markup import escape

from capslab.errors import CapsLabError


def _width(stream) -> int | None:
    """Full width on a terminal; wide enough for the tables when piped to a file or CI log."""
    return None if stream.isatty() else 160


console = Console(width=_width(sys.stdout))
err_console = Console(stderr=True, width=_width(sys.stderr))

#: ``capslab --debug`` (or CAPSLAB_DEBUG=1): show the traceback of CapsLab errors too.
_FROM_ENV = os.environ.get("CAPSLAB_DEBUG", "") not in ("", "0")
DEBUG = {"enabled": _FROM_ENV, "from_env": _FROM_ENV}

F = TypeVar("F", bound=Callable[..., Any])


def report_errors(func: F) -> F:
    """Run a command: a CapsLab error becomes one red line and exit code 2 (its
    ``exit_code``: 1 for a journal that stayed unreachable); any other
    exception (a bug, out of memory) propagates with its traceback."""

    @wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return func(*args, **kwargs)
        except CapsLabError as exc:
            if DEBUG["enabled"]:
                raise
            message = " ".join(str(exc).split()) or type(exc).__name__
            err_console.print(f"[bold red]error:[/] {escape(message)}", highlight=False, soft_wrap=True)
            raise typer.Exit(exc.exit_code) from None

    wrapper.__capslab_errors__ = True  # type: ignore[attr-defined]
    return wrapper  # type: ignore[return-value]


def to_json(obj: Any) -> str:
    return json.dumps(obj, indent=2, default=str)


def emit(result: Any, as_json: bool, render: Callable[[Any], None] | None = None) -> None:
    """Print a command's result: JSON on stdout with ``--json``, else ``render(result)``."""
    if as_json:
        typer.echo(to_json(result))
    elif render is not None:
        render(result)


def note(text: str, as_json: bool = False) -> None:
    """A line for people (files written, next steps): stdout, or stderr when stdout is JSON."""
    (err_console if as_json else console).print(text, highlight=False)


def progress_bar(enabled: bool = True, transient: bool = False):
    """The one progress display of the command line: description, bar, n/total, elapsed, on
    stderr (stdout stays clean for ``--json``). Disabled, it accepts the same calls and shows
    nothing."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    return Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                    TimeElapsedColumn(), console=err_console, transient=transient,
                    disable=not enabled)
