"""The NASCaps search space and a sampler that only produces valid genotypes.

A network in the space is a stack of convolutions followed by capsule layers of one family:
- ``sabour``: 2-6 Sabour capsule layers, the last one the class capsule layer;
- ``deepcaps``: 4-8 DeepCaps cells, the last one the flatten + class capsule stage.
The class stage is always fully connected (kernel = its input size, 1x1 output,
``num_classes`` capsules of ``class_dim`` dimensions), which keeps it valid whatever precedes it.

The paper's space is the default. Fields open the newer genes to a Sabour stack
(docs/nas.md, "The efficient blocks"): ``primary`` (``"dwcaps"``: depthwise primary capsules),
``block_kinds`` (a ``momentum`` or ``residual`` block gene before the class stage, its
``block_count``, ``block_capsules`` and ``block_dims``), ``routings`` (the routing of the class
stage and of block genes) and ``shared`` (weight-shared class capsules). :data:`SPACE_PRESETS`
names whole spaces (``--space preset=efficient``).

:meth:`SearchSpace.check` holds the space's rules (two or more capsule layers, the kernel and
stride sets, layer counts, channel and capsule ranges). They are stricter than what makes a
genotype buildable (:meth:`capslab.genotype.Genotype.validate`), which is all that files, the
model builder and the hardware model require: published genotypes outside the space (one
capsule layer, a 7x7 kernel) still load, build and get hardware figures.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any, ClassVar, TypeVar

import numpy as np

from capslab.data import dataset_info
from capslab.errors import ConfigError, GenotypeError
from capslab.genotype import (
    Genotype,
    LayerDescriptor,
    LayerKind,
    repair,
    valid_skips,
)
from capslab.genotype.descriptor import BLOCK_KINDS, ROUTINGS
from capslab.genotype.network import covers_input
from capslab.settings import Settings

FAMILIES = ("sabour", "deepcaps")
PRIMARY_KINDS = ("caps", "dwcaps")
BLOCK_KIND_NAMES = ("momentum", "residual")
_T = TypeVar("_T")

#: whole spaces by name (``--space preset=NAME``; other keys override the preset's).
#: ``efficient``: small Sabour stacks of the efficient blocks: 2-4 narrow convolutions,
#: depthwise primary capsules, an optional momentum or residual block gene, self-attention or
#: RBA routing, shared or full class matrices (docs/nas.md, "The efficient blocks").
SPACE_PRESETS: dict[str, dict[str, Any]] = {
    "nascaps": {},
    "efficient": {
        "families": ("sabour",),
        "primary": ("dwcaps",),
        "block_kinds": BLOCK_KIND_NAMES,
        "routings": ("self-attention", "rba"),
        "shared": (False, True),
        "conv_layers": (2, 4),
        "conv_channel_exponents": (4, 7),
        "first_kernel": 5,
        "kernels": (3, 5),
        "strides": (1, 2),
        "capsules": (4, 16),
        "caps_layers": (2, 3),
        "block_count": (1, 2),
        "block_capsules": (8, 16),
        "block_dims": (4, 8),
        "resizes": (1,),
        "skip": False,
    },
}


@dataclass
class SearchSpace(Settings):
    """What the search may build. The defaults are the paper's (Section 4.1 and the authors'
    sampler); image size, channels and classes come from the dataset.

    Ranges are inclusive ``(low, high)`` pairs. A :class:`~capslab.settings.Settings`: values are
    coerced on construction (a list becomes a tuple, a scalar a 1-tuple: ``kernels=3`` is
    ``(3,)``), then :meth:`validate` raises :class:`~capslab.errors.ConfigError` naming the field.
    """

    image_size: int = 28
    in_channels: int = 1
    num_classes: int = 10
    kernels: tuple[int, ...] = (3, 5, 9)
    strides: tuple[int, ...] = (1, 2)
    channels: tuple[int, int] = (1, 64)  # capsule types of a Sabour capsule layer
    capsules: tuple[int, int] = (1, 64)  # capsule dimension of a capsule layer / cell
    conv_layers: tuple[int, int] = (3, 6)
    conv_channel_exponents: tuple[int, int] = (2, 6)  # convolutions have 2^k channels
    first_kernel: int = 9
    caps_layers: tuple[int, int] = (2, 6)  # Sabour family, class layer included
    cells: tuple[int, int] = (4, 8)  # DeepCaps family, final class stage included
    cell_kernel: int = 3
    cell_types: int = 32
    cell_dims: tuple[int, int] = (4, 8)  # first cell, later cells
    class_dim: int = 16
    families: tuple[str, ...] = FAMILIES
    resizes: tuple[int, ...] = (1, 2)
    skip: bool = True  # may a DeepCaps genotype carry the extra skip connection?
    primary: tuple[str, ...] = ("caps",)  # first Sabour capsule gene: "caps" and/or "dwcaps"
    block_kinds: tuple[str, ...] = ()  # a block gene before the class stage: "momentum", "residual"
    block_count: tuple[int, int] = (1, 2)  # blocks of a block gene
    block_capsules: tuple[int, int] = (8, 32)  # capsules of a block gene
    block_dims: tuple[int, int] = (4, 16)  # capsule dimension of a block gene
    routings: tuple[str, ...] = ("rba",)  # routing of the class stage and of block genes
    shared: tuple[bool, ...] = (False,)  # weight-shared class capsules?

    WHAT: ClassVar[str] = "search-space key"

    @classmethod
    def for_dataset(cls, name: str, **overrides: Any) -> SearchSpace:
        """The space for a registered dataset (image size, channels, classes from its info),
        with ``overrides`` of any field; unknown keys are refused, naming the valid ones. The key
        ``preset`` names a space of :data:`SPACE_PRESETS` whose fields the others override."""
        info = dataset_info(name)
        base = {
            "image_size": info.image_size,
            "in_channels": info.channels,
            "num_classes": info.num_classes,
        }
        overrides = dict(overrides)
        preset = overrides.pop("preset", "nascaps")
        if preset not in SPACE_PRESETS:
            raise ConfigError(
                f"search space: unknown preset {preset!r}; valid: {list(SPACE_PRESETS)}"
            )
        base.update(SPACE_PRESETS[preset])
        base.update(overrides)
        return cls.from_dict(base)

    # ------------------------------------------------------------------ checks
    def _where(self) -> str:
        return "search space: "  # coercion errors read like validate()'s

    def validate(self) -> None:
        """Raise :class:`ConfigError` naming the field if the space is inconsistent."""

        def positive(name: str, value: int) -> None:
            if value <= 0:
                raise ConfigError(f"search space: {name} must be a positive integer, got {value!r}")

        for name in ("image_size", "in_channels", "num_classes", "first_kernel", "cell_kernel",
                     "cell_types", "class_dim"):
            positive(name, getattr(self, name))
        for name in ("kernels", "strides", "resizes", "families"):
            if not getattr(self, name):
                raise ConfigError(f"search space: {name} must not be empty")
        for name in ("kernels", "strides"):
            for value in getattr(self, name):
                positive(name, value)
        bad = [r for r in self.resizes if r not in (1, 2)]
        if bad:
            raise ConfigError(f"search space: resizes must be 1 or 2, got {bad}")
        bad = [f for f in self.families if f not in FAMILIES]
        if bad:
            raise ConfigError(f"search space: unknown famil(ies) {bad}; valid: {list(FAMILIES)}")
        for name, valid in (("primary", PRIMARY_KINDS), ("block_kinds", BLOCK_KIND_NAMES),
                            ("routings", ROUTINGS)):
            bad = [v for v in getattr(self, name) if v not in valid]
            if bad:
                raise ConfigError(f"search space: unknown {name} {bad}; valid: {list(valid)}")
        for name in ("primary", "routings", "shared"):
            if not getattr(self, name):
                raise ConfigError(f"search space: {name} must not be empty")
        lowest = {"channels": 1, "capsules": 1, "conv_layers": 1, "conv_channel_exponents": 0,
                  "caps_layers": 2, "cells": 2, "cell_dims": 1, "block_count": 1,
                  "block_capsules": 1, "block_dims": 1}
        for name, lo_min in lowest.items():
            lo, hi = value = getattr(self, name)
            if lo < lo_min or hi < lo:
                raise ConfigError(
                    f"search space: {name} must satisfy {lo_min} <= low <= high, got {value!r}"
                )

    def family_of(self, g: Genotype) -> str:
        kind = g.layers[-1].kind
        return "sabour" if kind == LayerKind.CAPS else "deepcaps"

    def allowed_kernels(self, index: int, layer: LayerDescriptor) -> tuple[int, ...]:
        """Kernels the space allows for ``layer`` at layer index ``index`` (not the class stage,
        whose kernel is its input size), ascending: ``kernels``, plus ``first_kernel`` for the
        first convolution and ``cell_kernel`` for DeepCaps cells (what the sampler draws)."""
        extra = ()
        if index == 0:
            extra = (self.first_kernel,)
        elif layer.kind == LayerKind.CELL:
            extra = (self.cell_kernel,)
        return tuple(sorted({*self.kernels, *extra}))

    def check(self, g: Genotype) -> Genotype:
        """Raise :class:`GenotypeError` (one line naming the layer and field) unless ``g`` is a
        buildable network (:meth:`Genotype.validate` against this space's images) that lies
        inside this search space; return ``g``.

        The space's rules, beyond buildability: the resize, family and skip options; at least
        two capsule layers and the layer counts (``conv_layers``, ``caps_layers`` / ``cells``);
        kernels from :meth:`allowed_kernels` and strides from ``strides`` (the first
        convolution may also have stride 1); convolutions with ``2^e`` channels
        (``conv_channel_exponents``) and 1-D outputs; capsule layers with ``channels`` types
        and ``capsules`` dimensions; cells with ``cell_types`` types and ``capsules`` (or
        ``cell_dims``) dimensions; a fully connected class stage (1x1 output) with
        ``num_classes`` capsules of ``class_dim`` dimensions.
        """
        g.validate(in_channels=self.in_channels, image_size=self.image_size)
        n = len(g.layers)
        last = g.layers[-1]
        if g.resize not in self.resizes:
            raise GenotypeError(f"field resize {g.resize} is not one of {list(self.resizes)}")
        family = self.family_of(g)
        if family not in self.families:
            raise GenotypeError(
                f"layer {n - 1}: field kind: family {family} is not in {list(self.families)}"
            )
        if g.num_capsule_layers < 2:
            raise GenotypeError(
                f"layer {n - 1}: field kind: the search space needs at least two capsule "
                f"layers, got {g.num_capsule_layers}"
            )
        lo, hi = self.conv_layers
        if not lo <= g.num_conv_layers <= hi:
            raise GenotypeError(
                f"layer 0: field kind: {g.num_conv_layers} convolution(s), the search space "
                f"allows {lo}-{hi}"
            )
        lo, hi = self.caps_layers if family == "sabour" else self.cells
        if not lo <= g.num_capsule_layers <= hi:
            raise GenotypeError(
                f"layer {n - 1}: field kind: {g.num_capsule_layers} {family} capsule layers, "
                f"the search space allows {lo}-{hi}"
            )
        for i, layer in enumerate(g.layers[:-1]):
            self._check_layer(i, layer)
        if last.out_size != 1:
            raise GenotypeError(f"layer {n - 1}: field out_size: the class stage must be 1x1")
        if last.out_channels != self.num_classes:
            raise GenotypeError(
                f"layer {n - 1}: field out_channels is {last.out_channels} but the dataset has "
                f"{self.num_classes} classes"
            )
        if last.out_capsules != self.class_dim:
            raise GenotypeError(
                f"layer {n - 1}: field out_capsules is {last.out_capsules}, the search space's "
                f"class_dim is {self.class_dim}"
            )
        if g.skip != -1 and not self.skip:
            raise GenotypeError("field skip: this search space has no skip connection")
        self._check_routed(n - 1, last)
        if last.shared not in self.shared:
            raise GenotypeError(
                f"layer {n - 1}: field shared {str(last.shared).lower()} is outside the search "
                f"space (shared {[str(v).lower() for v in self.shared]})"
            )
        first_caps = next(i for i, layer in enumerate(g.layers) if layer.kind != LayerKind.CONV)
        primary = "dwcaps" if g.layers[first_caps].kind == LayerKind.DWCAPS else "caps"
        if family == "sabour" and first_caps < n - 1 and primary not in self.primary:
            raise GenotypeError(
                f"layer {first_caps}: field kind: {primary} primary capsules are outside the "
                f"search space (primary {list(self.primary)})"
            )
        return g

    def _check_routed(self, i: int, layer: LayerDescriptor) -> None:
        routing = layer.routing or "rba"
        if routing not in self.routings:
            raise GenotypeError(
                f"layer {i}: field routing {routing} is outside the search space "
                f"(routings {list(self.routings)})"
            )

    def _check_layer(self, i: int, layer: LayerDescriptor) -> None:
        """The space's per-gene rules for a gene before the class stage."""

        def outside(field: str, value: int, allowed: str) -> GenotypeError:
            return GenotypeError(
                f"layer {i}: field {field} {value} is outside the search space ({allowed})"
            )

        if layer.kind in BLOCK_KINDS:
            if layer.kind_name not in self.block_kinds:
                raise outside("kind", layer.kind_name, f"block_kinds {list(self.block_kinds)}")
            for field, span in (("blocks", self.block_count), ("out_channels", self.block_capsules),
                                ("out_capsules", self.block_dims)):
                if not span[0] <= getattr(layer, field) <= span[1]:
                    raise outside(field, getattr(layer, field), f"{span[0]}-{span[1]}")
            self._check_routed(i, layer)
            return
        if layer.kind == LayerKind.DWCAPS:
            lo, hi = self.capsules
            if not lo <= layer.out_capsules <= hi:
                raise outside("out_capsules", layer.out_capsules, f"capsules {lo}-{hi}")
            return
        kernels = self.allowed_kernels(i, layer)
        if layer.kernel not in kernels:
            raise outside("kernel", layer.kernel, f"one of {list(kernels)}")
        strides = sorted({*self.strides, 1}) if i == 0 else sorted(self.strides)
        if layer.stride not in strides:
            raise outside("stride", layer.stride, f"one of {strides}")
        if layer.kind == LayerKind.CONV:
            lo, hi = self.conv_channel_exponents
            if layer.out_channels not in {2**e for e in range(lo, hi + 1)}:
                raise outside("out_channels", layer.out_channels, f"2^{lo}..2^{hi}")
            if layer.out_capsules != 1:
                raise outside("out_capsules", layer.out_capsules, "1 for a convolution")
            return
        if layer.kind == LayerKind.CAPS:
            lo, hi = self.channels
            if not lo <= layer.out_channels <= hi:
                raise outside("out_channels", layer.out_channels, f"channels {lo}-{hi}")
        elif layer.out_channels != self.cell_types:
            raise outside("out_channels", layer.out_channels, f"cell_types {self.cell_types}")
        lo, hi = self.capsules
        dims_ok = lo <= layer.out_capsules <= hi
        if layer.kind == LayerKind.CELL:
            dims_ok = dims_ok or layer.out_capsules in self.cell_dims
        if not dims_ok:
            raise outside("out_capsules", layer.out_capsules, f"capsules {lo}-{hi}")

    # ------------------------------------------------------------------ repair
    def _space_kernel(self, i: int, layer: LayerDescriptor) -> int:
        """``layer``'s kernel if the space allows it and it fits its input, else the largest
        allowed kernel that fits, else the smallest allowed one (same padding builds it)."""
        kernels = self.allowed_kernels(i, layer)
        if layer.kernel in kernels and layer.kernel <= layer.in_size:
            return layer.kernel
        fitting = [k for k in kernels if k <= layer.in_size]
        return fitting[-1] if fitting else kernels[0]

    def repair(self, g: Genotype) -> Genotype:
        """Re-chain shapes (:func:`capslab.genotype.repair`), keep every kernel in the space's
        set (:meth:`_space_kernel`: a kernel larger than its input becomes the largest allowed
        one that fits) and make the class stage fully connected with this space's classes;
        returns a new genotype. Structure (layer kinds and counts) is never changed."""
        g = repair(g)
        *body, last = g.layers
        body = [layer if covers_input(layer) else replace(layer, kernel=self._space_kernel(i, layer))
                for i, layer in enumerate(body)]
        last = replace(
            last,
            kernel=last.in_size,
            stride=1,
            out_size=1,
            out_channels=self.num_classes,
            out_capsules=self.class_dim,
        )
        skip = g.skip if self.skip else -1
        return repair(Genotype((*body, last), skip=skip, resize=g.resize))


# ---------------------------------------------------------------------- sampling
def pick(rng: np.random.Generator, values: Sequence[_T]) -> _T:
    """One of ``values``, uniformly (one ``rng.integers`` draw)."""
    return values[int(rng.integers(len(values)))]


def choose(rng: np.random.Generator, values: Sequence[_T]) -> _T:
    """:func:`pick`, without a draw when there is one value: a space option left at the
    paper's single value does not change the paper's sampling stream."""
    return values[0] if len(values) == 1 else pick(rng, values)


def _between(rng: np.random.Generator, span: tuple[int, int]) -> int:
    return int(rng.integers(span[0], span[1] + 1))


def _routing(rng: np.random.Generator, space: SearchSpace) -> str | None:
    """A routing of the space for a routed gene; RBA, the paper's, is written as ``None``
    (the model's default), so the paper's space samples exactly the paper's genes. No draw
    when the space has one routing, so the paper's space draws as it always did."""
    routing = choose(rng, space.routings)
    return None if routing == "rba" else routing


def sample(space: SearchSpace, rng: np.random.Generator) -> Genotype:
    """A random genotype of ``space``, always valid (validated after repair).

    Like the authors' sampler: 3-6 convolutions (the first 9x9, stride 1), each with 2^k
    channels, then a Sabour stack (capsule types and dimensions drawn from the space) or a
    DeepCaps stack (3x3 cells of 32 types, 4-D then 8-D); the class stage closes it. A DeepCaps
    stack's skip is -1 or one of :func:`~capslab.genotype.valid_skips` (``effective=True``).
    """
    resize = pick(rng, space.resizes)
    size = space.image_size * resize
    channels, capsules = space.in_channels, 1
    layers: list[LayerDescriptor] = []

    def add(kind: LayerKind, kernel: int, stride: int, out_ch: int, out_caps: int,
            **options: Any) -> None:
        nonlocal size, channels, capsules
        out = -(-size // stride)  # same padding; space.repair fits kernels to the maps
        layers.append(LayerDescriptor(kind, size, channels, capsules, kernel, stride, out, out_ch,
                                      out_caps, **options))
        size, channels, capsules = out, out_ch, out_caps

    n_conv = _between(rng, space.conv_layers)
    for i in range(n_conv):
        kernel = space.first_kernel if i == 0 else pick(rng, space.kernels)
        stride = 1 if i == 0 else pick(rng, space.strides)
        add(LayerKind.CONV, kernel, stride, 2 ** _between(rng, space.conv_channel_exponents), 1)

    family = pick(rng, space.families)
    if family == "sabour":
        lo, hi = space.caps_layers
        block = pick(rng, [None, *space.block_kinds]) if space.block_kinds else None
        if block is not None and hi < 3:
            block = None  # primary capsules, the block and the class stage need 3 layers
        n_caps = _between(rng, (max(lo, 3) if block else lo, hi))
        primary = choose(rng, space.primary)
        for c in range(n_caps - 1 - (block is not None)):
            if c == 0 and primary == "dwcaps":
                maps = channels * capsules
                dims = [d for d in range(space.capsules[0], space.capsules[1] + 1) if maps % d == 0]
                dim = pick(rng, dims) if dims else space.capsules[0]  # repair regroups the maps
                add(LayerKind.DWCAPS, size, 1, max(maps // dim, 1), dim)
                layers[-1], size = replace(layers[-1], out_size=1), 1
                continue
            add(
                LayerKind.CAPS,
                pick(rng, space.kernels),
                pick(rng, space.strides),
                _between(rng, space.channels),
                _between(rng, space.capsules),
            )
        if block is not None:
            add(LayerKind[block.upper()], size, 1, _between(rng, space.block_capsules),
                _between(rng, space.block_dims), blocks=_between(rng, space.block_count),
                routing=_routing(rng, space))
            layers[-1], size = replace(layers[-1], out_size=1), 1
        kind = LayerKind.CAPS
    else:
        n_cells = _between(rng, space.cells)
        for c in range(n_cells - 1):
            dim = space.cell_dims[0] if c == 0 else space.cell_dims[1]
            add(LayerKind.CELL, space.cell_kernel, pick(rng, space.strides), space.cell_types, dim)
        kind = LayerKind.CELL
    add(kind, size, 1, space.num_classes, space.class_dim)
    layers[-1] = replace(layers[-1], routing=_routing(rng, space), shared=choose(rng, space.shared))
    g = Genotype(tuple(layers), resize=resize)
    if space.skip and family == "deepcaps":
        # -1 or a cell (not the last one, which feeds the class stage anyway): see skip_source
        g = replace(g, skip=pick(rng, [-1, *valid_skips(g, effective=True)]))
    return space.check(space.repair(g))


def genotype_key(g: Genotype) -> str:
    """The canonical exchange form: compact JSON of ``g.exchange()``, keys sorted (journal and
    duplicate key; for the paper's genes, the NASCaps list as before)."""
    return json.dumps(g.exchange(), separators=(",", ":"), sort_keys=True)


