"""What every reproduction shares: the scales, the run context, progress, training runs that are
reused by identity, the machine's description and the run-time estimate.

An experiment (one module per paper result, see :mod:`capslab.repro`) is two functions:
``plan(ctx) -> Plan`` lists the training runs and any other work, and
``execute(ctx, plan) -> Outcome`` carries them out and returns the table's rows. Training goes
through :func:`capslab.experiments.run_or_reuse`, so a rerun of the same command reuses finished
runs and resumes an interrupted one from its checkpoint.
"""

from __future__ import annotations

import json
import platform
import shutil
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from capslab.data import dataset_info
from capslab.data.registry import split_spec
from capslab.device import cpu_name
from capslab.errors import ConfigError
from capslab.experiments import finished_summary, run_or_reuse
from capslab.train.callbacks import Callback, StepInfo
from capslab.train.config import TrainConfig
from capslab.train.estimate import estimate_epochs, measure_rates
from capslab.train.policies import build_schedule

SCALES = ("smoke", "cpu", "paper")
#: what each scale is for, in words (``capslab repro --list``)
SCALE_HELP = {
    "smoke": "seconds: tiny subsets and tiny models, for the tests",
    "cpu": "the largest version of every result that finishes in about an hour on 2 CPU cores",
    "paper": "the papers' settings (full data, epochs, batch sizes, repeats); a GPU when present",
}
CHECKPOINTS = ("last.pt", "best.pt")


def check_scale(scale: str) -> str:
    if scale not in SCALES:
        raise ConfigError(f"unknown scale {scale!r}; choose one of {', '.join(SCALES)}")
    return scale


# --------------------------------------------------------------------------- progress
class Tracker:
    """Progress of a reproduction on a rich ``Progress`` (or nothing when ``progress`` is
    ``None``), and notes for people (``note(text)``; silent by default)."""

    def __init__(self, progress: Any = None, note: Callable[[str], None] | None = None):
        self.progress = progress
        self._note = note

    def note(self, text: str) -> None:
        if self._note is not None:
            self._note(text)

    def task(self, description: str, total: float) -> int | None:
        if self.progress is None:
            return None
        return self.progress.add_task(description, total=total)

    def update(self, task: int | None, **fields: Any) -> None:
        if self.progress is not None and task is not None:
            self.progress.update(task, **fields)

    def finish(self, task: int | None) -> None:
        """Mark ``task`` complete and drop it from the display."""
        if self.progress is not None and task is not None:
            total = next(t.total for t in self.progress.tasks if t.id == task)
            self.progress.update(task, completed=total)
            self.progress.remove_task(task)


class EpochProgress(Callback):
    """Moves a task by fractions of an epoch after every optimiser step."""

    def __init__(self, tracker: Tracker, task: int | None):
        self.tracker, self.task = tracker, task

    def on_train_start(self, config: TrainConfig, start_epoch: int) -> None:
        self.tracker.update(self.task, completed=start_epoch)

    def on_step_end(self, step: StepInfo) -> None:
        self.tracker.update(self.task, completed=step.epoch + (step.step + 1) / step.steps_in_epoch)


# --------------------------------------------------------------------------- context
@dataclass
class Context:
    """Where and how a reproduction runs.

    Attributes:
        scale: ``smoke``, ``cpu`` or ``paper``.
        out: the output folder; every experiment writes under ``out/<name>``.
        device: ``cpu`` (smoke, cpu) or ``auto`` (paper: CUDA when present), unless given.
        data_dir: dataset folder (else ``$CAPSLAB_DATA`` or the cache).
        tracker: progress and notes.
    """

    scale: str
    out: Path
    device: str
    data_dir: str | None = None
    tracker: Tracker = field(default_factory=Tracker)

    def folder(self, *parts: str) -> Path:
        return self.out.joinpath(*parts)

    def rel(self, path: str | Path) -> str:
        """``path`` relative to the output folder, with forward slashes (as rows cite it)."""
        return Path(path).relative_to(self.out).as_posix()


@dataclass
class PlannedRun:
    """One training run of an experiment: its label (for progress and tables), its config
    (``out`` set), and which checkpoints to keep once it has finished."""

    label: str
    config: TrainConfig
    keep: tuple[str, ...] = ()


@dataclass
class Plan:
    """What an experiment will do: training runs, and other work with its own estimate
    (``(label, seconds_fn)``; ``seconds_fn(ctx)`` measures on this machine)."""

    runs: list[PlannedRun] = field(default_factory=list)
    other: list[tuple[str, Callable[[Context], float]]] = field(default_factory=list)
    state: dict[str, Any] = field(default_factory=dict)  # anything execute() needs from plan()


@dataclass
class Outcome:
    """What an experiment returns: its rows (dicts of :class:`~capslab.repro.rows.Row`), the
    claims it did not measure at this scale, notes and the files it wrote."""

    rows: list[dict[str, Any]]
    not_run: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    files: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Experiment:
    """A registered reproduction: ``name``, ``title``, what it reproduces, and its two steps."""

    name: str
    title: str
    description: str
    plan: Callable[[Context], Plan]
    execute: Callable[[Context, Plan], Outcome]


# --------------------------------------------------------------------------- training runs
def train_runs(ctx: Context, runs: Sequence[PlannedRun], title: str) -> list[dict[str, Any]]:
    """Train (or reuse) every run in order; return their summaries.

    Every finished run folder is checked first, so a folder of other settings is refused
    (:class:`~capslab.errors.RunMismatchError`) before anything trains. Checkpoints of finished
    runs are deleted unless the run keeps them.
    """
    found = [finished_summary(r.config) for r in runs]
    tracker = ctx.tracker
    overall = tracker.task(f"{title}: runs", total=len(runs))
    summaries = []
    for i, (run, summary) in enumerate(zip(runs, found, strict=True)):
        tracker.update(overall, completed=i, description=f"{title}: run {i + 1}/{len(runs)}")
        if summary is None:
            task = tracker.task(f"  {run.label} (epochs)", total=run.config.epochs)
            summary = run_or_reuse(run.config, progress=False,
                                   callbacks=[EpochProgress(tracker, task)]).summary
            tracker.finish(task)
        drop_checkpoints(Path(run.config.out), keep=run.keep)
        summaries.append(summary)
    tracker.finish(overall)
    return summaries


def drop_checkpoints(folder: Path, keep: Sequence[str] = ()) -> None:
    """Delete a finished run's checkpoints (its ``summary.json`` holds what tables need)."""
    for name in CHECKPOINTS:
        if name not in keep:
            (folder / name).unlink(missing_ok=True)


def split_size(dataset: str, split: str, subset: int | None) -> int:
    """Images a run uses from ``split`` of ``dataset``: the subset, or the whole split."""
    size = split_spec(dataset, split).size
    return size if subset is None else min(size, subset)


def describe_training(cfg: TrainConfig) -> str:
    """The settings of a run in one line (data, epochs, batch, schedule, optimiser, model)."""
    train = split_size(cfg.dataset, "train", cfg.subset)
    test = split_size(cfg.dataset, "test", cfg.test_subset)
    lr = "" if cfg.lr is None else f" lr {cfg.lr:g}"
    policy = cfg.policy + lr
    if cfg.policy_options:
        policy += " (" + ", ".join(f"{k}={v}" for k, v in cfg.policy_options.items()) + ")"
    options = {k: v for k, v in cfg.model_options.items() if k != "genotype"}
    model = cfg.model + (" " + json.dumps(options, separators=(",", "=")) if options else "")
    return (f"{cfg.dataset} {train:,} train / {test:,} test, {cfg.epochs} epochs, batch "
            f"{cfg.batch_size}, {policy}, {cfg.optimizer}, "
            f"{'shift augmentation' if cfg.augment else 'no augmentation'}, {model}")


# --------------------------------------------------------------------------- the machine
def machine(device: str = "cpu") -> dict[str, Any]:
    """This machine in a few words: CPU model, torch threads, device, versions."""
    import torch

    dev = device
    if device in ("auto", "cuda") or device.startswith("cuda:"):
        dev = torch.cuda.get_device_name() if torch.cuda.is_available() else "cpu"
    return {
        "cpu": cpu_name(),
        "threads": torch.get_num_threads(),
        "device": dev,
        "torch": torch.__version__,
        "python": platform.python_version(),
        "platform": platform.platform(terse=True),
        "host": platform.node(),
    }


def free_disk_gib(path: Path) -> float:
    path = Path(path)
    while not path.exists():
        path = path.parent
    return shutil.disk_usage(path).free / 2**30


# --------------------------------------------------------------------------- estimate
def estimate_training(runs: Sequence[PlannedRun], device: str, steps: int = 2,
                      warmup: int = 1) -> list[dict[str, Any]]:
    """Seconds of every run on this machine, from measured images/s (finished runs: 0).

    The rates of each distinct model (with the dataset's shape) are measured once for every
    batch size its runs use (:func:`capslab.train.estimate.measure_rates`); each run's schedule
    then gives its seconds (:func:`capslab.train.estimate.estimate_epochs`).
    """
    schedules, groups = [], {}
    for run in runs:
        cfg = run.config
        if finished_summary(cfg) is not None:  # nothing left to train, nothing to measure
            schedules.append((run, None, None))
            continue
        train = split_size(cfg.dataset, "train", cfg.subset)
        schedule = build_schedule(cfg.policy, cfg.epochs, train, cfg.batch_size, cfg.lr,
                                  cfg.policy_options)
        info = dataset_info(cfg.dataset)
        options = {"in_channels": info.channels, "image_size": info.image_size,
                   "num_classes": info.num_classes, **cfg.model_options}
        if cfg.model == "genotype":
            options.pop("image_size")  # the genotype knows its input size (and its resize)
        key = (cfg.model, json.dumps(options, sort_keys=True), cfg.optimizer, cfg.eval_batch_size)
        group = groups.setdefault(key, {"sizes": set(), "model": cfg.model, "options": options,
                                        "optimizer": cfg.optimizer, "eval": cfg.eval_batch_size})
        group["sizes"] |= {schedule.batch_size(e) for e in range(schedule.epochs)}
        schedules.append((run, schedule, key))
    rates = {}
    for key, g in groups.items():
        rates[key] = measure_rates(sorted(g["sizes"]), g["model"], g["options"], g["eval"],
                                   device, g["optimizer"], steps, warmup)
    out = []
    for run, schedule, key in schedules:
        if schedule is None:
            out.append({"label": run.label, "seconds": 0.0, "done": True})
            continue
        train_rates, eval_rate = rates[key]
        test = split_size(run.config.dataset, "test", run.config.test_subset)
        epochs = estimate_epochs(schedule, train_rates, eval_rate, test)
        out.append({"label": run.label, "seconds": epochs[-1]["elapsed_seconds"], "done": False})
    return out


def format_duration(seconds: float) -> str:
    """``5400`` -> ``1 h 30 min``; ``42`` -> ``42 s``; days beyond 48 hours."""
    if seconds < 90:
        return f"{seconds:.0f} s"
    minutes = seconds / 60
    if minutes < 90:
        return f"{minutes:.0f} min"
    hours = minutes / 60
    if hours < 48:
        return f"{int(hours)} h {int(minutes % 60):02d} min"
    return f"{hours / 24:.1f} days"
