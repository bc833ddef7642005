"""The device a run computes on, the precision of its forward pass, and the backend settings
(cuDNN, TF32, determinism) that go with them.

``capslab train --device/--precision/--deterministic``, ``capslab bench`` and the search resolve
their settings here, so the trainer, the benchmarks and the evaluation agree on them.

Nothing here initialises CUDA on a run that does not ask for it: ``torch.cuda.is_available()``
does not create a CUDA context, and a CPU device never touches the CUDA backends.
"""

from __future__ import annotations

import os
import platform
import re
from contextlib import nullcontext
from pathlib import Path

import torch

from capslab.errors import ConfigError

#: device names every command takes
DEVICE_PATTERN = r"auto|cpu|cuda(:\d+)?"
#: cuBLAS is repeatable only with a fixed workspace (NVIDIA's documented setting)
CUBLAS_WORKSPACE = ":4096:8"


def check_device_name(name: str) -> None:
    """Refuse a device name that is not ``auto``, ``cpu``, ``cuda`` or ``cuda:N``."""
    if not re.fullmatch(DEVICE_PATTERN, str(name)):
        raise ConfigError(f"device must be one of auto, cpu, cuda or cuda:N, got {name!r}")


def resolve_device(name: str, check_available: bool = True) -> torch.device:
    """The device ``name`` stands for: ``auto`` is CUDA when present, else the CPU; ``cpu``,
    ``cuda`` or ``cuda:N`` is that device.

    Raises:
        ConfigError: any other name; CUDA (or GPU ``N``) on a machine without it, unless
            ``check_available`` is false.
    """
    check_device_name(name)
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if check_available and device.type == "cuda":
        if not torch.cuda.is_available():
            raise ConfigError(f"device {name!r}: CUDA is not available on this machine")
        count = torch.cuda.device_count()
        if device.index is not None and device.index >= count:
            raise ConfigError(f"device {name!r}: this machine has {count} CUDA device(s)")
    return device


def cpu_name() -> str:
    """The CPU model as the kernel names it (absolute figures mean little without it)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def device_name(device: torch.device | str) -> str:
    """What computes on ``device``: the CPU's model, or the GPU's name (``cuda:N`` names GPU N,
    ``cuda`` the current one)."""
    device = torch.device(device)
    if device.type != "cuda":
        return cpu_name()
    index = device.index if device.index is not None else torch.cuda.current_device()
    return torch.cuda.get_device_name(index)


def check_precision(device: torch.device, precision: str) -> None:
    """Refuse bf16 on a GPU that cannot compute it (before Ampere, bf16 is emulated or absent)."""
    if precision == "bf16" and device.type == "cuda" and not torch.cuda.is_bf16_supported():
        raise ConfigError(
            f"precision bf16: {device_name(device)} does not support bfloat16; use fp32"
        )


def autocast(device: torch.device, precision: str):
    """The context a forward pass runs in for ``precision``: bf16 autocast, or nothing (fp32)."""
    if precision == "bf16":
        return torch.autocast(device_type=device.type, dtype=torch.bfloat16)
    return nullcontext()


def configure_backends(device: torch.device, deterministic: bool = False) -> dict[str, object]:
    """Set the CUDA backends for a run on ``device`` and return what was set (for the run's
    files). The CPU is left alone: its kernels are repeatable already.

    - ``deterministic``: cuDNN's deterministic algorithms without autotuning, TF32 off,
      ``torch.use_deterministic_algorithms(True, warn_only=True)`` and cuBLAS's fixed workspace, so that a
      resumed run equals an uninterrupted one bit for bit. Costs speed (docs/benchmarks.md):
      the fastest convolution algorithms are often nondeterministic.
    - otherwise: cuDNN autotunes its algorithms (a run's shapes are fixed within an epoch) and
      float32 matrix products and convolutions may use TF32 (Ampere and later: 10-bit mantissa
      products, fp32 sums), PyTorch's ``set_float32_matmul_precision("high")``.
    """
    if device.type != "cuda":
        return {}
    if deterministic:
        # must be in the environment before cuBLAS creates its handle
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", CUBLAS_WORKSPACE)
        torch.backends.cudnn.benchmark = False
        torch.backends.cudnn.deterministic = True
        torch.backends.cudnn.allow_tf32 = False
        torch.backends.cuda.matmul.allow_tf32 = False
        # an operation with no deterministic kernel warns (its name) instead of stopping the run
        torch.use_deterministic_algorithms(True, warn_only=True)
    else:
        torch.backends.cudnn.benchmark = True
        torch.backends.cudnn.deterministic = False
        torch.backends.cudnn.allow_tf32 = True
        torch.set_float32_matmul_precision("high")
        torch.use_deterministic_algorithms(False)
    return {
        "deterministic": deterministic,
        "cudnn_benchmark": torch.backends.cudnn.benchmark,
        "tf32": torch.backends.cuda.matmul.allow_tf32,
    }
