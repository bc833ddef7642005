"""Convolutional capsule layers and 3-D routing: shapes, hand-computed parameter counts,
the coupling axis, and equivalences that fail if the maths is wrong."""

from __future__ import annotations

import pytest
import torch

from capslab.layers.conv_caps import (
    CapsCell,
    ConvCaps2D,
    ConvCaps3D,
    FlatCaps,
    SameConv2d,
    same_output_size,
    same_padding,
)
from capslab.ops import safe_norm, squash
from capslab.routing import dynamic_routing, dynamic_routing_3d, grid_coupling_coefficients


def n_params(m: torch.nn.Module) -> int:
    return sum(p.numel() for p in m.parameters())


# --------------------------------------------------------------------------- padding
@pytest.mark.parametrize(
    ("size", "kernel", "stride", "pad", "out"),
    [
        (28, 3, 1, (1, 1), 28),
        (28, 3, 2, (0, 1), 14),  # TF "same": the odd pixel goes after
        (7, 3, 2, (1, 1), 4),
        (28, 9, 2, (3, 4), 14),
        (4, 4, 1, (1, 2), 4),  # even kernel
    ],
)
def test_same_padding_gives_ceil(size, kernel, stride, pad, out):
    assert same_padding(size, kernel, stride) == pad
    assert same_output_size(size, stride) == out
    conv = SameConv2d(1, 1, kernel, stride)
    assert conv(torch.zeros(1, 1, size, size)).shape[-1] == out


# --------------------------------------------------------------------------- ConvCaps2D
def test_convcaps2d_shape_params_and_squash():
    layer = ConvCaps2D(32, 4, 32, 8, kernel_size=3, stride=2)
    # weights 32*4 in-channels * 3*3 * 32*8 out-channels + 256 biases
    assert n_params(layer) == 32 * 4 * 9 * 256 + 256 == 295_168
    y = layer(torch.randn(2, 32, 4, 28, 28))
    assert y.shape == (2, 32, 8, 14, 14)
    assert (safe_norm(y, dim=2) < 1).all()


def test_convcaps2d_1x1_is_a_per_position_linear_map_then_squash():
    torch.manual_seed(0)
    layer = ConvCaps2D(3, 2, 4, 5, kernel_size=1, stride=1)
    x = torch.randn(2, 3, 2, 5, 6)
    w = layer.conv.weight[:, :, 0, 0]  # [T_out*D_out, T_in*D_in]
    flat = x.reshape(2, 6, 5, 6)  # channel t*D + d
    s = torch.einsum("oc,bcyx->boyx", w, flat) + layer.conv.bias[None, :, None, None]
    expected = squash(s.view(2, 4, 5, 5, 6), dim=2)
    torch.testing.assert_close(layer(x), expected)


def test_convcaps2d_with_routing_shapes_params_and_grouped_votes():
    torch.manual_seed(0)
    layer = ConvCaps2D(4, 3, 5, 6, kernel_size=3, stride=2, routing_iterations=3)
    # grouped conv: each of the 4 input types has its own 3 -> 5*6 kernel (3*9*30) + 4*30 biases
    assert n_params(layer) == 4 * 3 * 9 * 5 * 6 + 4 * 5 * 6 == 3_360
    x = torch.randn(2, 4, 3, 9, 9)
    votes = layer.votes(x)
    assert votes.shape == (2, 4, 5, 6, 5, 5)
    assert layer(x).shape == (2, 5, 6, 5, 5)
    # ConvCaps2D's routing keeps the per-position softmax (not DeepCaps' 3-D routing)
    torch.testing.assert_close(layer(x), dynamic_routing_3d(votes, 3, mode="types"))
    # votes of input type i depend only on type i's capsules
    x2 = x.clone()
    x2[:, 0] += 1.0
    v2 = layer.votes(x2)
    torch.testing.assert_close(v2[:, 1:], votes[:, 1:])
    assert not torch.allclose(v2[:, 0], votes[:, 0])


def test_convcaps_refuses_a_grid_of_the_wrong_shape():
    with pytest.raises(ValueError, match=r"ConvCaps2D expects a capsule grid \[B, 32, 4, H, W\]"):
        ConvCaps2D(32, 4, 8, 8)(torch.randn(1, 32, 8, 5, 5))


# --------------------------------------------------------------------------- 3-D routing
def test_dynamic_routing_3d_default_softmax_is_over_output_types_and_positions_jointly():
    """The default (DeepCaps' softmax_3D): each input type's couplings sum to 1 over output
    types x positions together, NOT to 1 at every position."""
    torch.manual_seed(0)
    b, n_in, n_out, d, h, w = 2, 6, 4, 5, 3, 3
    votes = 0.1 * torch.randn(b, n_in, n_out, d, h, w)
    votes[:, :, 0, :, 0, 0] += 1.0  # every input type predicts a long output 0 at (0, 0)
    v, c = dynamic_routing_3d(votes, 3, return_couplings=True)
    assert c.shape == (b, n_in, n_out, h, w)
    assert v.shape == (b, n_out, d, h, w)
    torch.testing.assert_close(c.sum(dim=(2, 3, 4)), torch.ones(b, n_in))
    # not per position: the total over types at one position is far from 1 (~1/9 before
    # routing, more at the agreeing position, less elsewhere)
    per_position = c.sum(dim=2)
    assert (per_position < 0.5).all()
    assert ((per_position - 1).abs() > 0.5).all()
    # agreement pulls coupling to output 0 at (0, 0) out of the whole grid
    assert (c[:, :, 0, 0, 0] > 1 / (n_out * h * w)).all()
    assert (c[:, :, 0, 0, 0] == c.flatten(2).max(dim=2).values).all()
    # the default is the joint mode, for the function and the layers built on it
    torch.testing.assert_close(v, dynamic_routing_3d(votes, 3, mode="types+positions"))
    logits = torch.randn(b, n_in, n_out, h, w)
    torch.testing.assert_close(
        grid_coupling_coefficients(logits), grid_coupling_coefficients(logits, "types+positions")
    )
    assert ConvCaps3D(4, 3, 6, 2).coupling == "types+positions"
    assert CapsCell(4, 2, 4, 3, stride=1, skip="3d").skip.coupling == "types+positions"


def test_dynamic_routing_3d_types_mode_softmax_is_over_output_types_per_position():
    torch.manual_seed(0)
    b, n_in, n_out, d, h, w = 2, 6, 4, 5, 3, 3
    votes = 0.1 * torch.randn(b, n_in, n_out, d, h, w)
    votes[:, :, 0] += 1.0  # every input type predicts a long output 0 everywhere
    v, c = dynamic_routing_3d(votes, 3, mode="types", return_couplings=True)
    assert c.shape == (b, n_in, n_out, h, w)
    torch.testing.assert_close(c.sum(dim=2), torch.ones(b, n_in, h, w))
    # not normalised over the inputs: 6 inputs each giving output 0 most of their coupling
    assert (c.sum(dim=1)[:, 0] > 1.5).all()
    assert (c[:, :, 0] > 1 / n_out).all()
    assert v.shape == (b, n_out, d, h, w)


def test_joint_coupling_mode_normalises_types_and_positions_together():
    logits = torch.randn(2, 3, 4, 2, 5)
    c = grid_coupling_coefficients(logits, "types+positions")
    torch.testing.assert_close(c.sum(dim=(2, 3, 4)), torch.ones(2, 3))
    torch.testing.assert_close(
        grid_coupling_coefficients(logits, "types").sum(dim=2), torch.ones(2, 3, 2, 5)
    )
    with pytest.raises(ValueError, match="coupling mode"):
        grid_coupling_coefficients(logits, "inputs")
    with pytest.raises(ValueError, match="coupling must be one of"):
        ConvCaps3D(4, 3, 6, 2, coupling="positions")


def test_dynamic_routing_3d_types_mode_equals_dynamic_routing_at_every_position():
    torch.manual_seed(1)
    b, n_in, n_out, d, h, w = 2, 5, 3, 4, 2, 3
    votes = torch.randn(b, n_in, n_out, d, h, w)
    v = dynamic_routing_3d(votes, 3, mode="types")
    # [B, n_in, n_out, D, H, W] -> [B*H*W, n_in, n_out, D]: independent routing problems
    flat = votes.permute(0, 4, 5, 1, 2, 3).reshape(b * h * w, n_in, n_out, d)
    ref = dynamic_routing(flat, 3).view(b, h, w, n_out, d).permute(0, 3, 4, 1, 2)
    torch.testing.assert_close(v, ref)


def test_dynamic_routing_3d_joint_mode_equals_dynamic_routing_over_types_x_positions():
    """The joint softmax is :func:`dynamic_routing` with one output capsule per (type, position):
    predictions ``[B, n_in, n_out * H * W, D]``."""
    torch.manual_seed(1)
    b, n_in, n_out, d, h, w = 2, 5, 3, 4, 2, 3
    votes = torch.randn(b, n_in, n_out, d, h, w)
    v = dynamic_routing_3d(votes, 3)
    flat = votes.permute(0, 1, 2, 4, 5, 3).reshape(b, n_in, n_out * h * w, d)
    ref = dynamic_routing(flat, 3).view(b, n_out, h, w, d).permute(0, 1, 4, 2, 3)
    torch.testing.assert_close(v, ref)


def test_dynamic_routing_3d_one_iteration_with_bias_is_uniform_average():
    torch.manual_seed(2)
    votes = torch.randn(1, 4, 2, 3, 2, 2)
    bias = torch.randn(2, 3)
    v = dynamic_routing_3d(votes, 1, bias)
    # joint default: c = 1 / (n_out H W) = 1/8
    expected = squash(votes.sum(dim=1) / 8 + bias[:, :, None, None], dim=2)
    torch.testing.assert_close(v, expected)
    v = dynamic_routing_3d(votes, 1, bias, mode="types")
    expected = squash(votes.sum(dim=1) / 2 + bias[:, :, None, None], dim=2)  # c = 1/n_out
    torch.testing.assert_close(v, expected)


@pytest.mark.parametrize("mode", ["types+positions", "types"])
def test_dynamic_routing_3d_gradcheck(mode):
    torch.manual_seed(3)
    votes = torch.randn(1, 3, 2, 2, 2, 2, dtype=torch.float64, requires_grad=True)
    bias = torch.randn(2, 2, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(
        lambda u, bb: dynamic_routing_3d(u, 3, bb, mode=mode, detach_intermediate=False),
        (votes, bias),
    )


def test_dynamic_routing_3d_rejects_bad_inputs():
    with pytest.raises(ValueError, match="num_iterations"):
        dynamic_routing_3d(torch.zeros(1, 2, 2, 2, 1, 1), 0)
    with pytest.raises(ValueError, match=r"\[B, n_in, n_out, D, H, W\]"):
        dynamic_routing_3d(torch.zeros(1, 2, 2, 2), 3)


# --------------------------------------------------------------------------- ConvCaps3D
def test_convcaps3d_shape_and_params():
    layer = ConvCaps3D(32, 8, 32, 8, kernel_size=3, stride=1)
    # one kernel (D_in=8) x 3 x 3 shared by all input types -> 32*8 outputs, + [32, 8] bias
    assert n_params(layer) == 8 * 3 * 3 * 32 * 8 + 32 * 8 == 18_688
    assert layer(torch.randn(2, 32, 8, 4, 4)).shape == (2, 32, 8, 4, 4)
    assert ConvCaps3D(6, 4, 5, 3, 3, stride=2)(torch.randn(1, 6, 4, 7, 7)).shape == (1, 5, 3, 4, 4)


def test_convcaps3d_votes_read_one_input_type_each_with_a_shared_kernel():
    """Depth stride D_in: votes of type i come only from type i's capsule, with the same
    kernel for every type; so permuting input types permutes the votes and leaves the routed
    output unchanged (routing is symmetric in its inputs)."""
    torch.manual_seed(4)
    layer = ConvCaps3D(5, 4, 3, 6, kernel_size=3)
    x = torch.randn(2, 5, 4, 6, 6)
    perm = torch.tensor([3, 0, 4, 1, 2])
    torch.testing.assert_close(layer.votes(x[:, perm]), layer.votes(x)[:, perm])
    torch.testing.assert_close(layer(x[:, perm]), layer(x), atol=1e-6, rtol=1e-5)
    # and the votes of type 0 equal a 2-D convolution of that type alone
    w = layer.conv.weight  # [T_out*D_out, 1, D_in, k, k]
    ref = torch.nn.functional.conv2d(x[:, 0], w[:, 0], padding=1)  # [B, T_out*D_out, H, W]
    torch.testing.assert_close(layer.votes(x)[:, 0], ref.view(2, 3, 6, 6, 6))


def test_convcaps3d_couplings_sum_to_one_over_output_types_and_positions():
    torch.manual_seed(5)
    x = torch.randn(2, 4, 3, 5, 5)
    layer = ConvCaps3D(4, 3, 6, 2)  # default coupling: DeepCaps' softmax_3D
    votes = layer.votes(x)
    v, c = dynamic_routing_3d(votes, 3, layer.bias, mode=layer.coupling, return_couplings=True)
    torch.testing.assert_close(layer(x), v)
    torch.testing.assert_close(c.sum(dim=(2, 3, 4)), torch.ones(2, 4))
    assert ((c.sum(dim=2) - 1).abs() > 0.5).all()  # not per position

    per_position = ConvCaps3D(4, 3, 6, 2, coupling="types")
    per_position.load_state_dict(layer.state_dict())
    v, c = dynamic_routing_3d(votes, 3, layer.bias, mode="types", return_couplings=True)
    torch.testing.assert_close(per_position(x), v)
    torch.testing.assert_close(c.sum(dim=2), torch.ones(2, 4, 5, 5))
    assert not torch.allclose(per_position(x), layer(x))


# --------------------------------------------------------------------------- FlatCaps, CapsCell
def test_flatcaps_is_type_major():
    x = torch.randn(2, 3, 4, 5, 6)
    y = FlatCaps()(x)
    assert y.shape == (2, 3 * 5 * 6, 4)
    t, yy, xx = 2, 3, 1
    torch.testing.assert_close(y[:, t * 30 + yy * 6 + xx], x[:, t, :, yy, xx])
    assert n_params(FlatCaps()) == 0


def test_capscell_shapes_params_and_wiring():
    torch.manual_seed(6)
    cell = CapsCell(32, 4, 32, 8, kernel_size=3, stride=2, skip="2d")
    # conv1: 128 -> 256 ch (128*9*256 + 256); conv2, conv3, skip: 256 -> 256 (256*9*256 + 256)
    assert n_params(cell) == 295_168 + 3 * 590_080 == 2_065_408
    x = torch.randn(2, 32, 4, 16, 16)
    y = cell(x)
    assert y.shape == (2, 32, 8, 8, 8)
    a = cell.conv1(x)  # the skip branch starts from the strided layer's output
    torch.testing.assert_close(y, cell.conv3(cell.conv2(a)) + cell.skip(a))

    cell3d = CapsCell(32, 8, 32, 8, kernel_size=3, stride=2, skip="3d")
    # conv1, conv2, conv3: 590,080 each; 3-D skip: 8*9*256 + 256
    assert n_params(cell3d) == 3 * 590_080 + 18_688 == 1_788_928
    assert cell3d(torch.randn(2, 32, 8, 8, 8)).shape == (2, 32, 8, 4, 4)


def test_capscell_squash_sum_option():
    torch.manual_seed(7)
    x = torch.randn(2, 4, 2, 6, 6) * 5
    plain = CapsCell(4, 2, 4, 3, stride=1)
    squashed = CapsCell(4, 2, 4, 3, stride=1, squash_sum=True)
    squashed.load_state_dict(plain.state_dict())
    y = plain(x)
    torch.testing.assert_close(squashed(x), squash(y, dim=2))
    assert (safe_norm(squashed(x), dim=2) < 1).all()
    with pytest.raises(ValueError, match="skip"):
        CapsCell(4, 2, 4, 3, skip="4d")


def test_capsule_lengths_survive_a_deep_stack_at_initialisation():
    """With the default init (gain 3) the length map L -> squash(3 L) has a fixed point near
    0.87, so 10 stacked layers neither vanish nor saturate; PyTorch's default init would shrink
    lengths to ~0 (each squash roughly squares a small length)."""
    torch.manual_seed(8)
    x = squash(torch.randn(4, 16, 8, 12, 12), dim=2)
    lengths = []
    for _ in range(10):
        x = ConvCaps2D(16, 8, 16, 8, kernel_size=3)(x)
        lengths.append(safe_norm(x, dim=2).mean().item())
    assert all(0.6 < v < 0.97 for v in lengths), lengths
    shrunk = squash(torch.randn(4, 16, 8, 12, 12), dim=2)
    for _ in range(4):
        layer = ConvCaps2D(16, 8, 16, 8, kernel_size=3)
        layer.conv.reset_parameters()  # torch's default initialisation, for contrast
        shrunk = layer(shrunk)
    assert safe_norm(shrunk, dim=2).mean() < 0.1
