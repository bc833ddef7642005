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

HW_KINDS = ("conv", "convcaps", "convcaps3d", "class", "sum", "update")
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
    append = out.append
    layers = genotype.layers
    last = len(layers) - 1
    for i, g in enumerate(layers):
        kind = g.kind
        ins, inch, incaps, k = g.in_size, g.in_channels, g.in_capsules, g.kernel
        outs, outch, outcaps = g.out_size, g.out_channels, g.out_capsules
        if kind == LayerKind.CONV:
            append(("conv", ins, inch, incaps, k, outs, outch, outcaps, 1, i))
        elif kind == LayerKind.CAPS:
            if i != last:
                append(("convcaps", ins, inch, incaps, k, outs, outch, outcaps, 1, i))
            else:
                append(("class", ins, inch, incaps, k, outs, outch, outcaps, 1, i))
                append((ROUTING, ins, inch, incaps, k, outs, outch, outcaps, 5, i))
        else:  # DeepCaps cell
            half = ins // 2
            if i == last:
                append((ROUTING, ins, inch, incaps, k, outs, outch, outcaps, 6, i))
                append(("class", ins, inch, incaps, k, outs, outch, outcaps, 1, i))
            elif i == last - 1:
                append(("convcaps", ins, inch, incaps, k, outs, outch, outcaps, 1, i))
                append(("convcaps", half, inch, incaps, k, outs, outch, outcaps, 2, i))
                append(("convcaps3d", half, inch, incaps, k, outs, outch, outcaps, 1, i))
            else:
                append(("convcaps", ins, inch, incaps, k, outs, outch, outcaps, 1, i))
                append(("convcaps", half, inch, outcaps, k, outs, outch, outcaps, 3, i))
    return out


def expand(genotype: Genotype) -> list[HardwareLayer]:
    """The hardware layers of ``genotype`` in execution order (see the module docstring).

    Names: ``L<gene> conv``, ``L<gene> convcaps``, ``L<gene> class``, ``L<gene> cell.1`` ...
    ``cell.4`` / ``cell.3d`` inside a cell, ``L<gene> sum1``, ``update1``, ... for routing.
    """
    out: list[HardwareLayer] = []
    cell_layer = 0
    current = -1
    for kind, ins, inch, incaps, k, outs, outch, outcaps, count, gene in expand_groups(genotype):
        if gene != current:
            current, cell_layer = gene, 0
        tag = f"L{gene}"
        in_cell = genotype.layers[gene].kind == LayerKind.CELL
        for j in range(count):
            if kind == ROUTING:
                hw_kind = "sum" if j % 2 == 0 else "update"
                name = f"{tag} {hw_kind}{j // 2 + 1}"
            else:
                hw_kind = kind
                if in_cell and kind != "class":
                    cell_layer += 1
                    name = f"{tag} cell.3d" if kind == "convcaps3d" else f"{tag} cell.{cell_layer}"
                else:
                    name = f"{tag} {kind}"
            out.append(
                HardwareLayer(name, hw_kind, ins, inch, incaps, k, outs, outch, outcaps, gene)
            )
    return out
