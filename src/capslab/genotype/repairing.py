"""Repair: the nearest genotype whose shapes chain (inputs, output sizes, skip, resize).

The counterpart of :func:`validate`; the search space's own repair
(:meth:`capslab.nas.space.SearchSpace.repair`) builds on it.
"""

from __future__ import annotations

from dataclasses import replace

from capslab.genotype.descriptor import LayerDescriptor, LayerKind
from capslab.genotype.network import Genotype, _allowed_out_sizes, _chains, covers_input
from capslab.genotype.skip import valid_skips


def _divisor_near(n: int, d: int) -> int:
    """The divisor of ``n`` nearest ``d`` (the smaller one on a tie)."""
    return min((k for k in range(1, n + 1) if n % k == 0), key=lambda k: (abs(k - d), k))


def _cover(layer: LayerDescriptor) -> LayerDescriptor:
    """A gene that covers its input (depthwise primary capsules, block genes): kernel = input
    size, stride 1, 1x1 output; depthwise capsules regroup the maps they read (the capsule
    dimension kept when it divides them, else the nearest divisor)."""
    layer = replace(layer, kernel=layer.in_size, stride=1, out_size=1)
    if layer.kind == LayerKind.DWCAPS:
        maps = layer.in_channels * layer.in_capsules
        dim = _divisor_near(maps, layer.out_capsules) if maps > 0 else layer.out_capsules
        layer = replace(layer, out_channels=maps // dim if maps > 0 else layer.out_channels,
                        out_capsules=dim)
    return layer


def repair(g: Genotype) -> Genotype:
    """Return a new genotype whose shapes chain: every layer's inputs are set to its
    predecessor's outputs (keeping a valid regrouping of a convolution's maps), out_size is
    recomputed (same padding; a fully connected class stage, kernel == in_size, keeps its
    kernel equal to its new input size and its 1x1 output), the skip is moved to the nearest
    valid value (:func:`valid_skips`; -1 when it is below 1 or no cell precedes the final
    stage) and resize to {1, 2}. A gene that covers its input (depthwise primary capsules, block
    genes) gets kernel = input size, stride 1 and a 1x1 output, and depthwise capsules regroup
    the maps they read. Other kernels are kept, even when larger than their input
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
        if covers_input(layer):
            layer = _cover(layer)
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
