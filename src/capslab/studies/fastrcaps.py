"""The FasTrCaps trade-off study: learning-rate/batch policies x model complexity.

Every policy is trained on the baseline CapsNet and on the reduced one (weight sharing + small
decoder), ``repeats`` times each; the table compares accuracy, training time and parameters and
marks the Pareto-optimal configurations (accuracy max, time min, parameters min), as in Fig. 8
of Marchisio et al. (2020).

The maths is in small pure functions (:func:`mean_curve`, :func:`epochs_to_target`,
:func:`summarize_configuration`, :func:`pareto_mask`, :func:`select_configuration`) that work on
plain training histories (lists of the trainer's per-epoch records), so they can be pinned in
tests without training anything. Accuracies are fractions throughout; only the screen and the
Markdown rendering show percentages.

Layout of ``out``::

    runs/<policy>__<variant>/seed<k>/   one trainer run each (metrics.jsonl, summary.json, ...)
    study.csv, study.md, study.json     the table; study.json also holds the settings and choice
    pareto.png, curves.png              the trade-off scatter and the per-epoch curves

Runs go through :func:`capslab.experiments.run_or_reuse`: a finished run of the same settings is
reused, so an interrupted study resumes where it stopped.
"""

from __future__ import annotations

import statistics
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from itertools import accumulate
from pathlib import Path
from typing import Any, ClassVar, Literal

from capslab.errors import ConfigError
from capslab.experiments import finished_summary, run_or_reuse
from capslab.results import Column, pyplot, save_figure, write_table
from capslab.results import table_markdown as render
from capslab.settings import Settings
from capslab.train.callbacks import LambdaCallback
from capslab.train.config import TrainConfig, TrainingSettings, typed_policy_options
from capslab.train.policies import POLICIES, build_schedule

#: Model variants of the study: name -> capsnet options.
VARIANTS: dict[str, dict[str, Any]] = {
    "baseline": {},
    "ws": {"weight_sharing": True, "small_decoder": True},
}
GOALS = ("accuracy", "time", "params")
TIME_METRICS = {"paper": "train_time_paper_s", "measured": "seconds_to_best"}

History = list[dict[str, Any]]


# --------------------------------------------------------------------------------------------
# Pure table maths
# --------------------------------------------------------------------------------------------


def mean_curve(histories: Sequence[History], key: str = "test_accuracy") -> list[float]:
    """Per-epoch mean of ``key`` over runs (``[epochs]``); runs must have the same length."""
    if not histories:
        raise ConfigError("no runs to average")
    lengths = {len(h) for h in histories}
    if len(lengths) != 1:
        raise ConfigError(f"runs of one configuration have different lengths: {sorted(lengths)}")
    return [sum(h[e][key] for h in histories) / len(histories) for e in range(len(histories[0]))]


def epochs_to_target(curve: Sequence[float], target: float, atol: float = 1e-9) -> int | None:
    """First (1-based) epoch whose value reaches ``target``; ``None`` if it never does."""
    for e, value in enumerate(curve):
        if value >= target - atol:
            return e + 1
    return None


def summarize_configuration(
    histories: Sequence[History], parameters: int, target: float | None
) -> dict[str, Any]:
    """One table row from the runs of a configuration.

    Args:
        histories: per run, the trainer's per-epoch records (``test_accuracy`` as a fraction,
            ``epoch_seconds``, optionally ``lr`` and ``batch_size``).
        parameters: trainable parameters of the model.
        target: accuracy (fraction) to reach, normally the peak of the fixed-LR baseline's mean
            curve; ``None`` leaves the time-to-target columns empty.

    ``best_acc_mean/std`` are over the runs' own bests (fractions); ``best_epoch`` is the peak
    of the mean accuracy curve (the paper averages its 5 runs); ``train_time_paper_s`` is the
    paper's training time, ``best_epoch x seconds_per_epoch``; ``seconds_to_best`` /
    ``seconds_to_target`` are measured: training seconds summed over the epochs up to that
    epoch (mean over runs, evaluation excluded).
    """
    acc = mean_curve(histories)
    secs = mean_curve(histories, "epoch_seconds")
    elapsed = list(accumulate(secs))
    bests = [max(r["test_accuracy"] for r in h) for h in histories]
    best_epoch = max(range(len(acc)), key=lambda e: (acc[e], -e)) + 1  # earliest peak
    seconds_per_epoch = sum(secs) / len(secs)
    to_target = epochs_to_target(acc, target) if target is not None else None
    return {
        "runs": len(histories),
        "epochs": len(acc),
        "best_acc_mean": sum(bests) / len(bests),
        "best_acc_std": statistics.stdev(bests) if len(bests) > 1 else 0.0,
        "peak_mean_acc": acc[best_epoch - 1],
        "best_epoch": best_epoch,
        "epochs_to_target": to_target,
        "seconds_to_target": elapsed[to_target - 1] if to_target is not None else None,
        "seconds_per_epoch": seconds_per_epoch,
        "train_time_paper_s": best_epoch * seconds_per_epoch,
        "seconds_to_best": elapsed[best_epoch - 1],
        "total_seconds": elapsed[-1],
        "parameters": int(parameters),
    }


def pareto_mask(points: Sequence[Sequence[float]], maximize: Sequence[bool]) -> list[bool]:
    """``True`` for the points no other point dominates (pymoo's non-dominated sorting).

    ``points`` is ``[n, k]``; ``maximize[j]`` says whether objective ``j`` is maximised. Equal
    points do not dominate each other, so duplicates are all kept.
    """
    import numpy as np
    from pymoo.util.nds.non_dominated_sorting import NonDominatedSorting

    signs = np.where(np.asarray(maximize, dtype=bool), -1.0, 1.0)  # pymoo minimises
    F = np.asarray(points, dtype=float).reshape(len(points), len(maximize)) * signs
    front = NonDominatedSorting().do(F, only_non_dominated_front=True)
    mask = [False] * len(points)
    for i in front:
        mask[int(i)] = True
    return mask


def select_configuration(
    rows: Sequence[dict[str, Any]],
    goal: str = "accuracy",
    tolerance: float | None = None,
    time_key: str = "train_time_paper_s",
    acc_key: str = "best_acc_mean",
) -> int:
    """Index of the row that best meets ``goal``.

    * ``accuracy``: the highest accuracy (ties: faster, then fewer parameters);
    * ``time``: the shortest training time (ties: more accurate);
    * ``params``: the fewest parameters (ties: more accurate, then faster).

    With ``tolerance`` (percentage points) ``time`` and ``params`` only consider rows within
    ``tolerance`` of the best accuracy: "the fastest that is at most 0.1 % worse".
    """
    if goal not in GOALS:
        raise ConfigError(f"goal must be one of {GOALS}, got {goal!r}")
    if not rows:
        raise ConfigError("no configurations to choose from")
    if tolerance is not None and tolerance < 0:
        raise ConfigError(f"tolerance must be >= 0 percentage points, got {tolerance}")
    best = max(r[acc_key] for r in rows)
    candidates = [
        i for i, r in enumerate(rows)
        if goal == "accuracy" or tolerance is None or r[acc_key] >= best - tolerance / 100 - 1e-12
    ]
    keys = {
        "accuracy": lambda r: (-r[acc_key], r[time_key], r["parameters"]),
        "time": lambda r: (r[time_key], -r[acc_key], r["parameters"]),
        "params": lambda r: (r["parameters"], -r[acc_key], r[time_key]),
    }
    return min(candidates, key=lambda i: keys[goal](rows[i]))


def build_table(
    configs: dict[tuple[str, str], tuple[Sequence[History], int]],
    baseline: tuple[str, str] = ("fixed", "baseline"),
    target: float | None = None,
    time_metric: str = "paper",
) -> tuple[list[dict[str, Any]], float | None]:
    """Rows for every ``(policy, variant) -> (histories, parameters)`` with the Pareto flag.

    The target accuracy is ``target`` if given, else the peak of ``baseline``'s mean accuracy
    curve (``None`` without that configuration). Returns ``(rows, target)``.
    """
    if time_metric not in TIME_METRICS:
        raise ConfigError(f"time_metric must be one of {sorted(TIME_METRICS)}, got {time_metric!r}")
    if target is None and baseline in configs:
        target = max(mean_curve(configs[baseline][0]))
    rows = []
    for (policy, variant), (histories, params) in configs.items():
        rows.append({"policy": policy, "variant": variant, **summarize_configuration(histories, params, target)})
    time_key = TIME_METRICS[time_metric]
    mask = pareto_mask(
        [(r["best_acc_mean"], r[time_key], r["parameters"]) for r in rows], (True, False, False)
    )
    for r, m in zip(rows, mask, strict=True):
        r["pareto"] = m
    return rows, target


COLUMNS = [
    Column("policy", "policy"),
    Column("variant", "model"),
    Column("runs", "runs"),
    Column("best_acc_mean", "best acc (%)", ".2f", 100),
    Column("best_acc_std", "std (%)", ".2f", 100),
    Column("best_epoch", "epoch of best"),
    Column("epochs_to_target", "epochs to target"),
    Column("seconds_to_target", "s to target", ".1f"),
    Column("seconds_per_epoch", "s / epoch", ".2f"),
    Column("train_time_paper_s", "train time (s)", ".1f"),
    Column("seconds_to_best", "s to best", ".1f"),
    Column("parameters", "parameters", ","),
    Column("pareto", "Pareto"),
]


def table_markdown(rows: Sequence[dict[str, Any]], target: float | None = None) -> str:
    preamble = ""
    if target is not None:
        preamble = f"Target accuracy (peak of the fixed-LR baseline's mean curve): {100 * target:.2f} %\n"
    return render(rows, COLUMNS, preamble)


# --------------------------------------------------------------------------------------------
# Plots
# --------------------------------------------------------------------------------------------


def _label(r: dict[str, Any]) -> str:
    return f"{r['policy']}" + ("+WS" if r["variant"] == "ws" else "" if r["variant"] == "baseline" else f"/{r['variant']}")


def plot_pareto(rows: Sequence[dict[str, Any]], path: str | Path, time_metric: str = "paper") -> Path:
    """3-D scatter (accuracy, training time, parameters) and its three 2-D projections; the
    Pareto-optimal configurations are filled and labelled."""
    plt = pyplot()
    tkey = TIME_METRICS[time_metric]
    data = {
        "acc": [100 * r["best_acc_mean"] for r in rows],
        "time": [r[tkey] for r in rows],
        "par": [r["parameters"] / 1e6 for r in rows],
    }
    on = [bool(r.get("pareto")) for r in rows]
    fig = plt.figure(figsize=(12, 10), dpi=100)
    ax3 = fig.add_subplot(2, 2, 1, projection="3d")
    axes = [fig.add_subplot(2, 2, k) for k in (2, 3, 4)]
    names = {"acc": "best accuracy (%)", "time": f"training time (s, {time_metric})", "par": "parameters (M)"}

    def scatter(ax, keys):
        for i, r in enumerate(rows):
            xyz = [data[k][i] for k in keys]
            style = dict(c="tab:red", edgecolors="k", s=60) if on[i] else dict(facecolors="none", edgecolors="0.5", s=40)
            ax.scatter(*xyz, **style)
            if on[i]:
                ax.text(*xyz, " " + _label(r), fontsize=8)

    scatter(ax3, ("time", "par", "acc"))
    ax3.set_xlabel(names["time"])
    ax3.set_ylabel(names["par"])
    ax3.set_zlabel(names["acc"])
    ax3.set_title("Pareto set (filled)")
    for ax, (kx, ky) in zip(axes, [("time", "acc"), ("par", "acc"), ("time", "par")], strict=True):
        scatter(ax, (kx, ky))
        ax.set_xlabel(names[kx])
        ax.set_ylabel(names[ky])
        ax.grid(alpha=0.3)
    fig.suptitle("FasTrCaps trade-offs: accuracy max, training time min, parameters min")
    fig.tight_layout()
    return save_figure(fig, path, dpi=100)


def schedule_curve(schedule: Any, max_points: int = 4000) -> tuple[list[float], list[float]]:
    """``(x, lr)`` of a schedule with ``x`` in epochs (step ``s`` of epoch ``e`` at
    ``e + s / steps_in_epoch``), thinned to about ``max_points`` points for plotting."""
    stride = max(1, schedule.total_steps // max_points)
    xs, lrs = [], []
    for e in range(schedule.epochs):
        n = schedule.steps_in_epoch(e)
        for s in range(0, n, stride) if n > stride else range(n):
            xs.append(e + s / n)
            lrs.append(schedule.lr(e, s))
    xs.append(float(schedule.epochs))
    e = schedule.epochs - 1
    lrs.append(schedule.lr(e, schedule.steps_in_epoch(e) - 1))
    return xs, lrs


def schedule_of_run(summary: dict[str, Any]) -> Any:
    """The schedule a trainer run used, rebuilt from its summary."""
    cfg = summary["config"]
    return build_schedule(cfg["policy"], cfg["epochs"], summary["train_size"], cfg["batch_size"],
                          cfg.get("lr"), cfg.get("policy_options") or {})


def plot_curves(
    configs: dict[tuple[str, str], Sequence[History]],
    path: str | Path,
    schedules: dict[str, Any] | None = None,
) -> Path:
    """Mean test accuracy per epoch of every configuration (top) and the learning rate of every
    policy (bottom, log scale) on one epoch axis; the batch size per epoch is written on the
    lr curve where it changes.

    ``schedules`` maps a policy to its :class:`~capslab.train.policies.Schedule` (lr per step);
    without one, the lr recorded at the end of each epoch in the history is drawn.
    """
    plt = pyplot()
    schedules = schedules or {}
    fig, (ax_acc, ax_lr) = plt.subplots(2, 1, figsize=(9, 8), dpi=100, sharex=True)
    policies = list(dict.fromkeys(p for p, _ in configs))
    colors = {p: plt.cm.tab10(i % 10) for i, p in enumerate(policies)}
    lr_done = set()
    for (policy, variant), histories in configs.items():
        curve = mean_curve(histories)
        epochs = list(range(1, len(curve) + 1))
        ls = "-" if variant == "baseline" else "--"
        ax_acc.plot(epochs, [100 * a for a in curve], ls, marker="o", ms=3, color=colors[policy],
                    label=_label({"policy": policy, "variant": variant}))
        if policy in lr_done:
            continue
        lr_done.add(policy)
        sched = schedules.get(policy)
        if sched is not None:
            xs, lrs = schedule_curve(sched)
            ax_lr.plot(xs, lrs, color=colors[policy], lw=1.2, label=policy)
            previous = None
            for e in range(sched.epochs):
                b = sched.batch_size(e)
                if b != previous:
                    ax_lr.annotate(f"b={b}", (e, sched.lr(e, 0)), fontsize=7, color=colors[policy],
                                   xytext=(3, -9 * (1 + policies.index(policy))), textcoords="offset points")
                    previous = b
        elif all("lr" in r for r in histories[0]):
            ax_lr.plot(epochs, [r["lr"] for r in histories[0]], marker="o", ms=3, color=colors[policy],
                       label=policy)
    ax_acc.set(ylabel="test accuracy (%)", title="Accuracy per epoch (mean over runs; dashed: WS + small decoder)")
    ax_acc.legend(fontsize=8, ncol=2)
    ax_acc.grid(alpha=0.3)
    ax_lr.set(xlabel="epoch", ylabel="learning rate", yscale="log")
    ax_lr.legend(fontsize=8, ncol=2)
    ax_lr.grid(alpha=0.3, which="both")
    fig.tight_layout()
    return save_figure(fig, path, dpi=100)


# --------------------------------------------------------------------------------------------
# The study
# --------------------------------------------------------------------------------------------


def _default_training() -> TrainingSettings:
    return TrainingSettings(model="capsnet", epochs=30)


@dataclass
class StudyConfig(Settings):
    """Settings of a FasTrCaps study; defaults are the paper's (full MNIST, 30 epochs, 5 runs).

    ``training`` is how every run trains (its ``policy`` and ``policy_options`` are replaced by
    each policy of the grid and ``policy_options[policy]``; the variant's options are added to
    its ``model_options``). ``target`` (fraction) overrides the baseline's peak as the accuracy
    to reach.
    """

    training: TrainingSettings = field(default_factory=_default_training)
    repeats: int = 5
    policies: tuple[str, ...] = tuple(POLICIES)
    variants: tuple[str, ...] = ("baseline", "ws")
    policy_options: dict[str, dict[str, Any]] = field(default_factory=dict)
    out: str = "runs/study-fastrcaps"
    baseline: tuple[str, str] = ("fixed", "baseline")
    target: float | None = None
    time_metric: Literal["paper", "measured"] = "paper"
    run_plots: bool = True
    keep_checkpoints: bool = False

    WHAT: ClassVar[str] = "study setting"

    def validate(self) -> None:
        if self.training.model != "capsnet":
            raise ConfigError(f"the FasTrCaps study trains capsnet, got model {self.training.model!r}")
        bad = [p for p in self.policies if p not in POLICIES]
        if bad:
            raise ConfigError(f"unknown policy(ies) {bad}; choose from {POLICIES}")
        if not self.policies or len(set(self.policies)) != len(self.policies):
            raise ConfigError(f"policies must be non-empty and distinct, got {list(self.policies)}")
        bad = [v for v in self.variants if v not in VARIANTS]
        if bad or not self.variants:
            raise ConfigError(f"unknown model variant(s) {bad}; choose from {list(VARIANTS)}")
        if self.target is not None and not 0 < self.target <= 1:
            raise ConfigError(f"target is an accuracy fraction in (0, 1], got {self.target}")
        if self.repeats < 1:
            raise ConfigError(f"repeats must be >= 1, got {self.repeats}")
        extra = sorted(set(self.policy_options) - set(self.policies))
        if extra:
            raise ConfigError(f"policy options given for policies not in the study: {extra}")
        # every run's settings are valid (and typed) before anything trains
        self.policy_options = {p: typed_policy_options(p, o, self.training.lr)
                               for p, o in self.policy_options.items()}

    def run_dir(self, policy: str, variant: str, repeat: int) -> Path:
        return Path(self.out) / "runs" / f"{policy}__{variant}" / f"seed{self.training.seed + repeat}"

    def train_config(self, policy: str, variant: str, repeat: int) -> TrainConfig:
        """The trainer's config of one run."""
        t = self.training
        return TrainConfig.of(
            t.replace(
                model_options={**t.model_options, **VARIANTS[variant]},
                policy=policy,
                policy_options=dict(self.policy_options.get(policy, {})),
                seed=t.seed + repeat,
            ),
            out=str(self.run_dir(policy, variant, repeat)),
            resume=True,
            plots=self.run_plots,
        )

    def runs(self) -> list[tuple[str, str, int]]:
        return [(p, v, r) for p in self.policies for v in self.variants for r in range(self.repeats)]


@dataclass
class StudyResult:
    rows: list[dict[str, Any]]
    target: float | None
    choice: dict[str, Any]
    trained: int
    reused: int
    files: dict[str, str]

    def to_dict(self) -> dict[str, Any]:
        return {"rows": self.rows, "target_accuracy": self.target, "choice": self.choice,
                "trained": self.trained, "reused": self.reused, "files": self.files}


def run_study(
    study: StudyConfig,
    goal: str = "accuracy",
    tolerance: float | None = None,
    progress: bool = True,
    train_fn: Callable[..., dict[str, Any]] | None = None,
    plots: bool = True,
) -> StudyResult:
    """Train (or reuse) every run of the grid, then write the table, the plots and study.json.

    ``train_fn`` defaults to :func:`capslab.train.train`; ``plots=False`` skips the PNGs.
    """
    if goal not in GOALS:
        raise ConfigError(f"goal must be one of {GOALS}, got {goal!r}")
    configs = [(p, v, study.train_config(p, v, r)) for p, v, r in study.runs()]
    # read every finished run first: a folder of other settings is refused before any training
    found = [finished_summary(cfg) for _, _, cfg in configs]
    out = Path(study.out)
    summaries: dict[tuple[str, str], list[dict[str, Any]]] = {}
    with _progress_bar(progress) as bar:
        task = bar.add_task("FasTrCaps study", total=found.count(None) * study.training.epochs)
        advance = LambdaCallback(on_epoch_end=lambda _record: bar.advance(task))
        for (policy, variant, cfg), summary in zip(configs, found, strict=True):
            if summary is None:
                bar.update(task, description=f"{policy} / {variant} / seed {cfg.seed}")
                summary = run_or_reuse(cfg, train_fn, progress=False, callbacks=[advance]).summary
                if not study.keep_checkpoints:
                    for name in ("last.pt", "best.pt"):
                        (Path(cfg.out) / name).unlink(missing_ok=True)
            summaries.setdefault((policy, variant), []).append(summary)
    trained = found.count(None)
    reused = len(found) - trained

    grid = {k: ([s["history"] for s in runs], runs[0]["parameters"]) for k, runs in summaries.items()}
    rows, target = build_table(grid, study.baseline, study.target, study.time_metric)
    choice = rows[select_configuration(rows, goal, tolerance, TIME_METRICS[study.time_metric])]
    paths = write_table(
        rows, out / "study", "fastrcaps-study", COLUMNS, csv_keys=list(rows[0]),
        markdown=table_markdown(rows, target),
        extra={"study": study.to_dict(), "target_accuracy": target, "goal": goal,
               "tolerance": tolerance, "choice": choice},
    )
    files = {name: str(path) for name, path in paths.items()}
    if plots:
        files["pareto"] = str(plot_pareto(rows, out / "pareto.png", study.time_metric))
        schedules = {p: schedule_of_run(runs[0]) for (p, _), runs in summaries.items()}
        files["curves"] = str(plot_curves({k: v[0] for k, v in grid.items()}, out / "curves.png", schedules))
    return StudyResult(rows, target, choice, trained, reused, files)


def _progress_bar(enabled: bool):
    """One bar over the epochs still to train; shows nothing when not ``enabled``."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    return Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                    TextColumn("epochs"), TimeElapsedColumn(), disable=not enabled)
