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

Genes of the readable format only (docs/hardware.md, "Costs of the newer genes"):

- ``dwcaps`` (depthwise primary capsules): one ``dwconv`` layer, a convolution whose
  ``outch`` filters each read ONE map (``inch = incaps = 1``), so the ``conv`` formulas apply.
- the class stage with ``shared`` weights: ``sharedclass`` instead of ``class`` (one matrix per
  input type, used at every one of the ``k^2`` positions).
- a routed layer's routing (``routing`` of the class stage or of a block gene): RBA and SDA as
  above (SDA computes a distance where RBA a dot product: the same operands); self-attention
  is ``sum``, ``update``, ``sum``: the row sums of ``A_j = U_j U_j^T`` are the dot products
  of each prediction with the plain sum of its class's predictions (what
  :func:`capslab.routing.self_attention_routing` computes), so it costs one RBA iteration
  fewer, and never the ``n_in x n_in`` matrix.
- ``momentum`` / ``residual`` (blocks ``B``): a ``class`` layer projecting the grid to
  ``outch x outcaps`` with its routing, then ``2B`` such layers (``N`` capsules in and out,
  ``k = 1``) each with its routing. The momentum update and the shortcut additions are
  element-wise, not costed (like the squash); so both kinds cost the same at inference.

The skip connection and the resize flag add no hardware layers (the resize is already in the
first gene's insize); this is what reproduces Table 3 of the paper.

:func:`expand_groups` states these rules once, as runs of identical layers (plain tuples, what
the fast estimate needs); :func:`expand` unrolls and names them.
"""

from __future__ import annotations

from typing import NamedTuple

from capslab.genotype import Genotype, LayerDescriptor, LayerKind
from capslab.genotype.descriptor import BLOCK_KINDS

ROUTING = "routing"  # group kind of a run of sum/update layers (they cost the same)
#: routing layers (``ROUTING`` runs) after a routed layer, by routing: 3 iterations of RBA or
#: SDA are sum, update, sum, update, sum; self-attention is sum (unit couplings), update
#: (the logits), sum (the couplings')
ROUTING_LAYERS = {"rba": 5, "sda": 5, "self-attention": 3}


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


def _routed(kind: str, routing: str | None, fields: tuple[int, ...], gene: int) -> list[Group]:
    """A routed layer (``class`` or ``sharedclass``) and its routing layers; ``fields`` are
    ``(insize, inch, incaps, k, outsize, outch, outcaps)``."""
    return [(kind, *fields, 1, gene), (ROUTING, *fields, ROUTING_LAYERS[routing or "rba"], gene)]


def _block_groups(g: LayerDescriptor, gene: int) -> list[Group]:
    """A momentum or residual gene: the projection, then ``2 * blocks`` square layers."""
    out = _routed("class", g.routing, (g.in_size, g.in_channels, g.in_capsules, g.kernel, 1,
                                       g.out_channels, g.out_capsules), gene)
    square = (1, g.out_channels, g.out_capsules, 1, 1, g.out_channels, g.out_capsules)
    for _ in range(2 * g.blocks):
        out += _routed("class", g.routing, square, gene)
    return out


def expand_groups(genotype: Genotype) -> list[Group]:
    """The hardware layers of ``genotype`` as runs of identical layers, in execution order.
    A ``"routing"`` run of ``count`` layers alternates sum, update, sum, ..."""
    out: list[Group] = []
    last = len(genotype.layers) - 1
    for i, g in enumerate(genotype.layers):
        ins, incaps, half = g.in_size, g.in_capsules, g.in_size // 2
        gene_fields = (g.in_size, g.in_channels, g.in_capsules, g.kernel, g.out_size,
                       g.out_channels, g.out_capsules)
        # runs of (kind, insize, incaps, count); the other fields are the gene's
        if g.kind == LayerKind.DWCAPS:  # one filter per map: a convolution of one input map
            maps = g.out_channels * g.out_capsules
            out.append(("dwconv", ins, 1, 1, g.kernel, g.out_size, maps, 1, 1, i))
            continue
        if g.kind in BLOCK_KINDS:
            out += _block_groups(g, i)
            continue
        if i == last:
            kind = "sharedclass" if g.shared else "class"
            if g.kind == LayerKind.CELL and g.routing != "self-attention":
                # the DeepCaps stage: 3 x (sum + update), then the class layer
                out += [(ROUTING, *gene_fields, 6, i), (kind, *gene_fields, 1, i)]
            else:
                out += _routed(kind, g.routing, gene_fields, i)
            continue
        if g.kind == LayerKind.CONV:
            runs = [("conv", ins, incaps, 1)]
        elif g.kind == LayerKind.CAPS:
            runs = [("convcaps", ins, incaps, 1)]
        elif i == last - 1:  # DeepCaps cells from here on
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
    ``cell.4`` / ``cell.3d`` inside a cell, ``L<gene> sum1``, ``update1``, ... for routing,
    in a block gene ``L<gene> proj``, ``block1.caps1``, ``block1.caps2``,
    ... each followed by its routing (``L<gene> proj sum1``, ...).
    """
    out: list[HardwareLayer] = []
    first: dict[int, int] = {}  # gene -> position in ``out`` of its first hardware layer
    routed: dict[int, str] = {}  # block gene -> label of its current routed layer
    for kind, *shape, count, gene in expand_groups(genotype):
        first.setdefault(gene, len(out))
        in_cell = genotype.layers[gene].kind == LayerKind.CELL
        in_block = genotype.layers[gene].kind in BLOCK_KINDS
        if in_block and kind == "class":
            c = sum(1 for hl in out[first[gene]:] if hl.kind == "class")
            routed[gene] = "proj" if c == 0 else f"block{(c + 1) // 2}.caps{2 - c % 2}"
        prefix = f"{routed[gene]} " if in_block and kind != "class" else ""
        for j in range(count):
            hw_kind = ("sum", "update")[j % 2] if kind == ROUTING else kind
            if kind == ROUTING:
                name = f"{hw_kind}{j // 2 + 1}"
            elif kind == "convcaps3d":
                name = "cell.3d"
            elif in_cell and kind not in ("class", "sharedclass"):
                name = f"cell.{len(out) - first[gene] + 1}"
            elif in_block and kind == "class":
                name = routed[gene]
            else:
                name = kind
            out.append(HardwareLayer(f"L{gene} {prefix}{name}", hw_kind, *shape, gene))
    return out
