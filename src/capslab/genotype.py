"""Genotypes: a network described as a list of NASCaps layer descriptors.

A genotype is what the architecture search manipulates and what the model builder and the
hardware model read. It is pure data (no torch) so the search loop and the hardware model stay
cheap to import and to run.

Exchange format (the NASCaps authors' chromosomes): a JSON list of 9-int genes
``[type, insize, inch, incaps, k, stride, outsize, outch, outcaps]`` followed by ``[xtraskip]``
and ``[resize]``. Type 0 is a convolution, 1 a Sabour capsule layer (the last one is the class
capsule layer), 2 a DeepCaps cell (the last one is the flatten + class capsule stage). For
capsule genes ``outch`` is the number of capsule types and ``outcaps`` the capsule dimension.
``xtraskip`` is "the skip" everywhere in CapsLab and counts layers from 1 (see
:func:`skip_source`): ``s`` sends the output of layer index ``s - 1`` (a layer index is always
0-based) to the final stage as well, ``-1`` means no extra skip.

Readable format (this project's): ``{"format": "capslab-genotype", "version": 1,
"layers": [{"kind": "conv", "in_size": ..., ...}, ...], "skip": -1, "resize": 1}``.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, fields, replace
from enum import IntEnum
from pathlib import Path
from typing import Any

from capslab.errors import GenotypeError
from capslab.io import atomic_write_text

FORMAT_NAME = "capslab-genotype"
FORMAT_VERSION = 1


class LayerKind(IntEnum):
    CONV = 0  # plain convolution (same padding)
    CAPS = 1  # Sabour-style convolutional capsule layer; the last one is the class layer
    CELL = 2  # DeepCaps CapsCell; the last one is the flatten + class capsule stage


_KIND_BY_NAME = {kind.name.lower(): kind for kind in LayerKind}  # "conv", "caps", "cell"


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _check_keys(d: dict[str, Any], valid: Sequence[str], what: str) -> None:
    unknown = sorted(set(d) - set(valid))
    if unknown:
        raise GenotypeError(f"unknown {what} key(s) {unknown}; valid keys: {list(valid)}")


def _parse_layers(
    items: Iterable[Any], parse: Callable[[Any], LayerDescriptor]
) -> tuple[LayerDescriptor, ...]:
    """``parse`` applied to each item; an error names the layer index."""
    layers = []
    for i, item in enumerate(items):
        try:
            layers.append(parse(item))
        except GenotypeError as e:
            raise GenotypeError(f"layer {i}: {e}") from None
    return tuple(layers)


@dataclass(frozen=True, slots=True)
class LayerDescriptor:
    """One NASCaps gene. For capsule genes ``out_channels`` = capsule types and
    ``out_capsules`` = capsule dimension (likewise for the inputs)."""

    kind: LayerKind
    in_size: int
    in_channels: int
    in_capsules: int
    kernel: int
    stride: int
    out_size: int
    out_channels: int
    out_capsules: int

    def __post_init__(self) -> None:
        if not _is_int(self.kind) or self.kind not in (0, 1, 2):
            raise GenotypeError(
                f"layer kind must be 0 (conv), 1 (caps) or 2 (cell), got {self.kind!r}"
            )
        object.__setattr__(self, "kind", LayerKind(self.kind))
        for name in GENE_FIELDS:
            value = getattr(self, name)
            if not _is_int(value):
                raise GenotypeError(f"field {name} must be an integer, got {value!r}")

    @property
    def kind_name(self) -> str:
        return self.kind.name.lower()

    def to_gene(self) -> list[int]:
        """The 9-int NASCaps gene."""
        return [int(self.kind), *(getattr(self, n) for n in GENE_FIELDS)]

    @classmethod
    def from_gene(cls, gene: Sequence[int]) -> LayerDescriptor:
        if not isinstance(gene, (list, tuple)) or len(gene) != 9:
            raise GenotypeError(f"a layer gene is a list of 9 integers, got {gene!r}")
        return cls(*gene)

    def to_dict(self) -> dict[str, Any]:
        return {"kind": self.kind_name, **{n: getattr(self, n) for n in GENE_FIELDS}}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> LayerDescriptor:
        if not isinstance(d, dict):
            raise GenotypeError(f"a layer is an object with keys kind, {', '.join(GENE_FIELDS)}")
        valid = ("kind", *GENE_FIELDS)
        _check_keys(d, valid, "layer")
        missing = [k for k in valid if k not in d]
        if missing:
            raise GenotypeError(f"layer is missing key(s) {missing}")
        kind = d["kind"]
        if isinstance(kind, str):
            if kind not in _KIND_BY_NAME:
                raise GenotypeError(f"unknown layer kind {kind!r}; valid: {list(_KIND_BY_NAME)}")
            kind = _KIND_BY_NAME[kind]
        return cls(kind, *(d[n] for n in GENE_FIELDS))


# Order of the fields in a NASCaps gene after the type: the descriptor's own field order.
GENE_FIELDS = tuple(f.name for f in fields(LayerDescriptor))[1:]


@dataclass(frozen=True, slots=True)
class Genotype:
    """A whole network: layer genes, the extra skip (xtraskip, counted from 1: ``skip = s`` points
    at layer index ``s - 1``, see :func:`skip_layer`; -1 = none) and the resize factor (1 = native
    input size, 2 = input scaled up 2x)."""

    layers: tuple[LayerDescriptor, ...]
    skip: int = -1
    resize: int = 1

    def __post_init__(self) -> None:
        layers = tuple(self.layers)
        for i, layer in enumerate(layers):
            if not isinstance(layer, LayerDescriptor):
                raise GenotypeError(f"layer {i} is not a LayerDescriptor: {layer!r}")
        object.__setattr__(self, "layers", layers)
        for name in ("skip", "resize"):
            if not _is_int(getattr(self, name)):
                raise GenotypeError(f"{name} must be an integer, got {getattr(self, name)!r}")

    # ------------------------------------------------------------------ formats
    @classmethod
    def from_nascaps(cls, genes: Sequence[Sequence[int]]) -> Genotype:
        """Parse the authors' list: genes, then ``[xtraskip]``, then ``[resize]``."""
        if not isinstance(genes, (list, tuple)) or len(genes) < 3:
            raise GenotypeError(
                "a NASCaps genotype is a list of 9-int layer genes followed by [skip] and [resize]"
            )
        *layer_genes, skip, resize = genes
        for name, tail in (("skip", skip), ("resize", resize)):
            if not isinstance(tail, (list, tuple)) or len(tail) != 1 or not _is_int(tail[0]):
                raise GenotypeError(f"the {name} entry must be a one-integer list, got {tail!r}")
        layers = _parse_layers(layer_genes, LayerDescriptor.from_gene)
        return cls(layers, skip=skip[0], resize=resize[0])

    def to_nascaps(self) -> list[list[int]]:
        return [layer.to_gene() for layer in self.layers] + [[self.skip], [self.resize]]

    def to_dict(self) -> dict[str, Any]:
        return {
            "format": FORMAT_NAME,
            "version": FORMAT_VERSION,
            "layers": [layer.to_dict() for layer in self.layers],
            "skip": self.skip,
            "resize": self.resize,
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Genotype:
        if not isinstance(d, dict):
            raise GenotypeError("a capslab genotype is a JSON object")
        _check_keys(d, ("format", "version", "layers", "skip", "resize"), "genotype")
        if d.get("format", FORMAT_NAME) != FORMAT_NAME:
            raise GenotypeError(f"format must be {FORMAT_NAME!r}, got {d.get('format')!r}")
        if d.get("version", FORMAT_VERSION) != FORMAT_VERSION:
            raise GenotypeError(
                f"unsupported genotype version {d.get('version')!r} (this is version {FORMAT_VERSION})"
            )
        if not isinstance(d.get("layers"), list):
            raise GenotypeError("a capslab genotype needs a 'layers' list")
        layers = _parse_layers(d["layers"], LayerDescriptor.from_dict)
        return cls(layers, skip=d.get("skip", -1), resize=d.get("resize", 1))

    # ------------------------------------------------------------- conveniences
    @property
    def num_capsule_layers(self) -> int:
        """Number of capsule genes (type 1 or 2), the final class stage included."""
        return sum(1 for layer in self.layers if layer.kind != LayerKind.CONV)

    @property
    def num_conv_layers(self) -> int:
        return len(self.layers) - self.num_capsule_layers

    @property
    def _first(self) -> LayerDescriptor:
        if not self.layers:
            raise GenotypeError("the genotype has no layers")
        return self.layers[0]

    @property
    def input_size(self) -> int:
        """Side of the network's input images: the first gene's in_size (resize included)."""
        return self._first.in_size

    @property
    def in_channels(self) -> int:
        return self._first.in_channels

    def validate(self, *, in_channels: int | None = None, image_size: int | None = None) -> Genotype:
        """Raise :class:`GenotypeError` (naming the layer and field) unless this is a buildable,
        estimable network; return ``self``. See :func:`capslab.genotype.validate`; the search
        space's stricter rules are :meth:`capslab.nas.space.SearchSpace.check`."""
        return validate(self, in_channels=in_channels, image_size=image_size)

    def describe(self) -> str:
        """One line, e.g. ``conv9/1x256 -> caps9/2:32x8D -> class:10x16D (28px, skip -1, resize 1)``."""
        parts = []
        n = len(self.layers)
        for i, layer in enumerate(self.layers):
            if layer.kind == LayerKind.CONV:
                parts.append(f"conv{layer.kernel}/{layer.stride}x{layer.out_channels}")
            elif i == n - 1:
                parts.append(f"class:{layer.out_channels}x{layer.out_capsules}D")
            else:
                name = "caps" if layer.kind == LayerKind.CAPS else "cell"
                parts.append(
                    f"{name}{layer.kernel}/{layer.stride}:{layer.out_channels}x{layer.out_capsules}D"
                )
        size = self.layers[0].in_size if self.layers else 0
        return f"{' -> '.join(parts)} ({size}px, skip {self.skip}, resize {self.resize})"

    def __str__(self) -> str:
        return self.describe()


# --------------------------------------------------------------------------- the skip
# The one place that knows how ``skip`` counts: every other module goes through these helpers.
# Vocabulary: "skip" is always the xtraskip value (counted from 1, -1 = none); a 0-based
# position in ``Genotype.layers`` is always a "layer index".
def skip_value(layer_index: int) -> int:
    """The ``skip`` value that points at layer index ``layer_index`` (0-based): ``layer_index + 1``."""
    return layer_index + 1


def valid_skips(g: Genotype, *, effective: bool = False) -> list[int]:
    """The skip values :func:`validate` accepts for ``g``'s layers, ``-1`` aside, ascending:
    ``skip_value(i)`` for every cell at layer index ``i`` before the final stage.

    With ``effective=True`` only those that add an input to the final stage
    (:func:`skip_source` is not None): the last cell is left out, it feeds the final stage anyway.
    """
    end = len(g.layers) - (2 if effective else 1)  # the final stage is never a skip source
    return [skip_value(i) for i in range(max(end, 0)) if g.layers[i].kind == LayerKind.CELL]


def skip_layer(g: Genotype) -> int | None:
    """The layer index (0-based) that ``g.skip`` points at, ``g.skip - 1``; always a cell. None
    when the skip is -1 or not valid for ``g`` (see :func:`valid_skips`). Unlike
    :func:`skip_source` this also returns the last cell before the final stage."""
    return g.skip - 1 if g.skip in valid_skips(g) else None


def skip_source(g: Genotype) -> int | None:
    """The layer index (0-based) whose output ``g.skip`` (xtraskip) also sends to the final
    stage, or None when the skip adds no input.

    The skip counts layers from 1, as the NASCaps authors' model builder does: ``skip = s``
    feeds the output of layer index ``s - 1`` to the final stage beside the last cell's
    output. The published DeepCaps genotype (layers 0 = conv, 1-4 = cells, 5 = final stage)
    has ``skip = 4``: ``skip_source(DEEPCAPS_GENOTYPE) == 3``, the third cell (8x8 output)
    feeds the class stage together with the fourth, exactly as DeepCaps concatenates the
    flattened outputs of its last two cells.

    Returns None when there is no extra input: ``skip < 1`` (-1 is "no skip"), layer ``s - 1``
    is not a cell (or does not exist), or it is the last cell, which feeds the final stage
    anyway. :func:`validate` accepts ``-1`` and every ``s`` pointing at a cell before the final
    stage (:func:`valid_skips`), the last cell included.
    """
    i = skip_layer(g)
    if i is None or i == len(g.layers) - 2:
        return None
    return i


# --------------------------------------------------------------------------- validation
# Two levels of checks, on purpose:
# - :func:`validate` (also ``Genotype.validate()``): is this a network at all? Shapes chain,
#   fields are positive, a class stage closes it: what the NASCaps authors' estimator and model
#   builder accept. The model builder, the hardware model and every command that reads a
#   genotype file enforce it. Every genotype the authors published passes.
# - ``capslab.nas.space.SearchSpace.check``: is it inside the paper's search space (at least two
#   capsule layers, kernels {3, 5, 9}, strides {1, 2}, layer counts, channel and capsule
#   ranges)? Only the search (sampling, operators, repair, evaluation) enforces that.
def _allowed_out_sizes(layer: LayerDescriptor, is_last: bool) -> tuple[int, ...]:
    """Same padding gives ceil(in/stride); the final class stage may also be fully connected
    (kernel == in_size) with a 1x1 output, as in the published DeepCaps genotype."""
    same = -(-layer.in_size // layer.stride) if layer.stride > 0 else 0
    if is_last and layer.kind != LayerKind.CONV and layer.kernel == layer.in_size:
        return (same, 1)
    return (same,)


def _chains(prev: LayerDescriptor, layer: LayerDescriptor) -> bool:
    """Do ``layer``'s input channels/capsules match ``prev``'s output?

    Exact equality, except after a convolution, whose output is just
    ``out_channels * out_capsules`` feature maps (the builders make a convolution with that
    many filters): the next gene may read them as any ``in_channels x in_capsules`` with the
    same product (DeepCaps: 128 maps = 32 types x 4-D).
    """
    if (layer.in_channels, layer.in_capsules) == (prev.out_channels, prev.out_capsules):
        return True
    return (
        prev.kind == LayerKind.CONV
        and layer.in_channels * layer.in_capsules == prev.out_channels * prev.out_capsules
    )


def validate(
    g: Genotype,
    *,
    in_channels: int | None = None,
    image_size: int | None = None,
) -> Genotype:
    """Raise :class:`GenotypeError` naming the layer and the field if ``g`` is not a buildable,
    estimable network; return ``g`` otherwise. Same as ``g.validate(...)``.

    The rules (docs/genotypes.md, "Validation rules"): positive fields; a first convolution
    reading the image; shapes that chain (same padding); no convolution after a capsule layer;
    a final class capsule gene (type 1 or 2); one capsule family; a valid skip and resize.
    These are what the NASCaps authors' estimator and builder accept; the search space's own
    rules (two or more capsule layers, the kernel and stride sets, layer counts, ranges) are
    checked by :meth:`capslab.nas.space.SearchSpace.check`, not here.

    ``in_channels`` / ``image_size`` check the first layer against the data (``image_size`` is
    the native size; the resize factor is applied).
    """
    if not isinstance(g, Genotype):
        raise GenotypeError(f"expected a Genotype, got {type(g).__name__}")
    layers = g.layers
    n = len(layers)
    if n == 0:
        raise GenotypeError("the genotype has no layers")

    for i, layer in enumerate(layers):
        for name in GENE_FIELDS:
            if getattr(layer, name) <= 0:
                raise GenotypeError(
                    f"layer {i}: field {name} must be positive, got {getattr(layer, name)}"
                )
    first = layers[0]
    if first.kind != LayerKind.CONV:
        raise GenotypeError(f"layer 0: field kind must be conv (0), got {first.kind_name}")
    if first.in_capsules != 1:
        raise GenotypeError(
            f"layer 0: field in_capsules must be 1 (image input), got {first.in_capsules}"
        )
    if in_channels is not None and first.in_channels != in_channels:
        raise GenotypeError(
            f"layer 0: field in_channels is {first.in_channels} but the images have {in_channels} channel(s)"
        )
    if g.resize not in (1, 2):
        raise GenotypeError(f"field resize must be 1 or 2, got {g.resize}")
    if image_size is not None and first.in_size != image_size * g.resize:
        raise GenotypeError(
            f"layer 0: field in_size is {first.in_size} but the images are {image_size}px "
            f"x resize {g.resize} = {image_size * g.resize}"
        )

    for i, layer in enumerate(layers):
        is_last = i == n - 1
        if i > 0:
            prev = layers[i - 1]
            # the first convolution after a capsule layer follows one directly
            if layer.kind == LayerKind.CONV and prev.kind != LayerKind.CONV:
                raise GenotypeError(
                    f"layer {i}: field kind: a convolution cannot follow a capsule layer"
                )
            if layer.in_size != prev.out_size:
                raise GenotypeError(
                    f"layer {i}: field in_size is {layer.in_size} but layer {i - 1} outputs {prev.out_size}"
                )
            if not _chains(prev, layer):
                if prev.kind == LayerKind.CONV and layer.in_capsules != prev.out_capsules:
                    raise GenotypeError(
                        f"layer {i}: fields in_channels x in_capsules = {layer.in_channels} x "
                        f"{layer.in_capsules} do not regroup the {prev.out_channels} x "
                        f"{prev.out_capsules} maps of layer {i - 1}"
                    )
                if layer.in_channels != prev.out_channels:
                    name, have, want = "in_channels", layer.in_channels, prev.out_channels
                else:
                    name, have, want = "in_capsules", layer.in_capsules, prev.out_capsules
                raise GenotypeError(
                    f"layer {i}: field {name} is {have} but layer {i - 1} outputs {want}"
                )
        outs = _allowed_out_sizes(layer, is_last)
        if layer.out_size not in outs:
            raise GenotypeError(
                f"layer {i}: field out_size is {layer.out_size}, expected "
                + " or ".join(str(o) for o in outs)
                + f" (ceil(in_size {layer.in_size} / stride {layer.stride}))"
            )

    last = layers[-1]
    if last.kind == LayerKind.CONV:
        raise GenotypeError(
            f"layer {n - 1}: field kind: the last gene must be the class capsule stage "
            "(caps 1 or cell 2), got conv"
        )
    if len({layer.kind for layer in layers} - {LayerKind.CONV}) > 1:
        i = next(
            j
            for j, layer in enumerate(layers)
            if layer.kind != LayerKind.CONV and layer.kind != last.kind
        )
        raise GenotypeError(
            f"layer {i}: field kind: capsule layers (1) and DeepCaps cells (2) cannot be mixed"
        )
    if g.skip != -1:
        if not 1 <= g.skip <= n:
            raise GenotypeError(
                f"field skip must be -1 or 1..{n - 1} (skip = s points at layer s - 1), got {g.skip}"
            )
        target = g.skip - 1
        if target == n - 1:
            raise GenotypeError(
                f"field skip {g.skip} points at layer {target}, the final class stage; "
                "it must point at an earlier cell"
            )
        if layers[target].kind != LayerKind.CELL:
            raise GenotypeError(
                f"field skip {g.skip} points at layer {target}, a {layers[target].kind_name}, "
                "not a cell"
            )
    return g


def repair(g: Genotype) -> Genotype:
    """Return a new genotype whose shapes chain: every layer's inputs are set to its
    predecessor's outputs (keeping a valid regrouping of a convolution's maps), out_size is
    recomputed (same padding; a fully connected class stage, kernel == in_size, keeps its
    kernel equal to its new input size and its 1x1 output), the skip is moved to the nearest
    valid value (:func:`valid_skips`; -1 when it is below 1 or no cell precedes the final
    stage) and resize to {1, 2}. Other kernels are kept, even when larger than their input
    (same padding builds them; the search space's repair picks kernels from its own set).
    Structural problems (kinds, non-positive fields) are left for :func:`validate`.
    """
    out: list[LayerDescriptor] = []
    n = len(g.layers)
    for i, layer in enumerate(g.layers):
        if out:
            prev = out[-1]
            # a fully connected class stage (kernel == in_size) stays fully connected
            follow = i == n - 1 and layer.kind != LayerKind.CONV and layer.kernel == layer.in_size
            layer = replace(layer, in_size=prev.out_size)
            if follow and prev.out_size > 0:
                layer = replace(layer, kernel=prev.out_size)
            if not _chains(prev, layer):
                layer = replace(layer, in_channels=prev.out_channels, in_capsules=prev.out_capsules)
        if layer.stride > 0:
            outs = _allowed_out_sizes(layer, i == n - 1)
            if layer.out_size not in outs:
                layer = replace(layer, out_size=outs[0])
        out.append(layer)

    fixed = Genotype(tuple(out), skip=-1, resize=min(max(g.resize, 1), 2))
    options = valid_skips(fixed)
    if g.skip < 1 or not options:
        return fixed  # -1, or a value below 1 (no extra input in the authors' builder either)
    # the nearest valid skip (the lower one on a tie); a valid skip is kept
    return replace(fixed, skip=min(options, key=lambda s: (abs(s - g.skip), s)))


# --------------------------------------------------------------------------- files
def parse_genotype(obj: Any) -> Genotype:
    """A genotype from decoded JSON in either format (list = NASCaps, object = capslab)."""
    if isinstance(obj, Genotype):
        return obj
    if isinstance(obj, (list, tuple)):
        return Genotype.from_nascaps(obj)
    if isinstance(obj, dict):
        return Genotype.from_dict(obj)
    raise GenotypeError(
        "a genotype is a NASCaps list of genes or a capslab object, got " + type(obj).__name__
    )


def load_genotype(path: str | os.PathLike, *, check: bool = True) -> Genotype:
    """Read a genotype file in either format (detected); validate it unless ``check=False``.
    Every error is a :class:`GenotypeError` naming the file."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as e:
        raise GenotypeError(f"{path}: cannot read genotype file ({e.strerror or e})") from None
    try:
        g = parse_genotype(json.loads(text))
        return validate(g) if check else g
    except json.JSONDecodeError as e:
        raise GenotypeError(f"{path}: not valid JSON ({e})") from None
    except GenotypeError as e:
        raise GenotypeError(f"{path}: {e}") from None


def save_genotype(g: Genotype, path: str | os.PathLike, format: str = "capslab") -> None:
    """Write ``g`` atomically as JSON: ``format="capslab"`` (readable object) or ``"nascaps"``
    (the authors' list, one gene per line)."""
    if format == "capslab":
        text = json.dumps(g.to_dict(), indent=2) + "\n"
    elif format == "nascaps":
        rows = [json.dumps(row, separators=(", ", ": ")) for row in g.to_nascaps()]
        text = "[\n  " + ",\n  ".join(rows) + "\n]\n"
    else:
        raise GenotypeError(f"unknown genotype format {format!r}; valid: 'capslab', 'nascaps'")
    atomic_write_text(path, text)


# --------------------------------------------------------------------------- baselines
CAPSNET_GENOTYPE = Genotype.from_nascaps(
    [
        [0, 28, 1, 1, 9, 1, 28, 256, 1],
        [1, 28, 256, 1, 9, 2, 14, 32, 8],
        [1, 14, 32, 8, 9, 2, 7, 10, 16],
        [-1],
        [1],
    ]
)
"""The published CapsNet genotype (same padding: 28 -> 28 -> 14 -> 7)."""

DEEPCAPS_GENOTYPE = Genotype.from_nascaps(
    [
        [0, 64, 3, 1, 3, 1, 64, 128, 1],
        [2, 64, 32, 4, 3, 2, 32, 32, 4],
        [2, 32, 32, 4, 3, 2, 16, 32, 8],
        [2, 16, 32, 8, 3, 2, 8, 32, 8],
        [2, 8, 32, 8, 3, 2, 4, 32, 8],
        [2, 4, 32, 8, 4, 1, 1, 10, 16],
        [4],
        [2],
    ]
)
"""The published DeepCaps genotype (CIFAR-10 sized: 32px x resize 2 = 64)."""
