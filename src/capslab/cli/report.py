"""``capslab report``: one self-contained HTML page for a training run, a FasTrCaps study or a
search (the kind is detected from the folder)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from capslab.cli import options as opt
from capslab.cli.output import console, emit


def register(app: typer.Typer) -> None:
    @app.command("report")
    def report_cmd(
        run: Annotated[Path, typer.Argument(help="A training run, FasTrCaps study or search folder.")],
        out: Annotated[Path | None, typer.Option(help="HTML file to write (default: RUN/report.html).")] = None,
        as_json: opt.JsonFlag = False,
    ) -> None:
        """Write one HTML file (no network needed to view it): curves, per-class accuracy and
        confusion matrix of a run; trade-offs of a study; the four-objective front of a search."""
        # imported on use, so that the CLI starts without it
        from capslab.report import detect_kind, write_report

        kind = detect_kind(run)
        path = write_report(run, out)
        emit({"kind": kind, "report": str(path)}, as_json, lambda _: console.print(str(path), highlight=False, soft_wrap=True))
