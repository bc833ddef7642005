"""Helpers shared by the command modules: error reporting, key=value options, JSON output."""

from __future__ import annotations

import json
import sys
from collections.abc import Callable, Sequence
from functools import wraps
from typing import Any, TypeVar

import typer
from rich.console import Console


def _width(stream) -> int | None:
    """Full width on a terminal; wide enough for the tables when piped to a file or CI log."""
    return None if stream.isatty() else 160


console = Console(width=_width(sys.stdout))
err_console = Console(stderr=True, width=_width(sys.stderr))

F = TypeVar("F", bound=Callable[..., Any])


_USER_ERRORS = (ValueError, OSError, KeyError, RuntimeError, ImportError)


def _is_user_error(exc: Exception) -> bool:
    """Validation errors and every error class CapsLab defines (datasets, checkpoints, ...)."""
    if isinstance(exc, typer.Exit):
        return False
    return isinstance(exc, _USER_ERRORS) or type(exc).__module__.startswith("capslab.")


def friendly_errors(func: F) -> F:
    """Turn the library's validation errors into one red line and exit code 2 (no traceback)."""

    @wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return func(*args, **kwargs)
        except Exception as exc:
            if not _is_user_error(exc):
                raise
            message = exc.args[0] if isinstance(exc, KeyError) and exc.args else exc
            err_console.print(f"[bold red]error:[/] {message}", highlight=False)
            raise typer.Exit(2) from None

    return wrapper  # type: ignore[return-value]


def parse_options(items: Sequence[str] | None) -> dict[str, Any]:
    """``["key=value", ...]`` -> dict with ints, floats, booleans and comma lists converted."""
    from capslab.train.policies import parse_policy_options

    return parse_policy_options(items)


def print_json(obj: Any) -> None:
    """Machine-readable output on stdout (no rich markup)."""
    typer.echo(json.dumps(obj, indent=2, default=str))
