"""Reproductions of the papers' headline results, one per name, at three scales.

``run_repro(name, scale, out)`` runs one reproduction (or ``"all"``) and writes, in ``out``:

* ``<name>/...``: its training runs (one folder each, reused by identity on a rerun), studies
  and measurements;
* ``<name>/results.json`` and ``<name>/results.md``: its rows (see :mod:`capslab.repro.rows`);
* ``results.json`` and ``results.md``: every reproduction found in ``out``, merged.

Scales: ``smoke`` (seconds, for tests), ``cpu`` (all of them in about an hour on 2 CPU cores),
``paper`` (the papers' settings; a GPU when one is present). ``estimate_repro`` measures this
machine and predicts how long a scale takes before anything trains.

Example::

    from capslab.repro import run_repro
    results = run_repro("nascaps", "smoke", "runs/repro-smoke")
    for row in results["rows"]:
        print(row["claim"], row["paper"], row["measured"], row["verdict"])
"""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any

from capslab.device import resolve_device
from capslab.errors import ConfigError, RunMismatchError
from capslab.io import atomic_write_text
from capslab.repro import capsnet, efficient_capsnet, fastrcaps, mocaps, nascaps
from capslab.repro.common import (
    SCALE_HELP,
    SCALES,
    Context,
    Experiment,
    Tracker,
    check_scale,
    estimate_training,
    format_duration,
    machine,
)
from capslab.repro.rows import experiment_markdown, results_markdown
from capslab.results import read_json, write_json

#: every reproduction, by name, in the order ``all`` runs them and the tables list them
EXPERIMENTS: dict[str, Experiment] = {
    e.name: e for e in (capsnet.EXPERIMENT, fastrcaps.EXPERIMENT, mocaps.EXPERIMENT,
                        nascaps.EXPERIMENT, efficient_capsnet.EXPERIMENT)
}
ALL = "all"
RESULT_KIND = "repro-result"  # <out>/<name>/results.json
RESULTS_KIND = "repro"  # <out>/results.json

__all__ = ["ALL", "EXPERIMENTS", "SCALES", "SCALE_HELP", "estimate_repro", "list_experiments",
           "run_repro"]


def list_experiments() -> list[dict[str, str]]:
    """``[{"name", "title", "description"}]`` of every reproduction."""
    return [{"name": e.name, "title": e.title, "description": e.description}
            for e in EXPERIMENTS.values()]


def _names(name: str) -> list[str]:
    if name == ALL:
        return list(EXPERIMENTS)
    if name not in EXPERIMENTS:
        raise ConfigError(f"unknown reproduction {name!r}; choose one of "
                          f"{', '.join([*EXPERIMENTS, ALL])}")
    return [name]


def default_device(scale: str) -> str:
    """``cpu`` for the smoke and cpu scales, ``auto`` (CUDA when present) for paper."""
    return "auto" if scale == "paper" else "cpu"


def _context(scale: str, out: str | Path, device: str | None, data_dir: str | Path | None,
             tracker: Tracker) -> Context:
    device = device or default_device(scale)
    resolve_device(device)  # a bad name, or CUDA asked for where there is none
    return Context(check_scale(scale), Path(out), device,
                   None if data_dir is None else str(data_dir), tracker)


def _check_folder(ctx: Context, names: list[str]) -> None:
    """Refuse an output folder that holds another scale's reproduction of these names."""
    for name in names:
        previous = read_json(ctx.folder(name, "results.json"), RESULT_KIND)
        if previous is not None and previous["scale"] != ctx.scale:
            raise RunMismatchError(
                f"{ctx.folder(name)} holds the {previous['scale']!r} scale of {name}; choose "
                f"another output folder for the {ctx.scale!r} scale")


def command_line(name: str, scale: str, out: str | Path) -> str:
    return f"capslab repro {name} --scale {scale} --out {out}"


def _now() -> str:
    return datetime.now().astimezone().isoformat(timespec="seconds")


def run_repro(
    name: str,
    scale: str,
    out: str | Path,
    *,
    device: str | None = None,
    data_dir: str | Path | None = None,
    progress: Any = None,
    note: Callable[[str], None] | None = None,
    command: str | None = None,
    announce_estimate: bool | None = None,
) -> dict[str, Any]:
    """Run the reproduction ``name`` (or ``"all"``) at ``scale`` into ``out``.

    Args:
        name: a key of :data:`EXPERIMENTS` or ``"all"``.
        scale: ``smoke``, ``cpu`` or ``paper``.
        out: output folder; rerunning the same call reuses finished runs and resumes others.
        device: ``cpu``, ``cuda``, ``cuda:N`` or ``auto``; default ``cpu`` for smoke and cpu,
            ``auto`` (CUDA when present) for paper.
        data_dir: dataset folder (else ``$CAPSLAB_DATA``, else the cache).
        progress: a rich ``Progress`` to show progress on (``None``: silent).
        note: called with lines for people (the estimate, files written).
        command: the command line recorded in the results (default: the equivalent one).
        announce_estimate: measure this machine and ``note`` the expected duration first
            (default: at the paper scale only).
    Returns:
        the merged results of ``out`` (``results.json``'s payload): ``scale``, ``commands``,
        ``machine``, ``experiments`` (name -> its result) and ``rows`` (every row).
    """
    names = _names(name)
    ctx = _context(scale, out, device, data_dir, Tracker(progress, note))
    _check_folder(ctx, names)
    if announce_estimate if announce_estimate is not None else ctx.scale == "paper":
        estimate = estimate_repro(name, scale, out, device=ctx.device, data_dir=data_dir)
        ctx.tracker.note(estimate_text(estimate))
    command = command or command_line(name, scale, out)
    for n in names:
        experiment = EXPERIMENTS[n]
        started, t0 = _now(), time.perf_counter()
        outcome = experiment.execute(ctx, experiment.plan(ctx))
        result = {
            "name": n, "title": experiment.title, "description": experiment.description,
            "scale": ctx.scale, "command": command, "started": started, "finished": _now(),
            "seconds": time.perf_counter() - t0, "machine": machine(ctx.device),
            "rows": outcome.rows, "not_run": outcome.not_run, "notes": outcome.notes,
            "files": outcome.files,
        }
        write_json(ctx.folder(n, "results.json"), RESULT_KIND, result)
        atomic_write_text(ctx.folder(n, "results.md"), experiment_markdown(result, level=1))
    merged = merge_results(ctx.out)
    ctx.tracker.note(f"written: {ctx.out / 'results.json'}, {ctx.out / 'results.md'}")
    return merged


def merge_results(out: str | Path) -> dict[str, Any]:
    """Merge every ``<out>/<name>/results.json`` into ``<out>/results.json`` and
    ``results.md``; returns the merged payload."""
    out = Path(out)
    found = {n: read_json(out / n / "results.json", RESULT_KIND) for n in EXPERIMENTS}
    found = {n: r for n, r in found.items() if r is not None}
    if not found:
        raise RunMismatchError(f"{out} holds no reproduction results")
    scales = {r["scale"] for r in found.values()}
    if len(scales) > 1:
        raise RunMismatchError(f"{out} mixes scales {sorted(scales)}; keep one scale per folder")
    # list in registry order; the latest experiment's machine describes the folder
    latest = max(found.values(), key=lambda r: r["finished"])
    merged = {
        "scale": scales.pop(),
        "commands": list(dict.fromkeys(r["command"] for r in found.values())),
        "started": min(r["started"] for r in found.values()),
        "finished": latest["finished"],
        "seconds": sum(r["seconds"] for r in found.values()),
        "machine": latest["machine"],
        "experiments": found,
        "rows": [row for r in found.values() for row in r["rows"]],
    }
    write_json(out / "results.json", RESULTS_KIND, merged)
    atomic_write_text(out / "results.md", results_markdown(merged))
    return merged


def estimate_repro(
    name: str,
    scale: str,
    out: str | Path,
    *,
    device: str | None = None,
    data_dir: str | Path | None = None,
) -> dict[str, Any]:
    """How long ``run_repro(name, scale, out)`` would take on this machine.

    Training runs are estimated from images/s measured here for every model and batch size
    they use (:func:`capslab.train.estimate.measure_rates`); finished runs in ``out`` count 0.
    Other work (memory studies, the random networks of the PCC study) has its own estimate.
    Returns ``{"name", "scale", "device", "machine", "items": [{"experiment", "label",
    "seconds", "done"}], "total_seconds"}``.
    """
    names = _names(name)
    ctx = _context(scale, out, device, data_dir, Tracker())
    items = []
    for n in names:
        plan = EXPERIMENTS[n].plan(ctx)
        for r in estimate_training(plan.runs, ctx.device):
            items.append({"experiment": n, **r})
        for label, seconds in plan.other:
            items.append({"experiment": n, "label": label, "seconds": seconds(ctx), "done": False})
    total = sum(i["seconds"] for i in items if not i["done"])
    return {"name": name, "scale": ctx.scale, "device": ctx.device, "machine": machine(ctx.device),
            "items": items, "total_seconds": total}


def estimate_text(estimate: dict[str, Any]) -> str:
    """The estimate in a few lines: total, then per experiment."""
    m = estimate["machine"]
    per: dict[str, float] = {}
    for item in estimate["items"]:
        if not item["done"]:
            per[item["experiment"]] = per.get(item["experiment"], 0.0) + item["seconds"]
    lines = [f"estimated time of `{estimate['name']}` at the {estimate['scale']} scale on this "
             f"machine ({m['cpu']}, {m['threads']} threads, device {m['device']}): "
             f"{format_duration(estimate['total_seconds'])}"]
    lines += [f"  {n}: {format_duration(s)}" for n, s in per.items()]
    return "\n".join(lines)
