"""The report of a FasTrCaps study (a folder written by
:func:`capslab.studies.fastrcaps.run_study`).

What it shows: the study's settings and chosen configuration, the trade-off table (the
Pareto-optimal rows marked, the chosen one highlighted), the trade-offs as interactive plots
(accuracy against training time and parameters, time against parameters) and the mean test
accuracy per epoch of every configuration with the learning rate of every policy.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from capslab.errors import RunMismatchError
from capslab.report.html import Page
from capslab.report.run import read_history
from capslab.results import SUMMARY_FILE, read_json
from capslab.studies.fastrcaps import (
    COLUMNS,
    TIME_METRICS,
    mean_curve,
    schedule_curve,
    schedule_of_run,
)

STUDY_FILE = "study.json"
STUDY_KIND = "fastrcaps-study"
PALETTE = ("#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#17becf", "#8c564b", "#e377c2")


def is_study(path: Path) -> bool:
    """Does ``path`` hold a FasTrCaps study (``study.json``)?"""
    try:
        return read_json(path / STUDY_FILE, STUDY_KIND) is not None
    except RunMismatchError:
        return False


def label(row: dict[str, Any]) -> str:
    """``policy`` for the baseline model, ``policy+WS`` for weight sharing (as the study's plots)."""
    variant = row["variant"]
    suffix = "" if variant == "baseline" else "+WS" if variant == "ws" else f"/{variant}"
    return f"{row['policy']}{suffix}"


def _fmt(value: float | None, spec: str) -> str:
    return "-" if value is None else format(value, spec)


def _colors(rows: Sequence[dict[str, Any]]) -> dict[str, str]:
    policies = list(dict.fromkeys(r["policy"] for r in rows))
    return {p: PALETTE[i % len(PALETTE)] for i, p in enumerate(policies)}


def tradeoff_figure(rows: Sequence[dict[str, Any]], time_key: str, time_label: str):
    """Accuracy vs training time, accuracy vs parameters and parameters vs time; one marker
    per configuration (colour: policy, circle: baseline model, diamond: weight sharing),
    filled when Pareto-optimal, open otherwise."""
    from plotly.subplots import make_subplots

    colors = _colors(rows)
    acc = "best accuracy (%)"
    params = "parameters"
    panels = [(time_key, "acc", time_label, acc), ("params", "acc", params, acc),
              (time_key, "params", time_label, params)]
    fig = make_subplots(rows=1, cols=3, horizontal_spacing=0.08,
                        subplot_titles=("Accuracy vs training time", "Accuracy vs parameters",
                                        "Parameters vs training time"))

    def value(r: dict[str, Any], key: str) -> float | None:
        if key == "acc":
            return 100 * r["best_acc_mean"]
        if key == "params":
            return r["parameters"]
        return r.get(key)

    for r in rows:
        name = label(r)
        on = bool(r.get("pareto"))
        symbol = "circle" if r["variant"] == "baseline" else "diamond"
        marker = dict(size=13 if on else 10, color=colors[r["policy"]], symbol=symbol if on else f"{symbol}-open",
                      line=dict(width=1.5 if on else 2, color="#222" if on else colors[r["policy"]]))
        hover = (f"<b>{name}</b>{' (Pareto)' if on else ''}<br>accuracy {100 * r['best_acc_mean']:.2f} %"
                 f"<br>{time_label}: {_fmt(value(r, time_key), '.1f')}<br>parameters {r['parameters']:,}<extra></extra>")
        for col, (kx, ky, _, _) in enumerate(panels, start=1):
            fig.add_scatter(x=[value(r, kx)], y=[value(r, ky)], mode="markers", name=name + (" *" if on else ""),
                            legendgroup=name, showlegend=col == 1, marker=marker, hovertemplate=hover,
                            row=1, col=col)
    for col, (kx, ky, xt, yt) in enumerate(panels, start=1):
        fig.update_xaxes(title_text=xt, tickformat="~s" if kx == "params" else None, row=1, col=col)
        fig.update_yaxes(title_text=yt, tickformat="~s" if ky == "params" else None, row=1, col=col)
    fig.update_layout(height=430, margin=dict(t=60, b=60, l=60, r=20),
                      legend=dict(title_text="configuration (* Pareto-optimal)"))
    return fig


def _histories(run_dir: Path, policy: str, variant: str) -> list[list[dict[str, Any]]]:
    """The per-epoch records of every repeat of one configuration."""
    histories = []
    for seed_dir in sorted((run_dir / "runs" / f"{policy}__{variant}").glob("seed*")):
        summary = read_json(seed_dir / SUMMARY_FILE, "summary")
        history = summary["history"] if summary else read_history(seed_dir)
        if history:
            histories.append(history)
    return histories


def _summaries(run_dir: Path, policy: str) -> dict[str, Any] | None:
    for seed_dir in sorted((run_dir / "runs").glob(f"{policy}__*/seed*")):
        summary = read_json(seed_dir / SUMMARY_FILE, "summary")
        if summary:
            return summary
    return None


def curves_figure(run_dir: Path, rows: Sequence[dict[str, Any]]):
    """Mean test accuracy per epoch of every configuration (top) and each policy's learning
    rate per step (bottom, log scale; from the schedule the runs used), one epoch axis."""
    from plotly.subplots import make_subplots

    colors = _colors(rows)
    fig = make_subplots(rows=2, cols=1, shared_xaxes=True, vertical_spacing=0.08, row_heights=[0.6, 0.4],
                        subplot_titles=("Mean test accuracy per epoch (dashed: weight sharing)",
                                        "Learning rate"))
    drawn = 0
    for r in rows:
        histories = _histories(run_dir, r["policy"], r["variant"])
        lengths = {len(h) for h in histories}
        if not histories or len(lengths) != 1:
            continue
        curve = mean_curve(histories)
        fig.add_scatter(x=list(range(1, len(curve) + 1)), y=[100 * a for a in curve], mode="lines+markers",
                        name=label(r), line=dict(color=colors[r["policy"]],
                                                 dash="solid" if r["variant"] == "baseline" else "dash"),
                        hovertemplate=f"{label(r)}: %{{y:.2f}} %<extra>epoch %{{x}}</extra>", row=1, col=1)
        drawn += 1
    for policy in colors:
        summary = _summaries(run_dir, policy)
        if summary is None:
            continue
        try:
            xs, lrs = schedule_curve(schedule_of_run(summary))
        except Exception:  # a run written by an older trainer: the recorded lr per epoch
            history = summary["history"]
            xs, lrs = [h["epoch"] for h in history], [h.get("lr") for h in history]
        fig.add_scatter(x=xs, y=lrs, mode="lines", name=f"lr: {policy}", line=dict(color=colors[policy], width=1.5),
                        hovertemplate=f"{policy}: lr %{{y:.3g}}<extra>epoch %{{x:.2f}}</extra>", row=2, col=1)
    fig.update_yaxes(title_text="accuracy (%)", row=1, col=1)
    fig.update_yaxes(title_text="learning rate", type="log", exponentformat="e", row=2, col=1)
    fig.update_xaxes(title_text="epoch", row=2, col=1)
    fig.update_layout(height=620, margin=dict(t=60, b=50, l=70, r=20))
    return fig, drawn


def build_page(run_dir: str | Path) -> Page:
    """The report page of the FasTrCaps study in ``run_dir``."""
    path = Path(run_dir)
    doc = read_json(path / STUDY_FILE, STUDY_KIND)
    if doc is None:
        raise RunMismatchError(f"{path / STUDY_FILE} not found or unreadable: {path} is not a FasTrCaps study")
    rows: list[dict[str, Any]] = doc["rows"]
    study = doc.get("study", {})
    training = study.get("training", {})
    time_metric = study.get("time_metric", "paper")
    time_key = TIME_METRICS.get(time_metric, "train_time_paper_s")
    choice = doc.get("choice") or {}
    chosen = (choice.get("policy"), choice.get("variant"))
    page = Page(f"FasTrCaps study: {path.resolve().name}", str(path.resolve()))

    page.section("Summary", "summary")
    target = doc.get("target_accuracy")
    tolerance = doc.get("tolerance")
    page.key_values([
        ("dataset", training.get("dataset")),
        ("epochs per run", training.get("epochs")),
        ("runs per configuration", study.get("repeats")),
        ("policies", ", ".join(study.get("policies", []))),
        ("model variants", ", ".join(study.get("variants", []))),
        ("training time", f"{time_metric} ({time_key})"),
        ("target accuracy", None if target is None else f"{100 * target:.2f} %"),
        ("goal", doc.get("goal") if tolerance is None else f"{doc.get('goal')} (within {tolerance} points)"),
        ("chosen configuration", label(choice) if choice else None),
        ("Pareto-optimal", ", ".join(label(r) for r in rows if r.get("pareto")) or None),
    ])

    page.section("Trade-off table", "table")
    page.text("Accuracies are the mean over the runs of each run's best test accuracy; Pareto: "
              "no other configuration is at least as accurate, as fast and as small. Highlighted: "
              "the chosen configuration; green: Pareto-optimal.", "muted")
    page.table(rows, [(c.key, c.header or c.key, c.render) for c in COLUMNS], element_id="study-table",
               highlight=lambda r: "highlight" if (r["policy"], r["variant"]) == chosen
               else "marked" if r.get("pareto") else "")

    page.section("Pareto plots", "pareto")
    page.figure(tradeoff_figure(rows, time_key, f"training time (s, {time_metric})"), "tradeoffs")

    page.section("Curves", "curves")
    fig, drawn = curves_figure(path, rows)
    if drawn:
        page.figure(fig, "study-curves")
    else:
        page.note(f"No per-run history found under {path / 'runs'}.")
    return page
