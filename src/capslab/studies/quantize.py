"""The quantization study: test accuracy of a trained network against bits, per layer group.

In the manner of Q-CapsNets (Marchisio et al., DAC 2020): each *line* of the study quantizes
one part of the network and keeps the rest float, at every bit width asked for:

* a layer group of :data:`capslab.quantize.GROUPS` (``conv``, ``primary``, ``capsule``,
  ``decoder``): that group's weights (and, with ``activations``, the inputs of its layers);
* ``routing``: every coupling coefficient of the routings, weights float;
* ``all``: every group's weights (and activations) and the routing coefficients together.

A line whose group has no weights in this network (DeepCaps has no primary-capsule layer, a
network without a decoder has no decoder) is skipped and said so. The decoder does not change
the class scores, only the reconstruction (and so the test loss), hence it is not a default line.

Files in ``out``::

    quantize.csv, quantize.json   one row per (line, bits), accuracies as fractions; the JSON
                                  also holds the settings, the float accuracy and skipped lines
    quantize.md                   accuracy (%) per line (rows) and bits (columns)
    quantize.png                  accuracy against bits, one line per group, float dashed
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Literal

from capslab.data import BatchLoader
from capslab.errors import ConfigError
from capslab.models.pretrained import load_model, model_split
from capslab.quantize import (
    GROUPS,
    QuantizationSettings,
    check_bits,
    evaluate_quantized,
    layer_groups,
    quantized_parameter_count,
)
from capslab.results import Column, pyplot, save_figure, write_table
from capslab.settings import Settings
from capslab.train import evaluate, resolve_device

LineName = Literal["conv", "primary", "capsule", "decoder", "routing", "all"]
LINES: tuple[str, ...] = (*GROUPS, "routing", "all")
DEFAULT_LINES: tuple[str, ...] = ("conv", "primary", "capsule", "routing", "all")
DEFAULT_BITS: tuple[int, ...] = (16, 12, 10, 8, 6, 4, 3, 2)

COLUMNS = [
    Column("line"), Column("bits"), Column("test_accuracy", "accuracy %", ".2f", 100.0),
    Column("accuracy_drop", "drop (points)", ".2f", 100.0), Column("test_loss", "loss", ".4f"),
    Column("tensors"), Column("parameters"),
]
CSV_KEYS = ["line", "bits", "weight_bits", "activation_bits", "routing_bits", "groups",
            "test_accuracy", "test_loss", "accuracy_drop", "tensors", "parameters"]


@dataclass
class QuantizeStudyConfig(Settings):
    """Settings of the quantization study.

    Args:
        checkpoint: a ``last.pt`` / ``best.pt`` written by training.
        bits: bit widths to measure (2-16), shown in this order (default 16 down to 2).
        lines: the study's lines, see the module docstring.
        activations: also quantize the activations of the quantized groups (same bits).
        dataset: test set (default: the checkpoint's training dataset).
        test_subset: evaluate on a stratified subset of this many test images.
        batch_size / device / data_dir: evaluation.
        out: folder of the files.
    """

    checkpoint: str
    bits: tuple[int, ...] = DEFAULT_BITS
    lines: tuple[LineName, ...] = DEFAULT_LINES  # type: ignore[assignment]
    activations: bool = False
    dataset: str | None = None
    test_subset: int | None = None
    batch_size: int = 256
    device: str = "auto"
    data_dir: str | None = None
    out: str = "runs/study-quantize"

    WHAT: ClassVar[str] = "quantization study setting"

    def validate(self) -> None:
        if not self.bits:
            raise ConfigError("bits must name at least one bit width")
        for b in self.bits:
            check_bits(b, "bits")
        if len(set(self.bits)) != len(self.bits):
            raise ConfigError(f"bits names a width twice: {list(self.bits)}")
        if not self.lines or len(set(self.lines)) != len(self.lines):
            raise ConfigError(f"lines must name distinct lines among {', '.join(LINES)}")
        if self.test_subset is not None and self.test_subset < 1:
            raise ConfigError(f"test_subset must be >= 1, got {self.test_subset}")
        if self.batch_size < 1:
            raise ConfigError(f"batch_size must be >= 1, got {self.batch_size}")


def line_settings(line: str, bits: int, activations: bool = False) -> QuantizationSettings:
    """What one point of the study quantizes: line ``line`` at ``bits`` bits."""
    act = bits if activations else None
    if line == "routing":
        return QuantizationSettings(weight_bits=None, routing_bits=bits)
    if line == "all":
        return QuantizationSettings(weight_bits=bits, activation_bits=act, routing_bits=bits)
    if line not in GROUPS:
        raise ConfigError(f"unknown study line {line!r}; valid: {', '.join(LINES)}")
    return QuantizationSettings(weight_bits=bits, activation_bits=act, groups=(line,))


def empty_lines(model, lines: tuple[str, ...]) -> dict[str, str]:
    """The lines this network has nothing for, with the reason."""
    groups = layer_groups(model)
    return {line: f"{type(model).__name__} has no {line} weights"
            for line in lines if line in groups and not groups[line]}


def load_test_split(model, dataset: str | None, data_dir: str | None, test_subset: int | None,
                    source: str):
    """The test split the network is evaluated on (the checkpoint's dataset by default)."""
    name = dataset or model.pretrained_cfg["dataset"]
    if name is None:
        raise ConfigError(f"checkpoint {source} records no dataset; name one")
    return name, model_split(model, name, "test", source, data_dir).stratified(test_subset or None, 0)


def run_quantize_study(
    config: QuantizeStudyConfig,
    on_point: Callable[[str, int, str], None] | None = None,
) -> dict[str, Any]:
    """Evaluate the float network, then every (line, bits) point; write the files.

    Args:
        config: the study.
        on_point: called after each point as ``(line, bits, status)`` (status ``"done"`` or
            ``"skipped"``): ``len(lines) * len(bits)`` calls, for a progress display.
    Returns:
        The result (also in ``quantize.json``): ``model, dataset, images, float, rows,
        skipped, files`` and the settings.
    """
    device = resolve_device(config.device)
    model = load_model(config.checkpoint, map_location=device)
    cfg = model.pretrained_cfg
    name, test = load_test_split(model, config.dataset, config.data_dir, config.test_subset,
                                 config.checkpoint)
    loader = BatchLoader(test, config.batch_size, shuffle=False)
    weight = cfg["settings"].get("reconstruction_weight", 0.0005)
    base = evaluate(model, loader, device, weight)
    skipped = empty_lines(model, config.lines)
    rows = []
    for line in config.lines:
        for bits in config.bits:
            if line in skipped:
                if on_point is not None:
                    on_point(line, bits, "skipped")
                continue
            settings = line_settings(line, bits, config.activations)
            result = evaluate_quantized(model, loader, settings, device, weight)
            tensors, parameters = quantized_parameter_count(model, settings)
            rows.append({
                "line": line, "bits": bits, "weight_bits": settings.weight_bits,
                "activation_bits": settings.activation_bits, "routing_bits": settings.routing_bits,
                "groups": ",".join(settings.groups) if settings.weight_bits is not None else "",
                "test_accuracy": result["test_accuracy"], "test_loss": result["test_loss"],
                "accuracy_drop": base["test_accuracy"] - result["test_accuracy"],
                "tensors": tensors, "parameters": parameters,
            })
            if on_point is not None:
                on_point(line, bits, "done")
    result = {
        "checkpoint": config.checkpoint, "model": cfg["model_name"], "dataset": name,
        "images": len(test), "epoch": cfg["epoch"], "activations": config.activations,
        "bits": list(config.bits), "lines": list(config.lines),
        "float": {"test_accuracy": base["test_accuracy"], "test_loss": base["test_loss"]},
        "skipped": skipped, "settings": config.to_dict(), "rows": rows,
    }
    result["files"] = write_files(result, Path(config.out))
    return result


def accuracy_grid(result: dict[str, Any]) -> dict[str, dict[int, float]]:
    """``{line: {bits: accuracy}}`` of a study result (lines that ran, in order)."""
    grid: dict[str, dict[int, float]] = {}
    for row in result["rows"]:
        grid.setdefault(row["line"], {})[row["bits"]] = row["test_accuracy"]
    return grid


def markdown(result: dict[str, Any]) -> str:
    """Accuracy (%) with one row per line and one column per bit width."""
    bits = result["bits"]
    what = "weights and activations" if result["activations"] else "weights"
    lines = [
        f"Test accuracy (%) of {result['model']} on {result['images']} {result['dataset']} test "
        f"images, one part quantized at a time ({what}; `routing`: coupling coefficients; `all`: "
        f"everything); float: {100 * result['float']['test_accuracy']:.2f} %.",
        "",
        "| line | float | " + " | ".join(f"{b} bits" for b in bits) + " |",
        "|---|---|" + "---|" * len(bits),
    ]
    float_acc = f"{100 * result['float']['test_accuracy']:.2f}"
    for line, accs in accuracy_grid(result).items():
        cells = [f"{100 * accs[b]:.2f}" if b in accs else "-" for b in bits]
        lines.append(f"| {line} | {float_acc} | " + " | ".join(cells) + " |")
    for line, why in result["skipped"].items():
        lines.append(f"\n{line}: skipped ({why}).")
    return "\n".join(lines) + "\n"


def plot(result: dict[str, Any]):
    """Accuracy (%) against bits, one line per study line, the float accuracy dashed."""
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    for line, accs in accuracy_grid(result).items():
        bits = sorted(accs)
        ax.plot(bits, [100 * accs[b] for b in bits], marker="o", label=line)
    ax.axhline(100 * result["float"]["test_accuracy"], color="gray", linestyle="--", label="float")
    ax.set_xlabel("bits")
    ax.set_ylabel("test accuracy (%)")
    ax.set_xticks(sorted(result["bits"]))
    ax.invert_xaxis()  # precision falls from left to right
    ax.set_title(f"{result['model']} on {result['dataset']}: post-training quantization")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    return fig


def write_files(result: dict[str, Any], out: Path) -> dict[str, str]:
    """``quantize.csv/.md/.json`` and ``quantize.png`` in ``out``; returns their paths."""
    out.mkdir(parents=True, exist_ok=True)
    extra = {k: v for k, v in result.items() if k not in ("rows", "files")}
    paths = write_table(result["rows"], out / "quantize", "quantize-study", COLUMNS,
                        csv_keys=CSV_KEYS, markdown=markdown(result), extra=extra)
    paths["plot"] = save_figure(plot(result), out / "quantize.png")
    return {k: str(v) for k, v in paths.items()}
