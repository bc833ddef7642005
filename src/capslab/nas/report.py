"""Reports of a search: the table of all candidates, the Pareto front, pairwise objective plots
(like the paper's Figures 10 and 11) and the fully trained Pareto set (like its Table 3).
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Mapping, Sequence
from itertools import combinations
from pathlib import Path
from typing import Any

import numpy as np

from capslab.errors import ConfigError
from capslab.experiments import finished_summary, run_or_failure
from capslab.genotype import CAPSNET_GENOTYPE, DEEPCAPS_GENOTYPE, parse_genotype
from capslab.hw import CAPSACC, estimate
from capslab.io import atomic_write_text
from capslab.nas.parallel import overall_utilisation
from capslab.nas.schema import OBJECTIVE_NAMES, EvaluationRecord, GenerationRecord
from capslab.results import (
    Column,
    pyplot,
    save_figure,
    table_csv,
    table_markdown,
    write_json,
    write_table,
)
from capslab.train.config import TrainConfig, TrainingSettings

AXIS_LABELS = {
    "accuracy": "accuracy (partial training)",
    "energy_mJ": "energy [mJ]",
    "memory_KiB": "memory [KiB]",
    "latency_ms": "latency [ms]",
}
PLOT_AXES = ("accuracy", "energy_mJ", "memory_KiB", "latency_ms")


def search_front(records: Sequence[EvaluationRecord], config: Mapping[str, Any]) -> list[EvaluationRecord]:
    """:func:`pareto_front` with the objectives and limits of a search's ``config`` (its
    ``run.json`` dictionary; a search made before they existed has the paper's four)."""
    return pareto_front(records, config.get("objectives", OBJECTIVE_NAMES), config.get("limits", {}))


def pareto_front(records: Sequence[EvaluationRecord],
                 objectives: Sequence[str] = OBJECTIVE_NAMES,
                 limits: Mapping[str, float] | None = None) -> list[EvaluationRecord]:
    """Non-dominated successful records within ``limits`` (``objectives`` minimised, the
    paper's four by default), in journal order."""
    from pymoo.util.nds.non_dominated_sorting import NonDominatedSorting

    ok = [r for r in records if r.ok and r.feasible(limits or {})]
    if not ok:
        return []
    F = np.asarray([r.objectives(tuple(objectives)) for r in ok], dtype=float)  # [n, objectives]
    idx = NonDominatedSorting().do(F, only_non_dominated_front=True)
    return [ok[i] for i in sorted(int(i) for i in idx)]


def accuracy_meaning(config: Mapping[str, Any]) -> str:
    """What a search's accuracy objective measures, from its configuration: ``"float32"``, or
    e.g. ``"8-bit weights"`` / ``"8-bit weights, activations (calibrated) and routing"``."""
    bits = config.get("accuracy_bits")
    if bits is None:
        return "float32"
    if config.get("accuracy_mode", "weights") == "accelerator":
        return f"{bits}-bit weights, activations (calibrated) and routing"
    return f"{bits}-bit weights"


def full_fidelity(r: EvaluationRecord, records: Sequence[EvaluationRecord]) -> bool:
    """Was ``r`` trained as long as the longest-trained candidate of ``records`` (the last rung
    with ``--rungs``)? A candidate stopped at a lower rung carries a low-fidelity accuracy;
    fronts and reports mark it."""
    most = max((x.epochs for x in records if x.ok and x.epochs), default=None)
    return r.epochs is None or most is None or r.epochs >= most


def candidate_rows(records: Sequence[EvaluationRecord], front_keys: set[str]) -> list[dict]:
    rows = []
    for i, r in enumerate(records):
        g = parse_genotype(r.genotype_nascaps)
        rows.append(
            {
                "index": i,
                **r.summary(),
                "pareto": r.key in front_keys,
                "description": g.describe(),
                "genotype_nascaps": json.dumps(r.genotype_nascaps),
            }
        )
    return rows


CANDIDATE_COLUMNS = (
    "index", "generation", "status", "reason", "accuracy", "split", "epochs", "float_accuracy",
    "energy_mJ", "memory_KiB", "latency_ms", "seconds", "pareto", "description",
    "genotype_nascaps", "key",
)
RUNG_COLUMNS = ("key", "generation", "rung", "epochs", "status", "accuracy", "float_accuracy",
                "seconds", "promoted")

RungRecords = dict[str, dict[int, EvaluationRecord]]


def rung_rows(rungs: RungRecords) -> list[dict[str, Any]]:
    """One row per candidate per rung it trained (``promoted``: it trained the next rung too),
    by generation, rung and key."""
    rows = [
        {"key": key, "generation": rec.generation, "rung": r, "epochs": rec.epochs,
         "status": rec.status, "accuracy": rec.accuracy, "float_accuracy": rec.float_accuracy,
         "seconds": rec.seconds, "promoted": r + 1 in by_rung}
        for key, by_rung in rungs.items() for r, rec in by_rung.items()
    ]
    return sorted(rows, key=lambda row: (row["generation"], row["rung"], row["key"]))


def rung_summary(rungs: RungRecords) -> list[dict[str, Any]]:
    """Per rung: how many candidates trained it, their median accuracy, the training seconds
    spent there, and how well its accuracies rank the candidates that reached the next rung
    (Kendall's tau between the two rungs' accuracies; ``None`` below three such candidates)."""
    from scipy.stats import kendalltau

    if not rungs:
        return []
    out = []
    for r in range(max(max(v) for v in rungs.values()) + 1):
        here = [v[r] for v in rungs.values() if r in v]
        accs = [x.accuracy for x in here if x.ok]
        pairs = [(v[r].accuracy, v[r + 1].accuracy) for v in rungs.values()
                 if r in v and r + 1 in v and v[r].ok and v[r + 1].ok]
        tau = None
        if len(pairs) >= 3:
            value = kendalltau(*zip(*pairs, strict=True)).statistic
            tau = None if not np.isfinite(value) else float(value)
        out.append({"rung": r, "epochs": here[0].epochs if here else None,
                    "candidates": len(here), "failed": len(here) - len(accs),
                    "median_accuracy": float(np.median(accs)) if accs else None,
                    "seconds": float(sum(x.seconds for x in here)),
                    "promoted": len(pairs), "kendall_tau_next": tau})
    return out


def plot_rungs(rungs: RungRecords, path: str | os.PathLike, title: str = "") -> None:
    """Accuracy against epochs: one line per candidate across the rungs it trained (those that
    were promoted drawn darker)."""
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(7, 5))
    for by_rung in rungs.values():
        points = [(rec.epochs, rec.accuracy) for _, rec in sorted(by_rung.items()) if rec.ok]
        if not points:
            continue
        x, y = zip(*points, strict=True)
        promoted = len(points) > 1
        ax.plot(x, y, marker="o", ms=3, lw=1, alpha=0.8 if promoted else 0.35,
                color="tab:blue" if promoted else "tab:gray")
    ax.set_xlabel("epochs trained (rung)")
    ax.set_ylabel("validation accuracy")
    ax.grid(alpha=0.3)
    ax.set_title(title or "candidates across the rungs (blue: promoted at least once)")
    save_figure(fig, path)
GENERATION_COLUMNS = (
    "generation", "offspring", "evaluations", "workers", "wall_seconds", "busy_seconds",
    "utilisation",
)


def generation_rows(generations: Sequence[GenerationRecord]) -> list[dict[str, Any]]:
    """One row per journaled generation: its candidates, the journal's evaluations after it and
    how busy the workers were (empty timing fields: nothing was evaluated for it)."""
    rows = []
    for g in generations:
        t = g.timing
        rows.append({
            "generation": g.generation, "offspring": len(g.offspring), "evaluations": g.evaluations,
            "workers": None if t is None else t.workers,
            "wall_seconds": None if t is None else t.wall_seconds,
            "busy_seconds": None if t is None else t.busy_seconds,
            "utilisation": None if t is None else t.utilisation,
        })
    return rows


def utilisation_summary(generations: Sequence[GenerationRecord]) -> dict[str, Any]:
    """Worker utilisation over a whole search: busy seconds over worker seconds, summed over the
    generations whose candidates were evaluated (``utilisation`` is ``None`` if none was)."""
    timed = [g.timing for g in generations if g.timing is not None]
    return {"generations": len(timed),
            "wall_seconds": sum(t.wall_seconds for t in timed),
            "busy_seconds": sum(t.busy_seconds for t in timed),
            "utilisation": overall_utilisation(timed)}


def baseline_hardware(accelerator: Any = None) -> dict[str, dict[str, float]]:
    """Hardware figures of the published CapsNet and DeepCaps genotypes (paper Table 3)."""
    out = {}
    for name, g in (("CapsNet", CAPSNET_GENOTYPE), ("DeepCaps", DEEPCAPS_GENOTYPE)):
        est = estimate(g, accelerator or CAPSACC)
        out[name] = {
            "energy_mJ": float(est.energy_mJ),
            "memory_KiB": float(est.memory_KiB),
            "latency_ms": float(est.latency_ms),
        }
    return out


def plot_objectives(
    records: Sequence[EvaluationRecord],
    front_keys: set[str],
    path: str | os.PathLike,
    baselines: dict[str, dict[str, float]] | None = None,
    title: str = "",
) -> None:
    """Every pair of objectives (6 panels): candidates coloured by generation, the Pareto front
    ringed, baselines as stars (or as dashed lines on an accuracy axis when their accuracy is
    unknown)."""
    plt = pyplot()
    ok = [r for r in records if r.ok]
    values = {
        "accuracy": np.array([r.accuracy for r in ok], dtype=float),
        "energy_mJ": np.array([r.energy_mJ for r in ok], dtype=float),
        "memory_KiB": np.array([r.memory_KiB for r in ok], dtype=float),
        "latency_ms": np.array([r.latency_ms for r in ok], dtype=float),
    }
    gens = np.array([r.generation for r in ok], dtype=float)
    on_front = np.array([r.key in front_keys for r in ok], dtype=bool)
    pairs = list(combinations(PLOT_AXES, 2))
    fig, axes = plt.subplots(2, 3, figsize=(15, 9))
    scatter = None
    markers = {"CapsNet": "*", "DeepCaps": "P"}
    colors = {"CapsNet": "tab:red", "DeepCaps": "tab:green"}
    for ax, (xname, yname) in zip(axes.flat, pairs, strict=True):
        if ok:
            scatter = ax.scatter(
                values[xname], values[yname], c=gens, cmap="viridis", s=22, alpha=0.85,
                vmin=0, vmax=max(1.0, float(gens.max())),
            )
            ax.scatter(
                values[xname][on_front], values[yname][on_front], s=80, facecolors="none",
                edgecolors="black", linewidths=1.2, label="Pareto front",
            )
        for name, b in (baselines or {}).items():
            bx, by = b.get(xname), b.get(yname)
            if bx is not None and by is not None:
                ax.scatter([bx], [by], marker=markers.get(name, "X"), s=160,
                           color=colors.get(name, "tab:orange"), edgecolors="black", label=name)
            elif bx is not None:
                ax.axvline(bx, ls="--", color=colors.get(name, "tab:orange"), lw=1, label=f"{name} (accuracy unknown)")
            elif by is not None:
                ax.axhline(by, ls="--", color=colors.get(name, "tab:orange"), lw=1, label=f"{name} (accuracy unknown)")
        ax.set_xlabel(AXIS_LABELS[xname])
        ax.set_ylabel(AXIS_LABELS[yname])
        if xname != "accuracy":
            ax.set_xscale("log")
        if yname != "accuracy":
            ax.set_yscale("log")
        ax.grid(alpha=0.3)
    seen: dict[str, Any] = {}  # one legend entry per label across the panels
    for ax in axes.flat:
        for handle, label in zip(*ax.get_legend_handles_labels(), strict=True):
            seen.setdefault(label, handle)
    fig.subplots_adjust(top=0.86, hspace=0.3, wspace=0.3)
    fig.legend(list(seen.values()), list(seen.keys()), loc="upper center", ncol=5,
               bbox_to_anchor=(0.45, 0.95))
    if scatter is not None:
        from matplotlib.ticker import MaxNLocator

        bar = fig.colorbar(scatter, ax=axes.ravel().tolist(), label="generation first seen")
        bar.locator = MaxNLocator(integer=True)
        bar.update_ticks()
    if title:
        fig.suptitle(title, y=0.99)
    save_figure(fig, path)


def write_report(
    records: Sequence[EvaluationRecord],
    out_dir: str | os.PathLike,
    *,
    baseline_accuracy: dict[str, float] | None = None,
    accelerator: Any = None,
    title: str = "",
    generations: Sequence[GenerationRecord] | None = None,
    rungs: RungRecords | None = None,
    objectives: Sequence[str] = OBJECTIVE_NAMES,
    limits: Mapping[str, float] | None = None,
    accuracy: str | None = None,
) -> dict[str, Path]:
    """Write ``candidates.csv``, ``pareto.json``, ``pareto.csv`` and ``objectives.png`` into
    ``out_dir``, ``generations.csv`` (timing and worker utilisation per generation) when
    ``generations`` are given, and ``rungs.csv`` and ``rungs.png`` (every candidate's accuracy
    at every rung) for a multi-fidelity search's ``rungs``; returns their paths. ``accuracy``
    says what the accuracy objective measures (:func:`accuracy_meaning`)."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    front = pareto_front(records, objectives, limits)
    keys = {r.key for r in front}
    rows = candidate_rows(records, keys)
    paths = {
        "candidates": out / "candidates.csv",
        "pareto_json": out / "pareto.json",
        "pareto_csv": out / "pareto.csv",
        "plot": out / "objectives.png",
    }
    atomic_write_text(paths["candidates"], table_csv(rows, CANDIDATE_COLUMNS))
    front_rows = [row for row in rows if row["pareto"]]
    atomic_write_text(paths["pareto_csv"], table_csv(front_rows, CANDIDATE_COLUMNS))
    extra: dict[str, Any] = {}
    if generations is not None:
        paths["generations"] = out / "generations.csv"
        atomic_write_text(paths["generations"], table_csv(generation_rows(generations),
                                                          GENERATION_COLUMNS))
        extra["workers"] = utilisation_summary(generations)
    if rungs:
        paths["rungs_csv"] = out / "rungs.csv"
        paths["rungs_plot"] = out / "rungs.png"
        atomic_write_text(paths["rungs_csv"], table_csv(rung_rows(rungs), RUNG_COLUMNS))
        plot_rungs(rungs, paths["rungs_plot"])
        extra["rungs"] = rung_summary(rungs)
    write_json(
        paths["pareto_json"],
        "pareto",
        {
            "objectives": list(objectives),
            "accuracy": accuracy or "float32",
            "evaluated": len(records),
            "failed": sum(not r.ok for r in records),  # timeouts included
            "timeouts": sum(r.status == "timeout" for r in records),
            "accuracy_splits": sorted({r.split for r in records if r.split}),
            **extra,
            "front": [
                {**r.summary(), "full_fidelity": full_fidelity(r, records),
                 "genotype_nascaps": r.genotype_nascaps, "genotype": r.genotype}
                for r in front
            ],
        },
    )
    baselines = baseline_hardware(accelerator)
    for name, acc in (baseline_accuracy or {}).items():
        if name in baselines:
            baselines[name]["accuracy"] = float(acc)
    plot_objectives(records, keys, paths["plot"], baselines, title=title)
    return paths


# ---------------------------------------------------------------------- finalize (Table 3)
FINAL_COLUMNS = [
    Column("name", "network"),
    Column("accuracy", "accuracy [%]", ".2f", 100),
    Column("quantized_accuracy", "at the search's precision [%]", ".2f", 100),
    Column("energy_mJ", "energy [mJ]", ".3f"),
    Column("latency_ms", "latency [ms]", ".3f"),
    Column("memory_KiB", "memory [KiB]", ",.1f"),
    Column("parameters", "parameters", ","),
    Column("status", "status"),
]
#: what ``final.json``'s ``accuracy`` is
ACCURACY_READING = "test accuracy read once, after the final epoch (no epoch chosen on the test set)"
FINAL_CSV_KEYS = (
    "name", "accuracy", "quantized_accuracy", "partial_accuracy", "energy_mJ", "latency_ms", "memory_KiB",
    "parameters", "epochs", "seconds", "status", "description",
)


def finalize(
    front: Sequence[EvaluationRecord],
    out_dir: str | os.PathLike,
    training: TrainingSettings,
    *,
    train_fn: Callable[..., dict[str, Any]] | None = None,
    progress: bool = True,
    on_done: Callable[[dict[str, Any]], None] | None = None,
    best: int | None = None,
    members: Sequence[int] | None = None,
    weight_bits: int | None = None,
    accelerator_mode: bool = False,
) -> list[dict[str, Any]]:
    """Fully train every genotype of ``front`` (or its ``best`` most accurate, or the
    ``members`` named by their front numbers: :func:`finalists`) as ``training`` says and
    write ``final.csv``, ``final.md`` (the paper's Table 3 layout) and ``final.json`` in
    ``out_dir``. ``weight_bits`` / ``accelerator_mode`` (the search's ``accuracy_bits`` and
    ``accuracy_mode``) also evaluate the final epoch at the search's precision:
    ``quantized_accuracy`` beside the float one.

    The networks train on the whole training split and are evaluated on the test split:
    ``training.val_size`` (the search's validation split) is dropped. The test split is read
    once, after the final epoch (``eval_final_only``), and ``accuracy`` is that reading: a best
    epoch's would be an epoch chosen on the test set, which flatters the figure
    (``final.json`` says so in ``accuracy_reading``).

    Each network is a run through :func:`capslab.experiments.run_or_reuse` in
    ``out_dir/NASCaps-<k>``: one trained earlier with these settings is reused, an interrupted
    one resumed, one of other settings refused. A network that cannot be trained is reported in
    its row and the others go on.
    """
    out = Path(out_dir)
    training = training.replace(val_size=None)  # final accuracies are test accuracies
    chosen = finalists(front, best, members)
    names = [f"NASCaps-{i + 1}" for i in chosen]  # the front's numbering, whatever is chosen
    front = [front[i] for i in chosen]
    genotypes = [parse_genotype(rec.genotype_nascaps) for rec in front]
    configs = [
        TrainConfig.of(training.replace(model="genotype", model_options={"genotype": g.exchange()}),
                       out=str(out / name), eval_weight_bits=weight_bits,
                       eval_accelerator=accelerator_mode and weight_bits is not None,
                       eval_final_only=True)
        for name, g in zip(names, genotypes, strict=True)
    ]
    for config in configs:  # a folder of other settings is refused before anything trains
        finished_summary(config)
    rows = []
    for name, rec, g, config in zip(names, front, genotypes, configs, strict=True):
        outcome, reason = run_or_failure(config, train_fn, progress=progress)
        summary = outcome.summary if outcome is not None else {}
        row = {
            "name": name,
            "accuracy": summary.get("final_test_accuracy"),
            "quantized_accuracy": (summary.get("history") or [{}])[-1].get("test_quantized_accuracy"),
            "partial_accuracy": rec.accuracy,
            "energy_mJ": rec.energy_mJ,
            "latency_ms": rec.latency_ms,
            "memory_KiB": rec.memory_KiB,
            "parameters": summary.get("parameters"),
            "epochs": len(summary.get("history", [])) or None,
            "seconds": summary.get("total_seconds"),
            "status": "ok" if reason is None else f"failed: {reason}",
            "description": g.describe(),
            "genotype_nascaps": rec.genotype_nascaps,
        }
        rows.append(row)
        if on_done is not None:
            on_done(row)
    write_table(rows, out / "final", "final", FINAL_COLUMNS, csv_keys=FINAL_CSV_KEYS,
                extra={"training": training.to_dict(), "accuracy_reading": ACCURACY_READING})
    return rows


def most_accurate(front: Sequence[EvaluationRecord], n: int | None) -> list[int]:
    """Indices (in front order) of the ``n`` members of ``front`` with the highest search
    accuracy, ties to the lower energy; all of them when ``n`` is None. A front's cheapest
    members are its least accurate: with a fixed budget of full trainings, these are the ones
    that can reach an accuracy goal."""
    if n is None or n >= len(front):
        return list(range(len(front)))
    ranked = sorted(range(len(front)), key=lambda i: (-front[i].accuracy, front[i].energy_mJ, i))
    return sorted(ranked[:n])


def finalists(front: Sequence[EvaluationRecord], best: int | None = None,
              members: Sequence[int] | None = None) -> list[int]:
    """Indices (in front order) of the members to train fully: those numbered ``members``
    (:func:`front_members`), else the ``best`` most accurate (:func:`most_accurate`; all of
    them when both are None). Both given is a :class:`ConfigError`."""
    if members is not None and best is not None:
        raise ConfigError("choose the networks to train by best or by members, not both")
    return front_members(front, members) if members is not None else most_accurate(front, best)


def front_members(front: Sequence[EvaluationRecord], numbers: Sequence[int]) -> list[int]:
    """Indices (in front order) of the members numbered ``numbers`` (1-based, as the front's
    tables and the ``NASCaps-<k>`` folders number them): to train chosen members, such as
    the cheap ones that ``best`` would leave out."""
    wrong = sorted({k for k in numbers if not 1 <= k <= len(front)})
    if wrong or not numbers:
        raise ConfigError(f"the front has members 1-{len(front)}; "
                          f"{', '.join(map(str, wrong)) or 'no member'} named")
    return sorted({k - 1 for k in numbers})


def markdown_table(rows: Sequence[dict[str, Any]]) -> str:
    """The fully trained Pareto set as the paper's Table 3 (accuracy, energy, latency, memory)."""
    return table_markdown(rows, FINAL_COLUMNS)
