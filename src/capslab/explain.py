"""What the capsules learned: Sabour et al.'s dimension sweeps and the routing's coupling
coefficients, for a few test images of a trained network (``capslab explain``).

* **Dimension sweeps** (Sabour, Frosst and Hinton 2017, figure 4): the class capsule of an
  image (the predicted class, or the true one) is perturbed one dimension at a time, by each of
  a few offsets (default -0.25 to 0.25 in steps of 0.05, added to the value, the others kept),
  and every perturbed capsule is decoded by the network's reconstruction decoder
  (:func:`capsule_sweep`). Offset 0 is the plain reconstruction.
* **Routing** (:func:`class_routing`): the coupling coefficients ``c_ij`` of the class-capsule
  layer after its last routing iteration, for every input capsule ``i`` and class ``j``. They
  are not taken from inside the network's forward pass: the inputs of the class layer are
  captured with a forward hook while the network runs unchanged, and the layer's routing is
  run again on them with its own routing function asked for its couplings
  (``return_couplings``). The couplings are checked against the network: ``v_j =
  squash(sum_i c_ij u_hat[j|i] (+ bias_j))`` must give the network's class capsules
  (:attr:`ClassRouting.deviation`), else :func:`class_routing` raises.
* :func:`write_explanation`: a PNG per image and figure, one HTML page (the report page shell
  of :mod:`capslab.report.html`, the PNGs inside it) and ``explain.json`` with the numbers.

Input capsules are grouped for the heatmap: by capsule type where they come from a capsule grid
(``PrimaryCaps``, ``DepthwisePrimaryCaps`` or ``FlatCaps``, type-major), one row per capsule
where there are few and no grid (the capsule layers of ResCapsNet and MoCapsNet), else all in
one row. A group's value is the mean coupling of its capsules (so a row still sums to 1 over
the classes for routing-by-agreement and SDA).
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from capslab.device import resolve_device
from capslab.errors import CheckpointError, ConfigError
from capslab.io import atomic_write_text
from capslab.layers import ClassCaps, DepthwisePrimaryCaps, FlatCaps, PrimaryCaps
from capslab.models.genotype_net import ClassStage
from capslab.models.pretrained import load_model, model_split
from capslab.ops import capsule_lengths, exp_squash, safe_norm, squash
from capslab.report.html import Page
from capslab.results import pyplot, save_figure, versioned
from capslab.routing import (
    clip_predictions,
    dynamic_routing,
    scaled_distance_agreement,
    self_attention_routing,
)

#: Sabour et al.'s sweep: -0.25 to 0.25 in steps of 0.05, added to one dimension at a time
MAX_OFFSET = 0.25
STEP = 0.05
CAPSULES = ("predicted", "true")
JSON_FILE = "explain.json"
HTML_FILE = "explain.html"
#: inputs without a grid get one heatmap row each up to this many, else one row for all
MAX_CAPSULE_ROWS = 64
#: largest difference allowed between the network's class capsules and those the captured
#: couplings give (float32; the network may route from the poses, the same maths reordered)
MAX_DEVIATION = 1e-4


def sweep_offsets(max_offset: float = MAX_OFFSET, step: float = STEP) -> list[float]:
    """``[-max_offset, ..., 0, ..., max_offset]`` in steps of ``step`` (0 included exactly)."""
    if not (math.isfinite(step) and step > 0):
        raise ConfigError(f"the sweep step must be positive, got {step}")
    if not (math.isfinite(max_offset) and max_offset >= 0):
        raise ConfigError(f"the largest offset must be >= 0, got {max_offset}")
    n = round(max_offset / step)
    if abs(n * step - max_offset) > 1e-9 * max(1.0, max_offset):
        raise ConfigError(f"the largest offset {max_offset} is not a multiple of the step {step}")
    if n > 50:
        raise ConfigError(f"{2 * n + 1} offsets are too many for a figure (at most 101)")
    return [round(k * step, 10) for k in range(-n, n + 1)]


# --------------------------------------------------------------------------- dimension sweeps
def capsule_sweep(decoder: nn.Module, caps: Tensor, classes: Tensor,
                  offsets: Sequence[float]) -> Tensor:
    """Decode every one-dimension perturbation of one class capsule per image.

    Args:
        decoder: the network's reconstruction decoder (``decoder(v, target)``).
        caps: ``[N, C, D]`` class capsules.
        classes: ``[N]`` the class whose capsule is perturbed (and decoded) for each image.
        offsets: ``S`` values added to one dimension at a time.
    Returns:
        ``[N, D, S, channels, H, W]``: entry ``[n, d, s]`` decodes image ``n``'s capsule with
        ``offsets[s]`` added to dimension ``d`` of class ``classes[n]``. Where an offset is 0
        the capsule is unchanged, so the entry is the plain reconstruction.
    """
    n, c, d = caps.shape
    s = len(offsets)
    off = torch.as_tensor(list(offsets), dtype=caps.dtype, device=caps.device)
    delta = torch.eye(d, dtype=caps.dtype, device=caps.device)[:, None, :] * off[None, :, None]
    one_hot = torch.nn.functional.one_hot(classes.to(caps.device), c).to(caps.dtype)  # [N, C]
    perturbed = caps[:, None, None] + one_hot[:, None, None, :, None] * delta[None, :, :, None, :]
    target = classes.to(caps.device)[:, None, None].expand(n, d, s).reshape(-1)
    out = decoder(perturbed.reshape(n * d * s, c, d), target)
    return out.view(n, d, s, *out.shape[1:])


# --------------------------------------------------------------------------- routing
@dataclass
class InputGroups:
    """How the class layer's input capsules are grouped for the heatmap.

    names: one per group; index: ``[n_in]`` the group of every input capsule; kind: ``"type"``
    (capsule types of one or more grids), ``"capsule"`` (one group per capsule) or ``"all"``;
    grid: ``(types, H, W)`` when the inputs are exactly one type-major capsule grid with more
    than one position, else ``None``.
    """

    names: list[str]
    index: Tensor
    kind: str
    grid: tuple[int, int, int] | None = None

    def mean(self, values: Tensor) -> Tensor:
        """``[B, n_in, C] -> [B, G, C]``: the mean over each group's capsules."""
        g = len(self.names)
        index = self.index.to(values.device)
        total = values.new_zeros(values.shape[0], g, values.shape[2]).index_add_(1, index, values)
        counts = torch.bincount(index, minlength=g).to(values.dtype)
        return total / counts[None, :, None]


@dataclass
class ClassRouting:
    """The routing of the class-capsule layer for a batch of images.

    couplings: ``[B, n_in, C]`` after the last iteration (RBA, SDA: softmax over the classes;
    self-attention: ``c_ij + b_ij``, the weights of its sum); predictions: ``[B, n_in, C, D]``
    the vectors they weight (for SDA the clipped ones); bias: ``[C, D]`` added to ``s_j``
    before the squash, or ``None``; caps: ``[B, C, D]`` the network's class capsules;
    deviation: the largest difference between ``caps`` and :meth:`capsules`.
    """

    routing: str
    iterations: int
    couplings: Tensor
    predictions: Tensor
    bias: Tensor | None
    caps: Tensor
    groups: InputGroups
    deviation: float = 0.0

    def capsules(self) -> Tensor:
        """``v_j = squash(sum_i c_ij u_hat[j|i] (+ bias_j))`` from the captured couplings
        (Efficient-CapsNet's ``exp_squash`` for self-attention)."""
        s = torch.einsum("bij,bijd->bjd", self.couplings, self.predictions)
        if self.bias is not None:
            s = s + self.bias
        return exp_squash(s) if self.routing == "self-attention" else squash(s)

    def group_couplings(self) -> Tensor:
        """``[B, G, C]``: the mean coupling of each input group to each class."""
        return self.groups.mean(self.couplings)

    def position_couplings(self, classes: Tensor) -> Tensor | None:
        """``[B, H, W]``: each grid position's coupling to ``classes[b]``, mean over the types
        (``None`` without a grid)."""
        if self.groups.grid is None:
            return None
        t, h, w = self.groups.grid
        b = self.couplings.shape[0]
        rows = torch.arange(b, device=self.couplings.device)
        chosen = self.couplings[rows, :, classes.to(self.couplings.device)]  # [B, n_in]
        return chosen.view(b, t, h, w).mean(dim=1)


def class_layer(model: nn.Module) -> nn.Module:
    """The layer that routes to the class capsules: a genotype network's ``ClassStage``, else
    the last :class:`ClassCaps` with one output per class."""
    stages = [m for m in model.modules() if isinstance(m, ClassStage)]
    if stages:
        return stages[-1]
    num_classes = getattr(model, "num_classes", None)
    layers = [m for m in model.modules()
              if isinstance(m, ClassCaps) and (num_classes is None or m.num_out == num_classes)]
    if not layers:
        raise ConfigError(f"{type(model).__name__} has no routed class-capsule layer to explain")
    return layers[-1]


def _route_caps(layer: ClassCaps, u: Tensor) -> tuple[Tensor, Tensor, Tensor | None]:
    """``(couplings, predictions, bias)`` of one :class:`ClassCaps` on its input ``u``: the
    layer's routing run on the prediction vectors (what its forward pass computes, or the same
    maths from the poses)."""
    u_hat = layer.predictions(u)
    if layer.routing == "self-attention":
        _, c = self_attention_routing(u_hat, layer.routing_bias, return_couplings=True)
        return c, u_hat, None
    if layer.routing == "sda":
        u_norm = safe_norm(u, dim=-1)
        _, c = scaled_distance_agreement(u_hat, u_norm, layer.num_iterations, bias=layer.bias,
                                         return_couplings=True)
        return c, clip_predictions(u_hat, u_norm), layer.bias
    _, c = dynamic_routing(u_hat, layer.num_iterations, return_couplings=True)
    return c, u_hat, None


def _route_stage(stage: ClassStage, grids: Sequence[Tensor]) -> tuple[Tensor, Tensor, Tensor | None]:
    """As :func:`_route_caps`, for a genotype network's class stage (``ClassStage.forward``)."""
    flats = [stage.flat(g) for g in grids]
    if len(flats) == 1:
        return _route_caps(stage.caps[0], flats[0])
    u_hat = torch.cat([c.predictions(u) for c, u in zip(stage.caps, flats, strict=True)], dim=1)
    if stage.routing == "self-attention":
        bias = torch.cat([c.routing_bias for c in stage.caps], dim=0)
        _, c = self_attention_routing(u_hat, bias, return_couplings=True)
        return c, u_hat, None
    if stage.routing == "sda":
        u_norm = torch.cat([safe_norm(u, dim=-1) for u in flats], dim=1)
        _, c = scaled_distance_agreement(u_hat, u_norm, stage.routing_iterations,
                                         return_couplings=True)
        return c, clip_predictions(u_hat, u_norm), None
    _, c = dynamic_routing(u_hat, stage.routing_iterations, return_couplings=True)
    return c, u_hat, None


def _grid_of(module: nn.Module, x: Tensor, out: Tensor) -> tuple[int, int, int]:
    """``(types, H, W)`` of a capsule grid layer's output (type-major capsules)."""
    if isinstance(module, FlatCaps):
        return x.shape[1], x.shape[3], x.shape[4]
    conv = module.conv
    h, w = ((x.shape[2 + a] + 2 * conv.padding[a] - conv.dilation[a] * (conv.kernel_size[a] - 1) - 1)
            // conv.stride[a] + 1 for a in (0, 1))
    return module.num_types, h, w


def _groups(sources: list[tuple[int, int, int]] | None, n_in: int) -> InputGroups:
    """Groups of ``n_in`` inputs that are the concatenation of type-major ``sources`` (or of no
    known grids: ``None``)."""
    if sources:
        names: list[str] = []
        index: list[Tensor] = []
        for k, (t, h, w) in enumerate(sources):
            prefix = f"grid {k + 1} " if len(sources) > 1 else ""
            index.append(torch.arange(t).repeat_interleave(h * w) + len(names))
            names += [f"{prefix}type {i}" for i in range(t)]
        t, h, w = sources[0]
        grid = sources[0] if len(sources) == 1 and h * w > 1 else None
        return InputGroups(names, torch.cat(index), "type", grid)
    if n_in <= MAX_CAPSULE_ROWS:
        return InputGroups([f"capsule {i}" for i in range(n_in)], torch.arange(n_in), "capsule")
    return InputGroups(["all inputs"], torch.zeros(n_in, dtype=torch.long), "all")


def _match_grids(records: list[tuple[Tensor, tuple[int, int, int]]], u: Tensor):
    """The grids whose capsules, concatenated in the order they were computed, are ``u``."""
    for k in range(1, len(records) + 1):
        tail = records[-k:]
        size = sum(out.shape[1] for out, _ in tail)
        if size > u.shape[1]:
            return None
        if size == u.shape[1] and all(out.shape[0] == u.shape[0] and out.shape[2] == u.shape[2]
                                      for out, _ in tail):
            if torch.equal(torch.cat([out for out, _ in tail], dim=1), u):
                return [grid for _, grid in tail]
    return None


def class_routing(model: nn.Module, images: Tensor) -> ClassRouting:
    """Run ``model`` on ``images`` (``[B, channels, H, W]`` in [0, 1]) and return the coupling
    coefficients of its class-capsule layer.

    The network runs as always (forward hooks only read the class layer's input and output and
    the capsule grids computed before it); the layer's routing then runs again on the captured
    input with ``return_couplings``. Raises ``RuntimeError`` if the couplings do not reproduce
    the network's class capsules to :data:`MAX_DEVIATION`.
    """
    layer = class_layer(model)
    seen: dict[str, Any] = {}
    records: list[tuple[Tensor, tuple[int, int, int]]] = []

    def on_grid(module, args, out):
        records.append((out, _grid_of(module, args[0], out)))

    def on_class(module, args, out):
        seen["input"], seen["output"] = args[0], out

    handles = [m.register_forward_hook(on_grid) for m in model.modules()
               if isinstance(m, PrimaryCaps | DepthwisePrimaryCaps | FlatCaps)]
    handles.append(layer.register_forward_hook(on_class))
    try:
        with torch.no_grad():
            model(images)
            if "input" not in seen:
                raise RuntimeError(f"{type(model).__name__} did not call its class layer")
            if isinstance(layer, ClassStage):
                grids = list(seen["input"])
                c, preds, bias = _route_stage(layer, grids)
                sources = [(g.shape[1], g.shape[3], g.shape[4]) for g in grids]
                routing, iterations = layer.routing, layer.routing_iterations
            else:
                u = seen["input"]
                c, preds, bias = _route_caps(layer, u)
                sources = _match_grids(records, u)
                routing, iterations = layer.routing, layer.num_iterations
    finally:
        for h in handles:
            h.remove()
    caps = seen["output"].detach()
    bias = None if bias is None else bias.detach()
    iterations = 1 if routing == "self-attention" else iterations
    result = ClassRouting(routing, iterations, c.detach(), preds.detach(), bias, caps,
                          _groups(sources, c.shape[1]))
    with torch.no_grad():
        result.deviation = float((result.capsules() - caps).abs().max()) if caps.numel() else 0.0
    if not result.deviation <= MAX_DEVIATION:
        raise RuntimeError(
            f"the captured couplings give class capsules {result.deviation:.3g} away from the "
            f"network's ({routing} routing): explain's routing no longer matches the layer's"
        )
    return result


# --------------------------------------------------------------------------- explanation
@dataclass
class Explanation:
    """Sweeps and routing of ``N`` images (see the module docstring).

    images: ``[N, channels, H, W]`` in [0, 1]; labels: ``[N]`` or ``None``; indices: the images'
    positions in their split; explained: ``[N]`` the class whose capsule is swept; lengths:
    ``[N, C]``; reconstructions: ``[N, channels, H, W]`` of the explained capsules; sweeps:
    ``[N, D, S, channels, H, W]`` (``None`` without sweeps).
    """

    images: Tensor
    labels: Tensor | None
    indices: list[int]
    classes: list[str]
    capsule: str
    offsets: list[float]
    routing: ClassRouting
    explained: Tensor
    reconstructions: Tensor | None = None
    sweeps: Tensor | None = None
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def caps(self) -> Tensor:
        return self.routing.caps

    @property
    def lengths(self) -> Tensor:
        return capsule_lengths(self.routing.caps)

    @property
    def predictions(self) -> Tensor:
        return self.lengths.argmax(dim=1)

    def sweep_change(self) -> Tensor | None:
        """``[N, D]``: how much each dimension changes its image, the mean absolute pixel
        difference between the reconstructions at the largest and the smallest offset (0 for a
        dimension the decoder ignores)."""
        if self.sweeps is None:
            return None
        return (self.sweeps[:, :, -1] - self.sweeps[:, :, 0]).abs().flatten(2).mean(dim=2)


def explain(model: nn.Module, images: Tensor, labels: Tensor | None = None, *,
            capsule: str = "predicted", offsets: Sequence[float] | None = None,
            sweep: bool = True, classes: Sequence[str] | None = None) -> Explanation:
    """Sweeps (``sweep``: the network needs a decoder) and routing of ``images``.

    Args:
        model: a CapsLab classifier (put in eval mode).
        images: ``[N, channels, H, W]`` in [0, 1], on the model's device.
        labels: ``[N]`` true classes (needed for ``capsule="true"``).
        capsule: sweep the ``"predicted"`` class's capsule or the ``"true"`` one's.
        offsets: values added to one dimension at a time (default :func:`sweep_offsets`).
        classes: class names (default ``"0"``, ``"1"``, ...).
    """
    if capsule not in CAPSULES:
        raise ConfigError(f"capsule must be one of {', '.join(CAPSULES)}, got {capsule!r}")
    if capsule == "true" and labels is None:
        raise ConfigError("capsule='true' needs the images' labels")
    if sweep and getattr(model, "decoder", None) is None:
        raise ConfigError(f"{type(model).__name__} has no decoder: its capsules cannot be drawn")
    offsets = sweep_offsets() if offsets is None else [float(o) for o in offsets]
    model.eval()
    routing = class_routing(model, images)
    caps = routing.caps
    predicted = capsule_lengths(caps).argmax(dim=1)
    explained = predicted if capsule == "predicted" else labels.to(predicted.device)
    num_classes = caps.shape[1]
    names = list(classes) if classes else [str(i) for i in range(num_classes)]
    out = Explanation(images, labels, list(range(images.shape[0])), names, capsule, offsets,
                      routing, explained)
    if sweep:
        with torch.no_grad():
            out.reconstructions = model.decoder(caps, explained)
            out.sweeps = capsule_sweep(model.decoder, caps, explained, offsets)
    return out


def pick_images(labels: Tensor, count: int) -> list[int]:
    """``count`` indices into ``labels``, classes in turn: the first image of every class (in
    class order), then the second of every class, ... (in split order within a class)."""
    labels = torch.as_tensor(labels).reshape(-1)
    by_class = [torch.nonzero(labels == c).flatten().tolist() for c in torch.unique(labels).tolist()]
    picked: list[int] = []
    for r in range(max((len(i) for i in by_class), default=0)):
        for indices in by_class:
            if r < len(indices) and len(picked) < count:
                picked.append(indices[r])
    return picked


def default_out(checkpoint: str | os.PathLike) -> Path:
    """``explain-<checkpoint name>`` beside the checkpoint (``runs/train/explain-best``)."""
    path = Path(checkpoint)
    return path.parent / f"explain-{path.stem}"


def explain_checkpoint(
    checkpoint: str | os.PathLike,
    *,
    images: int | None = None,
    indices: Sequence[int] | None = None,
    dataset: str | None = None,
    data_dir: str | os.PathLike | None = None,
    capsule: str = "predicted",
    offsets: Sequence[float] | None = None,
    sweep: bool = True,
    device: str = "cpu",
) -> Explanation:
    """:func:`explain` for test images of a checkpoint's dataset (or ``dataset``).

    ``indices`` picks test images; else ``images`` of them (default: one per class) by
    :func:`pick_images`. Raises :class:`~capslab.errors.CheckpointError` for a missing or
    unreadable checkpoint and, with ``sweep``, for a network without a decoder.
    """
    path = Path(checkpoint)
    if capsule not in CAPSULES:
        raise ConfigError(f"--capsule must be one of {', '.join(CAPSULES)}, got {capsule!r}")
    offsets = sweep_offsets() if offsets is None else list(offsets)
    dev = resolve_device(device)
    model = load_model(path, map_location=dev)
    cfg = model.pretrained_cfg
    if sweep and getattr(model, "decoder", None) is None:
        raise CheckpointError(
            f"{path} has no decoder: its {cfg['model_name']} was built without one (decoder=False), "
            "so its capsules cannot be drawn as images; --no-sweep shows the routing only"
        )
    name = dataset or cfg["dataset"]
    if name is None:
        raise ConfigError(f"checkpoint {path} records no dataset; name one with --dataset")
    test = model_split(model, name, "test", path, data_dir)
    info = test.info
    if indices:
        bad = [i for i in indices if not 0 <= i < len(test)]
        if bad:
            raise ConfigError(f"test image index {bad[0]} is out of range: {name}'s test split "
                              f"has {len(test)} images (0-{len(test) - 1})")
        chosen = [int(i) for i in indices]
    else:
        count = info.num_classes if images is None else images
        if count < 1:
            raise ConfigError(f"--images must be at least 1, got {count}")
        chosen = pick_images(test.labels, count)
    x = test.images[torch.as_tensor(chosen)].to(dev).float() / 255.0
    labels = test.labels[torch.as_tensor(chosen)].to(dev)
    classes = list(cfg.get("classes") or info.classes) or None
    out = explain(model, x, labels, capsule=capsule, offsets=offsets, sweep=sweep, classes=classes)
    out.indices = chosen
    out.meta = {
        "checkpoint": str(path), "model": cfg["model_name"], "dataset": name, "split": "test",
        "trained_on": cfg["dataset"], "epoch": cfg["epoch"], "test_accuracy": cfg["test_accuracy"],
    }
    return out


# --------------------------------------------------------------------------- figures
def _to_numpy(img: Tensor):
    """``[channels, H, W]`` -> an array for ``imshow`` (``[H, W]`` or ``[H, W, 3]``)."""
    a = img.detach().float().cpu().clamp(0, 1)
    return a[0].numpy() if a.shape[0] == 1 else a.permute(1, 2, 0).numpy()


def mosaic(grid: Tensor, gap: int = 1, fill: float = 0.35) -> Tensor:
    """``[R, K, channels, H, W] -> [channels, R (H + gap) - gap, K (W + gap) - gap]``: a grid of
    images in one image, separated by ``gap`` pixels of ``fill``."""
    r, k, ch, h, w = grid.shape
    out = grid.new_full((ch, r * (h + gap) - gap, k * (w + gap) - gap), fill)
    for i in range(r):
        for j in range(k):
            out[:, i * (h + gap): i * (h + gap) + h, j * (w + gap): j * (w + gap) + w] = grid[i, j]
    return out


def _describe(ex: Explanation, n: int) -> str:
    label = "" if ex.labels is None else f"true {ex.classes[int(ex.labels[n])]}, "
    k = int(ex.explained[n])
    return (f"test image {ex.indices[n]}: {label}predicted {ex.classes[int(ex.predictions[n])]}; "
            f"capsule of class {ex.classes[k]} (length {float(ex.lengths[n, k]):.3f})")


def sweep_figure(ex: Explanation, n: int):
    """Image ``n``'s sweep: one row per capsule dimension, one column per offset; beside it the
    input and its plain reconstruction."""
    plt = pyplot()
    grid = ex.sweeps[n].detach().float().cpu().clamp(0, 1)  # [D, S, ch, H, W]
    d, s, _, h, w = grid.shape
    big = mosaic(grid)
    # in inches, from the top: the title and the offsets (0.8), then the grid (0.5 per cell)
    # between the row labels (0.6) and each row's change (0.5); on the left the input above its
    # reconstruction (1.1 each), centred on the grid
    cell, side, labels, top = 0.5, 1.1, 0.6, 0.8
    block = 2 * side + 0.45
    block_top = max(top - 0.1, top + cell * d / 2 - block / 2)
    width = max(0.1 + side + 0.15 + labels + cell * s + 0.6, 6.0)  # + the change column
    height = max(top + cell * d + 0.1, block_top + block + 0.1)
    fig = plt.figure(figsize=(width, height))

    def box(x: float, y_top: float, w: float, h: float):  # inches from the left and the top
        return (x / width, 1 - (y_top + h) / height, w / width, h / height)

    ax_in = fig.add_axes(box(0.1, block_top + 0.2, side, side))
    ax_rec = fig.add_axes(box(0.1, block_top + 0.45 + side, side, side))
    ax = fig.add_axes(box(0.1 + side + 0.15 + labels, top, cell * s, cell * d))
    for a, img, title in ((ax_in, ex.images[n], "input"), (ax_rec, ex.reconstructions[n], "offset 0")):
        a.imshow(_to_numpy(img), cmap="gray", vmin=0, vmax=1)
        a.set_title(title, fontsize=8)
        a.set_xticks([])
        a.set_yticks([])
    ax.imshow(_to_numpy(big), cmap="gray", vmin=0, vmax=1, interpolation="nearest")
    ax.set_xticks([j * (w + 1) + w / 2 - 0.5 for j in range(s)])
    ax.set_xticklabels([f"{o:+.2f}" for o in ex.offsets], fontsize=7)
    ax.xaxis.tick_top()
    ax.set_yticks([i * (h + 1) + h / 2 - 0.5 for i in range(d)])
    ax.set_yticklabels([f"dim {i}" for i in range(d)], fontsize=7)
    ax.tick_params(length=0)
    change = ex.sweep_change()[n].tolist()
    ax.text(s * (w + 1) - 1 + 4, -h * 0.35, "change", fontsize=7, ha="left", va="bottom")
    for i, value in enumerate(change):
        ax.text(s * (w + 1) - 1 + 4, i * (h + 1) + h / 2 - 0.5, f"{value:.3f}", fontsize=7,
                ha="left", va="center")
    fig.suptitle(_describe(ex, n), fontsize=9, y=0.995)
    return fig


def routing_figure(ex: Explanation, n: int):
    """Image ``n``'s routing: the input, the mean coupling of each input group to each class,
    the grid positions' couplings to the explained class (grid inputs) and the class capsule
    lengths."""
    plt = pyplot()
    r = ex.routing
    groups = r.group_couplings()[n].detach().float().cpu()  # [G, C]
    positions = r.position_couplings(ex.explained)
    k = int(ex.explained[n])
    g = groups.shape[0]
    panels = 4 if positions is not None else 3
    height = max(3.2, min(12.0, 1.4 + 0.16 * g))
    ratios = [1.0, 1.6] + ([1.1] if positions is not None else []) + [1.2]
    fig, axes = plt.subplots(1, panels, figsize=(3.0 * panels + 1, height),
                             gridspec_kw={"width_ratios": ratios})
    ax_in, ax_c = axes[0], axes[1]
    ax_in.imshow(_to_numpy(ex.images[n]), cmap="gray", vmin=0, vmax=1)
    ax_in.set_title(_describe(ex, n).split(";")[0], fontsize=8)
    ax_in.set_xticks([])
    ax_in.set_yticks([])
    what = "c_ij + b_ij" if r.routing == "self-attention" else "c_ij"
    # a diverging scale around the uniform coupling 1/C: couplings start there and stay close
    # to it for short capsules, so a scale from 0 would show one colour
    uniform = 1.0 / len(ex.classes)
    spread = max(float((groups - uniform).abs().max()), 1e-6)
    im = ax_c.imshow(groups.numpy(), aspect="auto", cmap="RdBu_r", vmin=uniform - spread,
                     vmax=uniform + spread, interpolation="nearest")
    ax_c.set_xticks(range(len(ex.classes)))
    ax_c.set_xticklabels(ex.classes, fontsize=7, rotation=90 if max(map(len, ex.classes)) > 2 else 0)
    step = max(1, g // 40)
    ax_c.set_yticks(range(0, g, step))
    ax_c.set_yticklabels(r.groups.names[::step], fontsize=6)
    ax_c.set_xlabel("class")
    per = {"type": "mean per capsule type", "capsule": "per input capsule", "all": "mean of all inputs"}
    ax_c.set_title(f"couplings {what}, {per[r.groups.kind]}\n(white: uniform, 1/{len(ex.classes)})",
                   fontsize=8)
    fig.colorbar(im, ax=ax_c, fraction=0.05, pad=0.02)
    if positions is not None:
        ax_p = axes[2]
        where = positions[n].detach().float().cpu()
        spread = max(float((where - uniform).abs().max()), 1e-6)
        pim = ax_p.imshow(where.numpy(), cmap="RdBu_r", vmin=uniform - spread,
                          vmax=uniform + spread, interpolation="nearest")
        ax_p.set_title(f"coupling to class {ex.classes[k]} per grid position\n(mean over types)",
                       fontsize=8)
        ax_p.set_xticks([])
        ax_p.set_yticks([])
        fig.colorbar(pim, ax=ax_p, fraction=0.05, pad=0.02)
    ax_l = axes[-1]
    lengths = ex.lengths[n].detach().float().cpu().tolist()
    colors = ["#d62728" if j == k else "#1f77b4" for j in range(len(lengths))]
    ax_l.barh(range(len(lengths)), lengths, color=colors)
    ax_l.set_yticks(range(len(lengths)))
    ax_l.set_yticklabels(ex.classes, fontsize=7)
    ax_l.invert_yaxis()
    ax_l.set_xlim(0, max(1.0, max(lengths)))
    ax_l.set_title("class capsule lengths", fontsize=8)
    ax_l.grid(axis="x", alpha=0.3)
    fig.tight_layout()
    return fig


# --------------------------------------------------------------------------- files
def _floats(t: Tensor, digits: int = 6) -> Any:
    """A tensor as nested lists of rounded floats (JSON)."""
    values = t.detach().double().cpu().tolist()

    def rnd(v):
        return [rnd(x) for x in v] if isinstance(v, list) else round(v, digits)

    return rnd(values)


def explanation_json(ex: Explanation, files: dict[int, dict[str, str]] | None = None) -> dict[str, Any]:
    """The numbers of an explanation as plain JSON values (what ``explain.json`` holds)."""
    r = ex.routing
    groups = r.group_couplings()
    positions = r.position_couplings(ex.explained)
    images = []
    for n, index in enumerate(ex.indices):
        k = int(ex.explained[n])
        item = {
            "index": index,
            "label": None if ex.labels is None else int(ex.labels[n]),
            "prediction": int(ex.predictions[n]),
            "explained_class": k,
            "lengths": _floats(ex.lengths[n]),
            "capsule": _floats(ex.caps[n, k]),
            "sweep_change": None if ex.sweeps is None else _floats(ex.sweep_change()[n]),
            "couplings_by_group": _floats(groups[n]),
            "couplings": _floats(r.couplings[n]),
        }
        if positions is not None:
            item["couplings_by_position"] = _floats(positions[n])
        if files and n in files:
            item["files"] = files[n]
        images.append(item)
    return {
        **ex.meta,
        "classes": ex.classes,
        "capsule": ex.capsule,
        "offsets": ex.offsets,
        "class_dim": int(ex.caps.shape[2]),
        "sweeps": ex.sweeps is not None,
        "routing": {
            "kind": r.routing,
            "iterations": r.iterations,
            "couplings": "c_ij + b_ij (softmax over classes plus the learned log-prior)"
            if r.routing == "self-attention" else "c_ij, softmax over the classes, after the last iteration",
            "inputs": int(r.couplings.shape[1]),
            "group_kind": r.groups.kind,
            "groups": r.groups.names,
            "grid": list(r.groups.grid) if r.groups.grid else None,
            "max_deviation": r.deviation,
        },
        "images": images,
    }


def write_explanation(ex: Explanation, out: str | os.PathLike) -> dict[str, Any]:
    """Write the PNGs, ``explain.html`` and ``explain.json`` to ``out``; returns their paths
    (``html``, ``json``, ``sweeps``, ``routing``)."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    files: dict[int, dict[str, str]] = {}
    sweeps: list[Path] = []
    routes: list[Path] = []
    for n, index in enumerate(ex.indices):
        files[n] = {}
        if ex.sweeps is not None:
            sweeps.append(save_figure(sweep_figure(ex, n), out / f"sweep-{index:05d}.png"))
            files[n]["sweep"] = sweeps[-1].name
        routes.append(save_figure(routing_figure(ex, n), out / f"routing-{index:05d}.png"))
        files[n]["routing"] = routes[-1].name
    doc = explanation_json(ex, files)
    json_path = out / JSON_FILE
    # one line: the per-capsule couplings are thousands of numbers
    atomic_write_text(json_path, json.dumps(versioned("explain", doc), allow_nan=False) + "\n")
    html_path = build_page(ex, doc, sweeps, routes).write(out / HTML_FILE)
    return {"html": html_path, "json": json_path, "sweeps": sweeps, "routing": routes}


def build_page(ex: Explanation, doc: dict[str, Any], sweeps: list[Path], routes: list[Path]) -> Page:
    """The HTML page: an overview, then every image's sweep and routing figure (embedded)."""
    meta = ex.meta
    source = meta.get("checkpoint", "a network")
    page = Page(f"What the capsules learned: {Path(source).name}", str(source))
    r = doc["routing"]
    page.section("Overview", "overview")
    accuracy = meta.get("test_accuracy")
    page.key_values([
        ("model", meta.get("model")),
        ("checkpoint", source),
        ("epoch (test accuracy)", None if meta.get("epoch") is None else
         f"{meta['epoch']} ({'-' if accuracy is None else f'{100 * accuracy:.2f} %'})"),
        ("images", f"{len(ex.indices)} of the {meta.get('dataset', '')} test split".strip()),
        ("capsule swept", f"the {ex.capsule} class's" if ex.sweeps is not None else "no sweeps (--no-sweep)"),
        ("offsets", ", ".join(f"{o:+.2f}" for o in ex.offsets) if ex.sweeps is not None else None),
        ("routing", f"{r['kind']}, {r['iterations']} iteration(s), {r['inputs']} input capsules"),
        ("heatmap rows", {"type": f"{len(r['groups'])} capsule types",
                          "capsule": f"{len(r['groups'])} input capsules",
                          "all": "all inputs in one row"}[r["group_kind"]]),
        ("class capsules from the couplings", f"within {r['max_deviation']:.2g} of the network's"),
    ])
    rows = [{"index": item["index"],
             "label": None if item["label"] is None else ex.classes[item["label"]],
             "prediction": ex.classes[item["prediction"]],
             "explained": ex.classes[item["explained_class"]],
             "length": item["lengths"][item["explained_class"]]}
            for item in doc["images"]]
    page.table(rows, [("index", "test image", ""), ("label", "true class", ""),
                      ("prediction", "predicted", ""), ("explained", "capsule shown", ""),
                      ("length", "its length", ".3f")],
               highlight=lambda row: "marked" if row["label"] != row["prediction"] else "")
    page.text(f"The numbers are in {JSON_FILE} (couplings per input capsule and per group, "
              "lengths, the swept capsules, offsets and image indices).", "muted")
    if sweeps:
        page.section("Dimension sweeps", "sweeps")
        page.text("As in Sabour et al. (2017), figure 4: each row adds the offset above its "
                  "column to one dimension of the class capsule, keeping the others, and shows "
                  "the decoder's reconstruction of the perturbed capsule. The column at +0.00 is "
                  "the plain reconstruction. Dimensions the decoder has learned to read change "
                  "stroke width, slant, scale or parts of the digit; dimensions it ignores give "
                  "identical images along their row.", "muted")
        for n, png in enumerate(sweeps):
            page.heading(_describe(ex, n))
            page.image(png.read_bytes(), f"sweep of test image {ex.indices[n]}")
    page.section("Routing", "routing")
    page.text("For each image: the coupling coefficients of the class-capsule layer after the "
              "last routing iteration (how much of each input capsule's vote goes to each "
              "class; a row sums to 1 over the classes for routing-by-agreement and SDA), "
              "averaged over the capsules of each type for grid inputs; where the inputs form "
              "one capsule grid, the coupling of each position to the class shown; and the "
              "lengths of the class capsules (the class shown in red).", "muted")
    for n, png in enumerate(routes):
        page.heading(_describe(ex, n))
        page.image(png.read_bytes(), f"routing of test image {ex.indices[n]}")
    return page


__all__ = [
    "CAPSULES", "ClassRouting", "Explanation", "InputGroups", "capsule_sweep", "class_layer",
    "class_routing", "default_out", "explain", "explain_checkpoint", "explanation_json",
    "pick_images", "sweep_offsets", "write_explanation",
]
