"""Training throughput of one process against ``--nproc`` data-parallel processes on this machine.

Trains a small MNIST CapsNet as ``capslab train`` does, with the same global batch, on the same
images, in three ways: one process with every thread, one process with one thread per process
of the parallel run, and ``--nproc`` processes (gloo on the CPU) sharing the threads. The
figure is the training images/s of the last epoch (``images_per_second`` of ``metrics.jsonl``:
the optimiser steps only, without the processes' start, the data loading or the evaluation),
the best of ``--repeats`` runs of each, measured in turns (so that other load on the machine
falls on all three alike).

    CAPSLAB_DATA=../shared/datasets .venv/bin/python benchmarks/data_parallel.py \\
        [--nproc 2] [--images 6400] [--epochs 2] [--repeats 2] [--batch-size 64] [--conv-channels 64]

Prints a Markdown table and writes ``benchmarks/results/data_parallel.json``; docs/benchmarks.md
quotes it.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import torch

from capslab.device import cpu_name
from capslab.results import write_json
from capslab.train import TrainConfig, train


def measure(config: TrainConfig, processes: int, threads: int) -> dict:
    """One run of ``config`` in ``processes`` processes of ``threads`` threads each."""
    torch.set_num_threads(threads * processes)  # spawn gives each process its share
    summary = train(config.replace(nproc=processes), progress=False)
    history = summary["history"]
    return {"images_per_second": history[-1]["images_per_second"],
            "epoch_images_per_second": [h["images_per_second"] for h in history],
            "train_loss": history[-1]["train_loss"], "wall_seconds": summary["wall_seconds"]}


def measure_in_turns(config: TrainConfig, ways: list[tuple[int, int]], repeats: int) -> list[dict]:
    """The best of ``repeats`` runs of each ``(processes, threads each)``, one of each in turn."""
    runs: dict[tuple[int, int], list[dict]] = {way: [] for way in ways}
    for _ in range(repeats):
        for way in ways:
            runs[way].append(measure(config, *way))
    return [{"processes": p, "threads_per_process": t,
             "images_per_second": max(r["images_per_second"] for r in runs[(p, t)]),
             "runs": runs[(p, t)]} for p, t in ways]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--nproc", type=int, default=2)
    parser.add_argument("--images", type=int, default=6400, help="training images per epoch")
    parser.add_argument("--epochs", type=int, default=2, help="the last one is reported")
    parser.add_argument("--repeats", type=int, default=2, help="runs of each way; the best counts")
    parser.add_argument("--batch-size", type=int, default=64, help="the global batch")
    parser.add_argument("--conv-channels", type=int, default=64)
    parser.add_argument("--primary-types", type=int, default=8)
    args = parser.parse_args()
    cores = len(os.sched_getaffinity(0))
    per_process = max(1, cores // args.nproc)
    config = TrainConfig(
        model="capsnet", model_options={"conv_channels": args.conv_channels,
                                        "primary_types": args.primary_types},
        epochs=args.epochs, batch_size=args.batch_size, subset=args.images, test_subset=100,
        seed=0, device="cpu", checkpoints=False, plots=False)
    ways = [(1, per_process * args.nproc), (1, per_process), (args.nproc, per_process)]
    load_before = os.getloadavg()  # other work on the machine, 1/5/15-minute averages
    rows = measure_in_turns(config, ways, args.repeats)
    base = rows[0]["images_per_second"]
    print(f"{cpu_name()}, {cores} cores; CapsNet conv_channels {args.conv_channels}, primary_types "
          f"{args.primary_types}; global batch {args.batch_size}, {args.images} images per epoch, "
          f"epoch {args.epochs} of {args.epochs}, best of {args.repeats}\n")
    print("| processes | threads each | training img/s | x one process |")
    print("|---:|---:|---:|---:|")
    for r in rows:
        print(f"| {r['processes']} | {r['threads_per_process']} | {r['images_per_second']:.0f} | "
              f"{r['images_per_second'] / base:.2f} |")
    result = {"cpu": cpu_name(), "cores": cores, "torch": torch.__version__,
              "model_options": config.model_options, "batch_size": args.batch_size,
              "images": args.images, "epochs": args.epochs, "repeats": args.repeats,
              "load_average": {"before": load_before, "after": os.getloadavg()}, "rows": rows,
              "command": " ".join(["benchmarks/data_parallel.py", *sys.argv[1:]])}
    out = Path(__file__).parent / "results" / "data_parallel.json"
    write_json(out, "bench-data-parallel", result)
    print(f"\nwritten: {out}")


if __name__ == "__main__":
    main()
