"""Multi-fidelity against full-fidelity search: same seeds, same wall clock, hypervolume.

For every seed, two ``capslab search run`` processes start at the same time, one core each
(``OMP_NUM_THREADS=1``, one worker), with the same ``--max-time``: the paper's mode (every
candidate trains ``EPOCHS`` epochs) and successive halving (``--rungs RUNGS --promote 0.5``).
Running the pair side by side gives both the same machine, whatever else it is doing. Then the
script reads the journals and prints one table: candidates journaled, evaluations per hour,
candidate-epochs trained, generations finished, and the hypervolume of each run's front of all
its candidates (pymoo's ``HV``), all four objectives normalised by the bounds of the union of
every run's front and measured against the reference point 1.1 in each.

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
        journal, _ = open_journal(run_dir)
        with journal:
            records = journal.evaluations()
            rungs = journal.rung_records()
            generations = journal.generations()
        wall = json.loads((out / f"{run_dir.name}.wall.json").read_text())["wall_seconds"]
        runs[run_dir.name] = (records, rungs, generations, wall)
    fronts = {name: pareto_front(r[0]) for name, r in runs.items()}
    union = np.vstack([_objectives(f) for f in fronts.values()])
    lo, hi = union.min(axis=0), union.max(axis=0)
    span = np.where(hi > lo, hi - lo, 1.0)
    indicator = HV(ref_point=np.full(4, 1.1))
    rows = []
    for name, (records, rungs, generations, wall) in runs.items():
        mode, seed = name.rsplit("-", 1)
        if rungs:
            steps = [int(e) for e in RUNGS.split(",")]
            epochs = sum(steps[r] - (steps[r - 1] if r else 0)
                         for by_rung in rungs.values() for r in by_rung)
        else:
            epochs = EPOCHS * len(records)
        front = fronts[name]
        hv = float(indicator((_objectives(front) - lo) / span)) if front else 0.0
        rows.append({
            "mode": mode, "seed": int(seed), "wall_seconds": wall, "candidates": len(records),
            "evaluations_per_hour": len(records) / wall * 3600, "candidate_epochs": epochs,
            "generations": len(generations), "front": len(front),
            "best_accuracy": max((r.accuracy for r in records if r.ok), default=None),
            "timeouts": sum(r.status == "timeout" for r in records),
            "failed": sum(r.status == "failed" for r in records), "hypervolume": hv,
        })
    return rows


def markdown(rows: list[dict]) -> str:
    lines = ["| mode | seed | wall | candidates | evaluations / hour | candidate-epochs | "
             "generations | front | best val. accuracy | hypervolume |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(
            f"| {r['mode']} | {r['seed']} | {r['wall_seconds']:.0f} s | {r['candidates']} | "
            f"{r['evaluations_per_hour']:.0f} | {r['candidate_epochs']} | {r['generations']} | "
            f"{r['front']} | {100 * (r['best_accuracy'] or 0):.1f} % | {r['hypervolume']:.4f} |")
    for mode in sorted({r["mode"] for r in rows}):
        mine = [r for r in rows if r["mode"] == mode]
        lines.append(
            f"| **{mode}, mean** | | | {np.mean([r['candidates'] for r in mine]):.1f} | "
            f"{np.mean([r['evaluations_per_hour'] for r in mine]):.0f} | "
            f"{np.mean([r['candidate_epochs'] for r in mine]):.0f} | | | | "
            f"**{np.mean([r['hypervolume'] for r in mine]):.4f}** |")
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
    from capslab.bench import cpu_name

    print(f"\n{cpu_name()}\n{table}")


if __name__ == "__main__":
    main()
