"""Self-contained HTML reports: ``write_report(folder)`` for a training run, a FasTrCaps study
or a NASCaps search (the kind is detected from the folder's files).

The page is one HTML file with plotly.js and every image inside it, so it opens in a browser
without a network. See docs/report.md.

* :mod:`~capslab.report.run`: curves, reconstructions, per-class accuracy and confusion
  matrix, timing and configuration of a training run;
* :mod:`~capslab.report.study`: the trade-off table, Pareto plots and curves of a study;
* :mod:`~capslab.report.search`: the four-objective front, each candidate's genotype,
  hardware per layer and training curve, the baselines and the search generation by
  generation;
* :mod:`~capslab.report.html`: the page shell they share.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Literal

from capslab.errors import RunMismatchError
from capslab.report import run, search, study

REPORT_FILE = "report.html"

Kind = Literal["run", "study", "search"]


def detect_kind(folder: str | os.PathLike) -> Kind:
    """``"search"`` (``run.json``), ``"study"`` (``study.json``) or ``"run"`` (a training
    ``config.json``); :class:`~capslab.errors.RunMismatchError` for any other folder."""
    path = Path(folder)
    if not path.is_dir():
        raise RunMismatchError(f"{path} is not a folder: give a training run, a FasTrCaps study or a search")
    if search.is_search(path):
        return "search"
    if study.is_study(path):
        return "study"
    if run.is_training_run(path):
        return "run"
    raise RunMismatchError(
        f"{path} holds no training run (config.json), FasTrCaps study (study.json) or search "
        "(run.json) to report on"
    )


def write_report(run_dir: str | os.PathLike, out: str | os.PathLike | None = None) -> Path:
    """Write the HTML report of ``run_dir`` (a training run, a FasTrCaps study or a search)
    to ``out`` (default ``run_dir/report.html``); returns its path.

    A training run's checkpoint is evaluated on its test split for the per-class figures
    (seconds on a CPU for a test subset; the whole test set of a large model takes longer).
    """
    page = {"search": search, "study": study, "run": run}[detect_kind(run_dir)]
    target = Path(out) if out is not None else Path(run_dir) / REPORT_FILE
    return page.build_page(run_dir).write(target)


__all__ = ["REPORT_FILE", "detect_kind", "write_report"]
