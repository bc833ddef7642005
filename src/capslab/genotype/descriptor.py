"""One layer gene: :class:`LayerKind` and :class:`LayerDescriptor`.

A NASCaps gene is nine integers ``[type, insize, inch, incaps, k, stride, outsize, outch,
outcaps]`` (:data:`GENE_FIELDS` names the eight after the type, in the descriptor's field
order). Type 0 is a convolution, 1 a Sabour capsule layer, 2 a DeepCaps cell; for capsule genes
``outch`` is the number of capsule types and ``outcaps`` the capsule dimension.

CapsLab's readable format adds genes the NASCaps format cannot hold (:data:`NEW_KINDS`):

- ``dwcaps``: depthwise primary capsules (Efficient-CapsNet): one filter per map of the
  convolution before, as large as the map, so the output is 1x1 and the maps regroup into
  ``out_channels`` capsules of ``out_capsules`` dimensions;
- ``momentum`` / ``residual``: a stack of fully connected capsule layers (Momentum CapsNets):
  a routed projection of the grid before to ``out_channels`` capsules of ``out_capsules``
  dimensions, then ``blocks`` blocks of two routed layers, with a momentum (reversible) or a
  plain residual shortcut;

and options (:data:`OPTION_FIELDS`) on the genes that route: ``routing`` (``"rba"``, ``"sda"``
or ``"self-attention"``; ``None`` = the model's default) on the class stage and on block genes,
``shared`` (FasTrCaps weight sharing: one matrix per capsule type and class) on the class stage.
A descriptor converts to and from the gene list (only the three NASCaps kinds without options)
and the readable object (``{"kind": "conv", "in_size": ..., ...}``); a whole network of them is
a :class:`capslab.genotype.network.Genotype`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, fields
from enum import IntEnum
from typing import Any

from capslab.errors import GenotypeError


class LayerKind(IntEnum):
    CONV = 0  # plain convolution (same padding)
    CAPS = 1  # Sabour-style convolutional capsule layer; the last one is the class layer
    CELL = 2  # DeepCaps CapsCell; the last one is the flatten + class capsule stage
    DWCAPS = 3  # depthwise primary capsules (Efficient-CapsNet); readable format only
    MOMENTUM = 4  # momentum (reversible) stack of fully connected capsule blocks; readable only
    RESIDUAL = 5  # residual stack of fully connected capsule blocks; readable only


#: the kinds of the NASCaps 9-integer format
NASCAPS_KINDS = frozenset({LayerKind.CONV, LayerKind.CAPS, LayerKind.CELL})
#: the kinds only CapsLab's readable format holds
NEW_KINDS = frozenset(LayerKind) - NASCAPS_KINDS
#: the block genes: fully connected capsule stacks
BLOCK_KINDS = frozenset({LayerKind.MOMENTUM, LayerKind.RESIDUAL})
#: the routings a routed gene may name (``capslab.layers.class_caps.ROUTINGS``)
ROUTINGS = ("rba", "sda", "self-attention")
#: the optional fields of a gene, with their defaults (left out of files when at the default)
OPTION_FIELDS = {"routing": None, "shared": False, "blocks": 0}

_KIND_BY_NAME = {kind.name.lower(): kind for kind in LayerKind}  # "conv", "caps", "cell", ...


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _check_keys(d: dict[str, Any], valid: Sequence[str], what: str) -> None:
    unknown = sorted(set(d) - set(valid))
    if unknown:
        raise GenotypeError(f"unknown {what} key(s) {unknown}; valid keys: {list(valid)}")


@dataclass(frozen=True, slots=True)
class LayerDescriptor:
    """One gene. For capsule genes ``out_channels`` = capsule types (capsules of a block gene)
    and ``out_capsules`` = capsule dimension (likewise for the inputs). ``routing``, ``shared``
    and ``blocks`` are the options of the readable format (see the module docstring)."""

    kind: LayerKind
    in_size: int
    in_channels: int
    in_capsules: int
    kernel: int
    stride: int
    out_size: int
    out_channels: int
    out_capsules: int
    routing: str | None = None
    shared: bool = False
    blocks: int = 0

    def __post_init__(self) -> None:
        if not _is_int(self.kind) or self.kind not in tuple(LayerKind):
            raise GenotypeError(
                f"layer kind must be one of {', '.join(f'{k.value} ({k.name.lower()})' for k in LayerKind)}, "
                f"got {self.kind!r}"
            )
        object.__setattr__(self, "kind", LayerKind(self.kind))
        for name in GENE_FIELDS:
            value = getattr(self, name)
            if not _is_int(value):
                raise GenotypeError(f"field {name} must be an integer, got {value!r}")
        if self.routing is not None and self.routing not in ROUTINGS:
            raise GenotypeError(f"field routing must be one of {list(ROUTINGS)}, got {self.routing!r}")
        if not isinstance(self.shared, bool):
            raise GenotypeError(f"field shared must be true or false, got {self.shared!r}")
        if not _is_int(self.blocks):
            raise GenotypeError(f"field blocks must be an integer, got {self.blocks!r}")
        if self.kind in BLOCK_KINDS and self.blocks < 1:
            raise GenotypeError(f"field blocks of a {self.kind_name} gene must be >= 1, got {self.blocks}")
        if self.kind not in BLOCK_KINDS and self.blocks != 0:
            raise GenotypeError(f"field blocks belongs to momentum and residual genes, not {self.kind_name}")

    @property
    def kind_name(self) -> str:
        return self.kind.name.lower()

    @property
    def options(self) -> dict[str, Any]:
        """The optional fields that differ from their defaults."""
        return {n: getattr(self, n) for n, d in OPTION_FIELDS.items() if getattr(self, n) != d}

    @property
    def is_nascaps(self) -> bool:
        """Can the NASCaps 9-integer format hold this gene (an original kind, no options)?"""
        return self.kind in NASCAPS_KINDS and not self.options

    def to_gene(self) -> list[int]:
        """The 9-int NASCaps gene; :class:`GenotypeError` for a gene that format cannot hold."""
        if not self.is_nascaps:
            what = (f"a {self.kind_name} gene" if self.kind not in NASCAPS_KINDS
                    else f"the option(s) {sorted(self.options)}")
            raise GenotypeError(
                f"the NASCaps 9-integer format holds only conv, caps and cell genes without "
                f"options, not {what}; use the capslab format"
            )
        return [int(self.kind), *(getattr(self, n) for n in GENE_FIELDS)]

    @classmethod
    def from_gene(cls, gene: Sequence[int]) -> LayerDescriptor:
        if not isinstance(gene, (list, tuple)) or len(gene) != 9:
            raise GenotypeError(f"a layer gene is a list of 9 integers, got {gene!r}")
        if _is_int(gene[0]) and gene[0] not in tuple(NASCAPS_KINDS):
            raise GenotypeError(
                f"layer kind must be 0 (conv), 1 (caps) or 2 (cell) in the NASCaps format, got "
                f"{gene[0]!r} (the newer kinds are written in the capslab format)"
            )
        return cls(*gene)

    def to_dict(self) -> dict[str, Any]:
        return {"kind": self.kind_name, **{n: getattr(self, n) for n in GENE_FIELDS}, **self.options}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> LayerDescriptor:
        if not isinstance(d, dict):
            raise GenotypeError(f"a layer is an object with keys kind, {', '.join(GENE_FIELDS)}")
        required = ("kind", *GENE_FIELDS)
        _check_keys(d, (*required, *OPTION_FIELDS), "layer")
        missing = [k for k in required if k not in d]
        if missing:
            raise GenotypeError(f"layer is missing key(s) {missing}")
        kind = d["kind"]
        if isinstance(kind, str):
            if kind not in _KIND_BY_NAME:
                raise GenotypeError(f"unknown layer kind {kind!r}; valid: {list(_KIND_BY_NAME)}")
            kind = _KIND_BY_NAME[kind]
        options = {n: d.get(n, default) for n, default in OPTION_FIELDS.items()}
        return cls(kind, *(d[n] for n in GENE_FIELDS), **options)


# Order of the fields in a NASCaps gene after the type: the descriptor's own field order.
GENE_FIELDS = tuple(f.name for f in fields(LayerDescriptor))[1:9]
