"""Memory and time of a training step against depth: CapsNet, ResCapsNet, MoCapsNet.

    .venv/bin/python benchmarks/bench_memory.py [--blocks 1-8] [--batch-size 128] [--device auto]
        [--routing rba] [--out runs/memory] [--quick]

The same measurement as ``capslab memory`` (shared code in ``capslab.memory``); prints the
table and checks the paper's claim on the per-block slopes: MoCapsNet's saved activations do
not grow with depth, its peak memory grows slower than ResCapsNet's, and its training step
costs at most twice ResCapsNet's. ``--quick`` uses a tiny network (seconds on a CPU).
"""

from __future__ import annotations

import argparse

from rich.console import Console

from capslab.cli.options import parse_int_list
from capslab.memory import MemoryConfig, render_table, run_memory_study, write_report

QUICK = dict(conv_channels=4, primary_types=2, block_dim=2, class_dim=4, decoder=False)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--blocks", default="1-8")
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--routing", default="rba")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--out", default="runs/memory")
    parser.add_argument("--quick", action="store_true", help="tiny network, 1x20x20 images")
    args = parser.parse_args()
    config = MemoryConfig(
        blocks=parse_int_list(args.blocks, "blocks"), batch_size=args.batch_size, routing=args.routing,
        device=args.device, steps=args.steps,
        dataset_shape=(1, 20, 20) if args.quick else (1, 28, 28),
        model_options=QUICK if args.quick else {},
    )
    console = Console()
    with console.status("measuring ..."):
        report = run_memory_study(config, lambda m: console.log(
            f"{m.model} {m.blocks or '-'}: {m.peak_mib:.1f} MiB, {m.train_seconds:.3f} s/step"))
    console.print(render_table(report))
    paths = write_report(report, args.out)
    console.print("written: " + ", ".join(str(p) for p in paths.values()))
    cmp = report.comparison()
    if cmp is not None:
        fits = report.fits()
        flat = fits["mocapsnet"]["activation_bytes"]["slope"] <= 1.0
        console.print(
            f"saved activations flat for mocapsnet: {'yes' if flat else 'NO'}; "
            f"peak slope ratio rescapsnet/mocapsnet {cmp['peak_slope_ratio']:.3g}x "
            f"(paper: ~48x); time ratio mean {cmp['mean_train_time_ratio']:.2f}x, "
            f"max {cmp['max_train_time_ratio']:.2f}x (target <= 2x)"
        )


if __name__ == "__main__":
    main()
