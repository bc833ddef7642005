"""DeepCaps: layer shapes and hand-computed parameter counts for MNIST and CIFAR sizes, with and
without the 2x resize; a forward/backward pass with finite gradients; the skip and resize
options (the genotype's meaning) and their errors."""

from __future__ import annotations

import pytest
import torch

from capslab.errors import ConfigError
from capslab.losses import capsule_loss
from capslab.models import create_model
from capslab.models.deepcaps import DeepCaps
from capslab.models.summary import describe_layers


def n_params(m: torch.nn.Module) -> int:
    return sum(p.numel() for p in m.parameters())


# Cells shared by every configuration (32 types, capsule dims 4, 8, 8, 8, kernel 3):
CELL1 = 4 * (128 * 9 * 128 + 128)  # 4 ConvCaps2D 128 -> 128 ch: 590,336
CELL2 = (128 * 9 * 256 + 256) + 3 * (256 * 9 * 256 + 256)  # 128 -> 256, then 3 x 256 -> 256
CELL3 = 4 * (256 * 9 * 256 + 256)  # 2,360,320
CELL4 = 3 * (256 * 9 * 256 + 256) + (8 * 9 * 256 + 256)  # + ConvCaps3D: 1,788,928


def decoder_params(pixels: int) -> int:
    return (160 * 512 + 512) + (512 * 1024 + 1024) + (1024 * pixels + pixels)


@pytest.mark.parametrize(
    ("channels", "size", "resize", "grids", "class_inputs"),
    [
        # 28 -> 14 -> 7 -> 4 -> 2; class caps read cell 4 (2x2x32) and cell 3 (4x4x32)
        (1, 28, 1, (14, 7, 4, 2), 32 * (4 + 16)),
        (3, 32, 1, (16, 8, 4, 2), 32 * (4 + 16)),
        # 56 -> 28 -> 14 -> 7 -> 4: 4x4x32 + 7x7x32
        (1, 28, 2, (28, 14, 7, 4), 32 * (16 + 49)),
        # the published DeepCaps genotype: 64 -> 32 -> 16 -> 8 -> 4, 512 + 2,048 = 2,560 capsules
        (3, 32, 2, (32, 16, 8, 4), 32 * (16 + 64)),
    ],
)
def test_deepcaps_shapes_and_parameter_counts(channels, size, resize, grids, class_inputs):
    model = DeepCaps(in_channels=channels, image_size=size, resize=resize)
    stem = channels * 9 * 128 + 128 + 2 * 128  # conv 3x3 + BatchNorm (weight, bias)
    class_caps = class_inputs * 8 * 10 * 16  # one 16x8 matrix per (input capsule, class)
    decoder = decoder_params(channels * size * size)
    assert n_params(model.stem) == stem
    assert [n_params(c) for c in model.cells] == [590_336, 2_065_408, 2_360_320, 1_788_928]
    assert [n_params(c) for c in model.cells] == [CELL1, CELL2, CELL3, CELL4]
    assert n_params(model.class_caps) == class_caps
    assert n_params(model) == stem + CELL1 + CELL2 + CELL3 + CELL4 + class_caps + decoder

    rows = {r["name"]: r for r in describe_layers(model, (channels, size, size))}
    s = size * resize
    assert rows["stem"]["output_shape"] == (128, s, s)
    dims = (4, 8, 8, 8)
    for i, (g, d) in enumerate(zip(grids, dims, strict=True)):
        assert rows[f"cells.{i}"]["output_shape"] == (32, d, g, g)
    assert rows["class_caps"]["output_shape"] == (10, 16)
    assert rows["decoder"]["output_shape"] == (channels, size, size)


def test_deepcaps_totals_pinned():
    # 1,536 + 590,336 + 2,065,408 + 2,360,320 + 1,788,928 + 819,200 + 1,411,344
    assert n_params(DeepCaps()) == 9_037_072
    # 3,840 + the four cells (6,804,992) + 3,276,800 + 3,756,544
    assert n_params(DeepCaps(in_channels=3, image_size=32, resize=2)) == 13_842_176


@pytest.mark.parametrize(("channels", "size", "resize"), [(1, 28, 1), (3, 32, 2)])
def test_deepcaps_forward_backward_finite(channels, size, resize):
    torch.manual_seed(0)
    model = create_model("deepcaps", in_channels=channels, image_size=size, num_classes=10,
                         resize=resize)
    x = torch.rand(2, channels, size, size)
    y = torch.tensor([3, 7])
    out = model(x, y)
    assert out.caps.shape == (2, 10, 16)
    assert out.lengths.shape == (2, 10)
    assert ((out.lengths > 0) & (out.lengths < 1)).all()
    assert out.reconstruction.shape == (2, channels, size, size)
    loss, _, _ = capsule_loss(out.lengths, y, out.reconstruction, x)
    loss.backward()
    grads = [p.grad for p in model.parameters() if p.requires_grad]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)
    # the 3-D routing skip of the last cell and the first convolution both get gradient
    assert model.cells[-1].skip.conv.weight.grad.abs().sum() > 0
    assert model.stem[0].weight.grad.abs().sum() > 0


def test_deepcaps_options():
    no_skip = DeepCaps(skip=-1, decoder=False)
    assert n_params(no_skip.class_caps) == 32 * 2 * 2 * 8 * 160  # only the last cell's 2x2 grid
    assert no_skip.decoder is None and no_skip.skip_layer is None
    # skip = s feeds layer index s - 1: with three cells (layers 1-3), skip 3 is the second cell
    short = DeepCaps(capsule_dims=(4, 8, 8), skip=3, class_dim=8, num_classes=5)
    assert short.skip_layer == 2
    assert n_params(short.class_caps) == 32 * (4 * 4 + 7 * 7) * 8 * 5 * 8  # 28 -> 14 -> 7 -> 4
    out = short(torch.rand(2, 1, 28, 28))
    assert out.caps.shape == (2, 5, 8)


@pytest.mark.parametrize(
    ("options", "message"),
    [
        # the last cell (layer 4), the final stage, a conv, the old "none" and 1-based cell counts
        ({"skip": 5}, r"skip must be one of -1, 2, 3, 4 .*got 5"),
        ({"skip": 6}, r"skip must be one of -1, 2, 3, 4 .*got 6"),
        ({"skip": 1}, r"skip must be one of -1, 2, 3, 4 .*got 1"),
        ({"skip": 0}, r"skip must be one of -1, 2, 3, 4 .*got 0"),
        ({"skip": True}, r"skip must be one of"),
        ({"capsule_dims": (4, 8, 8), "skip": 4}, r"skip must be one of -1, 2, 3 .*got 4"),
        ({"skip": 2}, r"skip 2 points at cell 1, which has 4-D capsules but the last cell has 8-D"),
        ({"resize": 3}, r"resize must be 1 or 2, got 3"),
        ({"resize": 0}, r"resize must be 1 or 2, got 0"),
        ({"resize": True}, r"resize must be 1 or 2, got True"),
        ({"resize": 2.0}, r"resize must be 1 or 2, got 2.0"),
        ({"capsule_dims": ()}, r"capsule_dims must name at least one cell"),
    ],
)
def test_deepcaps_option_errors(options, message):
    with pytest.raises(ConfigError, match=message):
        DeepCaps(**options)


def test_deepcaps_unknown_option():
    with pytest.raises(ConfigError, match="no option"):
        create_model("deepcaps", resise=2)
    with pytest.raises(ConfigError, match=r"no option\(s\) skip_cell"):
        create_model("deepcaps", skip_cell=3)
