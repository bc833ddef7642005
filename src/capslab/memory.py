"""Peak memory and time of one training step versus depth (Figures 3 and 4 of the MoCapsNet paper).

For every model and number of blocks, one training step (forward, capsule loss, backward, Adam
step) is measured on random data with :mod:`capslab.profiling` (its docstring says how the CPU
peak is obtained):

* peak memory of the step (``torch.cuda.max_memory_allocated`` on CUDA; on the CPU the live
  tensors before the step plus the ``torch.profiler`` allocation peak during it);
* activations saved for the backward pass, and the persistent bytes (parameters, gradients,
  Adam state);
* seconds per training step and per inference batch (``no_grad``, eval mode): median of
  ``steps`` timed runs after ``warmup`` runs, without the profiler.

Slopes (bytes and seconds per added block) are fitted by least squares. The results are written
as ``memory.json`` (a versioned ``capslab-memory`` document), ``memory.csv`` and ``memory.png``.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any, ClassVar, Literal

import numpy as np
import torch

from capslab.device import check_device_name, resolve_device
from capslab.errors import ConfigError
from capslab.io import atomic_write_text
from capslab.losses import capsule_loss
from capslab.models import create_model, list_models, model_options
from capslab.profiling import (
    median_seconds,
    persistent_bytes,
    saved_activation_bytes,
    training_step_peak_bytes,
)
from capslab.results import pyplot, save_figure, table_csv, write_json
from capslab.settings import Settings

#: models that take ``num_blocks``; any other model is measured once and drawn flat
BLOCK_MODELS = ("rescapsnet", "mocapsnet")
MiB = 2**20
#: model options that :func:`model_at_depth` sets from a :class:`MemoryConfig` field
OWN_MODEL_OPTIONS = {
    "in_channels": "dataset_shape", "image_size": "dataset_shape", "num_classes": "num_classes",
    "routing": "routing", "num_blocks": "blocks", "gamma": "gamma",
}
#: ``memory.json`` is a ``capslab-memory`` document (:func:`capslab.results.write_json`)
REPORT_KIND = "memory"


@dataclass
class MemoryConfig(Settings):
    """What to measure; validated on construction (:class:`~capslab.errors.ConfigError`).

    Attributes:
        models: registered model names.
        blocks: depths (numbers of blocks, >= 1) for the block models.
        batch_size: images per step.
        dataset_shape: ``(channels, height, width)`` of the random images (square).
        num_classes: class capsules.
        routing: ``"rba"`` or ``"sda"`` for every model.
        gamma: momentum of ``mocapsnet``.
        model_options: further options given to every model that takes them (e.g.
            ``conv_channels``); an option that no model takes is an error.
        steps / warmup: timed and untimed repetitions.
        device: ``"auto"``, ``"cpu"``, ``"cuda"`` or ``"cuda:N"``.
        seed: seeds the models and the random batch.
    """

    models: tuple[str, ...] = ("capsnet", "rescapsnet", "mocapsnet")
    blocks: tuple[int, ...] = tuple(range(1, 9))
    batch_size: int = 32
    dataset_shape: tuple[int, int, int] = (1, 28, 28)
    num_classes: int = 10
    routing: Literal["rba", "sda"] = "rba"
    gamma: float = 0.9
    model_options: dict[str, Any] = field(default_factory=dict)
    steps: int = 3
    warmup: int = 1
    device: str = "auto"
    seed: int = 0

    WHAT: ClassVar[str] = "memory setting"

    def validate(self) -> None:
        if not self.models:
            raise ConfigError("no models given")
        known = list_models()
        for name in self.models:
            if name not in known:
                raise ConfigError(f"unknown model {name!r}; available: {', '.join(known)}")
        if not self.blocks:
            raise ConfigError("no depths (blocks) given")
        if min(self.blocks) < 1:
            raise ConfigError(f"blocks must be >= 1, got {list(self.blocks)}")
        if self.batch_size < 1:
            raise ConfigError(f"batch_size must be >= 1, got {self.batch_size}")
        if min(self.dataset_shape) < 1:
            raise ConfigError(f"dataset_shape must be C x H x W, got {list(self.dataset_shape)}")
        if self.dataset_shape[1] != self.dataset_shape[2]:
            raise ConfigError(f"images must be square, got {list(self.dataset_shape)}")
        if self.steps < 1 or self.warmup < 0:
            raise ConfigError(f"steps must be >= 1 and warmup >= 0, got {self.steps} and {self.warmup}")
        check_device_name(self.device)
        owned = sorted(set(self.model_options) & set(OWN_MODEL_OPTIONS))
        if owned:
            raise ConfigError(
                f"model option(s) {', '.join(owned)} come from the memory settings; set "
                + ", ".join(sorted({OWN_MODEL_OPTIONS[k] for k in owned})) + " instead"
            )
        every = set().union(*(model_options(m) for m in self.models))
        unknown = sorted(set(self.model_options) - every)
        if unknown and not every & {"options", "kwargs"}:
            valid = sorted(every - set(OWN_MODEL_OPTIONS))
            raise ConfigError(f"no model takes option(s) {', '.join(unknown)}; valid: {', '.join(valid)}")

    def resolved_device(self) -> torch.device:
        """The device to measure on (``auto``: CUDA when present); CUDA asked for on a machine
        without it is a :class:`ConfigError`."""
        return resolve_device(self.device)


@dataclass
class Measurement:
    """One (model, depth) point. ``blocks`` is ``None`` for models without blocks.

    peak_bytes: peak of one training step (see :mod:`capslab.profiling`).
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

    def to_dict(self) -> dict[str, Any]:
        """Every field plus ``peak_mib``."""
        return {**asdict(self), "peak_mib": self.peak_mib}


#: quantities fitted against depth (attributes of :class:`Measurement`)
METRICS = ("peak_bytes", "activation_bytes", "persistent_bytes", "train_seconds", "infer_seconds")


# --------------------------------------------------------------------------------------------
# measuring
# --------------------------------------------------------------------------------------------


def model_at_depth(name: str, blocks: int | None, config: MemoryConfig) -> torch.nn.Module:
    """The model ``name`` at depth ``blocks`` with ``config``'s input shape, classes, routing
    and options; options it does not take are left out (capsnet has no ``block_dim``)."""
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


def measure(name: str, blocks: int | None, config: MemoryConfig) -> Measurement:
    """Peak memory and times of one training step and one inference batch."""
    device = config.resolved_device()
    torch.manual_seed(config.seed)
    model = model_at_depth(name, blocks, config).to(device)
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
    persistent = persistent_bytes(model, optimizer)
    peak = training_step_peak_bytes(train_step, model, optimizer, (images, labels), device)
    activations = saved_activation_bytes(loss_of_batch, list(model.parameters()))

    model.eval()
    infer_seconds = median_seconds(infer, config.steps, config.warmup, device)
    parameters = sum(p.numel() for p in model.parameters())
    return Measurement(name, blocks, int(peak), activations, persistent,
                       train_seconds, infer_seconds, parameters)


def plan(config: MemoryConfig) -> list[tuple[str, int | None]]:
    """The (model, depth) points to measure, in order."""
    return [
        (name, blocks)
        for name in config.models
        for blocks in (config.blocks if name in BLOCK_MODELS else (None,))
    ]


def fit_line(x: Sequence[float], y: Sequence[float]) -> tuple[float, float]:
    """Least-squares ``y ~ slope * x + intercept``; fewer than two depths, or the same value at
    every depth, give slope exactly 0 (a least-squares fit of a constant leaves rounding noise,
    which a ratio of slopes would divide by)."""
    if len(set(x)) < 2 or len(set(y)) == 1:
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
        are flat: slope 0, intercept their single value), for the models that have rows."""
        out: dict[str, dict[str, dict[str, float]]] = {}
        for name in self.config.models:
            rows = self.rows_of(name)
            if not rows:
                continue
            depths = [r.blocks or 0 for r in rows]  # no blocks: a single row, so a flat fit
            out[name] = {}
            for metric in METRICS:
                slope, icpt = fit_line(depths, [getattr(r, metric) for r in rows])
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
            "max_train_time_ratio": max(times, default=math.nan),
            "mean_train_time_ratio": float(np.mean(times)) if times else math.nan,
        }

    def setting(self) -> str:
        """Batch, input shape, routing and device in words, for titles."""
        cfg = self.config
        return (f"batch {cfg.batch_size}, input {'x'.join(map(str, cfg.dataset_shape))}, "
                f"routing {cfg.routing}, device {self.device}")

    def to_dict(self) -> dict[str, Any]:
        """The payload of ``memory.json`` (without its format and version)."""
        comparison = self.comparison()
        if comparison is not None:  # strict JSON has no Infinity: a flat denominator gives null
            comparison = {k: (v if math.isfinite(v) else None) for k, v in comparison.items()}
        return {
            "config": self.config.to_dict(), "device": self.device, "method": self.method,
            "torch": torch.__version__,
            "rows": [r.to_dict() for r in self.rows],
            "fits": self.fits(), "comparison": comparison,
        }


def run_memory_study(
    config: MemoryConfig, on_point: Callable[[Measurement], None] | None = None
) -> MemoryReport:
    """Measure every point of :func:`plan`; ``on_point`` is called after each (progress bars)."""
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

CSV_FIELDS = tuple(f.name for f in fields(Measurement))


def report_csv(report: MemoryReport) -> str:
    """The rows as CSV (``CSV_FIELDS``; no depth is an empty cell)."""
    rows = [{**asdict(r), "train_seconds": f"{r.train_seconds:.6f}",
             "infer_seconds": f"{r.infer_seconds:.6f}"} for r in report.rows]
    return table_csv(rows, CSV_FIELDS)


#: (title, metric, scale, unit) of each panel of the plot
PANELS = (
    ("peak memory of a training step", "peak_bytes", 1 / MiB, "MiB"),
    ("activations saved for backward", "activation_bytes", 1 / MiB, "MiB"),
    ("seconds per training step", "train_seconds", 1.0, "s"),
    ("seconds per inference batch", "infer_seconds", 1.0, "s"),
)
COLORS = {"capsnet": "tab:blue", "rescapsnet": "tab:red", "mocapsnet": "tab:green"}


def plot_report(report: MemoryReport, path: str | Path) -> Path:
    """Save a PNG of memory and times against depth, with the fitted lines in the legends."""
    from matplotlib.ticker import MaxNLocator

    plt = pyplot()
    fits = report.fits()
    depths = list(report.config.blocks)
    fig, axes = plt.subplots(1, len(PANELS), figsize=(5 * len(PANELS), 4.2))
    for ax, (title, metric, scale, unit) in zip(axes, PANELS, strict=True):
        for name, fit in fits.items():
            rows = report.rows_of(name)
            color = COLORS.get(name)
            slope = fit[metric]["slope"] * scale
            icpt = fit[metric]["intercept"] * scale
            if rows[0].blocks is None:  # no blocks: a flat reference line
                ax.axhline(icpt, color=color, linestyle="--", label=f"{name}: {icpt:.4g} {unit}")
                continue
            ax.plot([r.blocks for r in rows], [getattr(r, metric) * scale for r in rows], "o-",
                    color=color, label=f"{name}: {slope:.4g} {unit}/block + {icpt:.4g}")
            ax.plot(depths, [slope * d + icpt for d in depths], ":", color=color, alpha=0.6)
        ax.set_title(title, fontsize=10)
        ax.set_xlabel("blocks (2 capsule layers each)")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))  # depths are whole numbers
        ax.set_ylabel(unit)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.suptitle(report.setting(), fontsize=10)
    fig.tight_layout()
    return save_figure(fig, path)


def write_report(report: MemoryReport, out_dir: str | Path, plot: bool = True) -> dict[str, Path]:
    """Write ``memory.json`` (versioned), ``memory.csv`` and ``memory.png`` atomically into
    ``out_dir``; return their paths by kind (``json``, ``csv``, ``png``)."""
    out = Path(out_dir)
    paths = {
        "json": write_json(out / "memory.json", REPORT_KIND, report.to_dict()),
        "csv": out / "memory.csv",
    }
    atomic_write_text(paths["csv"], report_csv(report))
    if plot:
        paths["png"] = plot_report(report, out / "memory.png")
    return paths


def render_table(report: MemoryReport):
    """A rich table of every point, then the fitted per-block slopes and the comparison."""
    from rich.table import Table

    table = Table(title=f"One training step vs depth ({report.setting()})")
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
