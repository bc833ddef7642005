"""Multi-fidelity against full-fidelity search: same seeds, same wall clock, hypervolume.

For every seed, two ``capslab search run`` processes start at the same time, one core each
(``OMP_NUM_THREADS=1``, one worker), with the same ``--max-time``: the paper's mode (every
candidate trains ``EPOCHS`` epochs) and successive halving (``--rungs RUNGS --promote 0.5``).
Running the pair side by side gives both the same machine, whatever else it is doing. Then the
script reads the journals and prints one table: candidates journaled, evaluations per hour,
candidate-epochs trained, generations finished, and the hypervolume of each run's front of all
its candidates (pymoo's ``HV``), all four objectives normalised by the bounds of the union of
every run's front and measured against the reference point 1.1 in each; also the hypervolume
each run had reached when the shorter run of its seed ended (from the journal's finish times),
and ``hypervolume.png``: every run's hypervolume against wall-clock minutes.

    .venv/bin/python benchmarks/fidelity_comparison.py --out runs/fidelity --seeds 0,1 --minutes 28
    .venv/bin/python benchmarks/fidelity_comparison.py --out runs/fidelity --analyse   # table only

A run folder that already holds a search is not started again (delete it to rerun).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

#: The setting of every search: MNIST, 1,000 training and 500 validation images, a small
#: Sabour space whose networks train in 1-40 s per epoch on one core.
EPOCHS = 4
RUNGS = "1,2,4"
COMMON = [
    "--dataset", "mnist", "--subset", "1000", "--val-size", "500", "--batch-size", "32",
    "--lr", "0.003", "--device", "cpu", "--population", "8", "--offspring", "8",
    "--generations", "100", "--workers", "1",
    "--space", "conv_layers=2,3", "--space", "strides=1,2", "--space", "kernels=3,5",
    "--space", "channels=4,16", "--space", "capsules=4,8", "--space", "conv_channel_exponents=3,5",
    "--space", "caps_layers=2,3", "--space", "families=sabour", "--space", "resizes=1",
    "--space", "class_dim=8",
]
MODES = {
    "full": ["--epochs", str(EPOCHS)],
    "rungs": ["--rungs", RUNGS, "--promote", "0.5"],
}


def _start(name: str, args: list[str], out: Path, seconds: float) -> subprocess.Popen | None:
    run_dir = out / name
    if (run_dir / "run.json").exists():
        print(f"{name}: already there, not started again")
        return None
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    command = [sys.executable, "-m", "capslab.cli.main", "search", "run", *COMMON, *args,
               "--max-time", str(seconds), "--out", str(run_dir), "--json"]
    log = open(out / f"{name}.log", "w")  # noqa: SIM115 (closed with the process)
    print(f"{name}: {' '.join(command[3:])}", flush=True)
    proc = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=env)
    proc.started = time.time()  # type: ignore[attr-defined]
    proc.log = log  # type: ignore[attr-defined]
    return proc


def run_pairs(out: Path, seeds: list[int], minutes: float) -> None:
    out.mkdir(parents=True, exist_ok=True)
    for seed in seeds:
        procs = {f"{mode}-{seed}": _start(f"{mode}-{seed}", [*extra, "--seed", str(seed)], out,
                                          minutes * 60) for mode, extra in MODES.items()}
        running = {name: proc for name, proc in procs.items() if proc is not None}
        while running:  # each run's wall ends when its own process does
            for name, proc in list(running.items()):
                code = proc.poll()
                if code is None:
                    continue
                proc.log.close()
                wall = time.time() - proc.started
                (out / f"{name}.wall.json").write_text(json.dumps({"wall_seconds": wall, "exit": code}))
                print(f"{name}: exit {code} after {wall:.0f} s", flush=True)
                del running[name]
            time.sleep(1.0)


def _objectives(records) -> np.ndarray:
    return np.array([r.objectives() for r in records], dtype=float).reshape(-1, 4)


def analyse(out: Path) -> list[dict]:
    from pymoo.indicators.hv import HV

    from capslab.nas.report import pareto_front
    from capslab.nas.search import open_journal

    runs = {}
    for run_dir in sorted(p for p in out.iterdir() if (p / "run.json").exists()):
        if not (out / f"{run_dir.name}.wall.json").exists():
            print(f"{run_dir.name}: still running (or not started by this script), left out")
            continue
        journal, _ = open_journal(run_dir)
        with journal:
            records = journal.evaluations()
            rungs = journal.rung_records()
            generations = journal.generations()
            created = journal.run_info()["created_at"]
        wall = json.loads((out / f"{run_dir.name}.wall.json").read_text())["wall_seconds"]
        # seconds from the run's start to each candidate's journaling
        done = [(r.finished_at - created).total_seconds() for r in records]
        runs[run_dir.name] = (records, rungs, generations, wall, done)
    fronts = {name: pareto_front(r[0]) for name, r in runs.items()}
    union = np.vstack([_objectives(f) for f in fronts.values()])
    lo, hi = union.min(axis=0), union.max(axis=0)
    span = np.where(hi > lo, hi - lo, 1.0)
    indicator = HV(ref_point=np.full(4, 1.1))

    def hv(records) -> float:
        front = pareto_front(records)
        return float(indicator((_objectives(front) - lo) / span)) if front else 0.0

    def hv_at(name: str, t: float) -> float:
        records, *_, done = runs[name]
        return hv([r for r, s in zip(records, done, strict=True) if s <= t])

    shortest: dict[str, float] = {}
    for name, run in runs.items():
        seed = name.rsplit("-", 1)[1]
        shortest[seed] = min(shortest.get(seed, run[3]), run[3])
    _plot(runs, hv_at, out / "hypervolume.png")
    rows = []
    for name, (records, rungs, generations, wall, _) in runs.items():
        mode, seed = name.rsplit("-", 1)
        if rungs:
            steps = [int(e) for e in RUNGS.split(",")]
            epochs = sum(steps[r] - (steps[r - 1] if r else 0)
                         for by_rung in rungs.values() for r in by_rung)
        else:
            epochs = EPOCHS * len(records)
        front = fronts[name]
        rows.append({
            "mode": mode, "seed": int(seed), "wall_seconds": wall, "candidates": len(records),
            "evaluations_per_hour": len(records) / wall * 3600, "candidate_epochs": epochs,
            "generations": len(generations), "front": len(front),
            "best_accuracy": max((r.accuracy for r in records if r.ok), default=None),
            "timeouts": sum(r.status == "timeout" for r in records),
            "failed": sum(r.status == "failed" for r in records), "hypervolume": hv(records),
            "common_seconds": shortest[seed], "hypervolume_at_common": hv_at(name, shortest[seed]),
        })
    return rows


def _plot(runs: dict, hv_at, path: Path) -> None:
    from capslab.results import pyplot, save_figure

    plt = pyplot()
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for name, run in sorted(runs.items()):
        mode, seed = name.rsplit("-", 1)
        times = np.linspace(0, run[3], 60)
        ax.plot(times / 60, [hv_at(name, t) for t in times], label=f"{mode}, seed {seed}",
                color="tab:blue" if mode == "rungs" else "tab:orange",
                ls="-" if seed == "0" else "--")
    ax.set_xlabel("wall clock [min]")
    ax.set_ylabel("hypervolume of the front so far")
    ax.grid(alpha=0.3)
    ax.legend()
    save_figure(fig, path)


def markdown(rows: list[dict]) -> str:
    lines = ["| mode | seed | wall | candidates | evaluations / hour | candidate-epochs | "
             "generations | front | best val. accuracy | hypervolume | hypervolume at the "
             "shorter run's end |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(
            f"| {r['mode']} | {r['seed']} | {r['wall_seconds']:.0f} s | {r['candidates']} | "
            f"{r['evaluations_per_hour']:.0f} | {r['candidate_epochs']} | {r['generations']} | "
            f"{r['front']} | {100 * (r['best_accuracy'] or 0):.1f} % | {r['hypervolume']:.4f} | "
            f"{r['hypervolume_at_common']:.4f} ({r['common_seconds']:.0f} s) |")
    for mode in sorted({r["mode"] for r in rows}):
        mine = [r for r in rows if r["mode"] == mode]
        lines.append(
            f"| **{mode}, mean** | | | {np.mean([r['candidates'] for r in mine]):.1f} | "
            f"{np.mean([r['evaluations_per_hour'] for r in mine]):.0f} | "
            f"{np.mean([r['candidate_epochs'] for r in mine]):.0f} | | | | "
            f"**{np.mean([r['hypervolume'] for r in mine]):.4f}** | "
            f"**{np.mean([r['hypervolume_at_common'] for r in mine]):.4f}** |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("runs/fidelity"))
    parser.add_argument("--seeds", default="0,1")
    parser.add_argument("--minutes", type=float, default=28.0,
                        help="--max-time of every search, in minutes")
    parser.add_argument("--analyse", action="store_true", help="only read the runs there")
    args = parser.parse_args()
    if not args.analyse:
        run_pairs(args.out, [int(s) for s in args.seeds.split(",")], args.minutes)
    rows = analyse(args.out)
    table = markdown(rows)
    (args.out / "comparison.json").write_text(json.dumps(rows, indent=2))
    (args.out / "comparison.md").write_text(table + "\n")
    from capslab.device import cpu_name

    print(f"\n{cpu_name()}\n{table}")


if __name__ == "__main__":
    main()
