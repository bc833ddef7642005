"""Hardware costs of the readable format's newer genes and options (docs/hardware.md, "Costs
of the newer genes"): depthwise primary capsules, self-attention / SDA routing, shared class
matrices, momentum and residual block genes.

Every expected number is worked out by hand in the comments from the formulas of
docs/hardware.md and the docstrings of capslab.hw.cost / capslab.hw.expand, for CapsAcc:
16x16 PEs with one multiplier (so a weight load holds 16 * min(16, S) weights), 16-cycle
weight loads, P = 123.264 mW + M * 0.2303 mW, 3 ns clock, 8-bit weights (1 byte each).
Nothing here is computed with capslab.hw.cost.
"""

from __future__ import annotations

from dataclasses import replace

import pytest

from capslab.genotype import (
    CAPSNET_GENOTYPE,
    DEEPCAPS_GENOTYPE,
    Genotype,
    LayerDescriptor,
    LayerKind,
)
from capslab.hw import estimate, expand

CLOCK = 3e-9  # s per cycle
P16 = 123.264 + 16 * 0.2303  # a layer with M = 16 accumulators (D = 1 or S <= 16): 126.9488 mW

# What tests/hw/test_estimate.py pins for the published genotypes (Table 3 of NASCaps):
CAPSNET_CYCLES, CAPSNET_BYTES, CAPSNET_MJ = 607_750, 8_778_304, 88.80
DEEPCAPS_CYCLES, DEEPCAPS_BYTES, DEEPCAPS_MJ = 1_429_111, 9_268_992, 36.30


def gene(kind, *fields, **options) -> LayerDescriptor:
    return LayerDescriptor(kind, *fields, **options)


def layer_of(g: Genotype, name: str):
    return next(le for le in estimate(g).layers if le.name == name)


def routing_names(prefix: str, n: int = 5) -> list[str]:
    return [f"{prefix} {('sum', 'update')[j % 2]}{j // 2 + 1}" for j in range(n)]


def sig4(x: float) -> str:
    return f"{x:.4g}"


# ----------------------------------------------------------------------------- genotypes
# Efficient-CapsNet-like: conv 9x9 1 -> 64 at 28x28; conv 5x5/2 64 -> 64 at 14x14; depthwise
# primary capsules (one 14x14 filter per map, 64 maps = 8 types x 8D, 1x1 output); class stage
# 8 types x 8D -> 10 x 16D (kernel 1 = its 1x1 input).
DWCAPS = Genotype(
    (
        gene(LayerKind.CONV, 28, 1, 1, 9, 1, 28, 64, 1),
        gene(LayerKind.CONV, 28, 64, 1, 5, 2, 14, 64, 1),
        gene(LayerKind.DWCAPS, 14, 64, 1, 14, 1, 1, 8, 8),
        gene(LayerKind.CAPS, 1, 8, 8, 1, 1, 1, 10, 16),
    )
).validate()

# Sabour-like, class stage on a 6x6 grid of 32 types x 8D with kernel 6 (24px input):
# conv 9x9/2 1 -> 256 at 12x12; primary caps 9x9/2 -> 6x6 x 32 x 8D; class 10 x 16D.
SABOUR6 = Genotype(
    (
        gene(LayerKind.CONV, 24, 1, 1, 9, 2, 12, 256, 1),
        gene(LayerKind.CAPS, 12, 256, 1, 9, 2, 6, 32, 8),
        gene(LayerKind.CAPS, 6, 32, 8, 6, 1, 1, 10, 16),
    )
).validate()


def with_class(g: Genotype, **options) -> Genotype:
    """``g`` with options on its class stage (the last gene)."""
    return replace(g, layers=(*g.layers[:-1], replace(g.layers[-1], **options))).validate()


def blocks_genotype(kind: LayerKind, routing: str | None = None) -> Genotype:
    """conv 9x9/2 1 -> 64 at 14x14; primary caps 9x9/2 -> 7x7 x 16 x 8D; a block gene of
    B = 2 blocks (7x7 grid -> 16 capsules of 8D, kernel 7 = its input); class 10 x 16D."""
    return Genotype(
        (
            gene(LayerKind.CONV, 28, 1, 1, 9, 2, 14, 64, 1),
            gene(LayerKind.CAPS, 14, 64, 1, 9, 2, 7, 16, 8),
            gene(kind, 7, 16, 8, 7, 1, 1, 16, 8, routing=routing, blocks=2),
            gene(LayerKind.CAPS, 1, 16, 8, 1, 1, 1, 10, 16),
        )
    ).validate()


# ----------------------------------------------------------------------------- dwcaps
def test_dwcaps_is_one_depthwise_convolution():
    hw = [h for h in expand(DWCAPS) if h.gene == 2]
    assert [(h.name, h.kind) for h in hw] == [("L2 dwconv", "dwconv")]
    # each of the 64 filters reads one map: inch = incaps = 1, outch = 64 maps, outcaps = 1
    h = hw[0]
    assert (h.insize, h.inch, h.incaps, h.k, h.outsize, h.outch, h.outcaps) == (14, 1, 1, 14, 1, 64, 1)


def test_dwcaps_layer_by_hand():
    # dwconv, k = 14 on the 14x14 maps, 64 maps:
    #   W = (k^2 + 1) * maps = (196 + 1) * 64 = 12,608   (a full conv would be (64*196 + 1) * 64)
    #   S = k^2 + 1 = 197; D = outsize^2 = 1^2 = 1
    #   cycles = 16 * ceil(12,608 / (16 * min(16 * 1, 197))) + 1 = 16 * ceil(49.25) + 1
    #          = 16 * 50 + 1 = 801
    #   M = 16 (D == 1: one accumulator per column); memory = 12,608 B
    le = layer_of(DWCAPS, "L2 dwconv")
    assert (le.weights, le.sums_per_out, le.data_per_weight) == (12_608, 197, 1)
    assert le.cycles == 801
    assert le.accumulators == 16
    assert le.memory_bytes == 12_608
    assert le.power_mW == pytest.approx(P16)
    assert le.energy_mJ == pytest.approx(P16 * 801 * CLOCK)


def test_dwcaps_genotype_totals_by_hand():
    # L0 conv 9x9 1 -> 64 at 28: W = (81 + 1) * 64 = 5,248; S = 82; D = 784;
    #   cycles = 16 * ceil(5,248 / 256) + 784 = 16 * 21 + 784 = 1,120;
    #   M = 16 * (82 - 16 + 1) = 1,072; P = 123.264 + 1,072 * 0.2303 = 370.1456
    # L1 conv 5x5/2 64 -> 64 at 14: W = (64*25 + 1) * 64 = 1,601 * 64 = 102,464;
    #   S = 26 * 64 = 1,664; D = 14^2 * 64 = 12,544;
    #   cycles = 16 * ceil(102,464 / 256) + 12,544 = 16 * 401 + 12,544 = 18,960;
    #   M = 16 * (1,664 - 15) = 26,384; P = 123.264 + 26,384 * 0.2303 = 6,199.4992
    # L2 dwconv: W = 12,608, cycles = 801, M = 16 (above)
    # L3 class 8 x 8D -> 10 x 16D, k = 1: W = (8*1 + 1) * 10 * 16 * 8 = 11,520; S = 2 * 64 = 128;
    #   cycles = 16 * ceil(11,520 / 256) + 1 = 16 * 45 + 1 = 721
    # 5 routing layers: W = 8 * 1 * 10 = 80; S = 8; cycles = 16 * ceil(80 / 128) + 1 = 17
    e = estimate(DWCAPS)
    expected = [
        ("L0 conv", 5_248, 1_120, 1_072),
        ("L1 conv", 102_464, 18_960, 26_384),
        ("L2 dwconv", 12_608, 801, 16),
        ("L3 class", 11_520, 721, 16),
    ] + [(name, 80, 17, 16) for name in routing_names("L3")]
    assert [(le.name, le.weights, le.cycles, le.accumulators) for le in e.layers] == expected
    # weights: 5,248 + 102,464 + 12,608 + 11,520 + 5 * 80 = 132,240
    # cycles: 1,120 + 18,960 + 801 + 721 + 5 * 17 = 21,687
    assert (e.weights, e.memory_bytes, e.cycles) == (132_240, 132_240, 21_687)
    energy = (370.1456 * 1_120 + 6_199.4992 * 18_960 + P16 * (801 + 721 + 5 * 17)) * CLOCK
    assert e.energy_mJ == pytest.approx(energy, rel=1e-9)
    assert e.latency_ms == pytest.approx(21_687 * 3e-6, rel=1e-12)


# ----------------------------------------------------------------------------- routing
def test_self_attention_expansion_by_hand():
    # Self-attention routing is sum (the plain sum of the predictions: unit couplings), update
    # (each prediction's dot product with it: the row sums of U_j U_j^T, the logits), sum
    # (the weighted sum): one RBA iteration fewer, no layer kind of its own.
    g = with_class(CAPSNET_GENOTYPE, routing="self-attention")
    hw = [h for h in expand(g) if h.gene == 2]
    assert [h.name for h in hw] == ["L2 class", "L2 sum1", "L2 update1", "L2 sum2"]
    assert [h.kind for h in hw] == ["class", "sum", "update", "sum"]
    # each as RBA's routing layer on CapsNet's class stage (14x14 grid, 32 types x 8D, k 9):
    #   W = inch * k^2 * outch = 32 * 81 * 10 = 25,920; S = incaps = 8; D = 1
    #   cycles = 16 * ceil(25,920 / (16 * min(16, 8))) + 1 = 16 * 203 + 1 = 3,249; M = 16
    for name in ("L2 sum1", "L2 update1", "L2 sum2"):
        le = layer_of(g, name)
        assert (le.weights, le.sums_per_out, le.data_per_weight) == (25_920, 8, 1)
        assert (le.cycles, le.accumulators, le.memory_bytes) == (3_249, 16, 25_920)


def test_self_attention_totals_by_hand():
    g = with_class(CAPSNET_GENOTYPE, routing="self-attention")
    e = estimate(g)
    # CapsNet without its routing: conv 2,096 + primary caps 381,968 + class 207,441 = 591,505
    # cycles (607,750 - 5 * 3,249), weights 20,992 + 5,308,672 + 3,319,040 = 8,648,704
    # (8,778,304 - 5 * 25,920). Self-attention adds 3 routing layers instead of 5:
    assert e.cycles == 591_505 + 3 * 3_249 == 601_252
    assert e.memory_bytes == 8_648_704 + 3 * 25_920 == 8_726_464
    # energy: CapsNet's minus 2 routing layers at M = 16 (126.9488 mW x 3,249 cycles x 3 ns)
    fewer = 2 * P16 * 3_249 * CLOCK
    assert e.energy_mJ == pytest.approx(estimate(CAPSNET_GENOTYPE).energy_mJ - fewer, rel=1e-9)


@pytest.mark.parametrize("routing", ["rba", "sda"])
def test_rba_and_sda_cost_as_the_published_capsnet(routing):
    g = with_class(CAPSNET_GENOTYPE, routing=routing)
    assert [h.name for h in expand(g) if h.gene == 2] == ["L2 class", *routing_names("L2")]
    e, base = estimate(g), estimate(CAPSNET_GENOTYPE)
    assert (e.cycles, e.memory_bytes) == (CAPSNET_CYCLES, CAPSNET_BYTES)
    assert e.energy_mJ == base.energy_mJ
    assert [le.to_dict() for le in e.layers] == [le.to_dict() for le in base.layers]


@pytest.mark.parametrize("routing", ["rba", "sda"])
def test_rba_and_sda_on_the_deepcaps_stage_cost_as_published(routing):
    e = estimate(with_class(DEEPCAPS_GENOTYPE, routing=routing))
    assert (e.cycles, e.memory_bytes) == (DEEPCAPS_CYCLES, DEEPCAPS_BYTES)
    assert sig4(e.energy_mJ) == sig4(DEEPCAPS_MJ)


def test_self_attention_on_the_deepcaps_stage():
    g = with_class(DEEPCAPS_GENOTYPE, routing="self-attention")
    # the class layer first (the routing needs its predictions), then sum, update, sum
    assert [h.name for h in expand(g) if h.gene == 5] == ["L5 class", "L5 sum1", "L5 update1", "L5 sum2"]
    # final stage: 4x4 grid, inch 32, incaps 8, k 4, 10 x 16D
    # class: W = (32*16 + 1) * 10 * 16 * 8 = 513 * 1,280 = 656,640; D = 1;
    #   cycles = 16 * ceil(656,640 / 256) + 1 = 16 * 2,565 + 1 = 41,041
    # routing: W = 32 * 16 * 10 = 5,120; S = 8; cycles = 16 * ceil(5,120 / 128) + 1 = 641
    assert (layer_of(g, "L5 class").weights, layer_of(g, "L5 class").cycles) == (656_640, 41_041)
    assert layer_of(g, "L5 update1").cycles == 641
    # published DeepCaps: 6 routing layers; self-attention: 3
    e = estimate(g)
    assert e.cycles == DEEPCAPS_CYCLES - 3 * 641 == 1_427_188
    assert e.memory_bytes == DEEPCAPS_BYTES - 3 * 5_120 == 9_253_632


# ----------------------------------------------------------------------------- shared
def test_shared_class_layer_by_hand():
    g = with_class(SABOUR6, shared=True)
    assert [h.kind for h in expand(g) if h.gene == 2] == ["sharedclass"] + ["sum", "update"] * 2 + ["sum"]
    # class stage: 6x6 grid, inch 32 types, incaps 8D, k = 6, 10 x 16D
    # sharedclass: W = (inch + 1) * outch * outcaps * incaps = 33 * 10 * 16 * 8 = 42,240
    #   S = (k^2 + 1) * inch * incaps = 37 * 32 * 8 = 9,472; D = k^2 = 36
    #   cycles = 16 * ceil(42,240 / (16 * min(16, 9,472))) + 36 = 16 * 165 + 36 = 2,676
    #   M = 16 * max(9,472 - 16 + 1, 1) = 16 * 9,457 = 151,312 (D > 1: partial sums wait)
    le = layer_of(g, "L2 sharedclass")
    assert (le.weights, le.sums_per_out, le.data_per_weight) == (42_240, 9_472, 36)
    assert (le.cycles, le.accumulators, le.memory_bytes) == (2_676, 151_312, 42_240)
    assert le.power_mW == pytest.approx(123.264 + 151_312 * 0.2303)  # 34,970.4176 mW
    # energy 34,970.4176 mW * 2,676 * 3 ns = 0.2807 mJ, against the unshared class layer's
    # 126.9488 mW * 92,241 * 3 ns = 0.0351 mJ (M = 16): fewer weights and cycles, more energy
    assert le.energy_mJ == pytest.approx(34_970.4176 * 2_676 * CLOCK)
    assert layer_of(SABOUR6, "L2 class").energy_mJ == pytest.approx(P16 * 92_241 * CLOCK)


def test_shared_class_saves_the_hand_computed_weights():
    # unshared class: W = (32 * 36 + 1) * 10 * 16 * 8 = 1,153 * 1,280 = 1,475,840; S = 9,472;
    #   D = 1; cycles = 16 * ceil(1,475,840 / 256) + 1 = 16 * 5,765 + 1 = 92,241
    # shared saves 1,475,840 - 42,240 = 1,433,600 = inch * (k^2 - 1) * outch * outcaps * incaps
    #   = 32 * 35 * 1,280 weights, and 92,241 - 2,676 = 89,565 cycles
    plain, shared = estimate(SABOUR6), estimate(with_class(SABOUR6, shared=True))
    le = layer_of(SABOUR6, "L2 class")
    assert (le.weights, le.cycles) == (1_475_840, 92_241)
    assert plain.weights - shared.weights == 1_433_600 == 32 * 35 * 1_280
    assert plain.cycles - shared.cycles == 89_565
    # totals: conv W = 82 * 256 = 20,992; primary caps W = (256*81 + 1) * 32 * 8 = 5,308,672;
    # routing 5 x 32 * 36 * 10 = 5 x 11,520; class 1,475,840 or 42,240
    assert plain.memory_bytes == 20_992 + 5_308_672 + 1_475_840 + 5 * 11_520 == 6_863_104
    assert shared.memory_bytes == 20_992 + 5_308_672 + 42_240 + 5 * 11_520 == 5_429_504
    # the routing layers are those of the unshared stage: S = 8, cycles = 16 * 90 + 1 = 1,441
    assert all(
        (le.weights, le.cycles) == (11_520, 1_441) for le in shared.layers if le.kind in ("sum", "update")
    )


def test_shared_with_self_attention():
    # both options: sharedclass, then sum, update, sum with the stage's fields
    # (W = 32 * 36 * 10 = 11,520; S = 8; cycles = 16 * 90 + 1 = 1,441 each)
    g = with_class(SABOUR6, shared=True, routing="self-attention")
    assert [h.name for h in expand(g) if h.gene == 2] == [
        "L2 sharedclass", "L2 sum1", "L2 update1", "L2 sum2"]  # fmt: skip
    e = estimate(g)
    # 20,992 + 5,308,672 + 42,240 + 3 * 11,520 = 5,406,464
    assert e.memory_bytes == 5_406_464
    # 1,456 + 341,008 + 2,676 + 3 * 1,441 = 349,463 (conv 16 * 82 + 144 = 1,456;
    # primary caps 16 * 20,737 + 6^2 * 256 = 331,792 + 9,216 = 341,008)
    assert e.cycles == 349_463


# ----------------------------------------------------------------------------- blocks
def block_names(prefix: str, blocks: int, routing: list[str]) -> list[str]:
    routed = ["proj"] + [f"block{b}.caps{c}" for b in range(1, blocks + 1) for c in (1, 2)]
    return [n for r in routed for n in (f"{prefix} {r}", *(f"{prefix} {r} {x}" for x in routing))]


@pytest.mark.parametrize("kind", [LayerKind.MOMENTUM, LayerKind.RESIDUAL])
def test_block_gene_expansion(kind):
    hw = [h for h in expand(blocks_genotype(kind)) if h.gene == 2]
    rba = ["sum1", "update1", "sum2", "update2", "sum3"]
    # proj + 2B = 4 square layers, each a class layer with 5 routing layers: 5 x 6 = 30
    assert [h.name for h in hw] == block_names("L2", 2, rba)
    assert len(hw) == 30
    assert [h.kind for h in hw] == (["class"] + ["sum", "update"] * 2 + ["sum"]) * 5
    # the projection reads the 7x7 grid with the gene's kernel; the square layers are N -> N
    assert (hw[0].insize, hw[0].inch, hw[0].incaps, hw[0].k) == (7, 16, 8, 7)
    assert all((h.insize, h.inch, h.incaps, h.k, h.outsize, h.outch, h.outcaps)
               == (1, 16, 8, 1, 1, 16, 8) for h in hw[6:])  # fmt: skip


def test_block_gene_with_self_attention_by_hand():
    g = blocks_genotype(LayerKind.RESIDUAL, "self-attention")
    gene2 = [le for le in estimate(g).layers if le.gene == 2]
    assert [le.name for le in gene2] == block_names("L2", 2, ["sum1", "update1", "sum2"])
    # as test_block_gene_costs_by_hand below, with 3 routing layers per routed layer:
    # weights 803,840 + 3 * 12,544 + 4 * (17,408 + 3 * 256) = 841,472 + 4 * 18,176 = 914,176
    # cycles 50,241 + 3 * 1,569 + 4 * (1,089 + 3 * 33) = 54,948 + 4 * 1,188 = 59,700
    assert sum(le.weights for le in gene2) == 914_176
    assert sum(le.cycles for le in gene2) == 59_700


@pytest.mark.parametrize("kind", [LayerKind.MOMENTUM, LayerKind.RESIDUAL])
def test_block_gene_costs_by_hand(kind):
    e = estimate(blocks_genotype(kind))
    # proj (class, 7x7 grid, inch 16, incaps 8, k 7 -> 16 x 8D):
    #   W = (16*49 + 1) * 16 * 8 * 8 = 785 * 1,024 = 803,840; S = 50 * 128 = 6,400; D = 1
    #   cycles = 16 * ceil(803,840 / 256) + 1 = 16 * 3,140 + 1 = 50,241
    #   its routing: W = 16 * 49 * 16 = 12,544; S = 8; cycles = 16 * ceil(12,544 / 128) + 1
    #   = 16 * 98 + 1 = 1,569
    # square layer (1x1, 16 x 8D -> 16 x 8D, k 1): W = (16 + 1) * 16 * 8 * 8 = 17,408;
    #   S = 2 * 128 = 256; cycles = 16 * ceil(17,408 / 256) + 1 = 16 * 68 + 1 = 1,089
    #   its routing: W = 16 * 1 * 16 = 256; S = 8; cycles = 16 * ceil(256 / 128) + 1 = 33
    gene2 = [le for le in e.layers if le.gene == 2]
    assert [(le.weights, le.cycles) for le in gene2] == (
        [(803_840, 50_241)] + [(12_544, 1_569)] * 5 + ([(17_408, 1_089)] + [(256, 33)] * 5) * 4
    )
    assert all(le.accumulators == 16 for le in gene2)  # D = 1 everywhere
    # gene total: weights 803,840 + 5 * 12,544 + 4 * (17,408 + 5 * 256)
    #   = 866,560 + 4 * 18,688 = 941,312; cycles 50,241 + 5 * 1,569 + 4 * (1,089 + 5 * 33)
    #   = 58,086 + 4 * 1,254 = 63,102
    assert sum(le.weights for le in gene2) == 941_312
    assert sum(le.cycles for le in gene2) == 63_102
    # the rest: L0 conv 9x9/2 1 -> 64 at 14: W = 82 * 64 = 5,248; S = 82; D = 196;
    #   cycles = 16 * ceil(20.5) + 196 = 532; M = 1,072, P = 370.1456
    # L1 caps 9x9/2 64 -> 16 x 8D at 7: W = (64*81 + 1) * 16 * 8 = 5,185 * 128 = 663,680;
    #   S = 82 * 64 = 5,248; D = 49 * 64 = 3,136; cycles = 16 * ceil(2,592.5) + 3,136 = 44,624;
    #   M = 16 * (5,248 - 15) = 83,728, P = 123.264 + 83,728 * 0.2303 = 19,405.8224
    # L3 class 16 x 8D -> 10 x 16D, k 1: W = 17 * 10 * 16 * 8 = 21,760; S = 256;
    #   cycles = 16 * 85 + 1 = 1,361; routing W = 16 * 10 = 160, cycles = 16 * 2 + 1 = 33
    assert e.weights == 5_248 + 663_680 + 941_312 + 21_760 + 5 * 160 == 1_632_800
    assert e.cycles == 532 + 44_624 + 63_102 + 1_361 + 5 * 33 == 109_784
    energy = (370.1456 * 532 + 19_405.8224 * 44_624 + P16 * (63_102 + 1_361 + 5 * 33)) * CLOCK
    assert e.energy_mJ == pytest.approx(energy, rel=1e-9)


def test_momentum_and_residual_cost_the_same():
    for routing in (None, "sda", "self-attention"):
        m = estimate(blocks_genotype(LayerKind.MOMENTUM, routing))
        r = estimate(blocks_genotype(LayerKind.RESIDUAL, routing))
        assert (m.cycles, m.weights, m.energy_mJ) == (r.cycles, r.weights, r.energy_mJ)
        assert [le.to_dict() for le in m.layers] == [le.to_dict() for le in r.layers]


# ----------------------------------------------------------------------------- fast path
NEWER = {
    "dwcaps": DWCAPS,
    "self-attention": with_class(CAPSNET_GENOTYPE, routing="self-attention"),
    "sda": with_class(CAPSNET_GENOTYPE, routing="sda"),
    "shared": with_class(SABOUR6, shared=True),
    "shared+attention": with_class(SABOUR6, shared=True, routing="self-attention"),
    "deepcaps+attention": with_class(DEEPCAPS_GENOTYPE, routing="self-attention"),
    "momentum": blocks_genotype(LayerKind.MOMENTUM),
    "residual+attention": blocks_genotype(LayerKind.RESIDUAL, "self-attention"),
    "dwcaps+residual+shared": Genotype(
        (
            *DWCAPS.layers[:3],
            gene(LayerKind.RESIDUAL, 1, 8, 8, 1, 1, 1, 8, 8, routing="sda", blocks=1),
            gene(LayerKind.CAPS, 1, 8, 8, 1, 1, 1, 10, 16, shared=True),
        )
    ).validate(),
}


@pytest.mark.parametrize("g", NEWER.values(), ids=NEWER.keys())
def test_totals_equal_the_sum_of_the_layers(g):
    """The fast totals (runs of layers, inlined formulas) agree with the per-layer breakdown
    (capslab.hw.cost, one layer at a time)."""
    e = estimate(g)
    assert e.cycles == sum(le.cycles for le in e.layers)
    assert e.weights == sum(le.weights for le in e.layers)
    assert e.memory_bytes == e.weights  # 8-bit weights
    assert e.energy_mJ == pytest.approx(sum(le.energy_mJ for le in e.layers), rel=1e-12)
    assert e.latency_ms == pytest.approx(sum(le.latency_ms for le in e.layers), rel=1e-12)


# ----------------------------------------------------------------------------- published
@pytest.mark.parametrize(
    "g, cycles, memory_bytes, energy",
    [
        (CAPSNET_GENOTYPE, CAPSNET_CYCLES, CAPSNET_BYTES, CAPSNET_MJ),
        (DEEPCAPS_GENOTYPE, DEEPCAPS_CYCLES, DEEPCAPS_BYTES, DEEPCAPS_MJ),
    ],
    ids=["capsnet", "deepcaps"],
)
def test_published_genotypes_keep_their_figures(g, cycles, memory_bytes, energy):
    e = estimate(g)
    assert (e.cycles, e.memory_bytes) == (cycles, memory_bytes)
    assert sig4(e.energy_mJ) == sig4(energy)
    # hand-computed layers pinned in test_estimate.py
    if g is CAPSNET_GENOTYPE:
        assert [le.cycles for le in e.layers] == [2_096, 381_968, 207_441] + [3_249] * 5
    else:
        assert next(le for le in e.layers if le.name == "L4 cell.3d").cycles == 114_816
    assert not any(le.kind in ("dwconv", "sharedclass") for le in e.layers)
