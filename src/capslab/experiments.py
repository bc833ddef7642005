"""Run (or reuse) a training run by identity: what every study, reproduction and search
finalisation does above the trainer.

* :func:`run_or_reuse`: a run folder whose ``summary.json`` has the same identity
  (:meth:`capslab.settings.Settings.identity`) is reused; an unfinished one is resumed from its
  checkpoint; one of other settings is refused (:class:`~capslab.errors.RunMismatchError`).
* :func:`run_or_failure`: the same for studies of many networks, where one network's failure
  becomes a reason instead of stopping the others.

The files these runs write go through :mod:`capslab.results`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from capslab import train as trainer  # the package: trainer.train is looked up at each call
from capslab.errors import CapsLabError, RunMismatchError, TrainingError
from capslab.results import SUMMARY_FILE, read_json
from capslab.train import TrainConfig


# --------------------------------------------------------------------------- runs
@dataclass
class RunOutcome:
    summary: dict[str, Any]
    reused: bool


def finished_summary(config: TrainConfig) -> dict[str, Any] | None:
    """The summary of ``config.out`` when it holds this finished run; ``None`` when it holds
    nothing finished; :class:`RunMismatchError` when it holds a run of other settings."""
    if config.out is None:
        return None
    path = Path(config.out) / SUMMARY_FILE
    summary = read_json(path, "summary")
    if summary is None:
        return None
    diff = config.identity_difference(summary.get("identity", {}))
    if diff:
        raise RunMismatchError(
            f"{config.out} holds a finished run with other settings ({', '.join(diff)}); "
            "choose another output folder or delete that one"
        )
    return summary


def run_or_reuse(
    config: TrainConfig,
    train_fn: Callable[..., dict[str, Any]] | None = None,
    **train_kwargs: Any,
) -> RunOutcome:
    """Reuse the finished run in ``config.out`` if it has ``config``'s identity, else train
    (resuming from its checkpoint). ``train_fn`` defaults to :func:`capslab.train.train`."""
    summary = finished_summary(config)
    if summary is not None:
        return RunOutcome(summary, reused=True)
    if train_fn is None:
        train_fn = trainer.train
    return RunOutcome(train_fn(config.replace(resume=True), **train_kwargs), reused=False)


def run_or_failure(
    config: TrainConfig,
    train_fn: Callable[..., dict[str, Any]] | None = None,
    **train_kwargs: Any,
) -> tuple[RunOutcome | None, str | None]:
    """:func:`run_or_reuse` for studies of many networks, where one that cannot be trained (a
    NaN loss, out of memory, a shape the model cannot take) must not stop the others: returns
    ``(outcome, None)`` or ``(None, reason)``. Bad settings and folders of other settings
    (every other :class:`~capslab.errors.CapsLabError`) still propagate."""
    try:
        return run_or_reuse(config, train_fn, **train_kwargs), None
    except Exception as exc:
        if isinstance(exc, CapsLabError) and not isinstance(exc, TrainingError):
            raise
        return None, f"{type(exc).__name__}: {exc}"
