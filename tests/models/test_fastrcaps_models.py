"""FasTrCaps' model options: weight sharing by capsule type in ClassCaps and the small decoder."""

from __future__ import annotations

import pytest
import torch

from capslab.layers import ClassCaps, PrimaryCaps
from capslab.layers.decoder import CapsuleDecoder
from capslab.models import create_model
from capslab.ops import squash


def n_params(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


@pytest.mark.parametrize(
    "options, expected",
    [
        ({}, 8_215_568),
        ({"weight_sharing": True}, 6_781_968),
        ({"small_decoder": True}, 8_141_840),
        ({"weight_sharing": True, "small_decoder": True}, 6_708_240),
    ],
)
def test_parameter_counts(options, expected):
    assert n_params(create_model("capsnet", **options)) == expected


def test_parameter_reductions_match_the_paper():
    base, both = 8_215_568, 6_708_240
    # 1,152 matrices of 8x160 become 32: 1,120 * 1,280 weights fewer
    assert 8_215_568 - 6_781_968 == (1152 - 32) * 8 * 160
    # the small decoder reads 16 values instead of 160: (160 - 16) * 512 weights fewer
    assert 8_215_568 - 8_141_840 == (160 - 16) * 512
    # the paper: about 8.2 M -> 6.7 M, "more than 15%" fewer
    assert 0.18 < 1 - both / base < 0.19


def test_shapes_with_weight_sharing():
    model = create_model("capsnet", weight_sharing=True, small_decoder=True)
    assert tuple(model.class_caps.weight.shape) == (32, 8, 10 * 16)
    x = torch.rand(3, 1, 28, 28)
    out = model(x, torch.tensor([0, 4, 9]))
    assert out.caps.shape == (3, 10, 16)
    assert out.lengths.shape == (3, 10)
    assert out.reconstruction.shape == (3, 1, 28, 28)
    assert bool(((out.lengths >= 0) & (out.lengths < 1)).all())
    # 32x32 colour images: 8x8 grid, 2,048 capsules still share 32 matrices
    model = create_model(
        "capsnet", in_channels=3, image_size=32, weight_sharing=True, conv_channels=16
    )
    assert model.class_caps.num_in == 2048
    assert tuple(model.class_caps.weight.shape) == (32, 8, 160)
    out = model(torch.rand(2, 3, 32, 32))
    assert out.caps.shape == (2, 10, 16) and out.reconstruction.shape == (2, 3, 32, 32)
    out.lengths.sum().backward()
    assert model.class_caps.weight.grad is not None
    assert model.class_caps.weight.grad.abs().sum() > 0


def test_class_caps_shares_by_type_not_index_modulo():
    types, positions, d_in, n_out, d_out = 4, 9, 8, 3, 5
    layer = ClassCaps(types * positions, d_in, n_out, d_out, share_types=types)
    with torch.no_grad():
        for t in range(types):  # a distinct constant matrix per type
            layer.weight[t].fill_(t + 1.0)
    u = torch.ones(2, types * positions, d_in)
    u_hat = layer.predictions(u)  # [B, n_in, n_out, d_out]
    assert u_hat.shape == (2, types * positions, n_out, d_out)
    for i in range(types * positions):
        t = i // positions  # type-major: capsule i has type i // positions
        assert torch.all(u_hat[:, i] == (t + 1.0) * d_in), f"capsule {i} did not use type {t}'s matrix"
    # index-modulo grouping (the authors' bug) would give capsule 1 the matrix of type 1
    assert torch.all(u_hat[:, 1] == 1.0 * d_in)

    # random inputs and matrices: the same as an explicit loop over capsules
    layer.weight.data.normal_()
    u = torch.randn(2, types * positions, d_in)
    expected = torch.stack(
        [u[:, i] @ layer.weight[i // positions] for i in range(types * positions)], dim=1
    ).view(2, types * positions, n_out, d_out)
    torch.testing.assert_close(layer.predictions(u), expected)


def test_capsnet_sharing_groups_the_grid_positions_of_one_primary_type():
    """End to end: PrimaryCaps' capsules of type t (its channels t*8..t*8+7) meet matrix t."""
    types, dim = 4, 8
    model = create_model(
        "capsnet", conv_channels=4, primary_types=types, weight_sharing=True, normalization="none"
    )
    primary: PrimaryCaps = model.primary
    with torch.no_grad():
        primary.conv.weight.zero_()
        bias = torch.zeros(types, dim)
        for t in range(types):
            bias[t, t] = 2.0 * (t + 1)  # type t's capsules point along axis t
        primary.conv.bias.copy_(bias.flatten())
        for t in range(types):
            model.class_caps.weight[t].fill_(10.0 * (t + 1))
    x = torch.rand(2, 1, 28, 28)
    u = model.primary(model.conv(model.input_norm(x)))  # [B, 4 * 36, 8]
    grid = 36
    assert u.shape == (2, types * grid, dim)
    u_hat = model.class_caps.predictions(u)
    for i in range(types * grid):
        t = i // grid
        torch.testing.assert_close(u[:, i], squash(bias[t]).expand(2, dim))
        # the one non-zero component of a type-t capsule times the type-t matrix
        value = squash(bias[t])[t] * 10.0 * (t + 1)
        torch.testing.assert_close(u_hat[:, i], torch.full_like(u_hat[:, i], float(value)))


def test_small_decoder_reads_only_the_selected_capsule():
    torch.manual_seed(0)
    dec = CapsuleDecoder(10, 16, (1, 28, 28), small=True)
    assert dec.net[0].in_features == 16
    v = torch.randn(4, 10, 16) * 0.2
    target = torch.tensor([1, 3, 5, 7])
    w = v.clone()
    w[:, 0] += 5.0  # change (and lengthen) a capsule that is not the target
    w[:, 0] = torch.where(target.view(-1, 1) == 0, v[:, 0], w[:, 0])
    torch.testing.assert_close(dec(v, target), dec(w, target))
    # at test time (no target) the longest capsule is decoded
    w = v.clone()
    w[:, 6] *= 50
    torch.testing.assert_close(dec(w), dec.net(w[:, 6]).view(4, 1, 28, 28))
