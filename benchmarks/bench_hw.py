"""Rate of the hardware model: how many genotypes per second ``capslab.hw.estimate`` handles.

    .venv/bin/python benchmarks/bench_hw.py [--n 10000] [--seed 0] [--no-check]

Generates ``n`` random valid genotypes (the search's sampler, ``capslab.nas.space.sample``,
when it is importable; otherwise a small sampler of the same shape below), then times
``estimate`` over all of them on one core. The search calls it once per candidate, so the
target is >= 5,000 genotypes/s.
"""

from __future__ import annotations

import argparse
import random
import time

from rich.console import Console
from rich.table import Table

from capslab.genotype import Genotype, LayerDescriptor, LayerKind, repair, validate
from capslab.hw import CAPSACC, estimate


def _own_sampler(rng: random.Random) -> Genotype:
    """3-6 convolutions, then 2-6 Sabour capsule layers or 4-8 DeepCaps cells (the authors'
    sampler's shape); repaired and validated."""
    resize = rng.choice((1, 2))
    size = rng.choice((28, 32)) * resize
    ch, caps = rng.choice((1, 3)), 1
    layers: list[LayerDescriptor] = []

    def add(kind: LayerKind, k: int, s: int, och: int, ocaps: int) -> None:
        nonlocal size, ch, caps
        out = -(-size // s)
        layers.append(LayerDescriptor(kind, size, ch, caps, min(k, size), s, out, och, ocaps))
        size, ch, caps = out, och, ocaps

    for i in range(rng.randint(3, 6)):
        k, s = (9, 1) if i == 0 else (rng.choice((3, 5, 9)), rng.choice((1, 2)))
        add(LayerKind.CONV, k, s, 2 ** rng.randint(2, 6), 1)
    skip = -1
    if rng.random() < 0.5:
        for _ in range(rng.randint(1, 5)):
            add(LayerKind.CAPS, rng.choice((3, 5, 9)), rng.choice((1, 2)), rng.randint(1, 64),
                rng.randint(1, 64))  # fmt: skip
        add(LayerKind.CAPS, size, 1, 10, 16)
    else:
        for c in range(rng.randint(3, 7)):
            add(LayerKind.CELL, 3, rng.choice((1, 2)), 32, 4 if c == 0 else 8)
        add(LayerKind.CELL, size, 1, 10, 16)
        skip = rng.choice([-1] + [i for i, x in enumerate(layers[:-1]) if x.kind == LayerKind.CELL])
    return validate(repair(Genotype(tuple(layers), skip=skip, resize=resize)))


def make_genotypes(n: int, seed: int) -> tuple[list[Genotype], str]:
    try:
        import numpy as np

        from capslab.nas.space import SearchSpace, sample
    except ImportError:
        rng = random.Random(seed)
        return [_own_sampler(rng) for _ in range(n)], "benchmark's own sampler"
    space = SearchSpace()
    gen = np.random.default_rng(seed)
    return [sample(space, gen) for _ in range(n)], "capslab.nas.space.sample"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=10_000, help="number of genotypes")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--no-check", action="store_true", help="estimate(..., check=False)")
    parser.add_argument("--repeats", type=int, default=3, help="best of this many passes")
    args = parser.parse_args()

    t0 = time.perf_counter()
    genotypes, source = make_genotypes(args.n, args.seed)
    t_gen = time.perf_counter() - t0
    check = not args.no_check
    hw_layers = sum(len(estimate(g, check=False).hardware_layers) for g in genotypes)

    best = float("inf")
    for _ in range(max(1, args.repeats)):
        t0 = time.perf_counter()
        for g in genotypes:
            estimate(g, CAPSACC, check=check)
        best = min(best, time.perf_counter() - t0)

    # The per-layer breakdown is built lazily; time it too (what `capslab hw` shows).
    t0 = time.perf_counter()
    for g in genotypes[: max(1, args.n // 10)]:
        _ = estimate(g, check=check).layers
    t_layers = (time.perf_counter() - t0) / max(1, args.n // 10)

    table = Table(title=f"capslab.hw.estimate on {args.n:,} random valid genotypes")
    for col in ("genotypes", "hw layers (mean)", "validate", "seconds", "genotypes/s",
                "with per-layer breakdown /s"):  # fmt: skip
        table.add_column(col, justify="right")
    table.add_row(
        f"{args.n:,}",
        f"{hw_layers / args.n:.1f}",
        "yes" if check else "no",
        f"{best:.3f}",
        f"{args.n / best:,.0f}",
        f"{1 / t_layers:,.0f}",
    )
    console = Console()
    console.print(table)
    console.print(
        f"[dim]genotypes from {source} ({t_gen:.1f} s to generate); best of {args.repeats} "
        f"passes; one core[/]"
    )


if __name__ == "__main__":
    main()
