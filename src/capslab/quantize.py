"""Post-training quantization of capsule networks: accuracy at the accelerator's precision.

CapsAcc stores 8-bit weights; this module measures what a trained network loses when its
weights, its activations and its routing coefficients are held at ``N`` bits. It uses *fake*
quantization: a value is rounded to the ``N``-bit grid and stored back as a float, so the
network runs unchanged and its outputs equal those of integer hardware with the same grid (up
to float rounding of the accumulations).

The grids:

* weights (:func:`quantize_tensor`): symmetric, one scale per tensor (per layer):
  ``scale = max|w| / (2**(N-1) - 1)``, ``q(w) = clamp(round(w / scale), -qmax, qmax) * scale``.
  ``2**N - 1`` levels, ``0`` stays ``0``, ``q(-w) = -q(w)``, the largest magnitude is kept
  exactly, and ``|w - q(w)| <= scale / 2`` everywhere (round to nearest, nothing is clipped
  because ``max|w|`` sets the scale). Biases, BatchNorm and the input normalisation stay
  float: accelerators keep them in the wide accumulator.
* activations (:func:`quantize_per_sample`): the same symmetric grid, with one scale per
  SAMPLE (the max over that sample's tensor), so results do not depend on the batch size or on
  the other images of the batch. The inputs of every quantized layer are quantized: that is what
  the accelerator's data memory holds. (Activations after a ReLU are non-negative, so the sign
  bit is wasted there; we keep one grid for every tensor.)
* routing coefficients (:func:`quantize_unit_interval`): coupling coefficients lie in
  ``[0, 1]``, so the grid is unsigned and fixed: ``k / (2**N - 1)``, ``k = 0 .. 2**N - 1``.
  They are quantized where every routing computes them (a hook in :mod:`capslab.routing`).

Two modes for the activations. The **per-image** (dynamic) mode above is the default: a
scale computed from each image at run time, which an accelerator cannot do. The
**accelerator mode** is static: :func:`calibrate` runs a calibration set through the network
(its weights already quantized) and fixes one range per quantized layer's input, the largest
magnitude it saw there (``activation_ranges``); inference then uses those scales for every
image, saturating what lies beyond. With ``power_of_two`` every scale (weights, activations,
routing) is rounded UP to a power of two, so the fixed-point hardware shifts instead of
multiplying: a weight grid keeps its largest magnitude inside the range (fewer levels used:
up to half), the routing grid becomes ``k / 2**(N-1)`` clamped to ``[0, 1]``.

Layer groups (:data:`GROUPS`, :func:`layer_groups`): ``"conv"`` (plain convolutions: CapsNet's
stem, DeepCaps' stem, genotype conv genes), ``"primary"`` (PrimaryCaps, the first capsule gene
of a genotype network), ``"capsule"`` (every capsule transformation matrix: ClassCaps and the
blocks' capsule layers of residual / momentum networks, ConvCaps2D, ConvCaps3D), ``"decoder"``
(the reconstruction decoder's linear layers).

Example::

    from capslab.quantize import QuantizationSettings, quantize_model, quantized
    q = quantize_model(model, QuantizationSettings(weight_bits=8, routing_bits=8))  # a copy
    with quantized(model, QuantizationSettings(weight_bits=4, groups=("capsule",))) as m:
        ...  # the same model, quantized in place until the block ends
"""

from __future__ import annotations

import copy
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, ClassVar, Literal

import torch
from torch import Tensor, nn

from capslab.errors import ConfigError
from capslab.evaluation import evaluate
from capslab.layers import ClassCaps, ConvCaps2D, ConvCaps3D, PrimaryCaps
from capslab.layers.decoder import CapsuleDecoder
from capslab.models.genotype_net import ClassStage
from capslab.routing import set_coupling_transform
from capslab.settings import Settings

MIN_BITS, MAX_BITS = 2, 16
GroupName = Literal["conv", "primary", "capsule", "decoder"]
#: The layer groups, in the order of the network.
GROUPS: tuple[str, ...] = ("conv", "primary", "capsule", "decoder")


# --------------------------------------------------------------------------------------------
# the grids (pure tensor functions)
# --------------------------------------------------------------------------------------------


def check_bits(bits: Any, what: str = "bits") -> int:
    """``bits`` if it is an integer in ``[MIN_BITS, MAX_BITS]``, else :class:`ConfigError`."""
    if isinstance(bits, bool) or not isinstance(bits, int) or not MIN_BITS <= bits <= MAX_BITS:
        raise ConfigError(f"{what} must be an integer from {MIN_BITS} to {MAX_BITS}, got {bits!r}")
    return bits


def max_level(bits: int) -> int:
    """``qmax = 2**(bits-1) - 1``: the largest integer of the symmetric ``bits``-bit grid."""
    return 2 ** (check_bits(bits) - 1) - 1


def _round_to_grid(x: Tensor, scale: Tensor, lo: int, hi: int) -> Tensor:
    """``clamp(round(x / scale), lo, hi) * scale``; a zero scale (an all-zero x) keeps x."""
    safe = torch.where(scale > 0, scale, torch.ones_like(scale))
    return torch.clamp(torch.round(x / safe), lo, hi) * safe


def quantization_scale(x: Tensor, bits: int) -> Tensor:
    """The step of the symmetric per-tensor grid of ``x``: ``max|x| / (2**(bits-1) - 1)``
    (a 0-d tensor; 0 for an all-zero ``x``)."""
    return x.detach().abs().amax() / max_level(bits)


def power_of_two_scale(scale: Tensor) -> Tensor:
    """``scale`` rounded UP to a power of two (``2**ceil(log2 scale)``), elementwise; 0 stays
    0. The range ``scale * qmax`` only grows, so nothing that fitted is clipped."""
    safe = torch.where(scale > 0, scale, torch.ones_like(scale))
    return torch.where(scale > 0, torch.exp2(torch.ceil(torch.log2(safe))), scale)


def quantize_with_scale(x: Tensor, scale: Tensor | float, bits: int) -> Tensor:
    """Symmetric fake quantization of ``x`` on the FIXED grid of step ``scale`` (the
    accelerator mode): ``clamp(round(x / scale), -qmax, qmax) * scale``, saturating what lies
    beyond ``qmax * scale``.

    Shape:
        ``[*] -> [*]``.
    """
    qmax = max_level(bits)
    return _round_to_grid(x, torch.as_tensor(scale, dtype=x.dtype, device=x.device), -qmax, qmax)


def quantize_tensor(x: Tensor, bits: int) -> Tensor:
    """Symmetric per-tensor fake quantization to ``bits`` bits.

    ``q(x) = clamp(round(x / s), -qmax, qmax) * s`` with ``s`` = :func:`quantization_scale`,
    ``qmax = 2**(bits-1) - 1``. At most ``2**bits - 1`` distinct values, all integer multiples
    of ``s``; ``q(0) = 0``, ``q(-x) = -q(x)``, and ``|x - q(x)| <= s / 2`` elementwise.

    Args:
        x: any float tensor.
        bits: 2 to 16.
    Shape:
        ``[*] -> [*]`` (same dtype and device).
    """
    qmax = max_level(bits)
    return _round_to_grid(x, quantization_scale(x, bits), -qmax, qmax)


def weight_scale(x: Tensor, bits: int, power_of_two: bool = False) -> Tensor:
    """The step of a weight tensor's grid: :func:`quantization_scale`, rounded up to a power of
    two if asked."""
    scale = quantization_scale(x, bits)
    return power_of_two_scale(scale) if power_of_two else scale


def activation_scale(amax: float, bits: int, power_of_two: bool = False) -> float:
    """The fixed step of a layer input's grid whose calibrated range is ``amax`` (the
    accelerator mode): ``amax / qmax``, rounded up to a power of two if asked."""
    scale = torch.tensor(float(amax) / max_level(bits), dtype=torch.float64)
    return float(power_of_two_scale(scale) if power_of_two else scale)


def unit_levels(bits: int, power_of_two: bool = False) -> int:
    """``top``: the coupling grid is ``k / top``, ``k = 0 .. top`` (``2**bits - 1``, or
    ``2**(bits-1)`` on the power-of-two grid)."""
    return 2 ** (check_bits(bits) - 1) if power_of_two else 2 ** check_bits(bits) - 1


def quantize_weight(x: Tensor, bits: int, power_of_two: bool = False) -> Tensor:
    """:func:`quantize_tensor`, with its scale rounded up to a power of two if asked."""
    if not power_of_two:
        return quantize_tensor(x, bits)
    return quantize_with_scale(x, weight_scale(x, bits, power_of_two=True), bits)


def quantize_per_sample(x: Tensor, bits: int) -> Tensor:
    """:func:`quantize_tensor` with one scale per sample (``x[b]``), for activations.

    Shape:
        ``[B, *] -> [B, *]``; each ``x[b]`` has at most ``2**bits - 1`` distinct values and
        ``|x[b] - q(x)[b]| <= max|x[b]| / (2 * (2**(bits-1) - 1))``.
    """
    qmax = max_level(bits)
    if x.dim() == 0:
        return quantize_tensor(x, bits)
    amax = x.detach().abs().reshape(x.shape[0], -1).amax(dim=1)
    scale = (amax / qmax).reshape(-1, *([1] * (x.dim() - 1)))
    return _round_to_grid(x, scale, -qmax, qmax)


def quantize_unit_interval(x: Tensor, bits: int) -> Tensor:
    """Fixed unsigned grid of ``[0, 1]`` for coupling coefficients: ``k / (2**bits - 1)``.

    ``2**bits`` levels including 0 and 1; ``|x - q(x)| <= 1 / (2 (2**bits - 1))`` for ``x`` in
    ``[0, 1]`` (values outside are clamped to it).

    Shape:
        ``[*] -> [*]``.
    """
    top = unit_levels(bits)
    return torch.clamp(torch.round(x * top), 0, top) / top


def quantize_unit_interval_power_of_two(x: Tensor, bits: int) -> Tensor:
    """The power-of-two grid of ``[0, 1]``: ``k / 2**(bits-1)``, ``k = 0 .. 2**(bits-1)``
    (the step ``1 / (2**bits - 1)`` rounded up to a power of two; half the levels of
    :func:`quantize_unit_interval`, but a shift on fixed-point hardware).

    Shape:
        ``[*] -> [*]``.
    """
    top = unit_levels(bits, power_of_two=True)
    return torch.clamp(torch.round(x * top), 0, top) / top


# --------------------------------------------------------------------------------------------
# which tensors belong to which group
# --------------------------------------------------------------------------------------------


def _group_of(path: str, modules: dict[str, nn.Module]) -> str | None:
    """The group of the weight owned by module ``path``: its innermost known ancestor decides."""
    parts = path.split(".") if path else []
    for depth in range(len(parts), -1, -1):
        name = ".".join(parts[:depth])
        module = modules[name]
        if isinstance(module, CapsuleDecoder):
            return "decoder"
        # a genotype network's first capsule gene is its primary capsule layer ("<i>_primary")
        if isinstance(module, PrimaryCaps) or (
            isinstance(module, ConvCaps2D) and name.rsplit(".", 1)[-1].endswith("_primary")
        ):
            return "primary"
        if isinstance(module, ClassCaps | ConvCaps2D | ConvCaps3D):
            return "capsule"
    return "conv" if isinstance(modules[path], nn.Conv1d | nn.Conv2d | nn.Conv3d | nn.Linear) else None


def layer_groups(model: nn.Module) -> dict[str, list[str]]:
    """The weight tensors of each group, as parameter names (every group is a key).

    A weight is the ``weight`` of a ``Conv1d/2d/3d`` or ``Linear`` module, or a capsule layer's
    transformation matrices (:class:`~capslab.layers.ClassCaps` ``.weight``). Biases, BatchNorm
    parameters and the input normalisation are not weights here.
    """
    modules = dict(model.named_modules())
    out: dict[str, list[str]] = {g: [] for g in GROUPS}
    for path, module in modules.items():
        weight = getattr(module, "weight", None)
        if not isinstance(weight, nn.Parameter):
            continue
        if not isinstance(module, ClassCaps | nn.Conv1d | nn.Conv2d | nn.Conv3d | nn.Linear):
            continue
        group = _group_of(path, modules)
        if group is not None:
            out[group].append(f"{path}.weight" if path else "weight")
    return out


# --------------------------------------------------------------------------------------------
# settings
# --------------------------------------------------------------------------------------------


@dataclass
class QuantizationSettings(Settings):
    """What to quantize, at how many bits (``None``: keep float).

    Args:
        weight_bits: bits of the weights of the chosen groups (2-16).
        activation_bits: bits of the inputs of the chosen groups' layers.
        routing_bits: bits of every coupling coefficient (all routings of the network).
        groups: layer groups whose weights and activations are quantized (default: all).
        activation_ranges: the accelerator mode: the fixed range (largest magnitude) of each
            quantized layer's input, by module name, as :func:`calibrate` measures them;
            ``None``: per-image scales (the dynamic mode).
        power_of_two: round every scale up to a power of two (shifts, not multiplications).
        layer_bits: bits of single weight tensors, by parameter name (per-layer widths, e.g.
            found by :func:`capslab.studies.bitwidths.search_bit_widths`); they override
            ``weight_bits`` and are quantized whatever ``groups`` says.
    """

    weight_bits: int | None = 8
    activation_bits: int | None = None
    routing_bits: int | None = None
    groups: tuple[GroupName, ...] = GROUPS  # type: ignore[assignment]
    activation_ranges: dict[str, Any] | None = None
    power_of_two: bool = False
    layer_bits: dict[str, Any] | None = None

    WHAT: ClassVar[str] = "quantization setting"

    def validate(self) -> None:
        for name in ("weight_bits", "activation_bits", "routing_bits"):
            value = getattr(self, name)
            if value is not None:
                check_bits(value, name)
        if not self.groups:
            raise ConfigError(f"groups must name at least one of {', '.join(GROUPS)}")
        if len(set(self.groups)) != len(self.groups):
            raise ConfigError(f"groups names a group twice: {', '.join(self.groups)}")
        for name, value in (self.layer_bits or {}).items():
            check_bits(value, f"bits of {name}")
        for name, value in (self.activation_ranges or {}).items():
            if isinstance(value, bool) or not isinstance(value, int | float) or value < 0:
                raise ConfigError(f"activation range of {name!r} must be a number >= 0, got {value!r}")

    @property
    def mode(self) -> str:
        """``"calibrated"`` (the accelerator's static scales) or ``"per-image"``."""
        return "calibrated" if self.activation_ranges is not None else "per-image"

    def describe(self) -> str:
        """``"8-bit weights, 4-bit routing (capsule)"``, or ``"float"`` when nothing is set."""
        parts = [f"{b}-bit {what}" for b, what in (
            (self.weight_bits, "weights"), (self.activation_bits, "activations"),
            (self.routing_bits, "routing")) if b is not None]
        if self.layer_bits:
            widths = sorted(set(self.layer_bits.values()))
            parts.insert(0, f"{len(self.layer_bits)} tensors at {min(widths)}-{max(widths)} bits")
        if not parts:
            return "float"
        layered = self.weight_bits is not None or self.activation_bits is not None
        text = ", ".join(parts) + (f" ({', '.join(self.groups)})" if layered else "")
        if self.activation_bits is not None:
            text += f", {self.mode} activation scales"
        return text + (", power-of-two scales" if self.power_of_two else "")


# --------------------------------------------------------------------------------------------
# hooks
# --------------------------------------------------------------------------------------------


class _QuantizeInputs:
    """Forward pre-hook: quantize every float tensor among a module's inputs, per sample, or
    on the fixed grid of ``amax`` (its calibrated range) when one is given."""

    def __init__(self, bits: int, amax: float | None = None, power_of_two: bool = False):
        self.bits = bits
        self.scale = None
        self.passthrough = amax == 0  # a layer the calibration set never reached: kept float
        if amax:
            self.scale = activation_scale(amax, bits, power_of_two)

    def __call__(self, module: nn.Module, args: tuple) -> tuple:
        if self.passthrough:
            return args
        return tuple(_quantize_nested(a, self.bits, self.scale) for a in args)


def _quantize_nested(value: Any, bits: int, scale: float | None = None) -> Any:
    if isinstance(value, Tensor) and value.is_floating_point():
        if scale is not None:
            return quantize_with_scale(value, scale, bits)
        return quantize_per_sample(value, bits)
    if isinstance(value, list | tuple):  # ClassStage takes a list of capsule grids
        return type(value)(_quantize_nested(v, bits, scale) for v in value)
    return value


def _largest_magnitude(value: Any) -> float:
    if isinstance(value, Tensor) and value.is_floating_point():
        return float(value.detach().abs().amax()) if value.numel() else 0.0
    if isinstance(value, list | tuple):
        return max((_largest_magnitude(v) for v in value), default=0.0)
    return 0.0


class _UnitGrid:
    """The coupling transform: :func:`quantize_unit_interval` at ``bits`` (its power-of-two
    form with ``power_of_two``)."""

    def __init__(self, bits: int, power_of_two: bool = False):
        self.bits = bits
        self.grid = quantize_unit_interval_power_of_two if power_of_two else quantize_unit_interval

    def __call__(self, c: Tensor) -> Tensor:
        return self.grid(c, self.bits)


class _RoutingDuringForward:
    """Pre-hook and (always-called) forward hook of a model: quantized couplings while its
    ``forward`` runs, the previous transform restored afterwards (even after an exception)."""

    def __init__(self, bits: int, power_of_two: bool = False):
        self.grid = _UnitGrid(bits, power_of_two)
        self.previous: list = []

    def enter(self, module: nn.Module, args: tuple) -> None:
        self.previous.append(set_coupling_transform(self.grid))

    def exit(self, module: nn.Module, args: tuple, output: Any) -> None:
        if self.previous:
            set_coupling_transform(self.previous.pop())


@contextmanager
def quantized_routing(bits: int | None) -> Iterator[None]:
    """Every coupling coefficient computed inside the block is on the ``bits``-bit grid of
    ``[0, 1]`` (:func:`quantize_unit_interval`); ``None`` changes nothing. Process-wide: do not
    run other models in other threads meanwhile."""
    if bits is None:
        yield
        return
    previous = set_coupling_transform(_UnitGrid(check_bits(bits, "routing_bits")))
    try:
        yield
    finally:
        set_coupling_transform(previous)


def activation_sites(model: nn.Module, names: Iterable[str]) -> dict[str, nn.Module]:
    """The modules whose inputs feed the weights ``names``, by module name: each weight's
    owner, except that a genotype network's :class:`ClassStage` calls its ClassCaps' matrices
    directly, so the stage itself is hooked."""
    modules = dict(model.named_modules())
    sites: dict[str, nn.Module] = {}
    for name in names:
        owner = name.rsplit(".", 1)[0] if "." in name else ""
        parents = owner.split(".")
        for depth in range(len(parents) - 1, 0, -1):
            parent = ".".join(parents[:depth])
            if isinstance(modules[parent], ClassStage):
                owner = parent
                break
        sites.setdefault(owner, modules[owner])
    return sites


def _as_settings(settings: QuantizationSettings | None, fields: dict[str, Any]) -> QuantizationSettings:
    if settings is not None and fields:
        raise ConfigError("give either a QuantizationSettings or its fields, not both")
    return settings if settings is not None else QuantizationSettings(**fields)


def weight_widths(model: nn.Module, settings: QuantizationSettings) -> dict[str, int]:
    """The bits of every weight tensor ``settings`` quantizes, by parameter name, in network
    order: ``weight_bits`` for the tensors of ``groups``, ``layer_bits`` where it says."""
    groups = layer_groups(model)
    widths = {}
    if settings.weight_bits is not None:
        widths = {n: settings.weight_bits for g in settings.groups for n in groups[g]}
    widths.update(settings.layer_bits or {})
    order = {n: i for i, (n, _) in enumerate(model.named_parameters())}
    return dict(sorted(widths.items(), key=lambda item: order.get(item[0], len(order))))


def _apply(model: nn.Module, settings: QuantizationSettings) -> tuple[dict[str, Tensor], list]:
    """Quantize ``model`` in place; returns the original weights and the hook handles."""
    groups = layer_groups(model)
    names = [n for g in settings.groups for n in groups[g]]
    params = dict(model.named_parameters())
    originals: dict[str, Tensor] = {}
    handles: list = []
    widths = weight_widths(model, settings)
    unknown = sorted(set(settings.layer_bits or {}) - set(params))
    if unknown:
        raise ConfigError(f"layer_bits names no weight of this network: {', '.join(unknown)}")
    with torch.no_grad():
        for name, bits in widths.items():
            p = params[name]
            originals[name] = p.detach().clone()
            p.copy_(quantize_weight(p.detach(), bits, settings.power_of_two))
    if settings.activation_bits is not None:
        ranges = settings.activation_ranges
        for site, module in activation_sites(model, names).items():
            if ranges is not None and site not in ranges:
                raise ConfigError(f"no calibrated range for layer {site!r}: calibrate this "
                                  "network with these settings (capslab.quantize.calibrate)")
            hook = _QuantizeInputs(settings.activation_bits,
                                   None if ranges is None else ranges[site], settings.power_of_two)
            handles.append(module.register_forward_pre_hook(hook))
    if settings.routing_bits is not None:
        routing = _RoutingDuringForward(settings.routing_bits, settings.power_of_two)
        handles.append(model.register_forward_pre_hook(routing.enter))
        handles.append(model.register_forward_hook(routing.exit, always_call=True))
    return originals, handles


# --------------------------------------------------------------------------------------------
# the API
# --------------------------------------------------------------------------------------------


def quantize_model(model: nn.Module, settings: QuantizationSettings | None = None,
                   **fields: Any) -> nn.Module:
    """A quantized deep copy of ``model``; ``model`` itself is left untouched.

    The copy's weights of ``settings.groups`` are on their ``weight_bits`` grid (stored as
    floats); with ``activation_bits`` the inputs of those layers are quantized per sample during
    its forward; with ``routing_bits`` every coupling coefficient is quantized while its
    ``forward`` runs. The copy keeps the model's class, mode and device, and records the
    settings as ``copy.quantization``.

    Args:
        model: any CapsLab network (or any module; see :func:`layer_groups`).
        settings: what to quantize; or give its fields as keywords
            (``quantize_model(net, weight_bits=8)``).
    """
    settings = _as_settings(settings, fields)
    clone = copy.deepcopy(model)
    _apply(clone, settings)
    clone.quantization = settings  # type: ignore[attr-defined]
    return clone


@contextmanager
def quantized(model: nn.Module, settings: QuantizationSettings | None = None,
              **fields: Any) -> Iterator[nn.Module]:
    """``model`` itself, quantized as by :func:`quantize_model` inside the block; on exit its
    weights are restored bit for bit and the hooks removed. No copy is made (for candidate
    evaluation in a search, where a second copy of every network would cost memory)."""
    settings = _as_settings(settings, fields)
    originals, handles = _apply(model, settings)
    try:
        yield model
    finally:
        for h in handles:
            h.remove()
        params = dict(model.named_parameters())
        with torch.no_grad():
            for name, value in originals.items():
                params[name].copy_(value)


def calibrate(model: nn.Module, batches: Iterable, settings: QuantizationSettings | None = None,
              device: torch.device | str = "cpu", **fields: Any) -> QuantizationSettings:
    """The accelerator mode of ``settings``: its ``activation_ranges`` measured on
    ``batches`` (images ``[B, C, H, W]``, or ``(images, labels)`` pairs: a calibration set,
    e.g. a few hundred training images). The network runs in eval mode with its weights
    (and routing) already quantized by ``settings``, and each quantized layer's input range
    is the largest magnitude seen there. Returns new settings (``settings`` is not changed).
    """
    settings = _as_settings(settings, fields)
    if settings.activation_bits is None:
        raise ConfigError("calibration fixes activation scales: give activation_bits")
    per_image = settings.replace(activation_ranges=None, activation_bits=None)
    ranges: dict[str, float] = {}
    groups = layer_groups(model)
    names = [n for g in settings.groups for n in groups[g]]
    was_training = model.training
    model.eval()
    with quantized(model, per_image) as m:
        sites = activation_sites(m, names)

        def record(site: str):
            def hook(module: nn.Module, args: tuple) -> None:
                ranges[site] = max(ranges.get(site, 0.0), _largest_magnitude(args))
            return hook

        ranges.update({site: 0.0 for site in sites})  # 0: never reached (kept float)
        handles = [module.register_forward_pre_hook(record(site)) for site, module in sites.items()]
        try:
            with torch.no_grad():
                for batch in batches:
                    images = batch[0] if isinstance(batch, list | tuple) else batch
                    shape = tuple(getattr(model, "image_shape", images.shape[1:]))
                    if images.dim() != 4 or tuple(images.shape[1:]) != shape:
                        raise ConfigError(f"calibration images of shape {tuple(images.shape)}; "
                                          f"the network reads [B, {', '.join(map(str, shape))}]")
                    m(images.to(device))
        finally:
            for h in handles:
                h.remove()
    model.train(was_training)
    if not any(ranges.values()):
        raise ConfigError("the calibration set was empty (no image reached a quantized layer)")
    return settings.replace(activation_ranges=ranges)


def evaluate_quantized(
    model: nn.Module,
    loader: Iterable,
    settings: QuantizationSettings | None = None,
    device: torch.device | str = "cpu",
    reconstruction_weight: float = 0.0005,
    **fields: Any,
) -> dict[str, float]:
    """:func:`capslab.evaluation.evaluate` of ``model`` quantized by ``settings`` (in place,
    restored afterwards): ``{"test_loss", "test_accuracy"}``."""
    with quantized(model, settings, **fields) as m:
        return evaluate(m, loader, device, reconstruction_weight)


def quantized_parameter_count(model: nn.Module, settings: QuantizationSettings) -> tuple[int, int]:
    """``(tensors, parameters)`` whose weights ``settings`` quantizes (0, 0 without weight bits)."""
    params = dict(model.named_parameters())
    names = list(weight_widths(model, settings))
    return len(names), sum(params[n].numel() for n in names)


def weight_memory_bytes(model: nn.Module, settings: QuantizationSettings) -> int:
    """Bytes of the weights ``settings`` quantizes, each tensor at its width (rounded up to
    whole bytes per tensor): the weight memory an accelerator holds for them."""
    params = dict(model.named_parameters())
    return sum(-(-params[n].numel() * bits // 8) for n, bits in weight_widths(model, settings).items())


# --------------------------------------------------------------------------------------------
# quantization-aware training
# --------------------------------------------------------------------------------------------


def straight_through(x: Tensor, q: Tensor) -> Tensor:
    """``q`` in the forward pass, the identity's gradient in the backward pass: the
    straight-through estimator (``x + (q - x).detach()``)."""
    return x + (q - x).detach()


class _TrainingInputs:
    """Forward pre-hook of quantization-aware training: a module's inputs on their per-image
    grid, straight through, while the module trains (evaluation sees the float inputs)."""

    def __init__(self, bits: int):
        self.bits = bits

    def __call__(self, module: nn.Module, args: tuple) -> tuple | None:
        if not module.training:
            return None
        return tuple(straight_through(a, quantize_per_sample(a, self.bits))
                     if isinstance(a, Tensor) and a.is_floating_point() else a for a in args)


class _TrainingCouplings:
    """The coupling transform of quantization-aware training: the unit grid, straight through."""

    def __init__(self, bits: int):
        self.bits = bits

    def __call__(self, c: Tensor) -> Tensor:
        return straight_through(c, quantize_unit_interval(c, self.bits))


class QuantizationAwareTraining:
    """Train ``model`` as its quantized form computes (Jacob et al. 2018's fake quantization
    with straight-through gradients), keeping float master weights.

    Each training step runs inside :meth:`step`: the weights of ``settings`` are replaced by
    their grid values for the forward and backward pass (so the gradients are those of the
    quantized network, applied straight through to the float weights), and restored before
    the optimiser steps (:meth:`restore`); the inputs of the quantized layers and the
    coupling coefficients are quantized straight through while the model is in training mode.
    Checkpoints hold the float weights, which post-training quantization at the same bits then
    maps onto the grid the network learned on.

    Args:
        model: the network (the module itself, not a data-parallel wrapper).
        bits: the width of weights and activations.
        routing_bits: the width of the coupling coefficients (default: ``bits``; ``0``: float).
        groups: the layer groups quantized (default: conv, primary, capsule; the decoder does
            not change the class scores).
    """

    def __init__(self, model: nn.Module, bits: int, routing_bits: int | None = None,
                 groups: tuple[str, ...] = ("conv", "primary", "capsule")):
        self.model = model
        self.bits = check_bits(bits, "qat bits")
        self.routing_bits = bits if routing_bits is None else routing_bits
        if self.routing_bits:
            check_bits(self.routing_bits, "qat routing bits")
        self.settings = QuantizationSettings(weight_bits=bits, groups=groups)
        self.params = {n: p for n, p in model.named_parameters()
                       if n in weight_widths(model, self.settings)}
        self.masters: dict[str, Tensor] = {}
        sites = activation_sites(model, list(self.params))
        self.handles = [m.register_forward_pre_hook(_TrainingInputs(bits)) for m in sites.values()]
        self.previous: Any = None

    def step(self) -> QuantizationAwareTraining:
        """Put the weights on their grid (the float ones kept) and quantize the couplings."""
        with torch.no_grad():
            for name, p in self.params.items():
                self.masters[name] = p.detach().clone()
                p.copy_(quantize_weight(p.detach(), self.bits))
        if self.routing_bits:
            self.previous = set_coupling_transform(_TrainingCouplings(self.routing_bits))
        return self

    def restore(self) -> None:
        """The float weights back (their gradients stay: straight through), couplings float."""
        with torch.no_grad():
            for name, p in self.params.items():
                if name in self.masters:
                    p.copy_(self.masters.pop(name))
        if self.routing_bits:
            set_coupling_transform(self.previous)

    def close(self) -> None:
        """Remove the hooks (the weights are the float masters)."""
        if self.masters:
            self.restore()
        for h in self.handles:
            h.remove()
        self.handles = []
