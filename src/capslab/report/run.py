"""The report of one training run (a folder written by :func:`capslab.train.train`).

What it shows: the run's summary, its loss/accuracy/learning-rate curves, the reconstructions
PNG, per-class accuracy and the confusion matrix, timing, and the configuration.

The per-class figures are computed when the report is written: the run's best checkpoint
(``best.pt``, else ``last.pt``) is evaluated on the run's own test split (same dataset, same
stratified ``test_subset`` and seed), so the overall accuracy they give is the run's recorded
test accuracy of that epoch. Without a checkpoint or without the dataset the page says so
instead.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from capslab.data import BatchLoader, load_dataset
from capslab.errors import CheckpointError, DatasetError, DatasetNotFoundError, RunMismatchError
from capslab.models.pretrained import load_model_and_checkpoint
from capslab.report.html import Page
from capslab.results import SUMMARY_FILE, read_json
from capslab.train import resolve_device
from capslab.train.callbacks import held_out_history
from capslab.train.loop import METRICS_FILE

CONFIG_FILE = "config.json"
CHECKPOINTS = ("best.pt", "last.pt")
_VERSION_KEYS = ("format", "version")


# --------------------------------------------------------------------------- reading the folder
def _strip(doc: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in doc.items() if k not in _VERSION_KEYS}


def is_training_run(path: Path) -> bool:
    """Does ``path`` hold a training run (its ``config.json`` is a CapsLab training config)?"""
    try:
        return read_json(path / CONFIG_FILE, "config") is not None
    except RunMismatchError:  # another program's config.json: not a run
        return False


def read_history(run_dir: str | Path) -> list[dict[str, Any]]:
    """The per-epoch records of ``run_dir/metrics.jsonl`` (empty when there is none)."""
    path = Path(run_dir) / METRICS_FILE
    if not path.is_file():
        return []
    return [_strip(json.loads(line)) for line in path.read_text().splitlines() if line.strip()]


@dataclass
class RunData:
    """What a run folder holds: ``config`` (the training config), ``history`` (per epoch),
    ``summary`` (``None`` while the run is unfinished)."""

    path: Path
    config: dict[str, Any]
    history: list[dict[str, Any]]
    summary: dict[str, Any] | None

    @classmethod
    def read(cls, run_dir: str | Path) -> RunData:
        path = Path(run_dir)
        config = _strip(read_json(path / CONFIG_FILE, "config") or {})
        summary = read_json(path / SUMMARY_FILE, "summary")
        history = summary["history"] if summary else read_history(path)
        return cls(path, config, history, None if summary is None else _strip(summary))

    def checkpoint(self) -> Path | None:
        """The checkpoint to evaluate: ``best.pt``, else ``last.pt``, else ``None``."""
        return next((self.path / n for n in CHECKPOINTS if (self.path / n).is_file()), None)


# --------------------------------------------------------------------------- per-class maths
def confusion_matrix(labels: Any, predictions: Any, num_classes: int):
    """Counts of (true class, predicted class).

    Args:
        labels: true classes, int ``[N]``.
        predictions: predicted classes, int ``[N]``.
        num_classes: ``C``.

    Shape:
        returns int64 ``[C, C]``; row ``i`` is true class ``i``, column ``j`` predicted ``j``.
    """
    import torch

    labels = torch.as_tensor(labels, dtype=torch.long).reshape(-1)
    predictions = torch.as_tensor(predictions, dtype=torch.long).reshape(-1)
    flat = labels * num_classes + predictions
    return torch.bincount(flat, minlength=num_classes * num_classes).reshape(num_classes, num_classes)


def per_class_accuracy(matrix: Any) -> list[float | None]:
    """Recall of each class (diagonal / row sum) from a confusion matrix; ``None`` for a class
    without test samples."""
    rows = matrix.sum(dim=1).tolist()
    diag = matrix.diagonal().tolist()
    return [d / n if n else None for d, n in zip(diag, rows, strict=True)]


@dataclass
class ClassEvaluation:
    """A checkpoint's confusion matrix on the run's test split."""

    matrix: Any  # int64 [C, C]
    classes: list[str]
    checkpoint: str
    epoch: int | None
    samples: int

    @property
    def accuracy(self) -> float:
        return float(self.matrix.diagonal().sum()) / max(self.samples, 1)

    @property
    def per_class(self) -> list[float | None]:
        return per_class_accuracy(self.matrix)


def _load_model(path: Path):
    """``(model, checkpoint)``."""
    return load_model_and_checkpoint(path, map_location="cpu")


def _test_split(config: dict[str, Any]):
    """The run's test split: its dataset, data folder (else the default ones) and subset."""
    try:
        test = load_dataset(config["dataset"], "test", data_dir=config.get("data_dir"))
    except DatasetNotFoundError:
        if not config.get("data_dir"):
            raise
        test = load_dataset(config["dataset"], "test")  # the recorded folder may be elsewhere now
    return test.stratified(config.get("test_subset"), config.get("seed", 0))


def evaluate_classes(checkpoint: str | Path, batch_size: int = 500, device: str = "auto") -> ClassEvaluation:
    """Evaluate ``checkpoint`` on the test split its own config names.

    Raises :class:`~capslab.errors.DatasetError` when the dataset is not available and
    :class:`~capslab.errors.CheckpointError` for an unreadable checkpoint.
    """
    import torch

    checkpoint = Path(checkpoint)
    model, ckpt = _load_model(checkpoint)
    config = ckpt.get("config") or {}
    test = _test_split(config)
    dev = resolve_device(device)
    model = model.to(dev).eval()
    predictions = []
    with torch.inference_mode():
        for images, _ in BatchLoader(test, batch_size, shuffle=False):
            predictions.append(model(images.to(dev)).lengths.argmax(dim=1).cpu())
    num_classes = test.info.num_classes
    classes = list(test.info.classes) or [str(i) for i in range(num_classes)]
    matrix = confusion_matrix(test.labels, torch.cat(predictions), num_classes)
    return ClassEvaluation(matrix, classes, checkpoint.name, ckpt.get("epoch"), len(test))


# --------------------------------------------------------------------------- figures
def _epoch_axis(fig: Any, history: list[dict[str, Any]], **where: Any) -> None:
    fig.update_xaxes(title_text="epoch", dtick=1 if len(history) <= 20 else None, **where)


def curves_figure(history: list[dict[str, Any]], title: str = ""):
    """Accuracy, loss, learning rate and batch size per epoch (a 2 x 2 grid)."""
    from plotly.subplots import make_subplots

    epochs = [h["epoch"] for h in history]
    fig = make_subplots(rows=2, cols=2, vertical_spacing=0.16, horizontal_spacing=0.08,
                        subplot_titles=("Accuracy (%)", "Loss (log scale)", "Learning rate (end of epoch)",
                                        "Batch size"))
    colors = {"train": "#1f77b4", "test": "#d62728", "val": "#d62728"}
    for split in ("train", held_out_history(history)[0]):
        acc = [100 * h[f"{split}_accuracy"] if f"{split}_accuracy" in h else None for h in history]
        loss = [h.get(f"{split}_loss") for h in history]
        style = dict(mode="lines+markers", legendgroup=split, line=dict(color=colors[split],
                     dash="dash" if split == "train" else "solid"))
        fig.add_scatter(x=epochs, y=acc, name=split, row=1, col=1, **style,
                        hovertemplate=f"{split} accuracy %{{y:.2f}} %<extra>epoch %{{x}}</extra>")
        fig.add_scatter(x=epochs, y=loss, name=split, row=1, col=2, showlegend=False, **style,
                        hovertemplate=f"{split} loss %{{y:.4g}}<extra>epoch %{{x}}</extra>")
    fig.add_scatter(x=epochs, y=[h.get("lr") for h in history], name="learning rate", row=2, col=1,
                    mode="lines+markers", line=dict(color="#2ca02c"), showlegend=False,
                    hovertemplate="lr %{y:.3g}<extra>epoch %{x}</extra>")
    fig.add_scatter(x=epochs, y=[h.get("batch_size") for h in history], name="batch size", row=2, col=2,
                    mode="lines+markers", line=dict(color="#9467bd", shape="hv"), showlegend=False,
                    hovertemplate="batch %{y}<extra>epoch %{x}</extra>")
    fig.update_yaxes(type="log", row=1, col=2)
    fig.update_yaxes(type="log", exponentformat="e", row=2, col=1)
    fig.update_yaxes(rangemode="tozero", row=2, col=2)
    for row in (1, 2):
        for col in (1, 2):
            _epoch_axis(fig, history, row=row, col=col)
    fig.update_layout(height=620, margin=dict(t=60, b=50, l=60, r=30), title_text=title or None,
                      legend=dict(orientation="h", x=1, xanchor="right", y=1.08))
    return fig


def class_figure(ev: ClassEvaluation):
    """The confusion matrix (colour: share of the true class; text: counts) beside per-class
    accuracy."""
    from plotly.subplots import make_subplots

    counts = ev.matrix.tolist()
    shares = [[c / max(sum(row), 1) for c in row] for row in counts]
    per_class = ev.per_class
    fig = make_subplots(rows=1, cols=2, column_widths=[0.58, 0.42], horizontal_spacing=0.12,
                        subplot_titles=("Confusion matrix (rows: true class)", "Accuracy per class (%)"))
    fig.add_heatmap(z=shares, x=ev.classes, y=ev.classes, text=counts, texttemplate="%{text}",
                    colorscale="Blues", zmin=0, zmax=1, showscale=False, row=1, col=1,
                    hovertemplate="true %{y}, predicted %{x}: %{text} (%{z:.1%})<extra></extra>")
    fig.add_bar(x=[None if a is None else 100 * a for a in per_class], y=ev.classes, orientation="h",
                marker_color="#1f77b4", row=1, col=2, showlegend=False,
                text=[("-" if a is None else f"{100 * a:.1f}") for a in per_class], textposition="auto",
                hovertemplate="class %{y}: %{x:.2f} %<extra></extra>")
    fig.update_xaxes(title_text="predicted class", type="category", row=1, col=1)
    fig.update_yaxes(title_text="true class", type="category", autorange="reversed", row=1, col=1)
    fig.update_yaxes(type="category", autorange="reversed", row=1, col=2)
    low = min((a for a in per_class if a is not None), default=0.0)
    fig.update_xaxes(range=[max(0.0, 100 * low - 10), 100], title_text="accuracy (%)", row=1, col=2)
    size = 360 + 22 * len(ev.classes)
    fig.update_layout(height=size, margin=dict(t=60, b=50, l=70, r=30))
    return fig


def timing_figure(history: list[dict[str, Any]]):
    """Seconds and images per second of every epoch."""
    from plotly.subplots import make_subplots

    epochs = [h["epoch"] for h in history]
    fig = make_subplots(rows=1, cols=2, subplot_titles=("Training seconds per epoch", "Images per second"))
    fig.add_bar(x=epochs, y=[h.get("epoch_seconds") for h in history], row=1, col=1, showlegend=False,
                marker_color="#1f77b4", hovertemplate="%{y:.2f} s<extra>epoch %{x}</extra>")
    fig.add_scatter(x=epochs, y=[h.get("images_per_second") for h in history], row=1, col=2,
                    mode="lines+markers", showlegend=False, line=dict(color="#ff7f0e"),
                    hovertemplate="%{y:.1f} images/s<extra>epoch %{x}</extra>")
    for col in (1, 2):
        _epoch_axis(fig, history, row=1, col=col)
    fig.update_yaxes(rangemode="tozero")
    fig.update_layout(height=300, margin=dict(t=50, b=50, l=60, r=30))
    return fig


# --------------------------------------------------------------------------- the page
HISTORY_COLUMNS = [
    ("epoch", "epoch", ""),
    ("train_loss", "train loss", ".4f"),
    ("train_accuracy", "train acc (%)", lambda v: "-" if v is None else f"{100 * v:.2f}"),
    ("{split}_loss", "{split} loss", ".4f"),
    ("{split}_accuracy", "{split} acc (%)", lambda v: "-" if v is None else f"{100 * v:.2f}"),
    ("lr", "lr", ".3g"),
    ("batch_size", "batch", ""),
    ("epoch_seconds", "seconds", ".2f"),
    ("images_per_second", "images/s", ".1f"),
]


def flatten(config: dict[str, Any], prefix: str = "") -> list[tuple[str, Any]]:
    """``(dotted key, value)`` pairs; dictionaries nest, lists are shown as JSON."""
    out: list[tuple[str, Any]] = []
    for key, value in config.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict) and value:
            out.extend(flatten(value, name + "."))
        elif isinstance(value, list | tuple | dict):
            out.append((name, json.dumps(value)))
        else:
            out.append((name, value))
    return out


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{100 * value:.2f} %"


def add_class_section(page: Page, run: RunData, evaluate: bool = True) -> ClassEvaluation | None:
    page.section("Per-class accuracy", "classes")
    checkpoint = run.checkpoint()
    if checkpoint is None:
        page.note("No checkpoint in this run (it was trained without checkpoints), so the "
                  "per-class accuracy and the confusion matrix cannot be computed.")
        return None
    if not evaluate:
        page.note("Per-class evaluation was not requested for this report.")
        return None
    try:
        ev = evaluate_classes(checkpoint)
    except DatasetError as exc:
        page.note(f"The test split is not available here, so the per-class accuracy and the "
                  f"confusion matrix are not shown: {exc}")
        return None
    except CheckpointError as exc:
        page.note(f"The checkpoint cannot be evaluated: {exc}")
        return None
    epoch = f" (epoch {ev.epoch})" if ev.epoch is not None else ""
    page.text(f"{ev.checkpoint}{epoch} evaluated on {ev.samples} test images when this report was "
              f"written: accuracy {_pct(ev.accuracy)}.", "muted")
    page.figure(class_figure(ev), "classes-plot")
    return ev


def build_page(run_dir: str | Path, evaluate: bool = True) -> Page:
    """The report page of the training run in ``run_dir`` (``evaluate=False`` skips the
    per-class evaluation)."""
    run = RunData.read(run_dir)
    cfg, summary, history = run.config, run.summary or {}, run.history
    page = Page(f"Training run: {run.path.resolve().name}", str(run.path.resolve()))

    page.section("Summary", "summary")
    split, evaluated = held_out_history(history)  # with eval_final_only, the last epoch only
    held = "validation" if split == "val" else "test"
    best = max(evaluated, key=lambda h: h[f"{split}_accuracy"], default=None)
    page.key_values([
        ("status", "finished" if run.summary else "unfinished (no summary.json yet)"),
        ("model", cfg.get("model")),
        ("dataset", cfg.get("dataset")),
        ("parameters", f"{summary['parameters']:,}" if "parameters" in summary else None),
        ("epochs", f"{len(history)} of {cfg.get('epochs')}"),
        (f"best {held} accuracy", f"{_pct(best[f'{split}_accuracy'])} (epoch {best['epoch']})" if best else None),
        (f"final {held} accuracy", _pct(history[-1].get(f"{split}_accuracy")) if history else None),
        (f"training / {held} images", f"{summary['train_size']:,} / {summary[f'{split}_size']:,}"
         if "train_size" in summary else None),
        ("policy", cfg.get("policy")),
        ("checkpoints", ", ".join(n for n in CHECKPOINTS if (run.path / n).is_file()) or "none"),
    ])

    page.section("Curves", "curves")
    if history:
        page.figure(curves_figure(history), "curves-plot")
    else:
        page.note("No epoch has finished yet (metrics.jsonl is empty).")

    page.section("Reconstructions", "reconstructions")
    png = run.path / "reconstructions.png"
    if png.is_file():
        page.text("Top row: test images; bottom row: the decoder's reconstruction from the "
                  "longest capsule.", "muted")
        page.image(png.read_bytes(), "inputs and reconstructions")
    else:
        page.note("No reconstructions.png in this run (the model has no decoder, plots were "
                  "off, or the run is unfinished).")

    add_class_section(page, run, evaluate)

    page.section("Timing", "timing")
    seconds = [h["epoch_seconds"] for h in history if "epoch_seconds" in h]
    rates = [h["images_per_second"] for h in history if "images_per_second" in h]
    page.key_values([
        ("training seconds (sum of epochs)", f"{sum(seconds):.1f}" if seconds else None),
        ("wall seconds (data, evaluation, checkpoints included)",
         f"{summary['wall_seconds']:.1f}" if "wall_seconds" in summary else None),
        ("seconds per epoch (mean)", f"{sum(seconds) / len(seconds):.2f}" if seconds else None),
        ("images per second (mean)", f"{sum(rates) / len(rates):.1f}" if rates else None),
    ])
    if history:
        page.figure(timing_figure(history), "timing-plot")
        columns = [(key.format(split=split), name.format(split=held), fmt)
                   for key, name, fmt in HISTORY_COLUMNS]
        page.details(f"Every epoch ({len(history)})").table(history, columns).end_details()

    page.section("Configuration", "config")
    page.key_values(flatten(cfg))
    return page
