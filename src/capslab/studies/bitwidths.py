"""Per-layer bit widths: the narrowest weights (and routing) a trained network tolerates.

After the manner of Q-CapsNets (Marchisio et al., DAC 2020), scored on a validation split,
never the test split (on which the result is reported): the images the network's training
held out (``capslab train --val-size``), else a subset of the training split, which it may
have learned (:func:`validation_split`):

1. **uniform**: the fewest bits ``b`` for every weight tensor at once whose accuracy stays
   within ``tolerance`` (points) of the float network's;
2. **layer by layer**: from ``b``, each weight tensor in turn, from the last layer to the
   first (deeper layers first, as Q-CapsNets does), loses one bit at a time while the whole
   network stays within ``tolerance``;
3. **routing**: with those weights, the fewest bits of the coupling coefficients within
   ``tolerance``.

Every step keeps the accuracy of the network found so far within the tolerance of float, so
the result does. Its weight memory (each tensor at its width) is set beside 8-bit and float32
weights, and the test accuracy of the result beside float's; for a network with a NASCaps
description (CapsNet, DeepCaps, genotype networks) also CapsAcc's weight memory with each
hardware layer at the width of its tensor (:func:`capsacc_memory`). Files in ``out``:
``bitwidths.json`` (the widths by tensor, each step's accuracy, the memory), ``bitwidths.md``
and ``bitwidths.png`` (bits per layer).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

from capslab.data import BatchLoader
from capslab.errors import ConfigError
from capslab.hw import CAPSACC, Accelerator, estimate, expand, weight_memory_at_widths
from capslab.hw.estimate import weight_layers
from capslab.io import atomic_write_json, atomic_write_text
from capslab.models.pretrained import load_model, model_split
from capslab.quantize import (
    MAX_BITS,
    MIN_BITS,
    QuantizationSettings,
    evaluate_quantized,
    weight_memory_bytes,
    weight_widths,
)
from capslab.results import pyplot, save_figure
from capslab.settings import Settings
from capslab.studies.quantize import load_test_split
from capslab.train import evaluate, resolve_device

#: the groups whose weights the search narrows (the decoder does not change the class scores)
SEARCH_GROUPS = ("conv", "primary", "capsule")


@dataclass
class BitWidthConfig(Settings):
    """Settings of the bit-width search.

    Args:
        checkpoint: a ``last.pt`` / ``best.pt`` written by training.
        tolerance: accuracy (points, 0-100) the result may lose against float on the
            validation split.
        val_size: validation images, a stratified subset of the training split (seed 0).
        max_bits / min_bits: the widths tried.
        test_subset: test images the result is reported on (default: all).
        batch_size / device / data_dir: evaluation.
        out: folder of the files.
    """

    checkpoint: str
    tolerance: float = 0.5
    val_size: int = 2000
    max_bits: int = 16
    min_bits: int = MIN_BITS
    test_subset: int | None = None
    batch_size: int = 256
    device: str = "auto"
    data_dir: str | None = None
    out: str = "runs/study-bitwidths"

    WHAT: ClassVar[str] = "bit-width search setting"

    def validate(self) -> None:
        if not 0 <= self.tolerance <= 100:
            raise ConfigError(f"tolerance is in accuracy points, 0 to 100, got {self.tolerance}")
        if not MIN_BITS <= self.min_bits <= self.max_bits <= MAX_BITS:
            raise ConfigError(f"bits must satisfy {MIN_BITS} <= min_bits <= max_bits <= "
                              f"{MAX_BITS}, got {self.min_bits} and {self.max_bits}")
        if self.val_size < 10:
            raise ConfigError(f"val_size must be at least 10 images, got {self.val_size}")


def search_bit_widths(
    accuracy: Callable[[QuantizationSettings], float],
    tensors: list[str],
    float_accuracy: float,
    tolerance: float,
    max_bits: int = 16,
    min_bits: int = MIN_BITS,
    on_step: Callable[[str, QuantizationSettings, float], None] | None = None,
) -> tuple[QuantizationSettings, list[dict[str, Any]]]:
    """The three steps of the module docstring; ``accuracy(settings)`` scores a setting (on the
    validation split), ``tensors`` are the weights to narrow in network order, ``tolerance``
    a fraction (0.005 = half a point). Returns the settings found and every step tried."""
    floor = float_accuracy - tolerance
    steps: list[dict[str, Any]] = []

    def score(step: str, settings: QuantizationSettings) -> bool:
        acc = accuracy(settings)
        steps.append({"step": step, "settings": settings.describe(), "accuracy": acc,
                      "kept": acc >= floor})
        if on_step is not None:
            on_step(step, settings, acc)
        return acc >= floor

    def at(widths: dict[str, int], routing: int | None = None) -> QuantizationSettings:
        return QuantizationSettings(weight_bits=None, layer_bits=dict(widths), routing_bits=routing)

    uniform = max_bits  # kept even if it misses the tolerance (nothing wider is tried)
    for bits in range(max_bits, min_bits - 1, -1):  # fewer bits rarely help: stop at a miss
        if not score(f"uniform {bits}", at(dict.fromkeys(tensors, bits))):
            break
        uniform = bits
    widths = dict.fromkeys(tensors, uniform)
    for name in reversed(tensors):
        while widths[name] > min_bits:
            trial = {**widths, name: widths[name] - 1}
            if not score(f"{name} {trial[name]}", at(trial)):
                break
            widths = trial
    routing = None
    for bits in range(max_bits, min_bits - 1, -1):
        if not score(f"routing {bits}", at(widths, bits)):
            break
        routing = bits
    return at(widths, routing), steps


def validation_split(train, settings: dict[str, Any], val_size: int):
    """The images the search scores on, and where they come from: the validation split the
    network was trained WITHOUT when its training held one out (``--val-size``: the same
    images, exactly), else ``val_size`` training images it may have learned (which flatters
    both accuracies alike, but a tolerance met there can be missed on the test split)."""
    from capslab.train.loop import hold_out

    held = settings.get("val_size")
    if held:
        return hold_out(train, held, settings.get("seed", 0))[1], "held out in training"
    return train.stratified(val_size, 0), "training images (the network may have learned them)"


def run_bitwidth_search(config: BitWidthConfig,
                        on_step: Callable[[str, QuantizationSettings, float], None] | None = None
                        ) -> dict[str, Any]:
    """Load the checkpoint, search on the validation split, report on the test split; write
    the files. Returns the result (also ``bitwidths.json``)."""
    device = resolve_device(config.device)
    model = load_model(config.checkpoint, map_location=device)
    cfg = model.pretrained_cfg
    name, test = load_test_split(model, None, config.data_dir, config.test_subset,
                                 config.checkpoint)
    val, source = validation_split(model_split(model, name, "train", config.checkpoint,
                                               config.data_dir),
                                   cfg["settings"], config.val_size)
    val_loader = BatchLoader(val, config.batch_size, shuffle=False)
    test_loader = BatchLoader(test, config.batch_size, shuffle=False)
    weight = cfg["settings"].get("reconstruction_weight", 0.0005)
    tensors = list(weight_widths(model, QuantizationSettings(weight_bits=MAX_BITS,
                                                             groups=SEARCH_GROUPS)))
    if not tensors:
        raise ConfigError(f"{config.checkpoint}: the network has no weights to quantize")
    float_val = evaluate(model, val_loader, device, weight)["test_accuracy"]

    def accuracy(settings: QuantizationSettings) -> float:
        return evaluate_quantized(model, val_loader, settings, device, weight)["test_accuracy"]

    found, steps = search_bit_widths(accuracy, tensors, float_val, config.tolerance / 100,
                                     config.max_bits, config.min_bits, on_step)
    params = dict(model.named_parameters())
    eight = QuantizationSettings(weight_bits=8, groups=SEARCH_GROUPS)
    result = {
        "checkpoint": config.checkpoint, "model": cfg["model_name"], "dataset": name,
        "validation_images": len(val), "validation_source": source, "test_images": len(test),
        "tolerance_points": config.tolerance,
        "widths": {n: {"bits": b, "parameters": params[n].numel()}
                   for n, b in weight_widths(model, found).items()},
        "routing_bits": found.routing_bits,
        "validation": {"float": float_val, "quantized": accuracy(found)},
        "test": {"float": evaluate(model, test_loader, device, weight)["test_accuracy"],
                 "quantized": evaluate_quantized(model, test_loader, found, device,
                                                 weight)["test_accuracy"]},
        "weight_memory_bytes": {"found": weight_memory_bytes(model, found),
                                "8-bit": weight_memory_bytes(model, eight),
                                "float32": 4 * sum(params[n].numel() for n in tensors)},
        "capsacc_memory": capsacc_memory(model, weight_widths(model, found), found.routing_bits),
        "steps": steps, "settings": config.to_dict(),
    }
    result["files"] = write_files(result, Path(config.out))
    return result


def capsacc_memory(model, widths: dict[str, int], routing_bits: int | None,
                   accelerator: Accelerator = CAPSACC) -> dict[str, Any] | None:
    """The hardware model's weight memory of ``model`` (its :meth:`hardware_genotype`) with
    each weight layer at the width of the tensor it holds, and the routing couplings at
    ``routing_bits`` (32 when they stay float), beside the accelerator's own uniform width
    (NASCaps' Table 3 figure). ``None`` when the network has no hardware description, or
    one whose weight layers do not pair one to one with the network's tensors."""
    genotype = getattr(model, "hardware_genotype", lambda: None)()
    if genotype is None:
        return None
    layers = weight_layers(expand(genotype))
    if len(layers) != len(widths):
        return None
    bits = list(widths.values())
    found = weight_memory_at_widths(genotype, bits, routing_bits or 32, accelerator)
    pairs = [{"tensor": n, "hardware_layer": hl.name, "bits": b}
             for (n, b), hl in zip(widths.items(), layers, strict=True)]
    return {"accelerator": accelerator.name, "genotype": genotype.exchange(),
            "uniform_bits": accelerator.weight_bits,
            "uniform_bytes": estimate(genotype, accelerator, check=False).memory_bytes,
            "found_bytes": sum(m.bytes for m in found),
            "routing_bits": routing_bits or 32, "layers": pairs}


def markdown(result: dict[str, Any]) -> str:
    """The widths found, and the memory and accuracy beside 8-bit and float."""
    mem = result["weight_memory_bytes"]
    lines = ["| weight tensor | parameters | bits |", "|---|---|---|"]
    lines += [f"| `{n}` | {w['parameters']:,} | {w['bits']} |" for n, w in result["widths"].items()]
    routing = result["routing_bits"]
    lines += ["", f"routing coefficients: {routing if routing is not None else 'float'} bits",
              "", "| | weight memory | validation accuracy % | test accuracy % |", "|---|---|---|---|",
              f"| float32 | {mem['float32'] / 1024:,.1f} KiB | {100 * result['validation']['float']:.2f} "
              f"| {100 * result['test']['float']:.2f} |",
              f"| 8-bit | {mem['8-bit'] / 1024:,.1f} KiB | | |",
              f"| found | {mem['found'] / 1024:,.1f} KiB | {100 * result['validation']['quantized']:.2f} "
              f"| {100 * result['test']['quantized']:.2f} |"]
    hw = result.get("capsacc_memory")
    if hw:
        lines += ["", f"{hw['accelerator']} weight memory (the hardware model, routing couplings "
                  f"included): {hw['uniform_bytes'] / 1024:,.1f} KiB at {hw['uniform_bits']} bits, "
                  f"{hw['found_bytes'] / 1024:,.1f} KiB at the widths found "
                  f"({hw['uniform_bytes'] / hw['found_bytes']:.2f}x less)"]
    return "\n".join(lines) + "\n"


def write_files(result: dict[str, Any], out: Path) -> dict[str, str]:
    out.mkdir(parents=True, exist_ok=True)
    files = {"json": out / "bitwidths.json", "md": out / "bitwidths.md", "png": out / "bitwidths.png"}
    atomic_write_json(files["json"], result)
    atomic_write_text(files["md"], markdown(result))
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(6, 3))
    names = list(result["widths"])
    ax.bar(range(len(names)), [w["bits"] for w in result["widths"].values()])
    ax.set_xticks(range(len(names)), [n.rsplit(".", 1)[0] for n in names], rotation=30, ha="right")
    ax.set_ylabel("bits")
    ax.set_title(f"{result['model']}: weight bits within {result['tolerance_points']} points")
    fig.tight_layout()
    save_figure(fig, files["png"])
    return {k: str(v) for k, v in files.items()}
