"""The PrimaryCaps convolution as GEMMs against oneDNN's convolution, batch by batch.

Times the MNIST CapsNet's PrimaryCaps convolution (256 -> 256 channels, 9x9, stride 2, 20x20
-> 6x6) alone, forward and backward to its input and weights, and forward without gradients, in
both forms: ``F.conv2d`` (oneDNN) and :func:`capslab.ops.conv2d_as_gemm`. The crossover batch
sizes are ``GEMM_MAX_TRAIN_BATCH`` and ``GEMM_MAX_EVAL_BATCH`` of
:mod:`capslab.layers.primary_caps`. The two forms are timed in alternating rounds of consecutive calls, as ``capslab bench``
times its variants.

    .venv/bin/python benchmarks/primary_caps_gemm.py [--batches 1,2,4,8,12,16] [--steps 5]
"""

from __future__ import annotations

import argparse

import torch
import torch.nn.functional as F

from capslab.bench import block_steps
from capslab.device import cpu_name
from capslab.ops import conv2d_as_gemm
from capslab.profiling import interleaved_median_seconds

CPU = torch.device("cpu")


def _train(conv, x, grad, gemm: bool):
    def step() -> None:
        conv.zero_grad(set_to_none=True)
        x.grad = None
        if gemm:
            y = conv2d_as_gemm(x, conv.weight, conv.bias, conv.stride[0])
        else:
            y = conv(x)
        y.backward(grad)
    return step


def _infer(conv, x, gemm: bool):
    @torch.no_grad()
    def step() -> None:
        if gemm:
            conv2d_as_gemm(x, conv.weight, conv.bias, conv.stride[0])
        else:
            F.conv2d(x, conv.weight, conv.bias, conv.stride)
    return step


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batches", default="1,2,4,8,12,16")
    parser.add_argument("--steps", type=int, default=5)
    args = parser.parse_args()
    torch.manual_seed(0)
    conv = torch.nn.Conv2d(256, 256, 9, stride=2)
    print(f"{cpu_name()}, {torch.get_num_threads()} threads, torch {torch.__version__}")
    print("| batch | oneDNN convolution, ms | GEMMs, ms | inference: convolution, ms | GEMMs, ms |")
    print("|---:|---:|---:|---:|---:|")
    for b in (int(v) for v in args.batches.split(",")):
        x = torch.rand(b, 256, 20, 20, requires_grad=True)
        grad = torch.rand(b, 256, 6, 6)
        fns = [_train(conv, x, grad, False), _train(conv, x, grad, True),
               _infer(conv, x, False), _infer(conv, x, True)]
        seconds = interleaved_median_seconds(fns, args.steps, 2, CPU, block=block_steps(b))
        ms = [1e3 * s for s in seconds]
        print(f"| {b} | " + " | ".join(f"{v:.1f}" for v in ms) + " |")


if __name__ == "__main__":
    main()
