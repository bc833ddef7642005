"""Training and inference throughput of CapsNet variants, measured side by side in one process.

Every variant is trained with its own optimiser at batch 1, 16 and 128 (FasTrCaps' WarmAdaBatch
starts at batch 1, the usual runs use 128) and run for inference at the same batch sizes. The
plain eager reference (``benchmarks/plain_capsnet.py`` in a checkout, with PyTorch's default
Adam) is the baseline of the speed-up ratios. Beside the variants stands the conv-bound
ceiling of the machine: the PrimaryCaps convolution alone, forward and backward at batch 128,
in the faster of the two memory formats. A CapsNet cannot train faster than that without
computing that convolution with fewer operations. Time and peak memory are measured with
:mod:`capslab.profiling`, as ``capslab memory`` measures them. The results are written as
``bench.json``, a versioned ``capslab-bench`` document.
"""

from __future__ import annotations

import functools
import importlib.util
import os
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from capslab.allocator import keep_freed_memory_for, keeps_freed_memory
from capslab.experiments import write_json
from capslab.losses import capsule_loss
from capslab.models import create_model
from capslab.profiling import (
    interleaved_median_seconds,
    measurement_device,
    training_step_peak_bytes,
)
from capslab.train.loop import autocast, create_optimizer

REFERENCE_FILE = Path(__file__).resolve().parents[2] / "benchmarks" / "plain_capsnet.py"
#: ``bench.json`` is a ``capslab-bench`` document (:func:`capslab.experiments.write_json`)
REPORT_KIND = "bench"
#: the batch sizes of every row: WarmAdaBatch's first phase, a small batch, the usual batch
BATCH_SIZES = (1, 16, 128)
#: the ceiling and the peak memory are measured at this batch size
LARGE_BATCH = 128
#: images per timed block at least: a small batch is timed over consecutive steps, as a
#: training loop runs them, and over a similar span of time as a large one
MIN_TIMED_IMAGES = 32


def naive_adam(params: Iterable[nn.Parameter]) -> torch.optim.Optimizer:
    """PyTorch's default Adam (a Python loop over the parameters): what plain code uses."""
    return torch.optim.Adam(params, lr=1e-3)


def capslab_adam(params: Iterable[nn.Parameter]) -> torch.optim.Optimizer:
    """The Adam that ``capslab train`` builds (:func:`capslab.train.loop.create_optimizer`)."""
    return create_optimizer("adam", params, lr=1e-3)


@dataclass
class Variant:
    """One implementation of the CapsNet: its model, memory format and optimiser."""

    name: str
    factory: Callable[[], nn.Module]
    channels_last: bool = False
    optimizer: Callable[[Iterable[nn.Parameter]], torch.optim.Optimizer] = capslab_adam
    #: "fp32", or "bf16" for the forward pass under bf16 autocast (``capslab train --precision``)
    precision: str = "fp32"


@dataclass
class BenchResult:
    """Images/s of one variant on one device, by batch size (keys are the batch sizes as
    strings, as in ``bench.json``); ``speedup`` is training images/s over the reference's at
    the same batch size, ``of_ceiling`` training images/s at batch 128 over the ceiling's."""

    variant: str
    device: str
    train_images_per_s: dict[str, float]
    infer_images_per_s: dict[str, float]
    peak_train_memory_MiB: float
    speedup: dict[str, float] = field(default_factory=dict)
    of_ceiling: float | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class Ceiling:
    """The PrimaryCaps convolution alone (forward and backward at batch 128) on ``device``."""

    device: str
    images_per_s: float
    memory_format: str

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def load_plain_reference(path: Path = REFERENCE_FILE) -> Callable[[], nn.Module] | None:
    """The plain eager CapsNet kept in ``benchmarks/`` (None outside a source checkout)."""
    if not path.is_file():
        return None
    spec = importlib.util.spec_from_file_location("capslab_plain_capsnet", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)  # type: ignore[union-attr]
    return module.PlainCapsNet


def bench_devices(name: str) -> list[torch.device]:
    """The devices ``name`` stands for: ``auto`` is the CPU and, when present, the GPU;
    ``cpu``, ``cuda`` or ``cuda:N`` is that one device."""
    if name == "auto":
        return [torch.device("cpu")] + ([torch.device("cuda")] if torch.cuda.is_available() else [])
    return [measurement_device(name)]


def default_variants(include_plain: bool = True, compile_: bool = False, bf16: bool = False) -> list[Variant]:
    """The reference first (when this is a checkout), then CapsLab as ``capslab train`` runs it,
    in channels-last, compiled (``compile_``) and under bf16 autocast (``bf16``)."""
    variants = []
    plain = load_plain_reference() if include_plain else None
    if plain is not None:
        variants.append(Variant("plain eager (benchmarks/)", plain, optimizer=naive_adam))
    variants.append(Variant("capslab", lambda: create_model("capsnet")))
    variants.append(Variant("capslab channels-last", lambda: create_model("capsnet"), channels_last=True))
    if compile_:
        variants.append(Variant("capslab compiled", lambda: torch.compile(create_model("capsnet"))))
    if bf16:
        variants.append(Variant("capslab bf16 autocast", lambda: create_model("capsnet"), precision="bf16"))
    return variants


def block_steps(batch_size: int) -> int:
    """Consecutive steps timed as one sample at ``batch_size``: ``MIN_TIMED_IMAGES`` images at
    least (32 steps at batch 1, 2 at batch 16, 1 at batch 128)."""
    return -(-MIN_TIMED_IMAGES // batch_size)


def train_step(model: nn.Module, optimizer, x, y, precision: str = "fp32") -> None:
    """One training step as every row of the benchmark takes it: forward (under ``precision``),
    capsule loss, backward, optimiser step."""
    with autocast(x.device, precision):
        _, lengths, recon = model(x, y)  # a CapsuleOutput or the plain model's tuple
    loss, _, _ = capsule_loss(lengths.float(), y, None if recon is None else recon.float(), x)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()


def _conv_step(conv: nn.Conv2d, x, grad) -> None:
    conv.zero_grad(set_to_none=True)
    x.grad = None
    conv(x).backward(grad)


@dataclass
class _Built:
    """A variant's model, optimiser and memory format on one device."""

    variant: Variant
    model: nn.Module
    optimizer: torch.optim.Optimizer
    fmt: torch.memory_format

    def batch(self, b: int, image_shape: tuple[int, int, int], device: torch.device):
        x = torch.rand(b, *image_shape, device=device).contiguous(memory_format=self.fmt)
        return x, torch.randint(0, 10, (b,), device=device)


def _ceiling_steps(device: torch.device, batch_size: int) -> list[tuple[str, Callable[[], None]]]:
    """The PrimaryCaps convolution of the MNIST CapsNet (256 -> 256 channels, 9x9, stride 2,
    20x20 -> 6x6) alone, forward and backward to its input and weights, in both formats."""
    steps = []
    for fmt, name in ((torch.contiguous_format, "contiguous"), (torch.channels_last, "channels-last")):
        torch.manual_seed(0)
        conv = nn.Conv2d(256, 256, 9, stride=2).to(device, memory_format=fmt)
        x = torch.rand(batch_size, 256, 20, 20, device=device).contiguous(memory_format=fmt)
        x.requires_grad_(True)
        grad = torch.rand(batch_size, 256, 6, 6, device=device).contiguous(memory_format=fmt)
        steps.append((name, functools.partial(_conv_step, conv, x, grad)))
    return steps


def measure_variants(
    variants: list[Variant],
    device: torch.device,
    steps: int = 3,
    warmup: int = 1,
    image_shape: tuple[int, int, int] = (1, 28, 28),
    seed: int = 0,
    batch_sizes: tuple[int, ...] = BATCH_SIZES,
    infer_batch_sizes: tuple[int, ...] | None = None,
    peak_memory: bool = True,
    ceiling_batch: int | None = None,
) -> tuple[list[BenchResult], Ceiling | None]:
    """Training images/s of every variant at every batch size, inference images/s at every
    ``infer_batch_sizes`` (default: the same), the peak memory of a training step at the
    largest batch size (``nan`` without ``peak_memory``) and, with ``ceiling_batch``, the
    conv-bound ceiling at that batch size (the faster of the two memory formats).

    The variants (and the ceiling) are timed in alternating rounds
    (:func:`capslab.profiling.interleaved_median_seconds`), one batch size at a time, smallest
    first. On the CPU, malloc keeps freed memory from the first batch size that ``capslab
    train`` turns it on at (:func:`capslab.allocator.keep_freed_memory_for`) and for every
    measurement after it.
    """
    built = []
    for v in variants:
        torch.manual_seed(seed)
        fmt = torch.channels_last if v.channels_last else torch.contiguous_format
        model = v.factory().to(device, memory_format=fmt)
        built.append(_Built(v, model, v.optimizer(model.parameters()), fmt))
    train: list[dict[str, float]] = [{} for _ in built]
    infer: list[dict[str, float]] = [{} for _ in built]
    ceiling = None
    for m in built:
        m.model.train()
    for b in sorted(batch_sizes):
        keep_freed_memory_for(device, b)
        fns = [functools.partial(train_step, m.model, m.optimizer, *m.batch(b, image_shape, device),
                                 m.variant.precision) for m in built]
        extra = _ceiling_steps(device, b) if b == ceiling_batch else []
        seconds = interleaved_median_seconds(fns + [f for _, f in extra], steps, max(1, warmup),
                                             device, block=block_steps(b))
        for i in range(len(built)):
            train[i][str(b)] = b / seconds[i]
        for (name, _), sec in zip(extra, seconds[len(built):], strict=True):
            if ceiling is None or b / sec > ceiling.images_per_s:
                ceiling = Ceiling(str(device), b / sec, name)
    peaks = [float("nan")] * len(built)
    if peak_memory:
        for i, m in enumerate(built):
            x, y = m.batch(max(batch_sizes), image_shape, device)
            step = functools.partial(train_step, m.model, m.optimizer, x, y, m.variant.precision)
            peaks[i] = training_step_peak_bytes(step, m.model, m.optimizer, (x, y), device) / 2**20
    for m in built:
        m.model.eval()
    for b in batch_sizes if infer_batch_sizes is None else infer_batch_sizes:
        fns = [functools.partial(_infer, m.model, m.batch(b, image_shape, device)[0], m.variant.precision)
               for m in built]
        seconds = interleaved_median_seconds(fns, steps, warmup, device, block=block_steps(b))
        for i in range(len(built)):
            infer[i][str(b)] = b / seconds[i]
    results = [BenchResult(m.variant.name, str(device), train[i], infer[i], peaks[i])
               for i, m in enumerate(built)]
    return results, ceiling


@torch.inference_mode()
def _infer(model: nn.Module, x, precision: str = "fp32") -> None:
    with autocast(x.device, precision):
        model(x)


def measure_variant(variant: Variant, device: torch.device, steps: int = 3, warmup: int = 1,
                    image_shape: tuple[int, int, int] = (1, 28, 28), **kwargs) -> BenchResult:
    """:func:`measure_variants` for one variant."""
    return measure_variants([variant], device, steps, warmup, image_shape, **kwargs)[0][0]


def run_benchmark(
    devices: list[torch.device],
    variants: list[Variant] | None = None,
    steps: int = 3,
    warmup: int = 1,
    progress: Callable[[str], None] | None = None,
    on_result: Callable[[Any], None] | None = None,
    ceiling: bool = True,
) -> tuple[list[BenchResult], list[Ceiling]]:
    """Measure every variant (and the ceiling) on every device, interleaved. Speed-ups are
    relative to the first variant (the plain reference) on the same device at the same batch
    size. ``progress`` is called with "<device>" before each device's measurement,
    ``on_result`` with every result after."""
    variants = variants if variants is not None else default_variants()
    results, ceilings = [], []
    for device in devices:
        if progress:
            progress(f"{len(variants)} variants{' and the ceiling' if ceiling else ''} on {device}")
        rows, top = measure_variants(variants, device, steps, warmup,
                                     ceiling_batch=LARGE_BATCH if ceiling else None)
        base = rows[0]
        for r in rows:
            r.speedup = {b: r.train_images_per_s[b] / base.train_images_per_s[b]
                         for b in r.train_images_per_s}
            if top is not None:
                r.of_ceiling = r.train_images_per_s[str(LARGE_BATCH)] / top.images_per_s
        if top is not None:
            ceilings.append(top)
            if on_result:
                on_result(top)
        for r in rows:
            results.append(r)
            if on_result:
                on_result(r)
    return results, ceilings


def write_results(results: list[BenchResult], out_dir: str | os.PathLike,
                  ceilings: list[Ceiling] = ()) -> Path:
    """Write ``bench.json`` into ``out_dir``: a versioned ``capslab-bench`` document with the
    torch version, the CPU, its threads, the ceilings and every result. Returns its path."""
    payload = {
        "torch": torch.__version__,
        "cpu": cpu_name(),
        "threads": torch.get_num_threads(),
        # whether malloc kept freed memory for the CPU rows from batch KEEP_FREED_MIN_BATCH on
        # (capslab.allocator); false: CAPSLAB_MALLOC=system, or not glibc
        "malloc_keeps_freed_memory": keeps_freed_memory(),
        "batch_sizes": list(BATCH_SIZES),
        "ceilings": [c.to_dict() for c in ceilings],
        "results": [r.to_dict() for r in results],
    }
    return write_json(Path(out_dir) / "bench.json", REPORT_KIND, payload)


def cpu_name() -> str:
    """The CPU model as the kernel names it (absolute figures mean little without it)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    import platform

    return platform.processor() or platform.machine()
