"""Training speed of typical candidates of a search-space preset, on this machine.

    .venv/bin/python benchmarks/space_speed.py [--preset efficient] [--samples 12] [--seed 0]

Samples candidates of the preset for MNIST (the search's own sampler), measures each one's
training images/s at batch 64 (the model and optimiser ``capslab train`` builds, decoder
included, 3 timed steps after 1 warm-up; a candidate whose first step takes over
``--slow`` seconds is timed on that one step and flagged) and its parameters and CapsAcc
figures, and writes
``benchmarks/results/space_speed_<preset>.json``. docs/nas.md quotes the median candidate.
"""

import argparse
import json
import statistics
import time
from pathlib import Path

import numpy as np
import torch

from capslab.device import cpu_name
from capslab.hw import estimate
from capslab.io import atomic_write_text
from capslab.losses import capsule_loss
from capslab.models import create_model
from capslab.nas.space import SearchSpace, sample
from capslab.optim import create_optimizer
from capslab.train.estimate import measure_rates
from capslab.training_cost import genotype_training_cost

parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
parser.add_argument("--preset", default="efficient")
parser.add_argument("--samples", type=int, default=12)
parser.add_argument("--seed", type=int, default=0)
parser.add_argument("--batch-size", type=int, default=64)
parser.add_argument("--slow", type=float, default=10.0)
args = parser.parse_args()
torch.set_num_threads(torch.get_num_threads())

space = SearchSpace.for_dataset("mnist", preset=args.preset)
rng = np.random.default_rng(args.seed)
rows = []
for i in range(args.samples):
    g = sample(space, rng)
    options = {"genotype": g.exchange()}
    params = sum(p.numel() for p in create_model("genotype", **options).parameters())
    encoder = sum(p.numel() for p in create_model("genotype", decoder=False, **options).parameters())
    model = create_model("genotype", **options)
    optimizer = create_optimizer("adam", model.parameters(), 1e-3)
    x = torch.rand(args.batch_size, *model.image_shape)
    y = torch.randint(0, 10, (args.batch_size,))
    start = time.perf_counter()
    out = model(x, y)
    loss = capsule_loss(out.lengths, y, out.reconstruction, x)[0]
    optimizer.zero_grad()
    loss.backward()
    optimizer.step()
    first_step = time.perf_counter() - start
    del model, optimizer, out, loss
    if first_step > args.slow:  # a giant: one step is the measurement
        rates, infer = {args.batch_size: args.batch_size / first_step}, None
    else:
        rates, infer = measure_rates([args.batch_size], "genotype", options)
    hw = estimate(g)
    cost = genotype_training_cost(g)
    row = {"network": g.describe(), "genotype": g.exchange(), "parameters": params, "parameters_without_decoder": encoder,
           "train_images_per_s": rates[args.batch_size], "infer_images_per_s": infer,
           "timed_on_one_step": first_step > args.slow,
           "memory_KiB": hw.memory_KiB, "energy_mJ": hw.energy_mJ, "latency_ms": hw.latency_ms,
           "train_activation_KiB": cost.activation_KiB, "train_GFLOP": cost.train_flops / 1e9}
    rows.append(row)
    print(f"{i:2d} {row['train_images_per_s']:8.0f} img/s {encoder:9,d} params (no decoder)  "
          f"{g.describe()}",
          flush=True)

rates = [r["train_images_per_s"] for r in rows]
median = sorted(rows, key=lambda r: r["train_images_per_s"])[len(rows) // 2]
summary = {
    "preset": args.preset, "seed": args.seed, "samples": args.samples,
    "batch_size": args.batch_size, "cpu": cpu_name(), "threads": torch.get_num_threads(),
    "train_images_per_s": {"median": statistics.median(rates), "min": min(rates),
                           "max": max(rates)},
    "parameters_median": statistics.median(r["parameters"] for r in rows),
    "parameters_without_decoder_median": statistics.median(
        r["parameters_without_decoder"] for r in rows),
    "median_candidate": median, "candidates": rows,
}
out = Path(__file__).parent / "results" / f"space_speed_{args.preset}.json"
atomic_write_text(out, json.dumps(summary, indent=2) + "\n")
print(f"median {summary['train_images_per_s']['median']:.0f} img/s "
      f"(min {min(rates):.0f}, max {max(rates):.0f}); written {out}")
