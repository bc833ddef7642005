"""Peak memory and time of one training step versus depth (Figures 3 and 4 of the MoCapsNet paper).

For every model and number of blocks, one training step (forward, capsule loss, backward, Adam
step) is measured on random data:

* peak memory: on CUDA ``torch.cuda.max_memory_allocated`` after ``reset_peak_memory_stats``;
  on the CPU the same quantity reconstructed inside the process: the bytes of the live tensors
  that exist before the step (parameters, optimizer state, the batch) plus the highest point of
  the running sum of every allocation and free that the CPU allocator reports to
  ``torch.profiler`` (``profile_memory=True``) during the step. This counts tensor bytes, as
  CUDA's counter does, and is not disturbed by the allocator's or the OS's caching (RSS is).
* seconds per training step and per inference batch (``no_grad``, eval mode): median of
  ``steps`` timed runs after ``warmup`` runs, without the profiler.

Slopes (bytes and seconds per added block) are fitted by least squares.
"""

from __future__ import annotations

import contextlib
import csv
import gc
import io
import math
import os
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch

from capslab.io import atomic_write_bytes, atomic_write_json, atomic_write_text
from capslab.losses import capsule_loss
from capslab.models import create_model, list_models, model_options

#: models that take ``num_blocks``; any other model is measured once and drawn flat
BLOCK_MODELS = ("rescapsnet", "mocapsnet")
MiB = 2**20


@dataclass
class MemoryConfig:
    """What to measure. Validated by :meth:`validate` (called by :func:`run_memory_study`).

    Attributes:
        models: registered model names.
        blocks: depths (numbers of blocks, >= 1) for the block models.
        batch_size: images per step.
        dataset_shape: ``(channels, height, width)`` of the random images.
        num_classes: class capsules.
        routing: ``"rba"`` or ``"sda"`` for every model.
        gamma: momentum of ``mocapsnet``.
        model_options: further options given to every model (e.g. ``conv_channels``).
        steps / warmup: timed and untimed repetitions.
        device: ``"cpu"``, ``"cuda"`` or ``"auto"``.
        seed: seeds the models and the random batch.
    """

    models: tuple[str, ...] = ("capsnet", "rescapsnet", "mocapsnet")
    blocks: tuple[int, ...] = tuple(range(1, 9))
    batch_size: int = 32
    dataset_shape: tuple[int, int, int] = (1, 28, 28)
    num_classes: int = 10
    routing: str = "rba"
    gamma: float = 0.9
    model_options: dict = field(default_factory=dict)
    steps: int = 3
    warmup: int = 1
    device: str = "auto"
    seed: int = 0

    def validate(self) -> MemoryConfig:
        known = list_models()
        for name in self.models:
            if name not in known:
                raise ValueError(f"memory: unknown model {name!r}; available: {', '.join(known)}")
        if not self.models:
            raise ValueError("memory: no models given")
        if not self.blocks or min(self.blocks) < 1:
            raise ValueError(f"memory: blocks must be >= 1, got {list(self.blocks)}")
        if self.batch_size < 1:
            raise ValueError(f"memory: batch_size must be >= 1, got {self.batch_size}")
        if len(self.dataset_shape) != 3 or min(self.dataset_shape) < 1:
            raise ValueError(f"memory: dataset_shape must be C x H x W, got {self.dataset_shape}")
        if self.dataset_shape[1] != self.dataset_shape[2]:
            raise ValueError(f"memory: images must be square, got {self.dataset_shape}")
        if self.steps < 1 or self.warmup < 0:
            raise ValueError("memory: steps must be >= 1 and warmup >= 0")
        every = set().union(*(model_options(m) for m in self.models))
        unknown = sorted(set(self.model_options) - every)
        if unknown and not every & {"options", "kwargs"}:
            raise ValueError(f"memory: no model takes option(s) {', '.join(unknown)}")
        if self.routing not in ("rba", "sda"):
            raise ValueError(f"memory: routing must be 'rba' or 'sda', got {self.routing!r}")
        return self

    def resolved_device(self) -> torch.device:
        if self.device == "auto":
            return torch.device("cuda" if torch.cuda.is_available() else "cpu")
        return torch.device(self.device)


@dataclass
class Measurement:
    """One (model, depth) point. ``blocks`` is ``None`` for models without blocks.

    peak_bytes: peak of one training step (see the module docstring).
    activation_bytes: tensors the forward pass keeps for the backward pass (distinct storages
        seen by ``torch.autograd.graph.saved_tensors_hooks``, parameters excluded): what the
        reversible blocks remove.
    persistent_bytes: parameters, gradients and Adam state after a step.
    """

    model: str
    blocks: int | None
    peak_bytes: int
    activation_bytes: int
    persistent_bytes: int
    train_seconds: float
    infer_seconds: float
    parameters: int

    @property
    def peak_mib(self) -> float:
        return self.peak_bytes / MiB


#: quantities fitted against depth: attribute -> unit
METRICS = {
    "peak_bytes": "bytes",
    "activation_bytes": "bytes",
    "persistent_bytes": "bytes",
    "train_seconds": "s",
    "infer_seconds": "s",
}


# --------------------------------------------------------------------------------------------
# measuring
# --------------------------------------------------------------------------------------------


def build_model(name: str, blocks: int | None, config: MemoryConfig) -> torch.nn.Module:
    """The model ``name`` at depth ``blocks``; options it does not take are left out (capsnet
    has no ``block_dim``), unknown ones in all models are an error of the config."""
    c, h, _ = config.dataset_shape
    options = dict(
        in_channels=c, image_size=h, num_classes=config.num_classes, routing=config.routing,
        **config.model_options,
    )
    if name in BLOCK_MODELS:
        options["num_blocks"] = blocks
    if name == "mocapsnet":
        options["gamma"] = config.gamma
    accepted = set(model_options(name))
    if not accepted & {"options", "kwargs"}:  # a factory with **options takes everything
        options = {k: v for k, v in options.items() if k in accepted}
    return create_model(name, **options)


def _tensor_bytes(tensors) -> int:
    """Bytes of the distinct storages behind ``tensors``."""
    seen: dict[int, int] = {}
    for t in tensors:
        if isinstance(t, torch.Tensor):
            s = t.untyped_storage()
            seen[s.data_ptr()] = s.nbytes()
    return sum(seen.values())


def _persistent_bytes(model: torch.nn.Module, optimizer: torch.optim.Optimizer) -> int:
    """Parameters, buffers, gradients and optimizer state (distinct storages)."""
    state = [v for st in optimizer.state.values() for v in st.values()]
    grads = [p.grad for p in model.parameters() if p.grad is not None]
    return _tensor_bytes([*model.parameters(), *model.buffers(), *grads, *state])


@contextlib.contextmanager
def _native_stderr_silenced():
    """Hide the profiler backend's start/stop lines, which it writes straight to fd 2."""
    sys.stderr.flush()
    try:
        saved = os.dup(2)
    except OSError:  # no real stderr (embedded interpreter): nothing to silence
        yield
        return
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 2)
    try:
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(devnull)


def profiler_peak_bytes(fn: Callable[[], object]) -> int:
    """Highest running sum of CPU allocations minus frees while ``fn()`` runs (bytes, >= 0).

    Reads the ``[memory]`` events that the CPU allocator reports to ``torch.profiler`` when
    ``profile_memory=True`` (one event per allocation with its size, per free with minus it).
    """
    from torch.profiler import ProfilerActivity, profile

    with _native_stderr_silenced(), profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        fn()
    events = [
        e for e in prof.profiler.kineto_results.events()
        if e.name() == "[memory]" and str(e.device_type()).endswith("CPU")
    ]
    events.sort(key=lambda e: e.start_ns())
    running = peak = 0
    for e in events:
        running += e.nbytes()
        peak = max(peak, running)
    return peak


def saved_activation_bytes(fn: Callable[[], torch.Tensor], exclude: Sequence[torch.Tensor]) -> int:
    """Bytes of the distinct storages that autograd saves while ``fn()`` builds its graph.

    Storages of ``exclude`` (the parameters) are not counted. The graph is dropped afterwards.
    """
    skip = {t.untyped_storage().data_ptr() for t in exclude}
    seen: dict[int, int] = {}

    def pack(t: torch.Tensor) -> torch.Tensor:
        s = t.untyped_storage()
        if s.data_ptr() not in skip:
            seen[s.data_ptr()] = s.nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        out = fn()
    del out
    return sum(seen.values())


def measure(name: str, blocks: int | None, config: MemoryConfig) -> Measurement:
    """Peak memory and times of one training step and one inference batch."""
    device = config.resolved_device()
    torch.manual_seed(config.seed)
    model = build_model(name, blocks, config).to(device)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    generator = torch.Generator().manual_seed(config.seed)
    images = torch.rand(config.batch_size, *config.dataset_shape, generator=generator).to(device)
    labels = torch.randint(0, config.num_classes, (config.batch_size,), generator=generator)
    labels = labels.to(device)

    def loss_of_batch() -> torch.Tensor:
        out = model(images, labels)
        return capsule_loss(out.lengths, labels, out.reconstruction, images)[0]

    def train_step() -> None:
        optimizer.zero_grad(set_to_none=True)
        loss_of_batch().backward()
        optimizer.step()

    def infer() -> None:
        with torch.no_grad():
            model(images)

    model.train()
    # at least one warm-up step: Adam's state exists from there on
    train_seconds = median_seconds(train_step, config.steps, max(1, config.warmup), device)
    persistent = _persistent_bytes(model, optimizer)
    peak = training_step_peak_bytes(train_step, model, optimizer, (images, labels), device)
    activations = saved_activation_bytes(loss_of_batch, list(model.parameters()))

    model.eval()
    infer_seconds = median_seconds(infer, config.steps, config.warmup, device)
    parameters = sum(p.numel() for p in model.parameters())
    return Measurement(name, blocks, int(peak), activations, persistent,
                       train_seconds, infer_seconds, parameters)


def median_seconds(fn: Callable[[], object], steps: int, warmup: int, device: torch.device) -> float:
    """Median wall time of ``steps`` calls of ``fn`` after ``warmup`` untimed ones (CUDA synced)."""

    def sync() -> None:
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    for _ in range(warmup):
        fn()
    times = []
    for _ in range(steps):
        sync()
        t0 = time.perf_counter()
        fn()
        sync()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def training_step_peak_bytes(
    train_step: Callable[[], object],
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    batch: Sequence[torch.Tensor],
    device: torch.device,
) -> int:
    """Peak bytes of tensors alive during one training step, gradients cleared beforehand.

    CUDA: ``max_memory_allocated``. CPU: what exists when the step starts (parameters,
    optimizer state, the batch) plus the peak of the step's own allocations.
    """
    optimizer.zero_grad(set_to_none=True)
    gc.collect()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
        train_step()
        torch.cuda.synchronize(device)
        return torch.cuda.max_memory_allocated(device)
    baseline = _persistent_bytes(model, optimizer) + _tensor_bytes(batch)
    return baseline + profiler_peak_bytes(train_step)


def plan(config: MemoryConfig) -> list[tuple[str, int | None]]:
    """The (model, depth) points to measure, in order."""
    points: list[tuple[str, int | None]] = []
    for name in config.models:
        if name in BLOCK_MODELS:
            points.extend((name, b) for b in config.blocks)
        else:
            points.append((name, None))
    return points


def fit_line(x: Sequence[float], y: Sequence[float]) -> tuple[float, float]:
    """Least-squares ``y ~ slope * x + intercept``; fewer than two depths give slope 0."""
    if len(set(x)) < 2:
        return 0.0, float(np.mean(y)) if len(y) else 0.0
    slope, intercept = np.polyfit(np.asarray(x, float), np.asarray(y, float), 1)
    return float(slope), float(intercept)


@dataclass
class MemoryReport:
    config: MemoryConfig
    device: str
    method: str
    rows: list[Measurement]

    def rows_of(self, name: str) -> list[Measurement]:
        return [r for r in self.rows if r.model == name]

    def fits(self) -> dict[str, dict[str, dict[str, float]]]:
        """``{model: {metric: {"slope", "intercept"}}}`` per added block (models without blocks
        are flat: slope 0, intercept their single value)."""
        out: dict[str, dict[str, dict[str, float]]] = {}
        for name in self.config.models:
            rows = self.rows_of(name)
            if not rows:
                continue
            out[name] = {}
            for metric in METRICS:
                values = [getattr(r, metric) for r in rows]
                if rows[0].blocks is None:
                    slope, icpt = 0.0, float(values[0])
                else:
                    slope, icpt = fit_line([r.blocks for r in rows], values)
                out[name][metric] = {"slope": slope, "intercept": icpt}
        return out

    def comparison(self) -> dict[str, float] | None:
        """MoCapsNet against ResCapsNet: slope ratios (res / mo, larger = flatter MoCapsNet) and
        the per-depth ratio of training time (mo / res)."""
        res, mo = self.rows_of("rescapsnet"), self.rows_of("mocapsnet")
        if not res or not mo:
            return None
        fits = self.fits()

        def ratio(metric: str) -> float:
            r, m = fits["rescapsnet"][metric]["slope"], fits["mocapsnet"][metric]["slope"]
            return r / m if m > 0 else math.inf

        by_depth = {r.blocks: r for r in res}
        times = [m.train_seconds / by_depth[m.blocks].train_seconds
                 for m in mo if m.blocks in by_depth]
        return {
            "peak_slope_ratio": ratio("peak_bytes"),
            "activation_slope_ratio": ratio("activation_bytes"),
            "max_train_time_ratio": max(times) if times else math.nan,
            "mean_train_time_ratio": float(np.mean(times)) if times else math.nan,
        }

    def to_dict(self) -> dict:
        return {
            "config": asdict(self.config), "device": self.device, "method": self.method,
            "torch": torch.__version__,
            "rows": [dict(asdict(r), peak_mib=r.peak_mib) for r in self.rows],
            "fits": self.fits(), "comparison": _finite_or_none(self.comparison()),
        }


def _finite_or_none(d: dict | None) -> dict | None:
    """Strict JSON has no Infinity: an infinite ratio (a flat denominator) becomes null."""
    if d is None:
        return None
    return {k: (v if math.isfinite(v) else None) for k, v in d.items()}


def run_memory_study(
    config: MemoryConfig, on_point: Callable[[Measurement], None] | None = None
) -> MemoryReport:
    """Measure every point of :func:`plan`; ``on_point`` is called after each (progress bars)."""
    config.validate()
    device = config.resolved_device()
    method = ("torch.cuda.max_memory_allocated" if device.type == "cuda"
              else "live tensors before the step + torch.profiler allocation peak")
    rows = []
    for name, blocks in plan(config):
        m = measure(name, blocks, config)
        rows.append(m)
        if on_point is not None:
            on_point(m)
    return MemoryReport(config, str(device), method, rows)


# --------------------------------------------------------------------------------------------
# files
# --------------------------------------------------------------------------------------------

CSV_FIELDS = ("model", "blocks", "peak_bytes", "activation_bytes", "persistent_bytes",
              "train_seconds", "infer_seconds", "parameters")


def report_csv(report: MemoryReport) -> str:
    buf = io.StringIO()
    writer = csv.writer(buf)
    writer.writerow(CSV_FIELDS)
    for r in report.rows:
        writer.writerow([r.model, "" if r.blocks is None else r.blocks, r.peak_bytes,
                         r.activation_bytes, r.persistent_bytes, f"{r.train_seconds:.6f}",
                         f"{r.infer_seconds:.6f}", r.parameters])
    return buf.getvalue()


#: (title, metric, scale, unit) of each panel of the plot
PANELS = (
    ("peak memory of a training step", "peak_bytes", 1 / MiB, "MiB"),
    ("activations saved for backward", "activation_bytes", 1 / MiB, "MiB"),
    ("seconds per training step", "train_seconds", 1.0, "s"),
    ("seconds per inference batch", "infer_seconds", 1.0, "s"),
)
COLORS = {"capsnet": "tab:blue", "rescapsnet": "tab:red", "mocapsnet": "tab:green"}


def plot_report(report: MemoryReport) -> bytes:
    """PNG: memory and times against depth with the fitted lines in the legends."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fits = report.fits()
    depths = list(report.config.blocks)
    fig, axes = plt.subplots(1, len(PANELS), figsize=(5 * len(PANELS), 4.2))
    for ax, (title, metric, scale, unit) in zip(axes, PANELS, strict=True):
        for name in report.config.models:
            rows = report.rows_of(name)
            if not rows:
                continue
            color = COLORS.get(name)
            slope = fits[name][metric]["slope"] * scale
            icpt = fits[name][metric]["intercept"] * scale
            if rows[0].blocks is None:  # no blocks: a flat reference line
                ax.axhline(icpt, color=color, linestyle="--", label=f"{name}: {icpt:.4g} {unit}")
                continue
            ax.plot([r.blocks for r in rows], [getattr(r, metric) * scale for r in rows], "o-",
                    color=color, label=f"{name}: {slope:.4g} {unit}/block + {icpt:.4g}")
            ax.plot(depths, [slope * d + icpt for d in depths], ":", color=color, alpha=0.6)
        ax.set_title(title, fontsize=10)
        ax.set_xlabel("blocks (2 capsule layers each)")
        ax.set_ylabel(unit)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    cfg = report.config
    fig.suptitle(f"batch {cfg.batch_size}, input {'x'.join(map(str, cfg.dataset_shape))}, "
                 f"routing {cfg.routing}, device {report.device}", fontsize=10)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110)
    plt.close(fig)
    return buf.getvalue()


def write_report(report: MemoryReport, out_dir, plot: bool = True) -> dict[str, str]:
    """Write ``memory.json``, ``memory.csv`` and ``memory.png`` atomically; return the paths."""
    out = Path(out_dir)
    paths = {"json": out / "memory.json", "csv": out / "memory.csv"}
    atomic_write_json(paths["json"], report.to_dict())
    atomic_write_text(paths["csv"], report_csv(report))
    if plot:
        paths["png"] = out / "memory.png"
        atomic_write_bytes(paths["png"], plot_report(report))
    return {k: str(v) for k, v in paths.items()}


def render_table(report: MemoryReport):
    """A rich table of every point, then the fitted per-block slopes and the comparison."""
    from rich.table import Table

    cfg = report.config
    table = Table(title=f"One training step vs depth ({report.device}, batch {cfg.batch_size}, "
                        f"{'x'.join(map(str, cfg.dataset_shape))}, {cfg.routing})")
    for col in ("model", "blocks", "params", "peak MiB", "activations MiB", "persistent MiB",
                "train s/step", "infer s/batch"):
        table.add_column(col, justify="left" if col == "model" else "right")
    for r in report.rows:
        table.add_row(r.model, "-" if r.blocks is None else str(r.blocks), f"{r.parameters:,}",
                      f"{r.peak_bytes / MiB:.2f}", f"{r.activation_bytes / MiB:.2f}",
                      f"{r.persistent_bytes / MiB:.2f}", f"{r.train_seconds:.4f}",
                      f"{r.infer_seconds:.4f}")
    table.add_section()
    for name, f in report.fits().items():
        table.add_row(f"[bold]{name}[/] slope", "per block", "",
                      f"{f['peak_bytes']['slope'] / MiB:+.3f}",
                      f"{f['activation_bytes']['slope'] / MiB:+.3f}",
                      f"{f['persistent_bytes']['slope'] / MiB:+.3f}",
                      f"{f['train_seconds']['slope']:+.4f}", f"{f['infer_seconds']['slope']:+.4f}")
    cmp = report.comparison()
    if cmp is not None:
        table.caption = (
            f"rescapsnet/mocapsnet slope ratio: peak {cmp['peak_slope_ratio']:.3g}x, "
            f"activations {cmp['activation_slope_ratio']:.3g}x; mocapsnet/rescapsnet train time: "
            f"mean {cmp['mean_train_time_ratio']:.2f}x, max {cmp['max_train_time_ratio']:.2f}x"
        )
    return table


def parse_blocks(text: str) -> tuple[int, ...]:
    """``"1-8"``, ``"1,2,4"`` or ``"1-3,6"`` -> sorted distinct depths."""
    out: set[int] = set()
    for part in text.split(","):
        part = part.strip()
        if not part:
            continue
        try:
            if "-" in part:
                lo, hi = (int(p) for p in part.split("-", 1))
                if hi < lo:
                    raise ValueError
                out.update(range(lo, hi + 1))
            else:
                out.add(int(part))
        except ValueError:
            raise ValueError(f"--blocks: cannot read {part!r} (use e.g. 1-8 or 1,2,4)") from None
    if not out:
        raise ValueError("--blocks: no depth given")
    return tuple(sorted(out))


def parse_shape(text: str) -> tuple[int, int, int]:
    """``"1x28x28"`` -> ``(1, 28, 28)``."""
    try:
        c, h, w = (int(p) for p in text.lower().split("x"))
    except ValueError:
        raise ValueError(f"--dataset-shape: expected CxHxW such as 1x28x28, got {text!r}") from None
    return c, h, w
