"""One NASCaps layer gene: :class:`LayerKind` and :class:`LayerDescriptor`.

A gene is nine integers ``[type, insize, inch, incaps, k, stride, outsize, outch, outcaps]``
(:data:`GENE_FIELDS` names the eight after the type, in the descriptor's field order). Type 0 is
a convolution, 1 a Sabour capsule layer, 2 a DeepCaps cell; for capsule genes ``outch`` is the
number of capsule types and ``outcaps`` the capsule dimension. A descriptor converts to and from
the gene list and the readable object (``{"kind": "conv", "in_size": ..., ...}``); a whole
network of them is a :class:`capslab.genotype.network.Genotype`.
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


_KIND_BY_NAME = {kind.name.lower(): kind for kind in LayerKind}  # "conv", "caps", "cell"


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _check_keys(d: dict[str, Any], valid: Sequence[str], what: str) -> None:
    unknown = sorted(set(d) - set(valid))
    if unknown:
        raise GenotypeError(f"unknown {what} key(s) {unknown}; valid keys: {list(valid)}")


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
