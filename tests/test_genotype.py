"""Genotypes: formats, validation rules (each one), repair."""

from __future__ import annotations

import json
from dataclasses import replace

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from capslab.errors import GenotypeError
from capslab.genotype import (
    CAPSNET_GENOTYPE,
    DEEPCAPS_GENOTYPE,
    Genotype,
    LayerDescriptor,
    LayerKind,
    load_genotype,
    repair,
    save_genotype,
    skip_layer,
    skip_source,
    skip_value,
    valid_skips,
    validate,
)

CAPSNET_LIST = [
    [0, 28, 1, 1, 9, 1, 28, 256, 1],
    [1, 28, 256, 1, 9, 2, 14, 32, 8],
    [1, 14, 32, 8, 9, 2, 7, 10, 16],
    [-1],
    [1],
]
DEEPCAPS_LIST = [
    [0, 64, 3, 1, 3, 1, 64, 128, 1],
    [2, 64, 32, 4, 3, 2, 32, 32, 4],
    [2, 32, 32, 4, 3, 2, 16, 32, 8],
    [2, 16, 32, 8, 3, 2, 8, 32, 8],
    [2, 8, 32, 8, 3, 2, 4, 32, 8],
    [2, 4, 32, 8, 4, 1, 1, 10, 16],
    [4],
    [2],
]


def with_layer(g: Genotype, i: int, **changes) -> Genotype:
    layers = list(g.layers)
    layers[i] = replace(layers[i], **changes)
    return replace(g, layers=tuple(layers))


# ----------------------------------------------------------------------------- baselines
def test_published_genotypes_are_exactly_the_reference_lists():
    assert CAPSNET_GENOTYPE.to_nascaps() == CAPSNET_LIST
    assert DEEPCAPS_GENOTYPE.to_nascaps() == DEEPCAPS_LIST
    assert validate(CAPSNET_GENOTYPE) is CAPSNET_GENOTYPE
    assert CAPSNET_GENOTYPE.validate(in_channels=1, image_size=28) is CAPSNET_GENOTYPE
    validate(DEEPCAPS_GENOTYPE, in_channels=3, image_size=32)


def test_conveniences():
    assert CAPSNET_GENOTYPE.num_capsule_layers == 2
    assert DEEPCAPS_GENOTYPE.num_capsule_layers == 5
    assert CAPSNET_GENOTYPE.input_size == 28
    assert DEEPCAPS_GENOTYPE.input_size == 64  # 32 px CIFAR x resize 2
    assert DEEPCAPS_GENOTYPE.in_channels == 3
    assert DEEPCAPS_GENOTYPE.layers[0].kind is LayerKind.CONV
    text = CAPSNET_GENOTYPE.describe()
    assert "conv9/1x256" in text and "class:10x16D" in text and "28px" in text


# ----------------------------------------------------------------------------- formats
@pytest.mark.parametrize("g", [CAPSNET_GENOTYPE, DEEPCAPS_GENOTYPE], ids=["capsnet", "deepcaps"])
def test_round_trips_in_memory(g):
    assert Genotype.from_nascaps(g.to_nascaps()) == g
    d = g.to_dict()
    assert d["format"] == "capslab-genotype" and d["version"] == 1
    assert d["layers"][0]["kind"] == "conv"
    assert Genotype.from_dict(json.loads(json.dumps(d))) == g


@pytest.mark.parametrize("g", [CAPSNET_GENOTYPE, DEEPCAPS_GENOTYPE], ids=["capsnet", "deepcaps"])
@pytest.mark.parametrize("fmt", ["capslab", "nascaps"])
def test_round_trips_through_files(tmp_path, g, fmt):
    path = tmp_path / f"g.{fmt}.json"
    save_genotype(g, path, format=fmt)
    obj = json.loads(path.read_text())
    assert isinstance(obj, list if fmt == "nascaps" else dict)  # the format really differs
    assert load_genotype(path) == g  # and is detected on load
    assert not list(tmp_path.glob(".*.tmp"))  # atomic write leaves no temporary


def test_load_errors_name_the_file(tmp_path):
    with pytest.raises(GenotypeError, match="missing.json"):
        load_genotype(tmp_path / "missing.json")
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(GenotypeError, match="bad.json.*JSON"):
        load_genotype(bad)
    invalid = tmp_path / "invalid.json"
    invalid.write_text(json.dumps([CAPSNET_LIST[0], CAPSNET_LIST[2], [-1], [1]]))
    with pytest.raises(GenotypeError, match="invalid.json.*layer 1"):
        load_genotype(invalid)
    assert len(load_genotype(invalid, check=False).layers) == 2
    with pytest.raises(GenotypeError, match="format"):
        save_genotype(CAPSNET_GENOTYPE, tmp_path / "x.json", format="yaml")


@pytest.mark.parametrize(
    "obj, message",
    [
        ([[0, 28, 1, 1, 9, 1, 28, 256], [-1], [1]], "layer 0.*9 integers"),
        (
            [[0, 28, 1, 1, 9, 1, 28, 256, 1.5], [1, 28, 256, 1, 9, 2, 14, 32, 8], [-1], [1]],
            "integer",
        ),
        ([[0, 28, True, 1, 9, 1, 28, 256, 1], [-1], [1]], "integer"),
        ([[7, 28, 1, 1, 9, 1, 28, 256, 1], [-1], [1]], "kind"),
        ([[0, 28, 1, 1, 9, 1, 28, 256, 1], [-1, 2], [1]], "skip"),
        ([[0, 28, 1, 1, 9, 1, 28, 256, 1]], "genes followed by"),
    ],
)
def test_nascaps_parse_errors(obj, message):
    with pytest.raises(GenotypeError, match=message):
        Genotype.from_nascaps(obj)


def test_dict_parse_errors():
    d = CAPSNET_GENOTYPE.to_dict()
    with pytest.raises(GenotypeError, match=r"unknown genotype key.*'extra'.*valid keys"):
        Genotype.from_dict({**d, "extra": 1})
    with pytest.raises(GenotypeError, match="version"):
        Genotype.from_dict({**d, "version": 9})
    bad_layer = {**d["layers"][0], "kernal": 3}
    with pytest.raises(GenotypeError, match=r"layer 0: unknown layer key.*kernal"):
        Genotype.from_dict({**d, "layers": [bad_layer]})
    with pytest.raises(GenotypeError, match="unknown layer kind 'dense'"):
        Genotype.from_dict({**d, "layers": [{**d["layers"][0], "kind": "dense"}]})


# ----------------------------------------------------------------------------- validation
C, D = CAPSNET_GENOTYPE, DEEPCAPS_GENOTYPE


@pytest.mark.parametrize(
    "g, message",
    [
        # a shape that does not chain (size, channels, capsules)
        (with_layer(C, 2, in_size=13), r"layer 2: field in_size is 13 but layer 1 outputs 14"),
        (
            with_layer(C, 1, in_channels=128),
            r"layer 1: field in_channels is 128 but layer 0 outputs 256",
        ),
        (with_layer(C, 2, in_capsules=4), r"layer 2: field in_capsules is 4 but layer 1 outputs 8"),
        # a conv -> capsule regrouping must keep the number of maps (DeepCaps: 128 = 32 x 4)
        (with_layer(D, 1, in_capsules=2), r"layer 1: fields in_channels x in_capsules = 32 x 2"),
        # same padding
        (with_layer(C, 1, out_size=10), r"layer 1: field out_size is 10, expected 14"),
        # after a convolution the maps may be regrouped, but their number must be kept
        (
            Genotype((C.layers[0], LayerDescriptor(0, 28, 64, 2, 3, 1, 28, 4, 1), C.layers[1])),
            r"layer 1: fields in_channels x in_capsules = 64 x 2 do not regroup the 256 x 1",
        ),
        (
            Genotype((C.layers[0], LayerDescriptor(0, 28, 256, 1, 3, 1, 28, 8, 4), C.layers[1])),
            r"layer 2: fields in_channels x in_capsules = 256 x 1 do not regroup the 8 x 4 maps",
        ),
        # positive fields
        (with_layer(C, 1, stride=0), r"layer 1: field stride must be positive"),
        (with_layer(C, 0, out_channels=-3), r"layer 0: field out_channels must be positive"),
        # the first layer is a convolution reading the image
        (Genotype(C.layers[1:], -1, 1), r"layer 0: field kind must be conv"),
        (with_layer(C, 0, in_capsules=2), r"layer 0: field in_capsules must be 1"),
        # no convolution after a capsule layer
        (
            Genotype(
                (
                    C.layers[0],
                    C.layers[1],
                    LayerDescriptor(0, 14, 32, 8, 3, 1, 14, 32, 8),
                    C.layers[2],
                ),
            ),
            r"layer 2: field kind: a convolution cannot follow a capsule layer",
        ),
        # a final class capsule gene closes the network
        (Genotype(C.layers[:1]), r"layer 0: field kind: the last gene must be the class capsule"),
        (
            Genotype((C.layers[0], LayerDescriptor(0, 28, 256, 1, 9, 2, 14, 32, 8))),
            r"layer 1: field kind: the last gene must be the class capsule stage .* got conv",
        ),
        # no mixing of Sabour capsule layers and DeepCaps cells
        (
            with_layer(D, 3, kind=LayerKind.CAPS),
            r"layer 3: field kind: DeepCaps cells \(2\) cannot be mixed",
        ),
        # skip (counted from 1: s points at layer s - 1): range, a cell, not the final stage
        (replace(D, skip=9), r"field skip must be -1 or 1..5 \(skip = s points at layer s - 1\)"),
        (replace(D, skip=-2), r"field skip must be -1 or 1..5 .*got -2"),
        (replace(D, skip=0), r"field skip must be -1 or 1..5 .*got 0"),
        (replace(D, skip=1), r"field skip 1 points at layer 0, a conv, not a cell"),
        (replace(D, skip=6), r"field skip 6 points at layer 5, the final class stage"),
        (replace(C, skip=2), r"field skip 2 points at layer 1, a caps, not a cell"),
        (replace(C, skip=3), r"field skip 3 points at layer 2, the final class stage"),
        # resize
        (replace(C, resize=3), r"field resize must be 1 or 2"),
    ],
)
def test_each_validation_rule(g, message):
    with pytest.raises(GenotypeError, match=message) as info:
        validate(g)
    assert "\n" not in str(info.value)  # one line for the command line
    with pytest.raises(GenotypeError, match=message):
        g.validate()  # the method is the same check


def test_validation_against_data():
    with pytest.raises(GenotypeError, match=r"layer 0: field in_channels is 1 .* 3 channel"):
        validate(C, in_channels=3)
    with pytest.raises(GenotypeError, match=r"layer 0: field in_size is 64 .* 28px x resize 2"):
        D.validate(image_size=28)


# Shapes the NASCaps authors' own search published (their estimator and builder accept them),
# written here from scratch, small. The search space's stricter rules do not apply to files.
ONLY_CLASS_CAPS = [[0, 28, 1, 1, 9, 1, 28, 256, 1], [1, 28, 256, 1, 28, 1, 1, 10, 16], [-1], [1]]
ONLY_CLASS_CAPS_SAME = [[0, 16, 3, 1, 5, 2, 8, 16, 1], [0, 8, 16, 1, 3, 1, 8, 8, 1],
                        [1, 8, 8, 1, 8, 2, 4, 10, 8], [-1], [2]]  # fmt: skip
ONLY_FINAL_CELL = [[0, 16, 1, 1, 3, 2, 8, 8, 1], [2, 8, 8, 1, 8, 1, 1, 10, 16], [-1], [2]]
CONV_CAPSULE_FIELDS = [[0, 8, 1, 1, 3, 1, 8, 2, 4], [0, 8, 2, 4, 3, 2, 4, 4, 1],
                       [1, 4, 4, 1, 3, 1, 4, 6, 2], [1, 4, 6, 2, 4, 1, 1, 10, 4], [-1], [1]]  # fmt: skip
CONV_TO_CELL_CAPSULES = [[0, 8, 1, 1, 3, 1, 8, 8, 4], [2, 8, 8, 4, 3, 2, 4, 8, 4],
                         [2, 4, 8, 4, 4, 1, 1, 10, 8], [-1], [1]]  # fmt: skip
KERNEL_LARGER_THAN_INPUT = [[0, 16, 1, 1, 3, 2, 8, 8, 1], [2, 8, 8, 1, 3, 2, 4, 8, 4],
                            [2, 4, 8, 4, 9, 1, 4, 8, 8], [2, 4, 8, 8, 4, 1, 4, 10, 8],
                            [-1], [1]]  # fmt: skip


@pytest.mark.parametrize(
    "genes",
    [ONLY_CLASS_CAPS, ONLY_CLASS_CAPS_SAME, ONLY_FINAL_CELL, CONV_CAPSULE_FIELDS,
     CONV_TO_CELL_CAPSULES, KERNEL_LARGER_THAN_INPUT],  # fmt: skip
    ids=["only-class-caps", "only-class-caps-same-padding", "only-final-cell",
         "conv-capsule-fields", "conv-to-cell-capsules", "kernel-larger-than-input"],  # fmt: skip
)
def test_published_shapes_are_buildable(tmp_path, genes):
    g = Genotype.from_nascaps(genes)
    assert g.validate() is g and validate(g) is g
    assert g.to_nascaps() == genes
    path = tmp_path / "g.chr"
    path.write_text(json.dumps(genes))
    assert load_genotype(path) == g  # load_genotype validates
    assert repair(g) == g  # a buildable genotype is a fixed point of repair


def test_one_capsule_layer_and_capsule_fields_in_numbers():
    g = Genotype.from_nascaps(ONLY_CLASS_CAPS)
    assert g.num_capsule_layers == 1 and g.num_conv_layers == 1
    assert g.describe().startswith("conv9/1x256 -> class:10x16D")
    g = Genotype.from_nascaps(CONV_CAPSULE_FIELDS)
    assert (g.layers[0].out_capsules, g.layers[1].in_capsules) == (4, 4)
    # a convolution's maps may be regrouped by the next convolution too (8 = 2 x 4 = 8 x 1)
    regrouped = with_layer(g, 1, in_channels=8, in_capsules=1)
    assert regrouped.validate() is regrouped


def test_class_stage_may_be_fully_connected_but_others_may_not():
    # DeepCaps' final stage: kernel == in_size, 1x1 output; allowed only for the last gene.
    assert D.layers[-1].kernel == D.layers[-1].in_size and D.layers[-1].out_size == 1
    bad = with_layer(D, 4, kernel=8, stride=1, out_size=1)
    with pytest.raises(GenotypeError, match=r"layer 4: field out_size is 1, expected 8"):
        validate(bad)


def test_type_errors_at_construction():
    with pytest.raises(GenotypeError, match="in_size must be an integer"):
        LayerDescriptor(0, 28.0, 1, 1, 9, 1, 28, 256, 1)
    with pytest.raises(GenotypeError, match="layer 0 is not a LayerDescriptor"):
        Genotype(([0, 28, 1, 1, 9, 1, 28, 256, 1],))


# ----------------------------------------------------------------------------- repair
def test_repair_rechains_shapes_and_does_not_mutate():
    broken = with_layer(with_layer(C, 1, in_channels=64, in_size=20, out_size=3), 2, kernel=30)
    broken = replace(broken, skip=1)
    before = broken.to_nascaps()
    fixed = repair(broken)
    assert broken.to_nascaps() == before  # input untouched
    assert fixed is not broken
    validate(fixed)
    assert fixed.layers[1].in_channels == 256 and fixed.layers[1].in_size == 28
    assert fixed.layers[1].out_size == 14  # ceil(28 / 2)
    assert fixed.layers[2].kernel == 30  # kept: same padding builds a kernel larger than its input
    assert fixed.skip == -1  # no cell to point at
    assert repair(C) == C and repair(D) == D  # valid genotypes are fixed points


def test_repair_propagates_a_stride_change_downstream():
    g = with_layer(D, 1, stride=1)  # cell 1 no longer halves: 64 -> 64
    fixed = repair(g)
    validate(fixed)
    assert [layer.in_size for layer in fixed.layers] == [64, 64, 64, 32, 16, 8]
    assert fixed.layers[-1].kernel == 8  # the class stage is still fully connected
    assert fixed.layers[-1].out_size == 1
    assert fixed.layers[1].in_channels * fixed.layers[1].in_capsules == 128  # regroup kept


# ----------------------------------------------------------------------------- the skip
def _valid(g: Genotype) -> bool:
    try:
        validate(g)
    except GenotypeError:
        return False
    return True


def test_skip_counts_layers_from_one():
    # DeepCaps: layer 0 = conv, 1-4 = cells, 5 = final stage; its [4] is the third cell (layer
    # index 3, 8x8 output), which feeds the class stage beside the fourth cell, as in DeepCaps.
    validate(D)
    assert D.skip == 4 and skip_source(D) == 3 and skip_layer(D) == 3
    assert D.layers[3].kind == LayerKind.CELL and D.layers[3].out_size == 8
    assert skip_value(3) == 4
    # every cell before the final stage may be pointed at; the last one adds no input
    assert valid_skips(D) == [2, 3, 4, 5]
    assert valid_skips(D, effective=True) == [2, 3, 4]
    for s in valid_skips(D):
        g = validate(replace(D, skip=s))
        assert skip_layer(g) == s - 1
        assert skip_source(g) == (None if s == 5 else s - 1)
    for s in (-1, 0, 1, 6, 99):  # none, below 1, a conv, the final stage, out of range
        assert skip_layer(replace(D, skip=s)) is None and skip_source(replace(D, skip=s)) is None
    # Sabour genotypes have no cells: only -1
    assert valid_skips(C) == [] and skip_source(C) is None
    assert [s for s in range(-3, 8) if _valid(replace(C, skip=s))] == [-1]
    assert [s for s in range(-3, 9) if _valid(replace(D, skip=s))] == [-1, 2, 3, 4, 5]


def test_repair_clamps_skip_to_a_valid_value():
    assert repair(D).skip == 4  # valid: kept
    assert repair(replace(D, skip=6)).skip == 5  # the final stage -> the last cell
    assert repair(replace(D, skip=99)).skip == 5
    assert repair(replace(D, skip=1)).skip == 2  # a conv -> the first cell
    assert repair(replace(D, skip=0)).skip == -1  # below 1: no skip
    assert repair(replace(D, skip=-7)).skip == -1
    assert repair(replace(C, skip=2)).skip == -1  # no cell to point at
    for s in range(-3, 10):
        fixed = repair(replace(D, skip=s))
        validate(fixed)
        assert fixed.skip == -1 or fixed.skip in valid_skips(fixed)
    assert repair(replace(D, resize=5)).resize == 2


@settings(max_examples=60, deadline=None)
@given(
    base=st.sampled_from([C, D]),
    data=st.data(),
)
def test_repair_makes_mutated_genotypes_valid(base, data):
    """Mutations of kernel / stride / output capsules / skip (the search's operators) followed
    by repair always give a valid genotype whose shapes chain."""
    g = base
    for _ in range(data.draw(st.integers(1, 4))):
        i = data.draw(st.integers(0, len(g.layers) - 1))
        field = data.draw(st.sampled_from(["kernel", "stride", "out_capsules", "out_channels"]))
        value = data.draw(
            {
                "kernel": st.sampled_from([3, 5, 9]),
                "stride": st.sampled_from([1, 2]),
                "out_capsules": st.integers(1, 64),
                "out_channels": st.integers(1, 64),
            }[field]
        )
        g = with_layer(g, i, **{field: value})
    g = replace(g, skip=data.draw(st.integers(-1, len(g.layers) + 2)))
    fixed = repair(g)
    validate(fixed)
    assert fixed.skip == -1 or skip_layer(fixed) == fixed.skip - 1
    for prev, layer in zip(fixed.layers, fixed.layers[1:], strict=False):
        assert layer.in_size == prev.out_size
