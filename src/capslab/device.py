"""The device a run computes on and the precision of its forward pass.

``capslab train --device``/``--precision`` and ``capslab bench`` resolve their settings here, so
the trainer, the benchmarks and the evaluation agree on them.
"""

from __future__ import annotations

from contextlib import nullcontext

import torch


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def autocast(device: torch.device, precision: str):
    """The context a forward pass runs in for ``precision``: bf16 autocast, or nothing (fp32)."""
    if precision == "bf16":
        return torch.autocast(device_type=device.type, dtype=torch.bfloat16)
    return nullcontext()
