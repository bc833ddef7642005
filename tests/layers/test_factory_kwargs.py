"""``device`` and ``dtype`` of every layer in :mod:`capslab.layers` (``torch.nn``'s factory
arguments): every parameter and buffer is created there, the layer computes in that dtype, and
a meta-device layer materialised and reset equals a direct build."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from capslab.layers import (
    CapsCell,
    CapsuleDecoder,
    ClassCaps,
    ConvCaps2D,
    ConvCaps3D,
    ConvStem,
    DepthwisePrimaryCaps,
    GemmConv2d,
    InputNormalization,
    PrimaryCaps,
)
from capslab.layers.conv_caps import SameConv2d
from capslab.layers.momentum import CapsuleBlock, make_blocks

#: name -> (build(**factory), input shape)
LAYERS = {
    "conv-stem": (lambda **f: ConvStem(1, 8, 5, **f), (2, 1, 12, 12)),
    "gemm-conv": (lambda **f: GemmConv2d(3, 4, 3, 2, **f), (2, 3, 9, 9)),
    "same-conv": (lambda **f: SameConv2d(3, 4, 3, 2, **f), (2, 3, 9, 9)),
    "primary": (lambda **f: PrimaryCaps(8, 4, 4, 3, 2, **f), (2, 8, 9, 9)),
    "depthwise-primary": (lambda **f: DepthwisePrimaryCaps(16, 4, 5, **f), (2, 16, 5, 5)),
    "class-sda": (lambda **f: ClassCaps(12, 4, 5, 6, routing="sda", sda_bias=True, **f), (2, 12, 4)),
    "class-self-attention": (lambda **f: ClassCaps(12, 4, 5, 6, routing="self-attention", **f),
                             (2, 12, 4)),
    "conv-caps-2d": (lambda **f: ConvCaps2D(2, 4, 3, 4, routing_iterations=2, **f),
                     (2, 2, 4, 6, 6)),
    "conv-caps-3d": (lambda **f: ConvCaps3D(2, 4, 3, 4, **f), (2, 2, 4, 6, 6)),
    "caps-cell-3d": (lambda **f: CapsCell(2, 4, 3, 4, skip="3d", **f), (2, 2, 4, 6, 6)),
    "decoder": (lambda **f: CapsuleDecoder(5, 6, (1, 4, 4), hidden=(8, 16), **f), (2, 5, 6)),
    "input-norm": (lambda **f: InputNormalization("dataset", [0.5], [0.25], **f), (2, 1, 4, 4)),
    "capsule-block": (lambda **f: CapsuleBlock(6, 4, routing="sda", sda_bias=True, **f), (2, 6, 4)),
    "blocks": (lambda **f: make_blocks(2, 6, 4, **f)[1], (2, 6, 4)),
}


def tensors(layer: nn.Module) -> dict[str, torch.Tensor]:
    return dict(layer.state_dict())


@pytest.mark.parametrize("name", LAYERS)
def test_meta_device_creates_no_storage(name):
    layer = LAYERS[name][0](device="meta")
    assert tensors(layer) and all(t.is_meta for t in tensors(layer).values())


@pytest.mark.parametrize("name", LAYERS)
def test_dtype_float64_parameters_and_forward(name):
    build, shape = LAYERS[name]
    layer = build(dtype=torch.float64)
    assert all(t.dtype == torch.float64 for t in tensors(layer).values())
    x = torch.rand(shape, dtype=torch.float64)
    y = layer(x, torch.tensor([0, 3])) if name == "decoder" else layer(x)
    assert y.dtype == torch.float64 and torch.isfinite(y).all()
    # the same layer in float32, with the float64 layer's values: the same result to float32's
    # precision (the dtype changes the arithmetic, not the maths)
    single = build()
    single.load_state_dict({k: v.float() for k, v in tensors(layer).items()})
    y32 = single(x.float(), torch.tensor([0, 3])) if name == "decoder" else single(x.float())
    torch.testing.assert_close(y32, y.float(), rtol=1e-4, atol=1e-5)


def test_class_caps_float64_draws_the_float32_matrices():
    """ClassCaps draws ``torch.randn`` in float32 and copies: one seed gives the same matrices
    in either dtype (upcast), so a float64 check of a float32 run starts where it started."""
    torch.manual_seed(7)
    single = ClassCaps(12, 4, 5, 6)
    torch.manual_seed(7)
    double = ClassCaps(12, 4, 5, 6, dtype=torch.float64)
    assert double.weight.dtype == torch.float64
    assert torch.equal(double.weight, single.weight.double())


@pytest.mark.parametrize("name", ["class-sda", "conv-caps-3d", "caps-cell-3d", "capsule-block"])
def test_meta_build_materialised_and_reset_equals_direct(name):
    build = LAYERS[name][0]
    torch.manual_seed(3)
    direct = {k: v.clone() for k, v in tensors(build()).items()}
    layer = build(device="meta").to_empty(device="cpu")
    torch.manual_seed(3)
    layer.apply(lambda m: m.reset_parameters() if hasattr(m, "reset_parameters") else None)
    assert direct.keys() == tensors(layer).keys()
    for key, value in tensors(layer).items():
        assert torch.equal(value, direct[key]), key
