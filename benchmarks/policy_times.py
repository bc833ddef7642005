"""FasTrCaps' training time of the six policies on this machine, from measured throughput.

The paper's metric is "epochs to the best accuracy x seconds per epoch". This script measures
training images/s of the MNIST CapsNet once at every batch size the six policies use (in one
run, so the ratios are comparable), then estimates, per policy, the seconds up to the epoch at
which the paper reports the best accuracy and the whole 30-epoch run on all 60,000 images.

    .venv/bin/python benchmarks/policy_times.py [--device cpu] [--steps 3]

Same numbers, one policy at a time: ``capslab schedule --policy P --epochs 30 --train-size 60000
--estimate``.
"""

from __future__ import annotations

import argparse

from capslab.cli.schedule import hms
from capslab.data import dataset_info
from capslab.device import cpu_name
from capslab.train.estimate import estimate_epochs, measure_rates
from capslab.train.policies import build_schedule

EPOCHS, TRAIN_SIZE, TEST_SIZE = 30, 60_000, 10_000
#: the paper's epochs to the best accuracy (MNIST, 30 epochs, mean of 5 runs; FasTrCaps Table)
PAPER_EPOCHS_TO_BEST = {
    "fixed": 29, "exp-decay": 12, "one-cycle": 24, "warm-restarts": 11,
    "adabatch": 8, "warm-adabatch": 3,
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--steps", type=int, default=3)
    args = parser.parse_args()
    schedules = {p: build_schedule(p, EPOCHS, TRAIN_SIZE) for p in PAPER_EPOCHS_TO_BEST}
    sizes = sorted({s.batch_size(e) for s in schedules.values() for e in range(EPOCHS)})
    options = dataset_info("mnist").model_options()
    rates, eval_rate = measure_rates(sizes, "capsnet", options, device=args.device,
                                     steps=args.steps)
    print(f"{cpu_name()} ({args.device}); training img/s "
          + ", ".join(f"b{b}: {r:.1f}" for b, r in sorted(rates.items()))
          + f"; evaluation {eval_rate:.1f} img/s\n")
    print("| policy | batch sizes | paper's epochs to best | training time to that epoch | "
          "x fixed | whole 30-epoch run, with evaluation |")
    print("|---|---|---:|---:|---:|---:|")
    base = None
    for policy, sched in schedules.items():
        rows = estimate_epochs(sched, rates, eval_rate, TEST_SIZE)
        # the paper's training time: training seconds only, up to the best epoch
        to_best = sum(r["train_seconds"] for r in rows[: PAPER_EPOCHS_TO_BEST[policy]])
        base = base or to_best
        batches = "/".join(str(b) for b in dict.fromkeys(r["batch_size"] for r in rows))
        print(f"| {policy} | {batches} | {PAPER_EPOCHS_TO_BEST[policy]} | {hms(to_best)} | "
              f"{to_best / base:.2f} | {hms(rows[-1]['elapsed_seconds'])} |")


if __name__ == "__main__":
    main()
