"""Search space, sampler and genetic operators: validity (property-based), no in-place edits,
real mixing of both parents, duplicate elimination, configuration errors."""

from __future__ import annotations

import copy
from dataclasses import replace

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pymoo.core.individual import Individual

from capslab.errors import ConfigError, GenotypeError
from capslab.genotype import (
    CAPSNET_GENOTYPE,
    DEEPCAPS_GENOTYPE,
    Genotype,
    LayerKind,
    repair,
    skip_layer,
    skip_source,
    valid_skips,
    validate,
)
from capslab.nas.operators import (
    GenotypeDuplicates,
    GenotypeMutation,
    GenotypeRepair,
    GenotypeSampling,
    SinglePointCrossover,
    cross,
    mutate,
    object_column,
    valid_cut_points,
)
from capslab.nas.problem import CachedEvaluations, NASCapsProblem
from capslab.nas.space import SearchSpace, genotype_key, sample

SPACE = SearchSpace()  # the paper's space, 28px, 1 channel, 10 classes
CIFAR = SearchSpace(image_size=32, in_channels=3, num_classes=10)

seeds = st.integers(min_value=0, max_value=2**32 - 1)


def _signature(layer):
    """What crossover carries over from a parent (shapes are re-chained by repair)."""
    return (layer.kind, layer.stride, layer.out_channels, layer.out_capsules)


def _assert_paper_rules(g, space):
    """The search space's rules, checked here by hand (not through ``space.check``): at least
    two capsule layers, convolutions first, kernels and strides from the space's sets."""
    kinds = [layer.kind for layer in g.layers]
    n_conv = kinds.index(next(k for k in kinds if k != LayerKind.CONV))
    assert n_conv >= 1 and all(k != LayerKind.CONV for k in kinds[n_conv:])
    assert len(kinds) - n_conv >= 2, g.describe()
    for i, layer in enumerate(g.layers[:-1]):
        allowed = {*space.kernels, space.first_kernel} if i == 0 else set(space.kernels)
        if layer.kind == LayerKind.CELL:
            allowed.add(space.cell_kernel)
        assert layer.kernel in allowed, (i, layer.kernel, g.describe())
        assert layer.stride in {*space.strides, 1} if i == 0 else layer.stride in space.strides
    last = g.layers[-1]
    assert last.kernel == last.in_size and last.out_size == 1  # fully connected class stage


@settings(max_examples=150, deadline=None)
@given(seed=seeds, cifar=st.booleans())
def test_sampled_crossed_and_mutated_genotypes_are_valid(seed, cifar):
    space = CIFAR if cifar else SPACE
    rng = np.random.default_rng(seed)
    a, b = sample(space, rng), sample(space, rng)
    for g in (a, b):
        space.check(g)
        validate(g, in_channels=space.in_channels, image_size=space.image_size)
        _assert_paper_rules(g, space)
    children = []
    cuts = valid_cut_points(a, b, space)
    for cut in cuts[:: max(1, len(cuts) // 4)]:
        children.extend(cross(a, b, cut, space))
    g = a
    for _ in range(6):
        g = mutate(g, space, rng)
        children.append(g)
    X = np.empty((2, 1, 1), dtype=object)
    X[0, 0, 0], X[1, 0, 0] = a, b
    Y = SinglePointCrossover(space)._do(None, X, random_state=rng)  # the pymoo operators too
    M = GenotypeMutation(space, p_m=1.0)._do(None, object_column([a, b]), random_state=rng)
    children += [Y[0, 0, 0], Y[1, 0, 0], M[0, 0], M[1, 0]]
    for child in children:
        space.check(child)
        _assert_paper_rules(child, space)


@settings(max_examples=100, deadline=None)
@given(seed=seeds, cifar=st.booleans(), data=st.data())
def test_repair_keeps_kernels_in_the_set(seed, cifar, data):
    """Whatever kernels and strides a genotype of the space's structure carries, the space's
    repair gives it kernels from the set (a kernel that no longer fits its input becomes the
    largest one that does, never an off-set value) and the result passes ``space.check``."""
    space = CIFAR if cifar else SPACE
    g = sample(space, np.random.default_rng(seed))
    layers = list(g.layers)
    for _ in range(data.draw(st.integers(1, 4))):
        i = data.draw(st.integers(0, len(layers) - 2))
        layers[i] = replace(
            layers[i],
            kernel=data.draw(st.integers(1, 12)),
            stride=data.draw(st.sampled_from(space.strides)) if i else 1,
        )
    fixed = GenotypeRepair(space)._do(None, object_column([replace(g, layers=tuple(layers))]))[0, 0]
    space.check(fixed)
    _assert_paper_rules(fixed, space)
    for i, layer in enumerate(fixed.layers[:-1]):
        allowed = space.allowed_kernels(i, layer)
        fits = [k for k in allowed if k <= layer.in_size]
        assert layer.kernel <= layer.in_size or not fits  # the largest that fits, if any does
    assert space.repair(fixed) == fixed  # a repaired genotype is a fixed point


@settings(max_examples=60, deadline=None)
@given(seed=seeds)
def test_parents_are_never_edited(seed):
    rng = np.random.default_rng(seed)
    a, b = sample(SPACE, rng), sample(SPACE, rng)
    a_before, b_before = copy.deepcopy(a.to_nascaps()), copy.deepcopy(b.to_nascaps())
    X = np.empty((2, 1, 1), dtype=object)
    X[0, 0, 0], X[1, 0, 0] = a, b
    Y = SinglePointCrossover(SPACE)._do(None, X, random_state=rng)
    M = GenotypeMutation(SPACE, p_m=1.0)._do(None, object_column([a, b]), random_state=rng)
    assert a.to_nascaps() == a_before and b.to_nascaps() == b_before
    for child in [Y[0, 0, 0], Y[1, 0, 0], M[0, 0], M[1, 0]]:
        assert child is not a and child is not b  # offspring are new objects


def test_crossover_mixes_both_parents():
    rng = np.random.default_rng(7)
    mixed = 0
    for _ in range(50):
        a, b = sample(SPACE, rng), sample(SPACE, rng)
        cuts = valid_cut_points(a, b, SPACE)
        assert cuts, "two genotypes of the space always have a valid cut (after the convs)"
        i, j = cuts[int(rng.integers(len(cuts)))]
        c1, c2 = cross(a, b, (i, j), SPACE)
        # head from one parent, tail from the other (class stage re-fixed by the space)
        assert [_signature(x) for x in c1.layers[:i]] == [_signature(x) for x in a.layers[:i]]
        assert [_signature(x) for x in c1.layers[i:-1]] == [_signature(x) for x in b.layers[j:-1]]
        assert [_signature(x) for x in c2.layers[:j]] == [_signature(x) for x in b.layers[:j]]
        assert [_signature(x) for x in c2.layers[j:-1]] == [_signature(x) for x in a.layers[i:-1]]
        assert len(c1.layers) == i + len(b.layers) - j
        if genotype_key(c1) not in (genotype_key(a), genotype_key(b)):
            mixed += 1
    assert mixed > 40


def test_cut_points_keep_the_rules():
    rng = np.random.default_rng(3)
    sab = next(g for g in (sample(SPACE, rng) for _ in range(100)) if g.layers[-1].kind == LayerKind.CAPS)
    deep = next(g for g in (sample(SPACE, rng) for _ in range(100)) if g.layers[-1].kind == LayerKind.CELL)
    # Different families may only be exchanged whole: both cuts at the conv/capsule boundary.
    assert valid_cut_points(sab, deep, SPACE)  # swapping whole capsule stacks is always valid
    for i, j in valid_cut_points(sab, deep, SPACE):
        assert all(x.kind == LayerKind.CONV for x in sab.layers[:i] + deep.layers[:j])
    # A cut never leaves a convolution after a capsule layer.
    for i, j in valid_cut_points(sab, sab, SPACE):
        for child in cross(sab, sab, (i, j), SPACE):
            kinds = [layer.kind for layer in child.layers]
            first_caps = next(k for k, kind in enumerate(kinds) if kind != LayerKind.CONV)
            assert all(kind != LayerKind.CONV for kind in kinds[first_caps:])
            assert len(kinds) - first_caps >= 2


def _skip_follows(child, head, i, tail, j):
    """``child = head[:i] + tail[j:]`` points its skip at the cell its parent's skip pointed at
    (the head's when that cell was kept, else the tail's), or has none."""
    h, t = skip_layer(head), skip_layer(tail)
    if h is not None and h < i:
        want, parent, at = h, head, h
    elif t is not None and t >= j:
        want, parent, at = t - j + i, tail, t
    else:
        assert child.skip == -1
        return None
    assert skip_layer(child) == want and child.layers[want].kind == LayerKind.CELL
    assert _signature(child.layers[want]) == _signature(parent.layers[at])
    validate(child)
    return want


def test_skip_follows_its_cell():
    rng = np.random.default_rng(11)
    found = {"head": 0, "tail": 0}
    for _ in range(300):
        a, b = sample(SPACE, rng), sample(SPACE, rng)
        if a.layers[-1].kind != LayerKind.CELL or b.layers[-1].kind != LayerKind.CELL:
            continue
        for i, j in valid_cut_points(a, b, SPACE):
            c1, c2 = cross(a, b, (i, j), SPACE)
            for child, head, hi, tail, tj in ((c1, a, i, b, j), (c2, b, j, a, i)):
                kept = _skip_follows(child, head, hi, tail, tj)
                if kept is not None:
                    found["head" if kept < hi else "tail"] += 1
    assert found["head"] > 0 and found["tail"] > 0


@settings(max_examples=100, deadline=None)
@given(seed=seeds, cifar=st.booleans())
def test_skip_of_children_points_at_the_parents_cell(seed, cifar):
    space = CIFAR if cifar else SPACE
    rng = np.random.default_rng(seed)
    a, b = sample(space, rng), sample(space, rng)
    for i, j in valid_cut_points(a, b, space):
        c1, c2 = cross(a, b, (i, j), space)
        _skip_follows(c1, a, i, b, j)
        _skip_follows(c2, b, j, a, i)
    g = a
    for _ in range(8):
        m = mutate(g, space, rng)
        space.check(m)
        if m.skip != g.skip:  # a skip mutation: valid, and it rewires the class stage
            assert m.skip == -1 or m.skip in valid_skips(m, effective=True)
            assert skip_source(m) != skip_source(g)
        elif m.skip != -1:  # other mutations keep the skip on its cell
            assert skip_layer(m) == skip_layer(g)
        g = m


def test_sampled_skips_use_the_one_definition():
    rng = np.random.default_rng(2)
    seen = set()
    for _ in range(200):
        g = sample(SPACE, rng)
        if g.layers[-1].kind == LayerKind.CAPS:
            assert g.skip == -1
            continue
        assert g.skip == -1 or g.skip in valid_skips(g, effective=True)
        seen.add(skip_source(g))
    assert None in seen and len(seen) > 2  # no skip, and several different cells


def test_mutation_changes_exactly_one_thing():
    rng = np.random.default_rng(5)
    changed = 0
    for _ in range(200):
        g = sample(SPACE, rng)
        m = mutate(g, SPACE, rng)
        if m.skip != g.skip:
            assert [x.to_gene() for x in m.layers] == [x.to_gene() for x in g.layers]
            changed += 1
            continue
        # One gene's own fields change; later genes are only re-chained (a kernel that no
        # longer fits its smaller input becomes the largest one of the set that does), and the
        # class stage follows its input size.
        diffs = [
            k
            for k, (x, y) in enumerate(zip(g.layers[:-1], m.layers[:-1], strict=True))
            if (x.stride, x.out_channels, x.out_capsules) != (y.stride, y.out_channels, y.out_capsules)
            or y.kernel != _refit(x.kernel, y.in_size, SPACE.allowed_kernels(k, y))
        ]
        assert len(diffs) <= 1
        changed += bool(diffs)
    assert changed > 150


def _refit(kernel, size, allowed):
    if kernel <= size:
        return kernel
    fits = [k for k in allowed if k <= size]
    return fits[-1] if fits else min(allowed)


def test_mutation_probability_is_per_individual():
    rng = np.random.default_rng(0)
    pop = [sample(SPACE, rng) for _ in range(400)]
    out = GenotypeMutation(SPACE, p_m=0.1)._do(None, object_column(pop), random_state=rng)
    n_changed = sum(genotype_key(out[i, 0]) != genotype_key(g) for i, g in enumerate(pop))
    assert 20 <= n_changed <= 60  # about 10% of 400, a few no-op mutations aside


def test_sampling_operator_and_duplicates():
    problem = NASCapsProblem(SPACE, CachedEvaluations(None))
    X = GenotypeSampling()._do(problem, 8, random_state=np.random.default_rng(1))
    assert X.shape == (8, 1) and X.dtype == object
    dup = GenotypeDuplicates()
    a, b = Individual(X=X[0]), Individual(X=X[1])
    same = Individual(X=np.array([SPACE.repair(X[0, 0])], dtype=object))
    assert dup.is_equal(a, same) and not dup.is_equal(a, b)


def test_baselines_and_keys():
    assert genotype_key(CAPSNET_GENOTYPE) == (
        "[[0,28,1,1,9,1,28,256,1],[1,28,256,1,9,2,14,32,8],[1,14,32,8,9,2,7,10,16],[-1],[1]]"
    )
    # The published CapsNet is buildable but outside this space (one convolution, a class
    # layer that is not fully connected); the published DeepCaps has one convolution too.
    assert CAPSNET_GENOTYPE.validate() is CAPSNET_GENOTYPE
    with pytest.raises(GenotypeError, match="layer 0: field kind: 1 convolution"):
        SPACE.check(CAPSNET_GENOTYPE)
    g = _in_space_sabour()
    assert SPACE.check(g) is g
    last = g.layers[-1]
    same_padding = replace(last, kernel=min(3, last.in_size), out_size=last.in_size)
    with pytest.raises(GenotypeError, match="class stage must be 1x1"):
        SPACE.check(replace(g, layers=g.layers[:-1] + (same_padding,)).validate())
    assert DEEPCAPS_GENOTYPE.layers[-1].out_size == 1


# Genotypes of the shapes the NASCaps authors' search published: buildable, outside the space.
ONE_CAPSULE_LAYER = Genotype.from_nascaps(
    [[0, 28, 1, 1, 9, 1, 28, 8, 1], [0, 28, 8, 1, 5, 2, 14, 16, 1], [0, 14, 16, 1, 3, 1, 14, 8, 1],
     [1, 14, 8, 1, 14, 1, 1, 10, 16], [-1], [1]]  # fmt: skip
)
CONV_CAPSULE_FIELDS = Genotype.from_nascaps(
    [[0, 28, 1, 1, 9, 1, 28, 4, 8], [0, 28, 4, 8, 3, 2, 14, 8, 1], [0, 14, 8, 1, 3, 1, 14, 8, 1],
     [1, 14, 8, 1, 3, 2, 7, 8, 4], [1, 7, 8, 4, 7, 1, 1, 10, 16], [-1], [1]]  # fmt: skip
)


def test_space_rules_are_not_buildability_rules():
    for g in (ONE_CAPSULE_LAYER, CONV_CAPSULE_FIELDS):
        assert g.validate(in_channels=1, image_size=28) is g
    with pytest.raises(GenotypeError, match="layer 3: field kind: the search space needs at least two capsule layers, got 1"):
        SPACE.check(ONE_CAPSULE_LAYER)
    with pytest.raises(GenotypeError, match=r"layer 0: field out_capsules 8 is outside the search space \(1 for a convolution\)"):
        SPACE.check(CONV_CAPSULE_FIELDS)


def _in_space_sabour():
    rng = np.random.default_rng(4)
    return next(g for g in (sample(SPACE, rng) for _ in range(100)) if g.layers[-1].kind == LayerKind.CAPS)


@pytest.mark.parametrize(
    "change, message",
    [
        ({"kernel": 7}, r"field kernel 7 is outside the search space \(one of \[3, 5, 9\]\)"),
        ({"stride": 3}, r"field stride 3 is outside the search space \(one of \[1, 2\]\)"),
        ({"out_channels": 65}, r"field out_channels 65 is outside the search space \(channels 1-64\)"),
        ({"out_capsules": 80}, r"field out_capsules 80 is outside the search space \(capsules 1-64\)"),
    ],
)
def test_each_space_rule_names_gene_and_field(change, message):
    g = _in_space_sabour()
    i = len(g.layers) - 2  # the capsule layer before the class layer
    layers = g.layers[:i] + (replace(g.layers[i], **change),) + g.layers[i + 1 :]
    bad = repair(replace(g, layers=layers)).validate()  # buildable: only a space rule is broken
    with pytest.raises(GenotypeError, match=f"^layer {i}: " + message) as info:
        SPACE.check(bad)
    assert "\n" not in str(info.value)


def test_space_rules_for_convolutions_and_the_class_stage():
    g = _in_space_sabour()
    conv = replace(g, layers=(g.layers[0], replace(g.layers[1], out_channels=12)) + g.layers[2:])
    with pytest.raises(GenotypeError, match=r"layer 1: field out_channels 12 is outside the search space \(2\^2..2\^6\)"):
        SPACE.check(repair(conv))
    small = replace(g.layers[-1], out_capsules=8)
    with pytest.raises(GenotypeError, match="field out_capsules is 8, the search space's class_dim is 16"):
        SPACE.check(replace(g, layers=g.layers[:-1] + (small,)))


def test_space_configuration_errors():
    with pytest.raises(ConfigError, match=r"unknown search-space key\(s\) kernel; valid: image_size"):
        SearchSpace.from_dict({"kernel": [3]})
    with pytest.raises(ConfigError, match=r"unknown search-space key\(s\) kernal; valid: .*kernels"):
        SearchSpace.for_dataset("mnist", kernal=3)
    with pytest.raises(ConfigError, match="search space: caps_layers must satisfy 2 <= low"):
        SearchSpace(caps_layers=(1, 3))
    with pytest.raises(ConfigError, match="search space: channels must be a list of 2 values"):
        SearchSpace.from_dict({"channels": [1]})
    with pytest.raises(ConfigError, match=r"search space: kernels\[0\] must be"):
        SearchSpace.from_dict({"kernels": ["nine"]})
    with pytest.raises(ConfigError, match="search space: kernels must be a positive integer"):
        SearchSpace(kernels=(3, 0))
    with pytest.raises(ConfigError, match="search space: strides must not be empty"):
        SearchSpace(strides=())
    with pytest.raises(ConfigError, match="search space: resizes must be 1 or 2"):
        SearchSpace(resizes=(1, 3))
    with pytest.raises(ConfigError, match="famil"):
        SearchSpace(families=("resnet",))
    space = SearchSpace.from_dict({"kernels": [3, 5], "strides": [2]})
    assert space.kernels == (3, 5) and SearchSpace.from_dict(space.to_dict()) == space
    assert space.to_dict()["kernels"] == [3, 5]
    small = SearchSpace.for_dataset("cifar10", families=["deepcaps"])
    assert (small.image_size, small.in_channels) == (32, 3)
    g = sample(small, np.random.default_rng(0))
    assert g.layers[0].in_channels == 3 and g.layers[-1].kind == LayerKind.CELL


def test_space_scalars_become_one_tuples():
    """``--space kernels=3`` arrives as the int 3: coercion makes it ``(3,)``."""
    space = SearchSpace.from_dict({"kernels": 3, "strides": "2", "resizes": 1, "families": "sabour"})
    assert (space.kernels, space.strides, space.resizes, space.families) == ((3,), (2,), (1,), ("sabour",))
    assert SearchSpace.for_dataset("mnist", kernels=5).kernels == (5,)
    for seed in range(20):
        g = sample(space, np.random.default_rng(seed))
        assert all(x.kernel == 3 and x.stride == 2 for x in g.layers[1:-1])  # never off-set
