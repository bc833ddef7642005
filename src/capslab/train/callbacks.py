"""Hooks into the training loop: the one small interface that progress display, TensorBoard,
the time budget, the studies and the search plug into.

The loop (:mod:`capslab.train.loop`) calls every :class:`Callback` at the start of a run, after
every optimiser step and after every epoch's evaluation, and closes them at the end, also when
the run fails. A callback may stop a run by raising (e.g. :class:`TimeBudget`).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor

from capslab.errors import MissingDependencyError, TrainingTimeout

if TYPE_CHECKING:
    from capslab.train.config import TrainConfig

#: seconds between two refreshes of the progress bar's mean loss
PROGRESS_REFRESH_S = 0.25


@dataclass
class StepInfo:
    """One optimiser step: ``epoch`` (0-based), ``step`` within it and ``global_step``
    (both 0-based), the learning rate and batch size it used, and its mean loss: a 0-d
    tensor on the training device, so that reading it (``float(step.loss)``) is the only
    host-device synchronisation a callback causes. In a data-parallel run the batch size and
    the loss are the global batch's, as in one process."""

    epoch: int
    step: int
    global_step: int
    steps_in_epoch: int
    lr: float
    batch_size: int
    loss: Tensor


def held_out_split(record: dict[str, Any]) -> str:
    """``"val"`` when an epoch record was evaluated on a validation split (``val_size``), else
    ``"test"``: its accuracy and loss are ``record[f"{split}_accuracy"]`` and ``..._loss``."""
    return "val" if "val_accuracy" in record else "test"


def held_out_history(history: list[dict[str, Any]]) -> tuple[str, list[dict[str, Any]]]:
    """The split a run's ``history`` was evaluated on (:func:`held_out_split` of its evaluated
    epochs; ``"test"`` when none is) and those epochs' records: every epoch's, or with
    ``eval_final_only`` only the last one's (none before the run ends)."""
    evaluated = [h for h in history if "val_accuracy" in h or "test_accuracy" in h]
    return (held_out_split(evaluated[0]) if evaluated else "test"), evaluated


class Callback:
    """Base class: override the hooks you need (each does nothing here)."""

    def on_train_start(self, config: TrainConfig, start_epoch: int) -> None:
        """Before the first epoch that will run (``start_epoch`` > 0 when resuming)."""

    def on_step_end(self, step: StepInfo) -> None:
        """After every optimiser step."""

    def on_epoch_end(self, record: dict[str, Any]) -> None:
        """After an epoch's evaluation, once its metrics and checkpoint are written.
        ``record`` is the epoch's line of ``metrics.jsonl``."""

    def close(self) -> None:
        """At the end of the run, finished or not."""


class LambdaCallback(Callback):
    """A callback from plain functions: ``LambdaCallback(on_epoch_end=fn)``."""

    def __init__(self, on_step_end=None, on_epoch_end=None):
        self._step, self._epoch = on_step_end, on_epoch_end

    def on_step_end(self, step: StepInfo) -> None:
        if self._step is not None:
            self._step(step)

    def on_epoch_end(self, record: dict[str, Any]) -> None:
        if self._epoch is not None:
            self._epoch(record)


class TimeBudget(Callback):
    """Stop the run with :class:`TrainingTimeout` once ``seconds`` have passed since it began."""

    def __init__(self, seconds: float, started: float | None = None):
        self.seconds = seconds
        self.started = time.perf_counter() if started is None else started

    def on_step_end(self, step: StepInfo) -> None:
        if time.perf_counter() - self.started > self.seconds:
            raise TrainingTimeout(f"run exceeded its time limit of {self.seconds:g} s")


class ProgressDisplay(Callback):
    """A rich progress bar per epoch and one line per finished epoch."""

    def __init__(self):
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            TextColumn,
            TimeElapsedColumn,
            TimeRemainingColumn,
        )

        self.bar = Progress(
            TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
            TextColumn("loss {task.fields[loss]:.4f}"), TimeElapsedColumn(), TimeRemainingColumn(),
        )
        self.task = None
        self.epochs = 0
        self.loss_sum = None
        self.shown_at = 0.0
        self.best = (-1.0, 0)

    def on_train_start(self, config: TrainConfig, start_epoch: int) -> None:
        self.epochs = config.epochs
        self.bar.start()

    def on_step_end(self, step: StepInfo) -> None:
        if step.step == 0:
            if self.task is not None:
                self.bar.remove_task(self.task)
            self.task = self.bar.add_task(f"epoch {step.epoch + 1}/{self.epochs}",
                                          total=step.steps_in_epoch, loss=0.0)
            self.loss_sum = torch.zeros_like(step.loss)
        self.loss_sum += step.loss
        # the mean loss is read (a device sync) a few times a second, not at every step
        now = time.perf_counter()
        if now - self.shown_at > PROGRESS_REFRESH_S or step.step + 1 == step.steps_in_epoch:
            self.shown_at = now
            self.bar.update(self.task, loss=float(self.loss_sum) / (step.step + 1))
        self.bar.advance(self.task)

    def on_epoch_end(self, record: dict[str, Any]) -> None:
        split = held_out_split(record)
        accuracy = record.get(f"{split}_accuracy")
        if accuracy is None:  # eval_final_only: the held-out split is read after the last epoch
            shown = f"training accuracy {100 * record['train_accuracy']:.2f}%"
        else:
            if accuracy > self.best[0]:
                self.best = (accuracy, record["epoch"])
            shown = (f"{'validation' if split == 'val' else 'test'} accuracy {100 * accuracy:.2f}% "
                     f"(best {100 * self.best[0]:.2f}% @ {self.best[1]})")
        self.bar.console.print(
            f"epoch {record['epoch']}: {shown}, lr {record['lr']:.2e}, "
            f"batch {record['batch_size']}, {record['images_per_second']:.0f} img/s"
        )

    def close(self) -> None:
        self.bar.stop()


class TensorBoardLogger(Callback):
    """Per-step learning rate, batch size and loss, per-epoch metrics, in ``log_dir``."""

    def __init__(self, log_dir: str | Path):
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError as exc:
            raise MissingDependencyError(
                "TensorBoard logging needs the tensorboard package: pip install 'capslab[tensorboard]'"
            ) from exc
        self.writer = SummaryWriter(log_dir=str(log_dir))
        self.losses: list[tuple[int, Tensor]] = []

    def on_step_end(self, step: StepInfo) -> None:
        self.writer.add_scalar("step/lr", step.lr, step.global_step)
        self.writer.add_scalar("step/batch_size", step.batch_size, step.global_step)
        # the losses stay on the device until the epoch ends: one read an epoch, not a step
        self.losses.append((step.global_step, step.loss))

    def _write_losses(self) -> None:
        if self.losses:
            values = torch.stack([loss for _, loss in self.losses]).tolist()
            for (global_step, _), value in zip(self.losses, values, strict=True):
                self.writer.add_scalar("step/loss", value, global_step)
            self.losses = []

    def on_epoch_end(self, record: dict[str, Any]) -> None:
        self._write_losses()
        split = held_out_split(record)
        for key in ("train_loss", f"{split}_loss", f"{split}_accuracy", "lr", "batch_size"):
            if key in record:  # an epoch not evaluated (eval_final_only) has no held-out figures
                self.writer.add_scalar(f"epoch/{key}", record[key], record["epoch"])

    def close(self) -> None:
        self._write_losses()  # an interrupted epoch's steps too
        self.writer.close()
