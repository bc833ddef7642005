import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from capslab.ops import (
    capsule_lengths,
    conv2d_as_gemm,
    mask_capsules,
    safe_norm,
    selected_capsule,
    squash,
)


def test_squash_pinned_values():
    s = torch.tensor([[3.0, 4.0]])  # |s| = 5 -> length 25/26, direction kept
    v = squash(s)
    assert torch.allclose(v, torch.tensor([[3.0, 4.0]]) / 5 * 25 / 26, atol=1e-6)
    assert torch.allclose(squash(torch.tensor([[1.0, 0.0]])), torch.tensor([[0.5, 0.0]]), atol=1e-6)


@settings(max_examples=50, deadline=None)
@given(st.lists(st.floats(-50, 50), min_size=2, max_size=16))
def test_squash_length_below_one_and_direction_kept(values):
    s = torch.tensor(values, dtype=torch.float64).unsqueeze(0)
    v = squash(s)
    n = s.norm()
    assert v.norm() < 1.0
    assert torch.allclose(v.norm(), n**2 / (1 + n**2), atol=1e-6)
    if n > 1e-3:
        assert torch.allclose(v / v.norm(), s / n, atol=1e-6)


def test_squash_dim_argument_and_zero_vector_gradient():
    s = torch.zeros(2, 8, 3, requires_grad=True)
    v = squash(s, dim=1)
    v.sum().backward()
    assert torch.isfinite(s.grad).all()
    x = torch.randn(4, 5, 6)
    assert torch.allclose(squash(x, dim=1), squash(x.transpose(1, 2), dim=-1).transpose(1, 2))


def test_safe_norm_zero_has_finite_gradient():
    x = torch.zeros(3, 4, requires_grad=True)
    safe_norm(x).sum().backward()
    assert torch.isfinite(x.grad).all()


def test_masking_and_selection():
    v = torch.zeros(2, 3, 2)
    v[0, 1] = torch.tensor([0.6, 0.0])
    v[0, 2] = torch.tensor([0.1, 0.0])
    v[1, 0] = torch.tensor([0.0, 0.3])
    assert capsule_lengths(v).argmax(1).tolist() == [1, 0]
    m = mask_capsules(v)  # longest capsule kept
    assert torch.equal(m[0, 1], v[0, 1]) and m[0, 2].abs().sum() == 0
    m = mask_capsules(v, torch.tensor([2, 2]))
    assert torch.equal(m[0, 2], v[0, 2]) and m[0, 1].abs().sum() == 0
    assert torch.equal(selected_capsule(v, torch.tensor([2, 0])), torch.stack([v[0, 2], v[1, 0]]))


@pytest.mark.parametrize("stride,batch", [(1, 1), (2, 1), (2, 3)])
def test_conv2d_as_gemm_matches_conv2d_values_and_gradients(stride, batch):
    torch.manual_seed(0)
    x = torch.randn(batch, 5, 13, 13, dtype=torch.float64, requires_grad=True)
    w = torch.randn(7, 5, 4, 4, dtype=torch.float64, requires_grad=True)
    b = torch.randn(7, dtype=torch.float64, requires_grad=True)
    y = conv2d_as_gemm(x, w, b, stride)
    ref = torch.nn.functional.conv2d(x, w, b, stride)
    assert y.shape == ref.shape
    torch.testing.assert_close(y, ref)
    g = torch.randn_like(ref)
    got = torch.autograd.grad(y, (x, w, b), g)
    want = torch.autograd.grad(ref, (x, w, b), g)
    for a, e in zip(got, want, strict=True):
        torch.testing.assert_close(a, e)


def test_primary_caps_batch_one_path_is_the_convolution():
    from capslab.layers import PrimaryCaps

    torch.manual_seed(0)
    layer = PrimaryCaps(16, 4, 8, 9, 2)
    x = torch.randn(1, 16, 20, 20)
    gemm = layer(x)  # batch 1 with gradients: the GEMM form
    with torch.no_grad():
        conv = layer(x)  # without gradients: the convolution
    torch.testing.assert_close(gemm, conv, rtol=1e-4, atol=1e-5)
