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
"""

from __future__ import annotations

from typing import NamedTuple

from capslab.genotype import Genotype, LayerKind

__all__ = ["HW_KINDS", "HardwareLayer", "expand"]

HW_KINDS = ("conv", "convcaps", "convcaps3d", "class", "sum", "update")


class HardwareLayer(NamedTuple):
    """One operation on the accelerator. ``gene`` is the index of the genotype layer it comes
    from. A NamedTuple: cheap to create in the search loop, immutable, unpacks like a tuple."""

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


_CAPSNET_ROUTING = ("sum", "update", "sum", "update", "sum")
_DEEPCAPS_ROUTING = ("sum", "update", "sum", "update", "sum", "update")


def expand(genotype: Genotype) -> list[HardwareLayer]:
    """The hardware layers of ``genotype`` in execution order (see the module docstring)."""
    out: list[HardwareLayer] = []
    append = out.append
    layers = genotype.layers
    last = len(layers) - 1
    for i, g in enumerate(layers):
        kind = g.kind
        ins, inch, incaps, k = g.in_size, g.in_channels, g.in_capsules, g.kernel
        outs, outch, outcaps = g.out_size, g.out_channels, g.out_capsules
        tag = f"L{i}"
        if kind == LayerKind.CONV:
            append(
                HardwareLayer(f"{tag} conv", "conv", ins, inch, incaps, k, outs, outch, outcaps, i)
            )
        elif kind == LayerKind.CAPS:
            if i != last:
                append(
                    HardwareLayer(
                        f"{tag} convcaps", "convcaps", ins, inch, incaps, k, outs, outch, outcaps, i
                    )
                )
            else:
                append(
                    HardwareLayer(
                        f"{tag} class", "class", ins, inch, incaps, k, outs, outch, outcaps, i
                    )
                )
                for j, r in enumerate(_CAPSNET_ROUTING):
                    append(
                        HardwareLayer(
                            f"{tag} {r}{j // 2 + 1}",
                            r,
                            ins,
                            inch,
                            incaps,
                            k,
                            outs,
                            outch,
                            outcaps,
                            i,
                        )
                    )
        else:  # DeepCaps cell
            half = ins // 2
            if i == last:
                for j, r in enumerate(_DEEPCAPS_ROUTING):
                    append(
                        HardwareLayer(
                            f"{tag} {r}{j // 2 + 1}",
                            r,
                            ins,
                            inch,
                            incaps,
                            k,
                            outs,
                            outch,
                            outcaps,
                            i,
                        )
                    )
                append(
                    HardwareLayer(
                        f"{tag} class", "class", ins, inch, incaps, k, outs, outch, outcaps, i
                    )
                )
            elif i == last - 1:
                append(
                    HardwareLayer(
                        f"{tag} cell.1", "convcaps", ins, inch, incaps, k, outs, outch, outcaps, i
                    )
                )
                for j in (2, 3):
                    append(
                        HardwareLayer(
                            f"{tag} cell.{j}",
                            "convcaps",
                            half,
                            inch,
                            incaps,
                            k,
                            outs,
                            outch,
                            outcaps,
                            i,
                        )
                    )
                append(
                    HardwareLayer(
                        f"{tag} cell.3d",
                        "convcaps3d",
                        half,
                        inch,
                        incaps,
                        k,
                        outs,
                        outch,
                        outcaps,
                        i,
                    )
                )
            else:
                append(
                    HardwareLayer(
                        f"{tag} cell.1", "convcaps", ins, inch, incaps, k, outs, outch, outcaps, i
                    )
                )
                for j in (2, 3, 4):
                    append(
                        HardwareLayer(
                            f"{tag} cell.{j}",
                            "convcaps",
                            half,
                            inch,
                            outcaps,
                            k,
                            outs,
                            outch,
                            outcaps,
                            i,
                        )
                    )
    return out
