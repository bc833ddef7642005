"""Training and inference throughput of CapsNet variants, measured side by side in one run.

Every variant is trained with its own optimiser at batch 1, 16 and 128 (FasTrCaps' WarmAdaBatch
starts at batch 1, the usual runs use 128) and run for inference at the same batch sizes. The
plain eager reference (``benchmarks/plain_capsnet.py`` in a checkout, with PyTorch's default
Adam) is the baseline of the speed-up ratios. Beside the variants stands the conv-bound
ceiling of the machine: the PrimaryCaps convolution alone, forward and backward at batch 128,
in the faster of the two memory formats. A CapsNet cannot train faster than that without
computing that convolution with fewer operations. The rows are timed in alternating rounds,
either in this process or (``isolate``, what ``capslab bench`` does) each in a worker process
of its own. Time and peak memory are measured with :mod:`capslab.profiling`, as ``capslab
memory`` measures them. The results are written as ``bench.json``, a versioned
``capslab-bench`` document.
"""

from __future__ import annotations

import functools
import importlib.util
import multiprocessing
import os
import signal
import traceback
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from capslab.allocator import keep_freed_memory_for, keeps_freed_memory
from capslab.device import autocast, cpu_name, device_name, resolve_device
from capslab.errors import ConfigError
from capslab.losses import capsule_loss
from capslab.models import create_model
from capslab.optim import create_optimizer
from capslab.profiling import block_seconds, interleaved_rounds, training_step_peak_bytes
from capslab.results import write_json

REFERENCE_FILE = Path(__file__).resolve().parents[2] / "benchmarks" / "plain_capsnet.py"
#: the plain eager Efficient-CapsNet (``capslab bench --model efficient-capsnet``)
EFFICIENT_REFERENCE_FILE = REFERENCE_FILE.with_name("plain_efficient_capsnet.py")
#: ``bench.json`` is a ``capslab-bench`` document (:func:`capslab.results.write_json`)
REPORT_KIND = "bench"
#: the batch sizes of every row: WarmAdaBatch's first phase, a small batch, the usual batch;
#: the ceiling and the peak memory are measured at the largest
BATCH_SIZES = (1, 16, 128)
#: Efficient-CapsNet's rows add batch 64 (its paper-scale reproduction trains at 64)
EFFICIENT_BATCH_SIZES = (1, 16, 64, 128)
#: images per timed block at least: a small batch is timed over consecutive steps, as a
#: training loop runs them, and over a similar span of time as a large one
MIN_TIMED_IMAGES = 32


def naive_adam(params: Iterable[nn.Parameter]) -> torch.optim.Optimizer:
    """PyTorch's default Adam (a Python loop over the parameters): what plain code uses."""
    return torch.optim.Adam(params, lr=1e-3)


def capslab_adam(params: Iterable[nn.Parameter]) -> torch.optim.Optimizer:
    """The Adam that ``capslab train`` builds (:func:`capslab.optim.create_optimizer`)."""
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


def load_plain_reference(path: Path = REFERENCE_FILE, name: str = "PlainCapsNet",
                         ) -> Callable[[], nn.Module] | None:
    """The plain eager model class ``name`` kept in ``benchmarks/`` (None outside a source
    checkout)."""
    if not path.is_file():
        return None
    spec = importlib.util.spec_from_file_location(f"capslab_{path.stem}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)  # type: ignore[union-attr]
    return getattr(module, name)


def bench_devices(name: str) -> list[torch.device]:
    """The devices ``name`` stands for: ``auto`` is the CPU and, when present, the GPU;
    ``cpu``, ``cuda`` or ``cuda:N`` is that one device."""
    if name == "auto":
        return [torch.device("cpu")] + ([torch.device("cuda")] if torch.cuda.is_available() else [])
    return [resolve_device(name)]


def _plain_model(path: Path, name: str) -> nn.Module:
    plain = load_plain_reference(path, name)
    if plain is None:
        raise FileNotFoundError(f"the plain reference {path} is only in a source checkout")
    return plain()


def plain_capsnet() -> nn.Module:
    """The plain eager reference model (needs a source checkout: :func:`load_plain_reference`)."""
    return _plain_model(REFERENCE_FILE, "PlainCapsNet")


def capsnet() -> nn.Module:
    """CapsLab's MNIST CapsNet, as ``capslab train`` builds it."""
    return create_model("capsnet")


def compiled_capsnet() -> nn.Module:
    """:func:`capsnet` under ``torch.compile`` (``capslab train --compile``)."""
    return torch.compile(capsnet())


def plain_efficient_capsnet() -> nn.Module:
    """The plain eager Efficient-CapsNet (needs a source checkout)."""
    return _plain_model(EFFICIENT_REFERENCE_FILE, "PlainEfficientCapsNet")


def efficient_capsnet() -> nn.Module:
    """CapsLab's MNIST Efficient-CapsNet, as ``capslab train`` builds it."""
    return create_model("efficient-capsnet")


def compiled_efficient_capsnet() -> nn.Module:
    """:func:`efficient_capsnet` under ``torch.compile``."""
    return torch.compile(efficient_capsnet())


#: per model of ``capslab bench``: (its plain reference file, that row's name, the plain
#: model, CapsLab's, CapsLab's compiled, the prefix of CapsLab's rows)
_FAMILIES = {
    "capsnet": (REFERENCE_FILE, "plain eager (benchmarks/)", plain_capsnet, capsnet,
                compiled_capsnet, "capslab"),
    "efficient-capsnet": (EFFICIENT_REFERENCE_FILE,
                          f"plain eager (benchmarks/{EFFICIENT_REFERENCE_FILE.name})",
                          plain_efficient_capsnet, efficient_capsnet, compiled_efficient_capsnet,
                          "capslab efficient-capsnet"),
}


#: the models ``capslab bench`` compares with a plain implementation of their own
BENCH_MODELS = tuple(_FAMILIES)


def default_variants(include_plain: bool = True, compile_: bool = False, bf16: bool = False,
                     model: str = "capsnet") -> list[Variant]:
    """The reference first (when this is a checkout), then CapsLab as ``capslab train`` runs it,
    in channels-last, compiled (``compile_``) and under bf16 autocast (``bf16``), for ``model``
    (one of :data:`BENCH_MODELS`). Their factories are module-level functions, so a worker
    process can rebuild them."""
    if model not in _FAMILIES:
        raise ConfigError(f"capslab bench measures {', '.join(BENCH_MODELS)}; got {model!r}")
    reference, reference_name, plain, ours, compiled, prefix = _FAMILIES[model]
    variants = []
    if include_plain and reference.is_file():
        variants.append(Variant(reference_name, plain, optimizer=naive_adam))
    variants.append(Variant(prefix, ours))
    variants.append(Variant(f"{prefix} channels-last", ours, channels_last=True))
    if compile_:
        variants.append(Variant(f"{prefix} compiled", compiled))
    if bf16:
        variants.append(Variant(f"{prefix} bf16 autocast", ours, precision="bf16"))
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


#: the ceiling's convolution is timed in both memory formats; the faster one is the ceiling
CEILING_FORMATS = {"contiguous": torch.contiguous_format, "channels-last": torch.channels_last}


def _ceiling_step(device: torch.device, batch_size: int, memory_format: str) -> Callable[[], None]:
    """The PrimaryCaps convolution of the MNIST CapsNet (256 -> 256 channels, 9x9, stride 2,
    20x20 -> 6x6) alone, forward and backward to its input and weights, in ``memory_format``
    (a key of :data:`CEILING_FORMATS`)."""
    fmt = CEILING_FORMATS[memory_format]
    torch.manual_seed(0)
    conv = nn.Conv2d(256, 256, 9, stride=2).to(device, memory_format=fmt)
    x = torch.rand(batch_size, 256, 20, 20, device=device).contiguous(memory_format=fmt)
    x.requires_grad_(True)
    grad = torch.rand(batch_size, 256, 6, 6, device=device).contiguous(memory_format=fmt)
    return functools.partial(_conv_step, conv, x, grad)


class _Runner:
    """What one row of the benchmark times, built on one device: a variant's model and
    optimiser, or the ceiling's convolution in one memory format (``subject`` is then that
    format's name). :func:`measure_variants` drives it in this process or, isolated, through a
    :class:`_Worker` that holds it in a process of its own."""

    def __init__(self, subject: Variant | str, device: torch.device,
                 image_shape: tuple[int, int, int], seed: int):
        self.subject, self.device, self.image_shape = subject, device, image_shape
        self._step: Callable[[], None] | None = None
        if isinstance(subject, Variant):
            torch.manual_seed(seed)
            self.fmt = torch.channels_last if subject.channels_last else torch.contiguous_format
            self.model = subject.factory().to(device, memory_format=self.fmt)
            self.optimizer = subject.optimizer(self.model.parameters())

    def _batch(self, b: int):
        x = torch.rand(b, *self.image_shape, device=self.device).contiguous(memory_format=self.fmt)
        return x, torch.randint(0, 10, (b,), device=self.device)

    def use(self, phase: str, batch_size: int) -> None:
        """Make ``phase`` (``"train"`` or ``"infer"``) at ``batch_size`` what is timed next. A
        training phase first sets malloc as ``capslab train`` would at that batch size
        (:func:`capslab.allocator.keep_freed_memory_for`: process-wide and one-way)."""
        if phase == "train":
            keep_freed_memory_for(self.device, batch_size)
        if isinstance(self.subject, str):
            self._step = _ceiling_step(self.device, batch_size, self.subject)
            return
        self.model.train(phase == "train")
        x, y = self._batch(batch_size)
        precision = self.subject.precision
        self._step = (functools.partial(train_step, self.model, self.optimizer, x, y, precision)
                      if phase == "train" else functools.partial(_infer, self.model, x, precision))

    def warm(self, calls: int) -> None:
        for _ in range(calls):
            self._step()

    def time_block(self, block: int) -> float:
        """Seconds per call of ``block`` consecutive calls of the current step, after one
        untimed call (:func:`capslab.profiling.block_seconds`), whatever the block's length."""
        return block_seconds(self._step, block, self.device, lead=1)

    def peak_bytes(self, batch_size: int) -> int:
        """Peak tensor bytes of one training step at ``batch_size``."""
        self.model.train()
        x, y = self._batch(batch_size)
        step = functools.partial(train_step, self.model, self.optimizer, x, y, self.subject.precision)
        return training_step_peak_bytes(step, self.model, self.optimizer, (x, y), self.device)

    def ready(self) -> None:
        """Built already (a :class:`_Worker` waits for its process here)."""

    def close(self) -> None:
        self._step = None  # the ceiling's convolution and batch go with it


def _serve(conn, subject: Variant | str, device: str, image_shape: tuple[int, int, int],
           seed: int, threads: int) -> None:
    """A worker process: build one :class:`_Runner`, then call its methods as the parent asks
    (``(name, args)`` messages; ``None`` ends it). Replies ``("ok", result)`` or ``("error",
    traceback)``. Ctrl-C is the parent's to handle: it ends the workers."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    torch.set_num_threads(threads)
    try:
        runner = _Runner(subject, torch.device(device), image_shape, seed)
    except BaseException:
        conn.send(("error", traceback.format_exc()))
        return
    conn.send(("ok", None))
    while (message := conn.recv()) is not None:
        name, args = message
        try:
            conn.send(("ok", getattr(runner, name)(*args)))
        except BaseException:
            conn.send(("error", traceback.format_exc()))


class _Worker:
    """A :class:`_Runner` in a process of its own (``spawn``, so nothing of this process's
    heap, caches or threads carries over), with the same methods. The subject must pickle:
    its factory and optimiser module-level functions, as in :func:`default_variants`."""

    def __init__(self, subject: Variant | str, device: torch.device,
                 image_shape: tuple[int, int, int], seed: int):
        self.name = subject.name if isinstance(subject, Variant) else f"the ceiling ({subject})"
        context = multiprocessing.get_context("spawn")
        self._conn, child = context.Pipe()
        self._process = context.Process(
            target=_serve, args=(child, subject, str(device), image_shape, seed, torch.get_num_threads()),
            name=f"capslab-bench {self.name}")
        self._process.start()
        child.close()

    def ready(self) -> None:
        """Wait until the worker has built its subject."""
        self._reply()

    def _call(self, name: str, *args):
        self._conn.send((name, args))
        return self._reply()

    def _reply(self):
        try:
            status, value = self._conn.recv()
        except EOFError:
            self._process.join(5)
            raise RuntimeError(f"the worker process measuring {self.name} died "
                               f"(exit code {self._process.exitcode})") from None
        if status == "error":
            raise RuntimeError(f"in the worker process measuring {self.name}:\n{value}")
        return value

    def use(self, phase: str, batch_size: int) -> None:
        self._call("use", phase, batch_size)

    def warm(self, calls: int) -> None:
        self._call("warm", calls)

    def time_block(self, block: int) -> float:
        return self._call("time_block", block)

    def peak_bytes(self, batch_size: int) -> int:
        return self._call("peak_bytes", batch_size)

    def close(self) -> None:
        if self._process.is_alive():
            try:
                self._conn.send(None)
            except OSError:
                pass
            self._process.join(30)
        if self._process.is_alive():
            self._process.kill()
            self._process.join()
        self._conn.close()


def _timed(runners: list, phase: str, batch_size: int, steps: int, warmup: int) -> list[float]:
    """Seconds per step of every runner at ``phase`` and ``batch_size``, in alternating rounds
    (:func:`capslab.profiling.interleaved_rounds`) of :func:`block_steps` consecutive steps."""
    for r in runners:
        r.use(phase, batch_size)
        r.warm(warmup)
    block = block_steps(batch_size)
    return interleaved_rounds([functools.partial(r.time_block, block) for r in runners], steps)


def measure_variants(
    variants: list[Variant],
    device: torch.device,
    steps: int = 3,
    warmup: int = 1,
    image_shape: tuple[int, int, int] = (1, 28, 28),
    seed: int = 0,
    batch_sizes: tuple[int, ...] | None = None,
    infer_batch_sizes: tuple[int, ...] | None = None,
    peak_memory: bool = True,
    ceiling_batch: int | None = None,
    isolate: bool = False,
) -> tuple[list[BenchResult], Ceiling | None]:
    """Training images/s of every variant at every batch size (default :data:`BATCH_SIZES`),
    inference images/s at every ``infer_batch_sizes`` (default: the same), the peak memory of
    a training step at the largest batch size (``nan`` without ``peak_memory``) and, with
    ``ceiling_batch``, the conv-bound ceiling at that batch size (the faster of the two memory
    formats).

    The variants (and the ceiling) are timed in alternating rounds, one batch size at a time,
    smallest first. On the CPU, malloc keeps freed memory from the first batch size that
    ``capslab train`` turns it on at (:func:`capslab.allocator.keep_freed_memory_for`) and for
    every measurement after it.

    With ``isolate`` every variant and each form of the ceiling runs in a worker process of
    its own, so that no row inherits another's heap, caches or allocator state (a plain eager
    CapsNet's for-loop Adam ran faster on the heap CapsLab's steps had left in a shared
    process: docs/benchmarks.md). The rounds still alternate between them, one process
    computing at a time.
    """
    batch_sizes = BATCH_SIZES if batch_sizes is None else batch_sizes
    formats = list(CEILING_FORMATS) if ceiling_batch in batch_sizes else []
    ceiling = None
    runner = _Worker if isolate else _Runner
    runners: list = []
    try:
        # all workers start before any is waited for, so that they build in parallel
        for subject in [*variants, *formats]:
            runners.append(runner(subject, device, image_shape, seed))
        for r in runners:
            r.ready()
        rows, forms = runners[:len(variants)], runners[len(variants):]
        train: list[dict[str, float]] = [{} for _ in rows]
        infer: list[dict[str, float]] = [{} for _ in rows]
        for b in sorted(batch_sizes):
            keep_freed_memory_for(device, b)  # this process too: bench.json records the setting
            extra = forms if b == ceiling_batch else []
            seconds = _timed(rows + extra, "train", b, steps, max(1, warmup))
            for i in range(len(rows)):
                train[i][str(b)] = b / seconds[i]
            for name, sec in zip(formats if extra else [], seconds[len(rows):], strict=True):
                if ceiling is None or b / sec > ceiling.images_per_s:
                    ceiling = Ceiling(str(device), b / sec, name)
            for f in extra:  # measured: its memory (or its process) is no longer needed
                f.close()
        peaks = [r.peak_bytes(max(batch_sizes)) / 2**20 if peak_memory else float("nan") for r in rows]
        for b in batch_sizes if infer_batch_sizes is None else infer_batch_sizes:
            seconds = _timed(rows, "infer", b, steps, warmup)
            for i in range(len(rows)):
                infer[i][str(b)] = b / seconds[i]
    finally:
        for r in runners:
            r.close()
    results = [BenchResult(v.name, str(device), train[i], infer[i], peaks[i])
               for i, v in enumerate(variants)]
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
    isolate: bool = False,
    batch_sizes: tuple[int, ...] | None = None,
    on_device: Callable[[list[BenchResult], list[Ceiling]], None] | None = None,
) -> tuple[list[BenchResult], list[Ceiling]]:
    """Measure every variant (and the ceiling) on every device, interleaved, each in a process
    of its own with ``isolate`` (:func:`measure_variants`), at ``batch_sizes`` (default
    :data:`BATCH_SIZES`); the ceiling at the largest. Speed-ups are relative to the first
    variant (the plain reference) on the same device at the same batch size.
    ``progress`` is called with "<device>" before each device's measurement, ``on_result``
    with every result after, ``on_device`` with every row so far once a device is done (so
    that a caller can write them before the next device, which may fail, runs)."""
    variants = variants if variants is not None else default_variants()
    results, ceilings = [], []
    for device in devices:
        if progress:
            progress(f"{len(variants)} variants{' and the ceiling' if ceiling else ''} on {device}")
        sizes = BATCH_SIZES if batch_sizes is None else batch_sizes
        large = max(sizes)
        rows, top = measure_variants(variants, device, steps, warmup, batch_sizes=sizes,
                                     ceiling_batch=large if ceiling else None, isolate=isolate)
        base = rows[0]
        for r in rows:
            r.speedup = {b: r.train_images_per_s[b] / base.train_images_per_s[b]
                         for b in r.train_images_per_s}
            if top is not None:
                r.of_ceiling = r.train_images_per_s[str(large)] / top.images_per_s
        if top is not None:
            ceilings.append(top)
            if on_result:
                on_result(top)
        for r in rows:
            results.append(r)
            if on_result:
                on_result(r)
        if on_device:
            on_device(results, ceilings)
    return results, ceilings


def write_results(results: list[BenchResult], out_dir: str | os.PathLike,
                  ceilings: list[Ceiling] = (), isolated: bool = False,
                  complete: bool = True, model: str = "capsnet") -> Path:
    """Write ``bench.json`` into ``out_dir`` (atomically): a versioned ``capslab-bench``
    document with the torch version, the CPU, its threads, what computes on each device of the
    rows (``device_names``: the CPU's model, GPU N's name for ``cuda:N``), whether every row
    ran in its own process (``isolated``), whether every device asked for was measured
    (``complete``), the ``model`` measured, the ceilings and every result. Returns its path."""
    measured = dict.fromkeys([r.device for r in results] + [c.device for c in ceilings])
    payload = {
        "torch": torch.__version__,
        "cpu": cpu_name(),
        "device_names": {d: device_name(d) for d in measured},
        "model": model,
        "complete": complete,
        "threads": torch.get_num_threads(),
        "isolated": isolated,
        # whether malloc kept freed memory for the CPU rows from batch KEEP_FREED_MIN_BATCH on
        # (capslab.allocator); false: CAPSLAB_MALLOC=system, or not glibc
        "malloc_keeps_freed_memory": keeps_freed_memory(),
        "batch_sizes": sorted(int(b) for b in results[0].train_images_per_s) if results else list(BATCH_SIZES),
        "ceilings": [c.to_dict() for c in ceilings],
        "results": [r.to_dict() for r in results],
    }
    return write_json(Path(out_dir) / "bench.json", REPORT_KIND, payload)
