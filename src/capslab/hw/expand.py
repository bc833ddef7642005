"""Genotype -> the sequence of operations the accelerator executes (the authors' expansion).

Rules, per gene (``n`` genes, index ``i``):

- type 0 (conv): one ``conv`` layer with the gene's fields.
- type 1, not last: one ``convcaps`` layer with the gene's fields.
- type 1, last: one ``class`` layer plus 5 dynamic-routing layers (``sum``, ``update``, ``sum``,
  ``update``, ``sum``: three routing iterations), all with the gene's fields.
- type 2 (DeepCaps cell), neither last nor second to last: 4 ``convcaps`` layers with the gene's
  k, outsize, outch, outcaps; the first with the gene's insize and incaps, the other three at
  insize // 2 with incaps = the gene's outcaps (they read the first layer's capsules).
- type 2, second to last: 3 ``convcaps`` layers (the first at the gene's insize, the others at
  insize // 2; all with the gene's incaps) and one ``convcaps3d`` layer at insize // 2.
- type 2, last (flatten + class capsules): 3 x (``sum`` + ``update``) then one ``class`` layer,
  all with the gene's fields.

The skip connection and the resize flag add no hardware layers (the resize is already in the
first gene's insize); this is what reproduces Table 3 of the paper.

:func:`expand_groups` states these rules once, as runs of identical layers (plain tuples, what
the fast estimate needs); :func:`expand` unrolls and names them.
"""

from __future__ import annotations

from typing import NamedTuple

from capslab.genotype import Genotype, LayerKind

ROUTING = "routing"  # group kind of a run of sum/update layers (they cost the same)


class HardwareLayer(NamedTuple):
    """One operation on the accelerator. ``gene`` is the index of the genotype layer it comes
    from. A NamedTuple: cheap, immutable, unpacks like a tuple."""

    name: str
    kind: str
    insize: int
    inch: int
    incaps: int
    k: int
    outsize: int
    outch: int
    outcaps: int
    gene: int


# (kind, insize, inch, incaps, k, outsize, outch, outcaps, count, gene)
Group = tuple[str, int, int, int, int, int, int, int, int, int]


def expand_groups(genotype: Genotype) -> list[Group]:
    """The hardware layers of ``genotype`` as runs of identical layers, in execution order.
    A ``"routing"`` run of ``count`` layers alternates sum, update, sum, ..."""
    out: list[Group] = []
    last = len(genotype.layers) - 1
    for i, g in enumerate(genotype.layers):
        ins, incaps, half = g.in_size, g.in_capsules, g.in_size // 2
        # runs of (kind, insize, incaps, count); the other fields are the gene's
        if g.kind == LayerKind.CONV:
            runs = [("conv", ins, incaps, 1)]
        elif g.kind == LayerKind.CAPS and i < last:
            runs = [("convcaps", ins, incaps, 1)]
        elif g.kind == LayerKind.CAPS:
            runs = [("class", ins, incaps, 1), (ROUTING, ins, incaps, 5)]
        elif i == last:  # DeepCaps cells from here on
            runs = [(ROUTING, ins, incaps, 6), ("class", ins, incaps, 1)]
        elif i == last - 1:
            runs = [
                ("convcaps", ins, incaps, 1),
                ("convcaps", half, incaps, 2),
                ("convcaps3d", half, incaps, 1),
            ]
        else:
            runs = [("convcaps", ins, incaps, 1), ("convcaps", half, g.out_capsules, 3)]
        rest = (g.kernel, g.out_size, g.out_channels, g.out_capsules)
        for kind, size, caps, count in runs:
            out.append((kind, size, g.in_channels, caps, *rest, count, i))
    return out


def expand(genotype: Genotype) -> list[HardwareLayer]:
    """The hardware layers of ``genotype`` in execution order (see the module docstring).

    Names: ``L<gene> conv``, ``L<gene> convcaps``, ``L<gene> class``, ``L<gene> cell.1`` ...
    ``cell.4`` / ``cell.3d`` inside a cell, ``L<gene> sum1``, ``update1``, ... for routing.
    """
    out: list[HardwareLayer] = []
    first: dict[int, int] = {}  # gene -> position in ``out`` of its first hardware layer
    for kind, *shape, count, gene in expand_groups(genotype):
        first.setdefault(gene, len(out))
        in_cell = genotype.layers[gene].kind == LayerKind.CELL
        for j in range(count):
            hw_kind = ("sum", "update")[j % 2] if kind == ROUTING else kind
            if kind == ROUTING:
                name = f"{hw_kind}{j // 2 + 1}"
            elif kind == "convcaps3d":
                name = "cell.3d"
            elif in_cell and kind != "class":
                name = f"cell.{len(out) - first[gene] + 1}"
            else:
                name = kind
            out.append(HardwareLayer(f"L{gene} {name}", hw_kind, *shape, gene))
    return out
