"""pymoo operators on genotypes: sampling, single-point crossover, mutation, repair and duplicate
elimination.

Genotypes live in pymoo populations as objects: ``X`` is an object array of shape ``[n, 1]``, one
:class:`~capslab.genotype.Genotype` per row. Genotypes are frozen, and every operator builds new
ones, so parents are never edited (the authors' mutation edited parents in place).

From parents inside the space, every operator gives children inside it
(:meth:`~capslab.nas.space.SearchSpace.check`): convolutions first, at least two capsule layers
of one family, the space's layer counts, kernels and strides from its sets (the space's repair
re-fits a kernel that no longer fits its input to the largest one of the set that does). Files
may hold genotypes outside the space (the authors published some); the search never makes them.
"""

from __future__ import annotations

import itertools
from dataclasses import replace

import numpy as np
from pymoo.core.crossover import Crossover
from pymoo.core.duplicate import ElementwiseDuplicateElimination
from pymoo.core.mutation import Mutation
from pymoo.core.repair import Repair
from pymoo.core.sampling import Sampling

from capslab.genotype import (
    Genotype,
    LayerDescriptor,
    LayerKind,
    skip_layer,
    skip_source,
    skip_value,
    valid_skips,
)
from capslab.genotype.descriptor import BLOCK_KINDS
from capslab.genotype.network import covers_input, family
from capslab.nas.space import SearchSpace, genotype_key, pick, sample


def object_column(genotypes: list[Genotype]) -> np.ndarray:
    """``[n, 1]`` object array holding the genotypes (numpy must not try to unpack them)."""
    X = np.empty((len(genotypes), 1), dtype=object)
    X[:, 0] = genotypes
    return X


def _space(problem: object, fallback: SearchSpace | None) -> SearchSpace:
    space = fallback if fallback is not None else getattr(problem, "space", None)
    if space is None:
        raise ValueError("the operator needs a SearchSpace (pass space= or use NASCapsProblem)")
    return space


# ---------------------------------------------------------------------- crossover (pure)
def _structure_ok(layers: tuple[LayerDescriptor, ...], space: SearchSpace) -> bool:
    """Kinds only: convolutions first, then capsule layers of a single family, with the layer
    counts of the space; depthwise primary capsules only first among the capsule genes, a
    block gene only just before the class stage, the class stage a caps or cell gene."""
    kinds = [layer.kind for layer in layers]
    n_conv = next((i for i, k in enumerate(kinds) if k != LayerKind.CONV), len(kinds))
    caps = kinds[n_conv:]  # caps[0] is not a convolution: one kind means no convolution
    if n_conv == 0 or len(caps) < 2 or len({family(k) for k in caps}) != 1:
        return False
    if caps[-1] not in (LayerKind.CAPS, LayerKind.CELL) or LayerKind.DWCAPS in caps[1:]:
        return False
    if any(k in BLOCK_KINDS for k in caps[:-2]) or caps[0] in BLOCK_KINDS:
        return False
    if not space.conv_layers[0] <= n_conv <= space.conv_layers[1]:
        return False
    lo, hi = space.caps_layers if family(caps[0]) == "sabour" else space.cells
    return lo <= len(caps) <= hi


def valid_cut_points(a: Genotype, b: Genotype, space: SearchSpace) -> list[tuple[int, int]]:
    """All cut pairs ``(i, j)`` such that both ``a[:i] + b[j:]`` and ``b[:j] + a[i:]`` keep the
    validity rules: a convolution first, at least two capsule layers, no convolution after a
    capsule layer, one capsule family, layer counts inside the space."""
    la, lb = a.layers, b.layers
    return [
        (i, j)
        for i, j in itertools.product(range(1, len(la)), range(1, len(lb)))
        if _structure_ok(la[:i] + lb[j:], space) and _structure_ok(lb[:j] + la[i:], space)
    ]


def _child_skip(head: Genotype, i: int, tail: Genotype, j: int) -> int:
    """The skip of ``head[:i] + tail[j:]``: it keeps pointing at the cell it pointed at in its
    parent, whichever parent that cell came from (the head's first); -1 when neither parent's
    skip layer is in the child."""
    h = skip_layer(head)
    if h is not None and h < i:
        return skip_value(h)
    t = skip_layer(tail)
    if t is not None and t >= j:
        return skip_value(t - j + i)  # the tail's layer index t is the child's t - j + i
    return -1


def cross(a: Genotype, b: Genotype, cut: tuple[int, int], space: SearchSpace) -> tuple[Genotype, Genotype]:
    """Single-point crossover at ``cut = (i, j)``: children ``a[:i] + b[j:]`` and
    ``b[:j] + a[i:]``, each repaired (new objects; ``a`` and ``b`` are untouched)."""
    i, j = cut
    c1 = Genotype(a.layers[:i] + b.layers[j:], skip=_child_skip(a, i, b, j), resize=a.resize)
    c2 = Genotype(b.layers[:j] + a.layers[i:], skip=_child_skip(b, j, a, i), resize=b.resize)
    return space.repair(c1), space.repair(c2)


# ---------------------------------------------------------------------- mutation (pure)
def mutate(g: Genotype, space: SearchSpace, rng: np.random.Generator) -> Genotype:
    """Change one thing: a random layer's kernel, stride or number of capsules, or the skip
    position, to a different value; then repair. The class stage keeps its fixed shape.
    Where the space opens them, also the routing of a routed gene (class stage, block gene),
    the class stage's weight sharing, or a block gene's number of blocks. A depthwise or
    block gene has no kernel or stride to change (they cover their input): drawing those
    leaves the genotype as it is.

    A new skip is drawn among -1 and :func:`~capslab.genotype.valid_skips` (effective ones)
    that change :func:`~capslab.genotype.skip_source`, i.e. the network's wiring.

    For a convolution "capsules" is its channel count (2^k), for a capsule layer or cell its
    capsule dimension.
    """
    source = skip_source(g)
    skips = [
        s for s in [-1, *valid_skips(g, effective=True)] if skip_source(replace(g, skip=s)) != source
    ]
    routed = [i for i, layer in enumerate(g.layers)
              if layer.kind in BLOCK_KINDS or i == len(g.layers) - 1]
    blocks = [i for i, layer in enumerate(g.layers) if layer.kind in BLOCK_KINDS]
    choices = ["kernel", "stride", "capsules"]
    if space.skip and skips:
        choices.append("skip")
    # the newer genes' choices exist only where the space opens them (the paper's space draws
    # among the paper's four, as before)
    if len(space.routings) > 1:
        choices.append("routing")
    if len(space.shared) > 1:
        choices.append("shared")
    if blocks and space.block_count[0] < space.block_count[1]:
        choices.append("blocks")
    what = pick(rng, choices)
    if what == "skip":
        return space.repair(replace(g, skip=pick(rng, skips)))
    if what in ("routing", "shared", "blocks"):
        idx = pick(rng, {"routing": routed, "shared": [len(g.layers) - 1], "blocks": blocks}[what])
        layer = g.layers[idx]
        if what == "routing":
            values = [None if r == "rba" else r for r in space.routings]
            value = pick(rng, [v for v in values if v != layer.routing] or values)
            layer = replace(layer, routing=value)
        elif what == "shared":
            layer = replace(layer, shared=not layer.shared)
        else:
            lo, hi = space.block_count
            layer = replace(layer, blocks=pick(rng, [b for b in range(lo, hi + 1) if b != layer.blocks]))
        layers = g.layers[:idx] + (layer,) + g.layers[idx + 1 :]
        return space.repair(replace(g, layers=layers))

    idx = int(rng.integers(len(g.layers) - 1))  # the class stage is not mutated
    layer = g.layers[idx]
    if covers_input(layer) and what in ("kernel", "stride"):
        return space.repair(g)  # its kernel is its input size, its stride 1: nothing to change
    if layer.kind in BLOCK_KINDS:
        lo, hi = space.block_dims
        field, values = "out_capsules", range(lo, hi + 1)
    elif layer.kind == LayerKind.DWCAPS:
        maps = layer.in_channels * layer.in_capsules
        lo, hi = space.capsules
        field, values = "out_capsules", [d for d in range(lo, hi + 1) if maps % d == 0]
    elif what == "kernel":
        kernels = [space.first_kernel, *space.kernels] if idx == 0 else space.kernels
        field, values = "kernel", [k for k in dict.fromkeys(kernels) if k <= layer.in_size]
    elif what == "stride":
        field, values = "stride", space.strides
    elif layer.kind == LayerKind.CONV:
        lo, hi = space.conv_channel_exponents
        field, values = "out_channels", [2**e for e in range(lo, hi + 1)]
    else:
        lo, hi = space.capsules
        field, values = "out_capsules", range(lo, hi + 1)
    pool = [v for v in values if v != getattr(layer, field)]  # a different value
    if not pool:
        return space.repair(g)
    changed = replace(layer, **{field: pick(rng, pool)})
    if layer.kind == LayerKind.DWCAPS:  # the maps regroup: fewer or more capsules
        changed = replace(changed, out_channels=maps // changed.out_capsules)
    layers = g.layers[:idx] + (changed,) + g.layers[idx + 1 :]
    return space.repair(replace(g, layers=layers))


# ---------------------------------------------------------------------- pymoo operators
class GenotypeSampling(Sampling):
    """Random valid genotypes of the problem's search space."""

    def __init__(self, space: SearchSpace | None = None):
        super().__init__()
        self.space = space

    def _do(self, problem, n_samples, *args, random_state=None, **kwargs):
        space = _space(problem, self.space)
        return object_column([sample(space, random_state) for _ in range(n_samples)])


class SinglePointCrossover(Crossover):
    """Two parents -> two children by swapping tails at a cut pair that keeps both children
    valid (see :func:`valid_cut_points`). If no such pair exists the children are copies."""

    def __init__(self, space: SearchSpace | None = None, prob: float = 1.0):
        super().__init__(n_parents=2, n_offsprings=2, prob=prob)
        self.space = space

    def _do(self, problem, X, *args, random_state=None, **kwargs):
        # X: [n_parents=2, n_matings, 1] objects -> [n_offsprings=2, n_matings, 1]
        space = _space(problem, self.space)
        _, n_matings, _ = X.shape
        Y = np.empty((2, n_matings, 1), dtype=object)
        for m in range(n_matings):
            a, b = X[0, m, 0], X[1, m, 0]
            cuts = valid_cut_points(a, b, space)
            if cuts:
                Y[0, m, 0], Y[1, m, 0] = cross(a, b, pick(random_state, cuts), space)
            else:
                Y[0, m, 0], Y[1, m, 0] = space.repair(a), space.repair(b)
        return Y


class GenotypeMutation(Mutation):
    """With probability ``p_m`` per individual, :func:`mutate` it (one change, then repair)."""

    def __init__(self, space: SearchSpace | None = None, p_m: float = 0.1):
        super().__init__(prob=1.0)  # the per-individual draw is ours, on p_m
        if not 0.0 <= p_m <= 1.0:
            raise ValueError(f"mutation probability p_m must be in [0, 1], got {p_m}")
        self.space = space
        self.p_m = p_m

    def _do(self, problem, X, *args, random_state=None, **kwargs):
        space = _space(problem, self.space)
        out = np.empty_like(X)
        for i, g in enumerate(X[:, 0]):
            out[i, 0] = mutate(g, space, random_state) if random_state.random() < self.p_m else g
        return out


class GenotypeRepair(Repair):
    """Re-chain shapes and fix the class stage (:meth:`SearchSpace.repair`)."""

    def __init__(self, space: SearchSpace | None = None):
        super().__init__()
        self.space = space

    def _do(self, problem, X, **kwargs):
        space = _space(problem, self.space)
        return object_column([space.repair(g) for g in X[:, 0]])


class GenotypeDuplicates(ElementwiseDuplicateElimination):
    """Two individuals are duplicates when their canonical exchange forms are equal."""

    def is_equal(self, a, b) -> bool:
        return genotype_key(a.X[0]) == genotype_key(b.X[0])
