"""Training cost from a network's description (meta device) against what real data measures."""

import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

from capslab.genotype import CAPSNET_GENOTYPE
from capslab.losses import capsule_loss
from capslab.models import create_model
from capslab.profiling import saved_activation_bytes
from capslab.training_cost import genotype_training_cost, step_cost, training_cost
from tests.test_newer_genes import LayerKind, efficient

TINY = {"conv_channels": 16, "primary_types": 4}
CASES = [
    ("capsnet", TINY),
    ("efficient-capsnet", {}),
    ("rescapsnet", {**TINY, "num_blocks": 2}),
    ("mocapsnet", {**TINY, "num_blocks": 2}),
    ("deepcaps", {}),
    # the newer genes: depthwise primary capsules, block genes, self-attention, shared matrices
    ("genotype", {"genotype": efficient(LayerKind.MOMENTUM, blocks=2).to_dict()}),
    ("genotype", {"genotype": efficient(LayerKind.RESIDUAL, blocks=2, routing="sda",
                                        shared=False).to_dict()}),
]


def real_step(name, options, batch):
    torch.manual_seed(0)
    model = create_model(name, **options)
    x = torch.rand(batch, *model.image_shape)
    y = torch.arange(batch) % 10

    def loss():
        out = model(x, y)
        return capsule_loss(out.lengths, y, out.reconstruction, x)[0]

    saved = saved_activation_bytes(loss, list(model.parameters()))
    if name == "mocapsnet" or "momentum" in str(options):  # PyTorch's counter cannot follow
        # autograd.grad in a backward
        return saved, None
    counter = FlopCounterMode(display=False)
    with counter:
        loss().backward()
    return saved, counter.get_total_flops()


@pytest.mark.parametrize("name, options", CASES)
def test_meta_trace_counts_what_real_data_saves_and_computes(name, options):
    with torch.device("meta"):
        model = create_model(name, **options)
    # batch 12: the paths every device takes (below 9 the CPU computes some layers otherwise)
    saved, _, flops = step_cost(model.train(), 12)
    real_saved, real_flops = real_step(name, options, 12)
    assert saved == real_saved  # the same storages, byte for byte
    if real_flops is not None:
        assert flops == real_flops


def test_a_reversible_stack_saves_nothing_per_block_but_recomputes():
    res = [training_cost("rescapsnet", num_blocks=n, **TINY) for n in (1, 3)]
    mo = [training_cost("mocapsnet", num_blocks=n, **TINY) for n in (1, 3)]
    assert res[1].activation_bytes > res[0].activation_bytes
    assert mo[1].activation_bytes == mo[0].activation_bytes
    assert mo[1].forward_flops == res[1].forward_flops  # the same forward pass
    assert mo[1].train_flops > res[1].train_flops  # plus the recomputation


def test_per_image_costs_are_the_slope_and_genotypes_work():
    cost = training_cost("capsnet", **TINY)
    with torch.device("meta"):
        model = create_model("capsnet", **TINY)
    a, b = step_cost(model.train(), 10), step_cost(model.train(), 40)
    assert b[0] - a[0] == pytest.approx(30 * cost.activation_bytes)
    assert b[2] - a[2] == pytest.approx(30 * cost.train_flops)
    assert cost.train_flops > 2 * cost.forward_flops > 0  # backward costs about twice forward
    g = genotype_training_cost(CAPSNET_GENOTYPE)
    assert g.activation_KiB > 0 and g.train_flops > g.forward_flops


def test_hw_command_prints_the_training_cost():
    import json

    from typer.testing import CliRunner

    from capslab.cli.main import app

    result = CliRunner().invoke(app, ["hw", "--model", "capsnet", "--training", "--json"])
    assert result.exit_code == 0, result.output
    cost = json.loads(result.stdout)["training"]
    want = genotype_training_cost(CAPSNET_GENOTYPE)
    assert cost["activation_bytes"] == want.activation_bytes and cost["train_flops"] == want.train_flops
    text = CliRunner().invoke(app, ["hw", "--model", "capsnet", "--training", "--no-layers"])
    assert "KiB of activations saved for backward" in text.stdout
