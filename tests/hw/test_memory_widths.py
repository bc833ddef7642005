"""The accelerator's weight memory with every layer at its own width, and the hardware
descriptions CapsNet and DeepCaps give of themselves (against the published genotypes)."""

from __future__ import annotations

import pytest

from capslab.genotype import CAPSNET_GENOTYPE, DEEPCAPS_GENOTYPE
from capslab.hw import estimate, expand, weight_memory_at_widths
from capslab.hw.estimate import weight_layers
from capslab.models import create_model
from capslab.quantize import layer_groups
from capslab.studies.bitwidths import SEARCH_GROUPS, capsacc_memory


@pytest.mark.parametrize("genotype", [CAPSNET_GENOTYPE, DEEPCAPS_GENOTYPE])
def test_uniform_eight_bits_is_the_estimate(genotype):
    n = len(weight_layers(expand(genotype)))
    layers = weight_memory_at_widths(genotype, [8] * n)
    assert sum(m.bytes for m in layers) == estimate(genotype).memory_bytes


def test_capsnet_at_mixed_widths_by_hand():
    # weights (Table 1): conv (1*81+1)*256 = 20,992; primary (256*81+1)*32*8 = 5,308,672;
    # class (32*81+1)*10*16*8 = 3,319,040; five routing layers of 14*14*... = 25,920 couplings
    layers = weight_memory_at_widths(CAPSNET_GENOTYPE, [4, 5, 3], routing_bits=6)
    assert [(m.name, m.bits) for m in layers][:3] == [("L0 conv", 4), ("L1 convcaps", 5),
                                                        ("L2 class", 3)]
    expected = 20_992 * 4 // 8 + 5_308_672 * 5 // 8 + 3_319_040 * 3 // 8 + 5 * 25_920 * 6 // 8
    assert sum(m.bytes for m in layers) == expected
    with pytest.raises(ValueError, match="2 widths for 3 weight layers"):
        weight_memory_at_widths(CAPSNET_GENOTYPE, [8, 8])


def test_the_models_describe_themselves_as_the_published_genotypes():
    assert create_model("capsnet").hardware_genotype() == CAPSNET_GENOTYPE
    cifar = create_model("deepcaps", in_channels=3, image_size=32, resize=2)
    assert cifar.hardware_genotype() == DEEPCAPS_GENOTYPE
    mnist = create_model("deepcaps").hardware_genotype().to_nascaps()
    assert mnist[0] == [0, 28, 1, 1, 3, 1, 28, 128, 1] and mnist[-3] == [2, 2, 32, 8, 2, 1, 1, 10, 16]


@pytest.mark.parametrize("name", ["capsnet", "deepcaps"])
def test_weight_tensors_pair_with_the_hardware_layers_in_order(name):
    model = create_model(name)
    groups = layer_groups(model)
    tensors = [n for g in SEARCH_GROUPS for n in groups[g]]
    widths = dict.fromkeys(tensors, 8)
    hw = capsacc_memory(model, widths, 8)
    pairs = [(p["tensor"].rsplit(".", 2)[0], p["hardware_layer"]) for p in hw["layers"]]
    assert len(pairs) == len(tensors)
    if name == "capsnet":
        assert pairs == [("conv", "L0 conv"), ("primary", "L1 convcaps"), ("class_caps", "L2 class")]
    else:  # stem, four cells of conv1-3 and the skip (2-D, then 3-D in the last), class
        assert pairs[0] == ("stem", "L0 conv") and pairs[-1] == ("class_caps", "L5 class")
        assert pairs[-2] == ("cells.3.skip", "L4 cell.3d")
    assert hw["found_bytes"] == hw["uniform_bytes"] == estimate(model.hardware_genotype()).memory_bytes
