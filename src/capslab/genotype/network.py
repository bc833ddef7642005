"""A whole network (:class:`Genotype`) and the rules that make it buildable (:func:`validate`).

The validation sits beside the class because :meth:`Genotype.validate` calls it. The skip
helpers (:mod:`~capslab.genotype.skip`), :func:`~capslab.genotype.repairing.repair` and the file
functions (:mod:`~capslab.genotype.files`) build on this module.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from capslab.errors import GenotypeError
from capslab.genotype.descriptor import (
    BLOCK_KINDS,
    GENE_FIELDS,
    LayerDescriptor,
    LayerKind,
    _check_keys,
    _is_int,
)

FORMAT_NAME = "capslab-genotype"
#: the newest readable format; version 1 (the NASCaps kinds only) is still written for a
#: genotype without newer genes or options, so older CapsLab versions keep reading those
FORMAT_VERSION = 2
READABLE_VERSIONS = (1, 2)


def family(kind: LayerKind) -> str:
    """``"conv"`` for a convolution, ``"deepcaps"`` for a cell, ``"sabour"`` for every other
    capsule gene (Sabour layers, depthwise primary capsules, block genes)."""
    if kind == LayerKind.CONV:
        return "conv"
    return "deepcaps" if kind == LayerKind.CELL else "sabour"


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

    @property
    def is_nascaps(self) -> bool:
        """Can the NASCaps 9-integer format hold this genotype (:meth:`to_nascaps`)?"""
        return all(layer.is_nascaps for layer in self.layers)

    def to_nascaps(self) -> list[list[int]]:
        """The authors' list; :class:`GenotypeError` naming the layer when a gene is of a kind
        (or has an option) that format cannot hold."""
        genes = []
        for i, layer in enumerate(self.layers):
            try:
                genes.append(layer.to_gene())
            except GenotypeError as e:
                raise GenotypeError(f"layer {i}: {e}") from None
        return genes + [[self.skip], [self.resize]]

    def exchange(self) -> list | dict[str, Any]:
        """The form files, journals and checkpoints store: the NASCaps list when that format
        holds the genotype (so the paper's genotypes stay in the authors' form), the readable
        object otherwise. :func:`~capslab.genotype.parse_genotype` reads either."""
        return self.to_nascaps() if self.is_nascaps else self.to_dict()

    def to_dict(self) -> dict[str, Any]:
        return {
            "format": FORMAT_NAME,
            "version": 1 if self.is_nascaps else FORMAT_VERSION,
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
        if d.get("version", FORMAT_VERSION) not in READABLE_VERSIONS:
            raise GenotypeError(
                f"unsupported genotype version {d.get('version')!r} (this CapsLab reads versions "
                f"{', '.join(map(str, READABLE_VERSIONS))})"
            )
        if not isinstance(d.get("layers"), list):
            raise GenotypeError("a capslab genotype needs a 'layers' list")
        layers = _parse_layers(d["layers"], LayerDescriptor.from_dict)
        return cls(layers, skip=d.get("skip", -1), resize=d.get("resize", 1))

    # ------------------------------------------------------------- conveniences
    @property
    def num_capsule_layers(self) -> int:
        """Number of capsule genes (every kind but conv), the final class stage included."""
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
        """One line, e.g. ``conv9/1x256 -> caps9/2:32x8D -> class:10x16D (28px, skip -1, resize 1)``;
        options follow a gene in brackets (``class:10x16D[self-attention,shared]``)."""
        parts = []
        n = len(self.layers)
        for i, layer in enumerate(self.layers):
            tags = [layer.routing] if layer.routing else []
            tags += ["shared"] if layer.shared else []
            tag = f"[{','.join(tags)}]" if tags else ""
            shape = f"{layer.out_channels}x{layer.out_capsules}D"
            if layer.kind == LayerKind.CONV:
                parts.append(f"conv{layer.kernel}/{layer.stride}x{layer.out_channels}")
            elif i == n - 1:
                parts.append(f"class:{shape}{tag}")
            elif layer.kind == LayerKind.DWCAPS:
                parts.append(f"dwcaps{layer.kernel}:{shape}")
            elif layer.kind in BLOCK_KINDS:
                parts.append(f"{layer.kind_name}{layer.blocks}:{shape}{tag}")
            else:
                name = "caps" if layer.kind == LayerKind.CAPS else "cell"
                parts.append(
                    f"{name}{layer.kernel}/{layer.stride}:{layer.out_channels}x{layer.out_capsules}D"
                )
        size = self.layers[0].in_size if self.layers else 0
        return f"{' -> '.join(parts)} ({size}px, skip {self.skip}, resize {self.resize})"

    def __str__(self) -> str:
        return self.describe()


# Two levels of checks, on purpose:
# - :func:`validate` (also ``Genotype.validate()``): is this a network at all? Shapes chain,
#   fields are positive, a class stage closes it: what the NASCaps authors' estimator and model
#   builder accept. The model builder, the hardware model and every command that reads a
#   genotype file enforce it. Every genotype the authors published passes.
# - ``capslab.nas.space.SearchSpace.check``: is it inside the paper's search space (at least two
#   capsule layers, kernels {3, 5, 9}, strides {1, 2}, layer counts, channel and capsule
#   ranges)? Only the search (sampling, operators, repair, evaluation) enforces that.
def covers_input(layer: LayerDescriptor) -> bool:
    """Genes whose kernel is always their input size, with a 1x1 output: depthwise primary
    capsules and the fully connected block genes."""
    return layer.kind == LayerKind.DWCAPS or layer.kind in BLOCK_KINDS


def _allowed_out_sizes(layer: LayerDescriptor, is_last: bool) -> tuple[int, ...]:
    """Same padding gives ceil(in/stride); the final class stage may also be fully connected
    (kernel == in_size) with a 1x1 output, as in the published DeepCaps genotype; a gene that
    covers its input (:func:`covers_input`) always has a 1x1 output."""
    if covers_input(layer):
        return (1,)
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


def _validate_new_gene(i: int, layer: LayerDescriptor, layers: tuple[LayerDescriptor, ...]) -> None:
    """The rules of the readable format's genes and options (docs/genotypes.md)."""
    n = len(layers)
    is_last = i == n - 1
    if layer.routing is not None and not (is_last or layer.kind in BLOCK_KINDS):
        raise GenotypeError(
            f"layer {i}: field routing belongs to the genes that route (the class stage and "
            f"momentum or residual genes), not to a {layer.kind_name} gene"
        )
    if layer.shared and not is_last:
        raise GenotypeError(f"layer {i}: field shared belongs to the class stage (the last gene)")
    if not covers_input(layer):
        return
    if layer.kernel != layer.in_size or layer.stride != 1:
        raise GenotypeError(
            f"layer {i}: a {layer.kind_name} gene covers its input: kernel must be in_size "
            f"({layer.in_size}) and stride 1, got kernel {layer.kernel}, stride {layer.stride}"
        )
    prev = layers[i - 1]
    if layer.kind == LayerKind.DWCAPS:
        if prev.kind != LayerKind.CONV:
            raise GenotypeError(
                f"layer {i}: field kind: depthwise primary capsules read a convolution's maps; "
                f"layer {i - 1} is a {prev.kind_name}"
            )
        maps = layer.in_channels * layer.in_capsules
        if layer.out_channels * layer.out_capsules != maps:
            raise GenotypeError(
                f"layer {i}: fields out_channels x out_capsules = {layer.out_channels} x "
                f"{layer.out_capsules} must regroup the {maps} maps of layer {i - 1} "
                "(a depthwise convolution keeps its maps)"
            )
        return
    if prev.kind == LayerKind.CONV:
        raise GenotypeError(
            f"layer {i}: field kind: a {layer.kind_name} gene reads capsules; layer {i - 1} is a conv"
        )
    if i != n - 2:
        raise GenotypeError(
            f"layer {i}: field kind: a {layer.kind_name} gene must come just before the class stage"
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
    if len({family(layer.kind) for layer in layers} - {"conv"}) > 1:
        i = next(
            j
            for j, layer in enumerate(layers)
            if layer.kind != LayerKind.CONV and family(layer.kind) != family(last.kind)
        )
        raise GenotypeError(
            f"layer {i}: field kind: DeepCaps cells (2) cannot be mixed with other capsule genes"
        )
    if last.kind not in (LayerKind.CAPS, LayerKind.CELL):
        raise GenotypeError(
            f"layer {n - 1}: field kind: the last gene must be the class capsule stage "
            f"(caps 1 or cell 2), got {last.kind_name}"
        )
    for i, layer in enumerate(layers):
        _validate_new_gene(i, layer, layers)
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
