"""``reset_parameters()`` of the capsule layers (torch.nn's convention): it alone initialises,
so a layer built on the meta device and materialised later equals one built directly, and a
seed still gives the network it gave before the method existed."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from capslab.layers.class_caps import SDA_BIAS_INIT, ClassCaps
from capslab.layers.conv_caps import ConvCaps2D, ConvCaps3D

LAYERS = {
    "class-rba": lambda: ClassCaps(24, 8, 10, 16),
    "class-shared": lambda: ClassCaps(24, 8, 10, 16, share_types=4),
    "class-self-attention": lambda: ClassCaps(24, 8, 10, 16, routing="self-attention"),
    "class-sda-bias": lambda: ClassCaps(24, 8, 10, 16, routing="sda", sda_bias=True),
    "conv2d": lambda: ConvCaps2D(4, 8, 6, 8, kernel_size=3),
    "conv2d-routing": lambda: ConvCaps2D(4, 8, 6, 8, kernel_size=3, routing_iterations=2),
    "conv3d": lambda: ConvCaps3D(4, 8, 6, 8, kernel_size=3, bias_init=0.25),
}


def reset_all(module: nn.Module) -> None:
    """Re-initialise every submodule, children before parents (``nn.Module.apply``'s order),
    so that a capsule layer's own initialisation overrides its convolution's default."""
    module.apply(lambda m: m.reset_parameters() if hasattr(m, "reset_parameters") else None)


def state(module: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in module.state_dict().items()}


@pytest.mark.parametrize("name", LAYERS)
def test_meta_device_then_reset_equals_a_direct_build(name):
    torch.manual_seed(3)
    direct = state(LAYERS[name]())
    with torch.device("meta"):
        layer = LAYERS[name]()
    layer.to_empty(device="cpu")
    torch.manual_seed(3)
    reset_all(layer)
    again = state(layer)
    assert direct.keys() == again.keys()
    for key in direct:
        assert torch.equal(direct[key], again[key]), key


@pytest.mark.parametrize("name", LAYERS)
def test_reset_restores_the_initialisation(name):
    layer = LAYERS[name]()
    torch.manual_seed(5)
    layer.reset_parameters()
    first = state(layer)
    with torch.no_grad():
        for p in layer.parameters():
            p.fill_(float("nan"))
    torch.manual_seed(5)
    layer.reset_parameters()
    for key, value in state(layer).items():
        if (name.startswith("conv2d") and key == "conv.bias") or key.endswith("routing_bias"):
            assert torch.count_nonzero(value) == 0, key
        assert torch.equal(value, first[key]), key


def test_class_caps_draws_as_before():
    """The matrices are ``torch.randn(...) * init_std`` on the CPU generator, as before
    reset_parameters existed: pinned results keep their seeds (also below 16 elements,
    where ``normal_(std=...)`` rounds differently)."""
    for shape in ((24, 8, 10, 16), (1, 2, 3, 2)):
        torch.manual_seed(11)
        layer = ClassCaps(shape[0], shape[1], shape[2], shape[3], init_std=0.05)
        torch.manual_seed(11)
        expected = torch.randn(shape[0], shape[1], shape[2] * shape[3]) * 0.05
        assert torch.equal(layer.weight.detach(), expected)


def test_initial_values():
    sda = ClassCaps(24, 8, 10, 16, routing="sda", sda_bias=True)
    assert torch.all(sda.bias == SDA_BIAS_INIT)
    conv3d = ConvCaps3D(4, 8, 6, 8, bias_init=0.25)
    assert torch.all(conv3d.bias == 0.25)
    # capsule_conv_init_: std = gain * sqrt(D_in / (D_out * fan_in)), fan_in = D_in k^2
    conv2d = ConvCaps2D(32, 8, 32, 8, kernel_size=3)
    fan_in = conv2d.conv.weight[0].numel()
    expected = conv2d.init_gain * math.sqrt(8 / (8 * fan_in))
    assert conv2d.conv.weight.std().item() == pytest.approx(expected, rel=0.02)
