"""The plain eager reference (or CapsLab's CapsNet) alone at batch 1: images/s and page faults
per step.

Alone, with glibc's default malloc, the reference's rate depends on how many of its per-step
temporaries (its for-loop Adam allocates some as large as a parameter: 21 MiB for the
PrimaryCaps weights) are mapped afresh, which differs from process to process. Run it a few
times, and once with ``--capslab`` for CapsLab's model and fused Adam, as ``capslab train``
builds them:

    for i in 1 2 3 4; do .venv/bin/python benchmarks/plain_reference_alone.py; done
    .venv/bin/python benchmarks/plain_reference_alone.py --capslab
"""

import argparse
import resource
import time

import torch

from capslab.bench import capslab_adam, capsnet, naive_adam, plain_capsnet, train_step

STEPS, ROUNDS = 32, 4


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--capslab", action="store_true", help="CapsLab's CapsNet instead")
    args = parser.parse_args()
    torch.manual_seed(0)
    model = capsnet() if args.capslab else plain_capsnet()
    optimizer = (capslab_adam if args.capslab else naive_adam)(model.parameters())
    x, y = torch.rand(1, 1, 28, 28), torch.randint(0, 10, (1,))
    for _ in range(5):
        train_step(model, optimizer, x, y)
    faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    rates = []
    for _ in range(ROUNDS):
        t0 = time.perf_counter()
        for _ in range(STEPS):
            train_step(model, optimizer, x, y)
        rates.append(STEPS / (time.perf_counter() - t0))
    faults = (resource.getrusage(resource.RUSAGE_SELF).ru_minflt - faults) / (STEPS * ROUNDS)
    print("img/s per round:", ", ".join(f"{r:.1f}" for r in rates), f"| page faults per step: {faults:,.2f}")


if __name__ == "__main__":
    main()
