"""Training and inference throughput of CapsNet variants, measured side by side in one process.

Each variant is a ``(name, model factory, channels_last)`` triple; the plain eager reference
(``benchmarks/plain_capsnet.py`` in a checkout) is the baseline the speed-up ratio is taken
against. The maths is identical in all variants; only the implementation differs. Time and
peak memory are measured with :mod:`capslab.profiling`, as ``capslab memory`` measures them.
The results are written as ``bench.json``, a versioned ``capslab-bench`` document.
"""

from __future__ import annotations

import functools
import importlib.util
import os
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from capslab.experiments import write_json
from capslab.losses import capsule_loss
from capslab.models import create_model
from capslab.profiling import measurement_device, median_seconds, training_step_peak_bytes

REFERENCE_FILE = Path(__file__).resolve().parents[2] / "benchmarks" / "plain_capsnet.py"
#: ``bench.json`` is a ``capslab-bench`` document (:func:`capslab.experiments.write_json`)
REPORT_KIND = "bench"


@dataclass
class BenchResult:
    variant: str
    device: str
    train_images_per_s_b16: float
    train_images_per_s_b128: float
    infer_images_per_s_b128: float
    peak_train_memory_MiB: float
    speedup_vs_plain: float | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class Variant:
    name: str
    factory: Callable[[], nn.Module]
    channels_last: bool = False


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


def default_variants(include_plain: bool = True, compile_: bool = False) -> list[Variant]:
    variants = []
    plain = load_plain_reference() if include_plain else None
    if plain is not None:
        variants.append(Variant("plain eager (benchmarks/)", plain))
    variants.append(Variant("capslab eager", lambda: create_model("capsnet")))
    variants.append(Variant("capslab channels-last", lambda: create_model("capsnet"), channels_last=True))
    if compile_:
        variants.append(Variant("capslab compiled", lambda: torch.compile(create_model("capsnet"))))
    return variants


def _train_step(model: nn.Module, optimizer, x, y) -> None:
    _, lengths, recon = model(x, y)  # a CapsuleOutput or the plain model's tuple
    loss, _, _ = capsule_loss(lengths, y, recon, x)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()


def measure_variant(
    variant: Variant,
    device: torch.device,
    steps: int = 3,
    warmup: int = 1,
    image_shape: tuple[int, int, int] = (1, 28, 28),
    seed: int = 0,
) -> BenchResult:
    torch.manual_seed(seed)
    fmt = torch.channels_last if variant.channels_last else torch.contiguous_format
    model = variant.factory().to(device, memory_format=fmt)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)

    rates = {}
    model.train()
    for b in (16, 128):
        x = torch.rand(b, *image_shape, device=device).contiguous(memory_format=fmt)
        y = torch.randint(0, 10, (b,), device=device)
        step = functools.partial(_train_step, model, optimizer, x, y)
        rates[b] = b / median_seconds(step, steps, max(1, warmup), device)
    peak = training_step_peak_bytes(step, model, optimizer, (x, y), device)  # batch 128
    model.eval()

    def infer() -> None:
        with torch.no_grad():
            model(x)

    infer_rate = 128 / median_seconds(infer, steps, warmup, device)
    return BenchResult(variant.name, str(device), rates[16], rates[128], infer_rate, peak / 2**20)


def run_benchmark(
    devices: list[torch.device],
    variants: list[Variant] | None = None,
    steps: int = 3,
    warmup: int = 1,
    progress: Callable[[str], None] | None = None,
    on_result: Callable[[BenchResult], None] | None = None,
) -> list[BenchResult]:
    """Measure every variant on every device; speed-ups are relative to the first variant
    (the plain reference) on the same device, at batch 128. ``progress`` is called with
    "<variant> on <device>" before each measurement, ``on_result`` with its result after."""
    variants = variants if variants is not None else default_variants()
    results = []
    for device in devices:
        base = None
        for v in variants:
            if progress:
                progress(f"{v.name} on {device}")
            r = measure_variant(v, device, steps, warmup)
            if base is None:
                base = r.train_images_per_s_b128
            r.speedup_vs_plain = r.train_images_per_s_b128 / base
            results.append(r)
            if on_result:
                on_result(r)
    return results


def write_results(results: list[BenchResult], out_dir: str | os.PathLike) -> Path:
    """Write ``bench.json`` into ``out_dir``: a versioned ``capslab-bench`` document with the
    torch version, the CPU threads and every result. Returns its path."""
    payload = {
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "results": [r.to_dict() for r in results],
    }
    return write_json(Path(out_dir) / "bench.json", REPORT_KIND, payload)
