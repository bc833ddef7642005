"""The batch-1 training rates of the plain reference and CapsLab, with the rows in one process
and each in a process of its own (`capslab bench --same-process` against `--isolate`).

Runs the two modes alternately, ``--pairs`` times each, and prints every run's rates:

    .venv/bin/python benchmarks/bench_isolation.py [--pairs 2] [--steps 5]
"""

import argparse

import torch

from capslab.bench import default_variants, measure_variants


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pairs", type=int, default=2)
    parser.add_argument("--steps", type=int, default=5)
    args = parser.parse_args()
    variants = default_variants()[:2]  # the reference and CapsLab as `capslab train` runs it
    print("mode          " + "  ".join(f"{v.name:>26}" for v in variants) + "   ratio")
    for _ in range(args.pairs):
        for isolate in (False, True):
            rows, _ = measure_variants(variants, torch.device("cpu"), args.steps, batch_sizes=(1,),
                                       infer_batch_sizes=(), peak_memory=False, isolate=isolate)
            rates = [r.train_images_per_s["1"] for r in rows]
            mode = "isolated     " if isolate else "same process "
            print(mode + " " + "  ".join(f"{x:26.1f}" for x in rates) + f"   {rates[1] / rates[0]:.2f}x",
                  flush=True)


if __name__ == "__main__":
    main()
