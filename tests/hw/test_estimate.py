"""Hardware model: Table 3 of NASCaps, hand-computed layers, expansion rules, properties,
custom accelerators."""

from __future__ import annotations

import json
import math
from dataclasses import replace

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from capslab.errors import AcceleratorError
from capslab.genotype import (
    CAPSNET_GENOTYPE,
    DEEPCAPS_GENOTYPE,
    Genotype,
    GenotypeError,
    LayerDescriptor,
    LayerKind,
    repair,
    valid_skips,
    validate,
)
from capslab.hw import CAPSACC, Accelerator, HardwareLayer, cost, estimate, expand


def sig4(x: float) -> str:
    return f"{x:.4g}"


# ----------------------------------------------------------------------------- Table 3
@pytest.mark.parametrize(
    "g, energy, latency, memory_bytes, memory_kib",
    [
        (CAPSNET_GENOTYPE, 88.80, 1.823, 8_778_304, 8572.6),
        (DEEPCAPS_GENOTYPE, 36.30, 4.287, 9_268_992, 9051.8),
    ],
    ids=["capsnet", "deepcaps"],
)
def test_table3_of_nascaps(g, energy, latency, memory_bytes, memory_kib):
    e = estimate(g)
    assert sig4(e.energy_mJ) == sig4(energy)
    assert sig4(e.latency_ms) == sig4(latency)
    assert e.memory_bytes == memory_bytes
    assert round(e.memory_KiB, 1) == memory_kib
    assert e.objectives() == (e.energy_mJ, e.latency_ms, e.memory_KiB)


def test_capsnet_energy_is_dominated_by_primary_caps_accumulators():
    e = estimate(CAPSNET_GENOTYPE)
    primary = e.layers[1]
    assert primary.kind == "convcaps"
    assert primary.energy_mJ / e.energy_mJ > 0.99
    acc_share = primary.accumulators * CAPSACC.accumulator_power_mW / primary.power_mW
    assert acc_share > 0.99


# ----------------------------------------------------------------------------- hand-computed
def layer_of(g: Genotype, name: str):
    return next(le for le in estimate(g).layers if le.name == name)


def test_hand_computed_capsnet_conv():
    # conv 9x9, 1 -> 256 maps at 28x28:
    # W = (1*81 + 1) * 256 * 1 * 1 = 20,992; S = (81 + 1) * 1 * 1 = 82; D = 28^2 * 1 = 784
    # cycles = 16 * ceil(20,992 / 16 / min(16, 82)) + 784 = 16 * 82 + 784 = 2,096
    # M = 16 * max(82 - 16 + 1, 1) = 1,072; P = 123.264 + 1,072 * 0.2303 = 370.1456 mW
    le = layer_of(CAPSNET_GENOTYPE, "L0 conv")
    assert (le.weights, le.sums_per_out, le.data_per_weight) == (20_992, 82, 784)
    assert le.cycles == 2_096
    assert le.accumulators == 1_072
    assert le.power_mW == pytest.approx(370.1456)
    assert le.energy_mJ == pytest.approx(370.1456 * 2_096 * 3e-9)


def test_hand_computed_primary_caps():
    # convcaps 9x9 stride 2, 256 maps -> 32 types x 8-D at 14x14:
    # W = (256*81 + 1) * 32 * 8 * 1 = 20,737 * 256 = 5,308,672
    # S = 82 * 256 = 20,992; D = 14^2 * 256 = 50,176
    # cycles = 16 * ceil(5,308,672 / 256) + 50,176 = 16 * 20,737 + 50,176 = 381,968
    # M = 16 * (20,992 - 15) = 335,632
    le = layer_of(CAPSNET_GENOTYPE, "L1 convcaps")
    assert (le.weights, le.sums_per_out, le.data_per_weight) == (5_308_672, 20_992, 50_176)
    assert le.cycles == 381_968
    assert le.accumulators == 335_632


def test_hand_computed_class_and_routing():
    # class layer (gene kernel 9, D = 1): W = (32*81 + 1) * 10 * 16 * 8 = 2,593 * 1,280
    #   = 3,319,040; S = 82 * 32 * 8 = 20,992; cycles = 16 * ceil(3,319,040 / 256) + 1
    #   = 16 * 12,965 + 1 = 207,441; M = 16 (one per column)
    le = layer_of(CAPSNET_GENOTYPE, "L2 class")
    assert (le.weights, le.cycles, le.accumulators) == (3_319_040, 207_441, 16)
    # routing: W = 32 * 81 * 10 = 25,920; S = incaps = 8; D = 1
    #   cycles = 16 * ceil(25,920 / 16 / min(16, 8)) + 1 = 16 * ceil(202.5) + 1 = 3,249
    le = layer_of(CAPSNET_GENOTYPE, "L2 sum1")
    assert (le.weights, le.sums_per_out, le.data_per_weight, le.cycles) == (25_920, 8, 1, 3_249)


def test_hand_computed_convcaps3d():
    # DeepCaps' 3-D layer at 4x4, 32 types x 8-D, k = 3 -> k^3 = 27:
    # W = (32*27 + 1) * 32 * 8 * 8 = 865 * 2,048 = 1,771,520; S = 28 * 32 * 8 = 7,168
    # D = 4^2 * 32 * 8 = 4,096; cycles = 16 * ceil(1,771,520 / 256) + 4,096
    #   = 16 * 6,920 + 4,096 = 114,816; M = 16 * (7,168 - 15) = 114,448
    le = layer_of(DEEPCAPS_GENOTYPE, "L4 cell.3d")
    assert (le.weights, le.sums_per_out, le.data_per_weight) == (1_771_520, 7_168, 4_096)
    assert (le.cycles, le.accumulators) == (114_816, 114_448)


# ----------------------------------------------------------------------------- published shapes
# Genotype shapes the NASCaps authors' own search published, outside the paper's search space
# but buildable: the hardware model must give their estimator's figures. The expected numbers
# below are worked out by hand from the formulas of docs/hardware.md (CapsAcc: 16x16 PEs,
# 16-cycle weight loads, P = 123.264 mW + M * 0.2303 mW, 3 ns clock, 1 byte per weight),
# not with capslab.hw.cost.
P16 = 123.264 + 16 * 0.2303  # a layer with M = 16 accumulators: 126.9488 mW


def check_by_hand(genes, layers, energy_terms):
    """``layers``: (name, W, cycles, M) per hardware layer; ``energy_terms``: (P mW, cycles)."""
    e = estimate(Genotype.from_nascaps(genes))
    assert [(le.name, le.weights, le.cycles, le.accumulators) for le in e.layers] == layers
    cycles = sum(c for _, _, c, _ in layers)
    weights = sum(w for _, w, _, _ in layers)
    assert e.cycles == cycles
    assert e.latency_ms == pytest.approx(cycles * 3e-6, rel=1e-12)
    assert e.energy_mJ == pytest.approx(sum(p * c for p, c in energy_terms) * 3e-9, rel=1e-9)
    assert (e.weights, e.memory_bytes, e.memory_KiB) == (weights, weights, weights / 1024)
    return e


def routing(gene, n, w, c):
    names = [f"L{gene} {('sum', 'update')[j % 2]}{j // 2 + 1}" for j in range(n)]
    return [(name, w, c, 16) for name in names]


def test_by_hand_only_capsule_gene_is_the_class_layer():
    genes = [[0, 8, 1, 1, 3, 1, 8, 4, 1], [1, 8, 4, 1, 8, 1, 1, 10, 4], [-1], [1]]
    # conv 3x3, 1 -> 4 maps at 8x8: W = (1*9 + 1) * 4 = 40; S = 10; D = 64
    #   cycles = 16 * ceil(40 / 16 / min(16, 10)) + 64 = 80; M = 16 * max(10 - 15, 1) = 16
    # class, kernel 8 = its input: W = (4*64 + 1) * 10 * 4 * 1 = 10,280; S = 65 * 4 = 260;
    #   D = 1; cycles = 16 * ceil(10,280 / 256) + 1 = 16 * 41 + 1 = 657; M = 16
    # 5 routing layers: W = 4 * 64 * 10 = 2,560; S = incaps = 1; cycles = 16 * 160 + 1 = 2,561
    layers = [("L0 conv", 40, 80, 16), ("L1 class", 10_280, 657, 16)] + routing(1, 5, 2_560, 2_561)
    e = check_by_hand(genes, layers, [(P16, 80 + 657 + 5 * 2_561)])
    assert e.cycles == 13_542 and e.memory_bytes == 23_120  # 0.040626 ms, 22.58 KiB
    assert sig4(e.energy_mJ) == sig4(126.9488 * 13_542 * 3e-9)  # 0.005157 mJ


def test_by_hand_only_capsule_gene_is_the_final_deepcaps_stage():
    genes = [[0, 8, 1, 1, 3, 2, 4, 8, 1], [2, 4, 8, 1, 4, 1, 1, 10, 4], [-1], [1]]
    # conv 3x3/2, 1 -> 8 maps at 4x4: W = 10 * 8 = 80; S = 10; D = 16; cycles = 16 + 16 = 32
    # final stage: 3 x (sum + update): W = 8 * 16 * 10 = 1,280, S = 1, cycles = 16 * 80 + 1
    #   = 1,281; class: W = (8*16 + 1) * 10 * 4 = 5,160; S = 17 * 8 = 136;
    #   cycles = 16 * ceil(5,160 / 256) + 1 = 337
    layers = [("L0 conv", 80, 32, 16)] + routing(1, 6, 1_280, 1_281) + [("L1 class", 5_160, 337, 16)]
    e = check_by_hand(genes, layers, [(P16, 32 + 6 * 1_281 + 337)])
    assert (e.cycles, e.memory_bytes) == (8_055, 12_920)


def test_by_hand_convolutions_with_capsule_fields():
    genes = [[0, 8, 1, 1, 3, 1, 8, 2, 4], [0, 8, 2, 4, 3, 2, 4, 4, 1],
             [1, 4, 4, 1, 3, 1, 4, 6, 2], [1, 4, 6, 2, 4, 1, 1, 10, 4], [-1], [1]]  # fmt: skip
    # The fields are used as given:
    # L0 conv, outcaps 4: W = (1*9 + 1) * 2 * 4 * 1 = 80; S = 10; D = 64; cycles = 16 + 64 = 80
    # L1 conv, incaps 4: W = (2*9 + 1) * 4 * 1 * 4 = 304; S = 10 * 2 * 4 = 80;
    #   D = 4^2 * 2 * 4 = 128; cycles = 16 * ceil(304 / 256) + 128 = 160;
    #   M = 16 * (80 - 16 + 1) = 1,040; P = 123.264 + 1,040 * 0.2303 = 362.776 mW
    # L2 convcaps: W = (4*9 + 1) * 6 * 2 = 444; S = 40; D = 16 * 4 = 64; cycles = 32 + 64 = 96;
    #   M = 16 * 25 = 400; P = 123.264 + 400 * 0.2303 = 215.384 mW
    # L3 class: W = (6*16 + 1) * 10 * 4 * 2 = 7,760; S = 17 * 12 = 204;
    #   cycles = 16 * ceil(7,760 / 256) + 1 = 497; routing: W = 6 * 16 * 10 = 960, S = 2,
    #   cycles = 16 * ceil(960 / 32) + 1 = 481
    layers = [("L0 conv", 80, 80, 16), ("L1 conv", 304, 160, 1_040), ("L2 convcaps", 444, 96, 400),
              ("L3 class", 7_760, 497, 16)] + routing(3, 5, 960, 481)  # fmt: skip
    terms = [(P16, 80 + 497 + 5 * 481), (362.776, 160), (215.384, 96)]
    e = check_by_hand(genes, layers, terms)
    assert (e.cycles, e.memory_bytes) == (3_238, 13_388)


def test_by_hand_kernel_larger_than_its_input():
    genes = [[0, 4, 1, 1, 5, 1, 4, 2, 1], [1, 4, 2, 1, 4, 1, 1, 10, 4], [-1], [1]]
    # conv 5x5 on a 4x4 input (same padding): W = (25 + 1) * 2 = 52; S = 26; D = 16;
    #   cycles = 16 * 1 + 16 = 32; M = 16 * (26 - 15) = 176; P = 123.264 + 176 * 0.2303
    # class: W = (2*16 + 1) * 10 * 4 = 1,320; S = 34; cycles = 16 * 6 + 1 = 97
    # routing: W = 2 * 16 * 10 = 320; S = 1; cycles = 16 * 20 + 1 = 321
    layers = [("L0 conv", 52, 32, 176), ("L1 class", 1_320, 97, 16)] + routing(1, 5, 320, 321)
    check_by_hand(genes, layers, [(123.264 + 176 * 0.2303, 32), (P16, 97 + 5 * 321)])


def test_every_hardware_entry_point_accepts_the_published_shapes():
    genes = [[0, 8, 1, 1, 3, 1, 8, 2, 4], [0, 8, 2, 4, 3, 2, 4, 16, 1],
             [1, 4, 16, 1, 4, 1, 4, 10, 8], [-1], [1]]  # fmt: skip
    g = Genotype.from_nascaps(genes)
    assert estimate(genes).memory_bytes == estimate(g).memory_bytes == estimate(g.to_dict()).memory_bytes
    assert [h.kind for h in expand(g)] == ["conv", "conv", "class"] + ["sum", "update"] * 2 + ["sum"]
    # what is really invalid still is: shapes that do not chain, a negative field
    with pytest.raises(GenotypeError, match="layer 2: field in_channels is 8 but layer 1 outputs 16"):
        estimate([*genes[:2], [1, 4, 8, 1, 4, 1, 4, 10, 8], [-1], [1]])
    with pytest.raises(GenotypeError, match="layer 1: field kernel must be positive, got -3"):
        estimate([genes[0], [0, 8, 2, 4, -3, 2, 4, 16, 1], *genes[2:]])


# ----------------------------------------------------------------------------- expansion
def kinds(hw: list[HardwareLayer], gene: int) -> list[str]:
    return [h.kind for h in hw if h.gene == gene]


def test_expansion_of_capsnet_class_layer_and_routing():
    hw = expand(CAPSNET_GENOTYPE)
    assert kinds(hw, 0) == ["conv"]
    assert kinds(hw, 1) == ["convcaps"]
    assert kinds(hw, 2) == ["class", "sum", "update", "sum", "update", "sum"]
    gene = CAPSNET_GENOTYPE.layers[2]
    for h in hw[2:]:  # all with the gene's own fields
        assert (h.insize, h.inch, h.incaps, h.k, h.outsize, h.outch, h.outcaps) == tuple(
            gene.to_gene()[1:5] + gene.to_gene()[6:]
        )


def test_expansion_of_deepcaps_cells():
    hw = expand(DEEPCAPS_GENOTYPE)
    assert len(hw) == 1 + 3 * 4 + 4 + 7
    assert kinds(hw, 0) == ["conv"]
    # ordinary cell: 4 capsule layers, the first at the gene's insize and incaps, the others at
    # insize // 2 reading the first's capsules (incaps = the gene's outcaps)
    cell = [h for h in hw if h.gene == 1]
    assert [h.kind for h in cell] == ["convcaps"] * 4
    assert [(h.insize, h.incaps) for h in cell] == [(64, 4), (32, 4), (32, 4), (32, 4)]
    cell = [h for h in hw if h.gene == 2]
    assert [(h.insize, h.incaps, h.outcaps) for h in cell] == [(32, 4, 8)] + [(16, 8, 8)] * 3
    assert all((h.k, h.outsize, h.outch) == (3, 16, 32) for h in cell)
    # second-to-last cell: 3 capsule layers (gene's incaps) and one 3-D layer at insize // 2
    cell = [h for h in hw if h.gene == 4]
    assert [h.kind for h in cell] == ["convcaps", "convcaps", "convcaps", "convcaps3d"]
    assert [h.insize for h in cell] == [8, 4, 4, 4]
    # final stage (flatten + class capsules): 3 x (sum + update) then the class layer
    assert kinds(hw, 5) == ["sum", "update"] * 3 + ["class"]


def test_second_to_last_cell_keeps_gene_incaps():
    # Make the second-to-last cell change the capsule dimension (8 -> 12) to see which incaps
    # its inner layers get: the gene's incaps (8) for all four.
    g = repair(
        Genotype(
            DEEPCAPS_GENOTYPE.layers[:4]
            + (replace(DEEPCAPS_GENOTYPE.layers[4], out_capsules=12),)
            + DEEPCAPS_GENOTYPE.layers[5:],
            skip=4,
            resize=2,
        )
    )
    validate(g)
    assert [h.incaps for h in expand(g) if h.gene == 4] == [8, 8, 8, 8]
    assert [h.incaps for h in expand(g) if h.gene == 5] == [12] * 7


def test_skip_and_resize_add_no_hardware_layers():
    e1 = estimate(DEEPCAPS_GENOTYPE)
    e2 = estimate(replace(DEEPCAPS_GENOTYPE, skip=-1))
    assert (e1.energy_mJ, e1.latency_ms, e1.memory_bytes) == (
        e2.energy_mJ,
        e2.latency_ms,
        e2.memory_bytes,
    )


# ----------------------------------------------------------------------------- properties
@st.composite
def genotypes(draw, family=None):
    """Random buildable genotypes of either family (built chained, then repaired), the shapes
    the NASCaps authors published included: one capsule gene, convolutions with capsule
    fields, kernels larger than their input."""
    family = family or draw(st.sampled_from(["sabour", "deepcaps"]))
    resize = draw(st.sampled_from([1, 2]))
    size = draw(st.sampled_from([28, 32])) * resize
    ch, caps = draw(st.sampled_from([1, 3])), 1
    layers = []

    def add(kind, k, s, och, ocaps):
        nonlocal size, ch, caps
        out = -(-size // s)  # kernels may exceed their input (same padding)
        layers.append(LayerDescriptor(kind, size, ch, caps, k, s, out, och, ocaps))
        size, ch, caps = out, och, ocaps

    ks, ss = st.sampled_from([3, 5, 9]), st.sampled_from([1, 2])
    for i in range(draw(st.integers(1, 3))):
        add(LayerKind.CONV, 9 if i == 0 else draw(ks), 1 if i == 0 else draw(ss),
            2 ** draw(st.integers(2, 6)), draw(st.sampled_from([1, 1, 4])))  # fmt: skip
    if family == "sabour":
        for _ in range(draw(st.integers(0, 4))):  # 0: the class layer is the only capsule gene
            add(
                LayerKind.CAPS,
                draw(ks),
                draw(ss),
                draw(st.integers(1, 32)),
                draw(st.integers(1, 16)),
            )
        add(LayerKind.CAPS, size, 1, 10, 16)
        skip = -1
    else:
        n = draw(st.integers(0, 6))
        for c in range(n):
            add(LayerKind.CELL, 3, draw(ss), 32, 4 if c == 0 else 8)
        add(LayerKind.CELL, size, 1, 10, 16)
        skip = draw(st.sampled_from([-1, *valid_skips(Genotype(tuple(layers)))]))
    g = repair(Genotype(tuple(layers), skip=skip, resize=resize))
    return validate(g)


@settings(max_examples=60, deadline=None)
@given(g=genotypes(), data=st.data())
def test_more_output_channels_never_cost_less_memory(g, data):
    i = data.draw(st.integers(0, len(g.layers) - 1))
    extra = data.draw(st.integers(1, 16))
    layers = list(g.layers)
    layers[i] = replace(layers[i], out_channels=layers[i].out_channels + extra)
    bigger = repair(replace(g, layers=tuple(layers)))
    validate(bigger)
    assert estimate(bigger).memory_bytes > estimate(g).memory_bytes


@settings(max_examples=60, deadline=None)
@given(g1=genotypes(), g2=genotypes(), clock=st.floats(0.1, 10.0))
def test_more_cycles_never_less_latency(g1, g2, clock):
    acc = Accelerator(clock_ns=clock)
    e1, e2 = estimate(g1, acc), estimate(g2, acc)
    if e1.cycles >= e2.cycles:
        assert e1.latency_ms >= e2.latency_ms
    else:
        assert e1.latency_ms < e2.latency_ms


@settings(max_examples=40, deadline=None)
@given(
    w=st.integers(1, 10**7),
    s=st.integers(1, 10**5),
    d=st.integers(1, 10**5),
    dw=st.integers(0, 10**5),
    dd=st.integers(0, 10**4),
)
def test_layer_cycles_grow_with_weights_and_data(w, s, d, dw, dd):
    assert cost.cycles(w + dw, s, d + dd, CAPSACC) >= cost.cycles(w, s, d, CAPSACC)


@settings(max_examples=40, deadline=None)
@given(g=genotypes(), acc=st.builds(
    Accelerator,
    rows=st.integers(1, 64), cols=st.integers(1, 64), pe_width=st.integers(1, 4),
    pipeline_stages=st.integers(1, 4), clock_ns=st.floats(0.5, 5.0),
    weight_bits=st.sampled_from([4, 8, 16]),
))  # fmt: skip
def test_totals_equal_the_sum_of_layers_and_the_formulas(g, acc):
    """The fast totals path agrees with the per-layer breakdown and with capslab.hw.cost."""
    e = estimate(g, acc)
    assert e.cycles == sum(le.cycles for le in e.layers)
    assert e.energy_mJ == pytest.approx(sum(le.energy_mJ for le in e.layers), rel=1e-12)
    assert e.latency_ms == pytest.approx(sum(le.latency_ms for le in e.layers), rel=1e-12)
    assert e.weights == sum(le.weights for le in e.layers)
    assert e.memory_bytes == math.ceil(e.weights * acc.weight_bits / 8)
    for hl, le in zip(e.hardware_layers, e.layers, strict=True):
        w, s, d = cost.layer_counts(
            hl.kind, hl.inch, hl.incaps, hl.k, hl.outsize, hl.outch, hl.outcaps
        )
        assert (w, s, d) == (le.weights, le.sums_per_out, le.data_per_weight)
        assert le.cycles == cost.cycles(w, s, d, acc)
        assert le.accumulators == cost.accumulators(s, d, acc)
        assert le.power_mW == pytest.approx(cost.power_mW(le.accumulators, acc))
        assert le.energy_mJ == pytest.approx(cost.energy_mJ(le.power_mW, le.cycles, acc))


# ----------------------------------------------------------------------------- accelerators
def test_capsacc_defaults():
    assert CAPSACC == Accelerator()
    assert CAPSACC.array_power_mW == pytest.approx(123.264)
    assert CAPSACC.weight_load_cycles == 16
    assert Accelerator.from_dict(CAPSACC.to_dict()) == CAPSACC


def test_custom_accelerator_changes_numbers_as_the_formulas_say():
    base = estimate(CAPSNET_GENOTYPE)
    slow = estimate(CAPSNET_GENOTYPE, Accelerator(clock_ns=6.0))
    assert slow.cycles == base.cycles
    assert slow.latency_ms == pytest.approx(2 * base.latency_ms)
    assert slow.energy_mJ == pytest.approx(2 * base.energy_mJ)  # same power, twice the time
    assert estimate(CAPSNET_GENOTYPE, Accelerator(weight_bits=16)).memory_bytes == 2 * 8_778_304
    assert estimate(CAPSNET_GENOTYPE, Accelerator(weight_bits=4)).memory_bytes == 8_778_304 // 2
    # A 32x32 array on the CapsNet conv (W = 20,992, S = 82, D = 784):
    #   load = 32 + 1 - 1 = 32 cycles; loads = ceil(20,992 / 32 / min(32, 82)) = 21
    #   cycles = 32 * 21 + 784 = 1,456; M = 32 * (82 - 32 + 1) = 1,632
    big = estimate(CAPSNET_GENOTYPE, Accelerator(rows=32, cols=32)).layers[0]
    assert (big.cycles, big.accumulators) == (1_456, 1_632)
    assert big.power_mW == pytest.approx(32 * 32 * 0.4815 + 1_632 * 0.2303)
    # Two multipliers per PE and 3 pipeline stages: load = 16 + 3 - 1 = 18 cycles,
    #   loads = ceil(20,992 / 16 / min(32, 82)) = 41, cycles = 18 * 41 + 784 = 1,522,
    #   M = 16 * (82 - 32 + 1) = 816
    wide = estimate(CAPSNET_GENOTYPE, Accelerator(pe_width=2, pipeline_stages=3)).layers[0]
    assert (wide.cycles, wide.accumulators) == (1_522, 816)
    # Power figures scale energy but not latency.
    hot = estimate(CAPSNET_GENOTYPE, Accelerator(pe_power_mW=0.963, accumulator_power_mW=0.4606))
    assert hot.energy_mJ == pytest.approx(2 * base.energy_mJ)
    assert hot.latency_ms == base.latency_ms


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"rows": 0}, "rows must be positive"),
        ({"cols": -4}, "cols must be positive"),
        ({"rows": 16.0}, "rows must be an integer"),
        ({"pe_width": True}, "pe_width must be an integer"),
        ({"clock_ns": 0}, "clock_ns must be a positive"),
        ({"clock_ns": float("nan")}, "clock_ns must be a positive"),
        ({"pe_power_mW": "0.5"}, "pe_power_mW must be a number"),
        ({"name": ""}, "name must be a non-empty string"),
    ],
)
def test_accelerator_validation(kwargs, message):
    with pytest.raises(AcceleratorError, match=message):
        Accelerator(**kwargs)


def test_accelerator_files(tmp_path):
    path = tmp_path / "acc.json"
    path.write_text(json.dumps({"name": "Big", "rows": 32, "cols": 32}))
    acc = Accelerator.from_file(path)
    assert (acc.name, acc.rows, acc.cols, acc.clock_ns) == ("Big", 32, 32, 3.0)  # rest default
    path.write_text(json.dumps(CAPSACC.to_dict()))
    assert Accelerator.from_file(path) == CAPSACC
    path.write_text(json.dumps({"rows": 8}))
    assert Accelerator.from_file(path).name == "acc"  # unnamed: the file's stem, not "CapsAcc"
    path.write_text(json.dumps({"rows": 16, "colums": 8}))
    with pytest.raises(
        AcceleratorError, match=r"acc.json: unknown key\(s\) \['colums'\]; valid keys: \[.*'cols'"
    ):
        Accelerator.from_file(path)
    path.write_text(json.dumps({"rows": -1}))
    with pytest.raises(AcceleratorError, match="acc.json: accelerator field rows must be positive"):
        Accelerator.from_file(path)
    path.write_text("[1, 2]")
    with pytest.raises(AcceleratorError, match="acc.json: an accelerator is a JSON object"):
        Accelerator.from_file(path)
    path.write_text("{")
    with pytest.raises(AcceleratorError, match="not valid JSON"):
        Accelerator.from_file(path)
    with pytest.raises(AcceleratorError, match="nope.json: cannot read"):
        Accelerator.from_file(tmp_path / "nope.json")


def test_estimate_input_handling():
    assert estimate(CAPSNET_GENOTYPE.to_nascaps()).memory_bytes == 8_778_304
    assert estimate(DEEPCAPS_GENOTYPE.to_dict()).memory_bytes == 9_268_992
    bad = replace(CAPSNET_GENOTYPE, resize=3)
    with pytest.raises(GenotypeError, match="resize"):
        estimate(bad)
    assert estimate(bad, check=False).memory_bytes == 8_778_304
    with pytest.raises(TypeError, match="Accelerator"):
        estimate(CAPSNET_GENOTYPE, {"rows": 16})
    d = estimate(DEEPCAPS_GENOTYPE).to_dict()
    assert set(d) >= {"energy_mJ", "latency_ms", "memory_KiB", "memory_bytes", "layers"}
    assert set(d["layers"][0]) >= {
        "name",
        "kind",
        "cycles",
        "power_mW",
        "energy_mJ",
        "memory_bytes",
    }
    assert len(d["layers"]) == 24
    json.dumps(d)
