"""The FasTrCaps trade-off study: learning-rate/batch policies x model complexity.

Every policy is trained on the baseline CapsNet and on the reduced one (weight sharing + small
decoder), ``repeats`` times each; the table compares accuracy, training time and parameters and
marks the Pareto-optimal configurations (accuracy max, time min, parameters min), as in Fig. 8
of Marchisio et al. (2020).

The maths is in small pure functions (:func:`mean_curve`, :func:`epochs_to_target`,
:func:`summarize_configuration`, :func:`pareto_mask`, :func:`select_configuration`) that work on
plain training histories (lists of the trainer's per-epoch records), so they can be pinned in
tests without training anything.

Layout of ``out``::

    runs/<policy>__<variant>/seed<k>/   one trainer run each (metrics.jsonl, summary.json, ...)
    results.csv, results.md            the table
    study.json                         the table, the target accuracy, the configuration, the choice
    pareto.png, curves.png             the trade-off scatter and the per-epoch curves

A run whose ``summary.json`` is complete is never retrained, so an interrupted study resumes
where it stopped (an interrupted run continues from its ``last.pt``).
"""

from __future__ import annotations

import csv
import io
import json
import math
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from capslab.io import atomic_write_bytes, atomic_write_json, atomic_write_text
from capslab.train.policies import POLICIES, parse_policy_options, policy_options_class

#: Model variants of the study: name -> capsnet options.
VARIANTS: dict[str, dict[str, Any]] = {
    "baseline": {},
    "ws": {"weight_sharing": True, "small_decoder": True},
}
GOALS = ("accuracy", "time", "params")
TIME_METRICS = {"paper": "train_time_paper_s", "measured": "seconds_to_best"}

History = list[dict[str, Any]]


class StudyError(ValueError):
    """A study setting or a run folder that does not fit the study."""


# --------------------------------------------------------------------------------------------
# Pure table maths
# --------------------------------------------------------------------------------------------


def mean_curve(histories: Sequence[History], key: str = "test_accuracy") -> list[float]:
    """Per-epoch mean of ``key`` over runs (``[epochs]``); runs must have the same length."""
    if not histories:
        raise StudyError("no runs to average")
    lengths = {len(h) for h in histories}
    if len(lengths) != 1:
        raise StudyError(f"runs of one configuration have different lengths: {sorted(lengths)}")
    return [sum(h[e][key] for h in histories) / len(histories) for e in range(len(histories[0]))]


def epochs_to_target(curve: Sequence[float], target: float, atol: float = 1e-9) -> int | None:
    """First (1-based) epoch whose value reaches ``target``; ``None`` if it never does."""
    for e, value in enumerate(curve):
        if value >= target - atol:
            return e + 1
    return None


def cumulative(values: Sequence[float]) -> list[float]:
    out, total = [], 0.0
    for v in values:
        total += v
        out.append(total)
    return out


def _std(values: Sequence[float]) -> float:
    """Sample standard deviation (0 for a single run)."""
    n = len(values)
    if n < 2:
        return 0.0
    m = sum(values) / n
    return math.sqrt(sum((v - m) ** 2 for v in values) / (n - 1))


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

    Accuracies in the row are percentages. ``best_acc_mean/std`` are over the runs' own bests;
    ``best_epoch`` is the peak of the mean accuracy curve (the paper averages its 5 runs);
    ``train_time_paper_s`` is the paper's training time, ``best_epoch x seconds_per_epoch``;
    ``seconds_to_best`` / ``seconds_to_target`` are measured: training seconds summed over the
    epochs up to that epoch (mean over runs, evaluation excluded).
    """
    acc = mean_curve(histories)
    secs = mean_curve(histories, "epoch_seconds")
    elapsed = cumulative(secs)
    bests = [max(r["test_accuracy"] for r in h) for h in histories]
    best_epoch = max(range(len(acc)), key=lambda e: (acc[e], -e)) + 1  # earliest peak
    seconds_per_epoch = sum(secs) / len(secs)
    to_target = epochs_to_target(acc, target) if target is not None else None
    return {
        "runs": len(histories),
        "epochs": len(acc),
        "best_acc_mean": 100 * sum(bests) / len(bests),
        "best_acc_std": 100 * _std(bests),
        "peak_mean_acc": 100 * acc[best_epoch - 1],
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
    """``True`` for the points no other point dominates.

    ``points`` is ``[n, k]``; ``maximize[j]`` says whether objective ``j`` is maximised. A point
    dominates another if it is at least as good in every objective and better in one; equal
    points do not dominate each other, so duplicates are all kept.
    """
    signs = [1.0 if m else -1.0 for m in maximize]
    pts = [[s * float(v) for s, v in zip(signs, p, strict=True)] for p in points]  # all maximised

    def dominates(a: list[float], b: list[float]) -> bool:
        return all(x >= y for x, y in zip(a, b, strict=True)) and any(x > y for x, y in zip(a, b, strict=True))

    return [not any(dominates(q, p) for q in pts if q is not p) for p in pts]


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
        raise StudyError(f"goal must be one of {GOALS}, got {goal!r}")
    if not rows:
        raise StudyError("no configurations to choose from")
    if tolerance is not None and tolerance < 0:
        raise StudyError(f"tolerance must be >= 0 percentage points, got {tolerance}")
    best = max(r[acc_key] for r in rows)
    candidates = [
        i for i, r in enumerate(rows)
        if goal == "accuracy" or tolerance is None or r[acc_key] >= best - tolerance - 1e-12
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
        raise StudyError(f"time_metric must be one of {sorted(TIME_METRICS)}, got {time_metric!r}")
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
    ("policy", "policy", "{}"),
    ("variant", "model", "{}"),
    ("runs", "runs", "{}"),
    ("best_acc_mean", "best acc (%)", "{:.2f}"),
    ("best_acc_std", "std (%)", "{:.2f}"),
    ("best_epoch", "epoch of best", "{}"),
    ("epochs_to_target", "epochs to target", "{}"),
    ("seconds_to_target", "s to target", "{:.1f}"),
    ("seconds_per_epoch", "s / epoch", "{:.2f}"),
    ("train_time_paper_s", "train time (s)", "{:.1f}"),
    ("seconds_to_best", "s to best", "{:.1f}"),
    ("parameters", "parameters", "{:,}"),
    ("pareto", "Pareto", "{}"),
]


def table_csv(rows: Sequence[dict[str, Any]]) -> str:
    """CSV with every row field (raw numbers, accuracies in %)."""
    keys = list(rows[0]) if rows else [c[0] for c in COLUMNS]
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=keys, lineterminator="\n")
    writer.writeheader()
    for r in rows:
        writer.writerow({k: ("" if r.get(k) is None else r.get(k)) for k in keys})
    return buf.getvalue()


def _fmt(value: Any, spec: str) -> str:
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else ""
    return spec.format(value)


def table_markdown(rows: Sequence[dict[str, Any]], target: float | None = None) -> str:
    lines = []
    if target is not None:
        lines.append(f"Target accuracy (peak of the fixed-LR baseline's mean curve): {100 * target:.2f} %\n")
    lines.append("| " + " | ".join(c[1] for c in COLUMNS) + " |")
    lines.append("|" + "|".join("---" for _ in COLUMNS) + "|")
    for r in rows:
        lines.append("| " + " | ".join(_fmt(r.get(k), spec) for k, _, spec in COLUMNS) + " |")
    return "\n".join(lines) + "\n"


# --------------------------------------------------------------------------------------------
# Plots
# --------------------------------------------------------------------------------------------


def _label(r: dict[str, Any]) -> str:
    return f"{r['policy']}" + ("+WS" if r["variant"] == "ws" else "" if r["variant"] == "baseline" else f"/{r['variant']}")


def plot_pareto(rows: Sequence[dict[str, Any]], path: str | Path, time_metric: str = "paper") -> Path:
    """3-D scatter (accuracy, training time, parameters) and its three 2-D projections; the
    Pareto-optimal configurations are filled and labelled."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    tkey = TIME_METRICS[time_metric]
    acc = [r["best_acc_mean"] for r in rows]
    tim = [r[tkey] for r in rows]
    par = [r["parameters"] / 1e6 for r in rows]
    on = [bool(r.get("pareto")) for r in rows]
    fig = plt.figure(figsize=(12, 10), dpi=100)
    ax3 = fig.add_subplot(2, 2, 1, projection="3d")
    axes = [fig.add_subplot(2, 2, k) for k in (2, 3, 4)]
    names = {"acc": "best accuracy (%)", "time": f"training time (s, {time_metric})", "par": "parameters (M)"}
    data = {"acc": acc, "time": tim, "par": par}

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
    return _save_png(fig, path)


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


def schedule_of_run(summary: dict[str, Any]) -> Any | None:
    """Rebuild the schedule a trainer run used from its summary (``None`` if it cannot)."""
    from capslab.train.policies import make_schedule

    cfg = summary.get("config", {})
    try:
        return make_schedule(cfg["policy"], cfg["epochs"], summary["train_size"], cfg["batch_size"],
                             cfg.get("lr"), cfg.get("policy_options") or {})
    except (KeyError, ValueError, TypeError):
        return None


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
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

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
    return _save_png(fig, path)


def _save_png(fig: Any, path: str | Path) -> Path:
    """Render ``fig`` to PNG in memory, close it and write the file atomically."""
    import matplotlib.pyplot as plt

    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    plt.close(fig)
    path = Path(path)
    atomic_write_bytes(path, buf.getvalue())
    return path


# --------------------------------------------------------------------------------------------
# The study
# --------------------------------------------------------------------------------------------


@dataclass
class StudyConfig:
    """Settings of a FasTrCaps study; defaults are the paper's (full MNIST, 30 epochs, 5 runs).

    ``policy_options`` maps a policy to its options (e.g. reduced batch phases);
    ``model_options`` go to every model (e.g. a tiny CapsNet for a quick run); ``target``
    (fraction) overrides the baseline's peak as the accuracy to reach.
    """

    dataset: str = "mnist"
    data_dir: str | None = None
    subset: int | None = None
    test_subset: int | None = None
    epochs: int = 30
    repeats: int = 5
    policies: tuple[str, ...] = tuple(POLICIES)
    variants: tuple[str, ...] = ("baseline", "ws")
    policy_options: dict[str, dict[str, Any]] = field(default_factory=dict)
    model_options: dict[str, Any] = field(default_factory=dict)
    batch_size: int = 128
    lr: float | None = None
    optimizer: str = "adam"
    augment: bool = True
    seed: int = 0
    device: str = "auto"
    out: str = "runs/fastrcaps"
    baseline: tuple[str, str] = ("fixed", "baseline")
    target: float | None = None
    time_metric: str = "paper"
    run_plots: bool = True
    keep_checkpoints: bool = False

    def __post_init__(self) -> None:
        self.policies = tuple(self.policies)
        self.variants = tuple(self.variants)
        self.baseline = tuple(self.baseline)
        bad = [p for p in self.policies if p not in POLICIES]
        if bad:
            raise StudyError(f"unknown policy(ies) {bad}; choose from {POLICIES}")
        if not self.policies or len(set(self.policies)) != len(self.policies):
            raise StudyError(f"policies must be non-empty and distinct, got {list(self.policies)}")
        bad = [v for v in self.variants if v not in VARIANTS]
        if bad or not self.variants:
            raise StudyError(f"unknown model variant(s) {bad}; choose from {list(VARIANTS)}")
        for name in ("epochs", "repeats", "batch_size"):
            if int(getattr(self, name)) < 1:
                raise StudyError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.time_metric not in TIME_METRICS:
            raise StudyError(f"time_metric must be one of {sorted(TIME_METRICS)}, got {self.time_metric!r}")
        extra = sorted(set(self.policy_options) - set(self.policies))
        if extra:
            raise StudyError(f"policy options given for policies not in the study: {extra}")
        for policy, opts in self.policy_options.items():
            valid = _option_names(policy)
            unknown = sorted(set(opts) - set(valid))
            if unknown:
                raise StudyError(
                    f"policy {policy!r} has no option(s) {', '.join(unknown)}; valid options: {', '.join(valid)}"
                )

    def run_dir(self, policy: str, variant: str, repeat: int) -> Path:
        return Path(self.out) / "runs" / f"{policy}__{variant}" / f"seed{self.seed + repeat}"

    def train_config(self, policy: str, variant: str, repeat: int):
        """The trainer's config of one run."""
        from capslab.train import TrainConfig

        return TrainConfig(
            model="capsnet",
            model_options={**self.model_options, **VARIANTS[variant]},
            dataset=self.dataset,
            data_dir=self.data_dir,
            epochs=self.epochs,
            batch_size=self.batch_size,
            lr=self.lr,
            policy=policy,
            policy_options=dict(self.policy_options.get(policy, {})),
            optimizer=self.optimizer,
            augment=self.augment,
            subset=self.subset,
            test_subset=self.test_subset,
            seed=self.seed + repeat,
            out=str(self.run_dir(policy, variant, repeat)),
            device=self.device,
            resume=True,
            plots=self.run_plots,
        )

    def runs(self) -> list[tuple[str, str, int]]:
        return [(p, v, r) for p in self.policies for v in self.variants for r in range(self.repeats)]


def _option_names(policy: str) -> list[str]:
    return [f.name for f in fields(policy_options_class(policy))]


def split_policy_options(items: Sequence[str] | None, policies: Sequence[str]) -> dict[str, dict[str, Any]]:
    """``policy:key=value`` sets an option of one policy; ``key=value`` sets it for every
    policy of the study that has that option (an option no policy has is an error)."""
    out: dict[str, dict[str, Any]] = {}
    for item in items or []:
        head, _, _ = item.partition("=")
        if ":" in head:
            policy, _, rest = item.partition(":")
            if policy not in policies:
                raise StudyError(f"--policy-opt {item!r}: policy {policy!r} is not in the study {list(policies)}")
            out.setdefault(policy, {}).update(parse_policy_options([rest], policy))
            continue
        key = parse_policy_options([item])
        (name,) = key
        targets = [p for p in policies if name in _option_names(p)]
        if not targets:
            raise StudyError(f"--policy-opt {item!r}: none of the policies {list(policies)} has option {name!r}")
        for p in targets:
            out.setdefault(p, {}).update(parse_policy_options([item], p))
    return out


def read_summary(run_dir: Path) -> dict[str, Any] | None:
    """The run's ``summary.json`` (the trainer writes it when a run ends), ``None`` if absent
    or unreadable."""
    path = Path(run_dir) / "summary.json"
    if not path.exists():
        return None
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError:
        return None


def finished_summary(run_dir: Path, epochs: int) -> dict[str, Any] | None:
    """The run's summary if it holds all ``epochs`` epochs, else ``None`` (not finished)."""
    summary = read_summary(run_dir)
    if summary is None:
        return None
    if len(summary.get("history", [])) != epochs or "best_test_accuracy" not in summary:
        return None
    return summary


_IDENTITY = ("model_options", "dataset", "epochs", "batch_size", "lr", "policy", "policy_options",
             "optimizer", "augment", "subset", "test_subset", "seed")


def _check_same_run(summary: dict[str, Any], config: Any, run_dir: Path) -> None:
    want = json.loads(json.dumps({k: getattr(config, k) for k in _IDENTITY}, default=list))
    have = {k: summary.get("config", {}).get(k) for k in _IDENTITY}
    diff = [k for k in _IDENTITY if have[k] != want[k]]
    if diff:
        raise StudyError(
            f"{run_dir} holds a finished run with other settings ({', '.join(diff)}); "
            "choose another --out or delete that folder"
        )


@dataclass
class StudyResult:
    rows: list[dict[str, Any]]
    target: float | None
    choice: dict[str, Any] | None
    trained: int
    reused: int
    files: dict[str, str]


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
        raise StudyError(f"goal must be one of {GOALS}, got {goal!r}")
    if train_fn is None:
        from capslab.train import train as train_fn
    out = Path(study.out)
    out.mkdir(parents=True, exist_ok=True)
    summaries: dict[tuple[str, str], list[dict[str, Any]]] = {}
    trained = reused = 0
    todo = []
    for policy, variant, r in study.runs():
        cfg = study.train_config(policy, variant, r)
        previous = read_summary(Path(cfg.out))
        if previous is not None:
            # a summary of other settings (another --epochs too) is refused, not overwritten
            _check_same_run(previous, cfg, Path(cfg.out))
        done = finished_summary(Path(cfg.out), study.epochs)
        if done is not None:
            summaries.setdefault((policy, variant), []).append(done)
            reused += 1
        else:
            todo.append((policy, variant, r, cfg))

    bar = _progress_bar(progress)
    with bar if bar is not None else _null():
        task = None
        if bar is not None:
            task = bar.add_task("FasTrCaps study", total=len(todo) * study.epochs)
        for i, (policy, variant, _r, cfg) in enumerate(todo):
            if bar is not None:
                bar.update(task, description=f"run {i + 1}/{len(todo)}: {policy} / {variant} / seed {cfg.seed}")

            def on_epoch(record: dict[str, Any], _task=task) -> None:
                if bar is not None:
                    bar.update(_task, advance=1)

            summary = train_fn(cfg, progress=False, on_epoch=on_epoch)
            if not study.keep_checkpoints:
                for name in ("last.pt", "best.pt"):
                    (Path(cfg.out) / name).unlink(missing_ok=True)
            summaries.setdefault((policy, variant), []).append(summary)
            trained += 1

    # keep the grid's order in the table
    configs = {
        (p, v): ([s["history"] for s in summaries[(p, v)]], summaries[(p, v)][0]["parameters"])
        for p in study.policies for v in study.variants if (p, v) in summaries
    }
    rows, target = build_table(configs, study.baseline, study.target, study.time_metric)
    choice_index = select_configuration(rows, goal, tolerance, TIME_METRICS[study.time_metric])
    choice = rows[choice_index]
    files = {
        "csv": str(out / "results.csv"),
        "markdown": str(out / "results.md"),
        "json": str(out / "study.json"),
    }
    if plots:
        files.update(pareto=str(out / "pareto.png"), curves=str(out / "curves.png"))
    atomic_write_text(files["csv"], table_csv(rows))
    atomic_write_text(files["markdown"], table_markdown(rows, target))
    atomic_write_json(
        files["json"],
        {
            "study": {**asdict(study)},
            "target_accuracy": target,
            "goal": goal,
            "tolerance": tolerance,
            "choice": choice,
            "rows": rows,
        },
    )
    if plots:
        plot_pareto(rows, files["pareto"], study.time_metric)
        schedules = {}
        for (policy, _), runs in summaries.items():
            if policy not in schedules:
                schedules[policy] = schedule_of_run(runs[0])
        plot_curves({k: v[0] for k, v in configs.items()}, files["curves"], schedules)
    return StudyResult(rows, target, choice, trained, reused, files)


def _progress_bar(enabled: bool):
    if not enabled:
        return None
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    return Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                    TextColumn("epochs"), TimeElapsedColumn())


class _null:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False
