"""ClassCaps forward and backward (CapsNet's 1,152 x 8-D inputs, 10 x 16-D outputs, three
routing iterations) by both routes to routing-by-agreement: the prediction vectors
(`capslab.routing.dynamic_routing`) and the poses (`dynamic_routing_from_poses`), at several
batch sizes, timed in alternating blocks. `ClassCaps` switches at `FROM_POSES_MIN_BATCH`.

    .venv/bin/python benchmarks/routing_crossover.py [--batches 1,2,4,8,16,128] [--rounds 14]
"""

import argparse
import statistics
import time

import torch

from capslab.allocator import keep_freed_memory
from capslab.layers import ClassCaps, class_caps


def run(layer: ClassCaps, u: torch.Tensor, grad: torch.Tensor, threshold: int) -> None:
    """One forward and backward, by the route that ``threshold`` (FROM_POSES_MIN_BATCH) picks."""
    class_caps.FROM_POSES_MIN_BATCH = threshold
    u.grad = None
    layer.zero_grad(set_to_none=True)
    layer(u).backward(grad)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batches", default="1,2,4,8,16,128")
    parser.add_argument("--rounds", type=int, default=14)
    args = parser.parse_args()
    keep_freed_memory()  # as `capslab train` from batch 2
    torch.manual_seed(0)
    layer = ClassCaps(1152, 8, 10, 16)
    routes = {"from the poses": 1, "prediction vectors": 2**31}  # FROM_POSES_MIN_BATCH for each
    print(f"ms per forward and backward (FROM_POSES_MIN_BATCH = {class_caps.FROM_POSES_MIN_BATCH})")
    print(f"{'batch':>6} " + " ".join(f"{name:>20}" for name in routes))
    for b in (int(x) for x in args.batches.split(",")):
        u = torch.randn(b, 1152, 8, requires_grad=True)
        grad = torch.randn(b, 10, 16)
        calls = max(1, 32 // b)
        samples = {name: [] for name in routes}

        for r in range(args.rounds):
            for name in (list(routes) if r % 2 == 0 else list(routes)[::-1]):
                run(layer, u, grad, routes[name])
                t0 = time.perf_counter()
                for _ in range(calls):
                    run(layer, u, grad, routes[name])
                samples[name].append((time.perf_counter() - t0) / calls * 1e3)
        print(f"{b:>6} " + " ".join(f"{statistics.median(samples[n]):>20.2f}" for n in routes), flush=True)


if __name__ == "__main__":
    main()
