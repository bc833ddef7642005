"""The skip (NASCaps' xtraskip): which layer also feeds the final stage.

The one place that knows how ``skip`` counts: every other module goes through these helpers.
Vocabulary: "skip" is always the xtraskip value (counted from 1, -1 = none); a 0-based position
in ``Genotype.layers`` is always a "layer index".
"""

from __future__ import annotations

from capslab.genotype.descriptor import LayerKind
from capslab.genotype.network import Genotype


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
