"""The optimisers CapsLab trains with (Adam, SGD, Ranger21), each with its multi-tensor step."""

from __future__ import annotations

from collections.abc import Iterable

import torch
from torch import nn

#: where PyTorch has fused Adam and SGD kernels
FUSED_DEVICES = ("cpu", "cuda")


def create_optimizer(name: str, params: Iterable[nn.Parameter], lr: float,
                     weight_decay: float = 0.0, total_steps: int = 1):
    """The optimiser ``name`` (``adam``, ``sgd`` or ``ranger21``) with its multi-tensor step.

    Adam and SGD run fused (one kernel over every parameter) and Ranger21 with ``foreach``:
    at batch 1 an unfused Adam step costs as much as the forward and backward passes together
    on the CPU (docs/benchmarks.md). The maths is the optimiser's own. On a device without
    fused kernels (``meta``, which the tests use as a GPU stand-in) they run ``foreach``.
    """
    params = list(params)
    fused = all(p.device.type in FUSED_DEVICES for p in params)
    step = {"fused": True} if fused else {"foreach": True}
    if name == "adam":
        return torch.optim.Adam(params, lr=lr, weight_decay=weight_decay, **step)
    if name == "sgd":
        return torch.optim.SGD(params, lr=lr, momentum=0.9, weight_decay=weight_decay, **step)
    from pytorch_optimizer import Ranger21  # imported on use: it loads slowly and few runs need it

    # Ranger21 plans its warm-up and warm-down over the total number of optimiser steps
    # (epochs x batches per epoch), not the batch size.
    return Ranger21(params, num_iterations=total_steps, lr=lr, weight_decay=weight_decay,
                    foreach=True)
