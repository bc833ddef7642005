import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from capslab.ops import (
    capsule_lengths,
    conv2d_as_gemm,
    image_patches,
    mask_capsules,
    matmul_t,
    safe_norm,
    selected_capsule,
    squash,
    sum_patches,
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


@pytest.mark.parametrize("batch", [1, 5, 9])
def test_primary_caps_small_batch_gemm_path_is_the_convolution(batch, monkeypatch):
    from capslab.layers import PrimaryCaps, primary_caps

    torch.manual_seed(0)
    layer = PrimaryCaps(16, 4, 8, 9, 2)
    x = torch.randn(batch, 16, 20, 20, requires_grad=True)
    assert primary_caps.gemm_max_batch(True) == 8 and primary_caps.gemm_max_batch(False) == 4
    got = layer(x)  # GEMMs up to batch 8 with gradients
    got_grads = torch.autograd.grad(got.square().sum(), (x, layer.conv.weight))
    with torch.no_grad():
        got_eval = layer(x)  # GEMMs up to batch 4 without
    monkeypatch.setattr(primary_caps, "GEMM_MAX_TRAIN_BATCH", 0)
    monkeypatch.setattr(primary_caps, "GEMM_MAX_EVAL_BATCH", 0)
    want = layer(x)  # the convolution
    want_grads = torch.autograd.grad(want.square().sum(), (x, layer.conv.weight))
    torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(got_eval, want.detach(), rtol=1e-4, atol=1e-5)
    for a, e in zip(got_grads, want_grads, strict=True):
        torch.testing.assert_close(a, e, rtol=1e-4, atol=1e-5)


def test_matmul_t_is_a_times_b_transposed_on_every_path():
    torch.manual_seed(0)
    a, b, bias = torch.randn(5, 7), torch.randn(3, 7), torch.randn(3)
    want = a @ b.t() + bias
    torch.testing.assert_close(matmul_t(a, b, bias), want)  # oneDNN where the build has it
    ad, bd, biasd = a.double(), b.double(), bias.double()  # a float64 reference for float64
    torch.testing.assert_close(matmul_t(ad, bd, biasd), ad @ bd.t() + biasd)
    # transposed views, as the convolution's backward passes them, without copies
    at, bt = a.t().contiguous().t(), b.t().contiguous().t()
    torch.testing.assert_close(matmul_t(at, bt), a @ b.t())
    assert matmul_t(a[:0], b).shape == (0, 3)


@pytest.mark.parametrize("size,k,stride", [((13, 13), 4, 1), ((20, 20), 9, 2), ((11, 17), 3, 3)])
def test_image_patches_and_their_sum_are_unfold_and_fold(size, k, stride):
    torch.manual_seed(0)
    x = torch.randn(2, 3, *size)
    patches = image_patches(x, k, stride)  # [B*L, C*k*k]
    want = torch.nn.functional.unfold(x, k, stride=stride)  # [B, C*k*k, L]
    torch.testing.assert_close(patches, want.transpose(1, 2).reshape(-1, want.shape[1]))
    d = torch.randn_like(patches)
    folded = torch.nn.functional.fold(d.view(2, -1, d.shape[1]).transpose(1, 2), size, k, stride=stride)
    torch.testing.assert_close(sum_patches(d, 2, size, k, stride), folded)
    # adjoint: <patches(x), d> == <x, sum(d)>
    torch.testing.assert_close((patches * d).sum(), (x * sum_patches(d, 2, size, k, stride)).sum())


def test_conv2d_as_gemm_in_float32_matches_the_convolution_and_is_once_differentiable():
    torch.manual_seed(0)
    x = torch.randn(1, 32, 20, 20, requires_grad=True)
    w = torch.randn(16, 32, 9, 9, requires_grad=True)
    b = torch.randn(16, requires_grad=True)
    y = conv2d_as_gemm(x, w, b, 2)
    ref = torch.nn.functional.conv2d(x, w, b, 2)
    torch.testing.assert_close(y, ref, rtol=1e-4, atol=1e-4)
    g = torch.randn_like(ref)
    for a, e in zip(torch.autograd.grad(y, (x, w, b), g), torch.autograd.grad(ref, (x, w, b), g),
                    strict=True):
        torch.testing.assert_close(a, e, rtol=1e-4, atol=1e-3)
    gx, = torch.autograd.grad(conv2d_as_gemm(x, w, b, 2).square().sum(), x, create_graph=True)
    with pytest.raises(RuntimeError, match="twice"):
        gx.sum().backward()


def test_conv2d_as_gemm_output_can_be_changed_in_place():
    torch.manual_seed(0)
    x = torch.randn(2, 3, 8, 8, requires_grad=True)
    w = torch.randn(4, 3, 3, 3, requires_grad=True)
    y = conv2d_as_gemm(x, w, None, 1).relu_()  # as a ReLU(inplace=True) after it does
    ref = torch.nn.functional.conv2d(x, w).relu()
    torch.testing.assert_close(y, ref)
    got = torch.autograd.grad(y.sum(), (x, w))
    want = torch.autograd.grad(ref.sum(), (x, w))
    for a, e in zip(got, want, strict=True):
        torch.testing.assert_close(a, e)


def test_conv2d_as_gemm_under_bf16_autocast_computes_in_bf16_and_returns_float32_gradients():
    torch.manual_seed(0)
    x = torch.randn(1, 8, 12, 12, requires_grad=True)
    w = (0.1 * torch.randn(6, 8, 5, 5)).requires_grad_()
    b = torch.randn(6, requires_grad=True)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        y = conv2d_as_gemm(x, w, b, 2)
        ref = torch.nn.functional.conv2d(x, w, b, 2)  # what autocast makes of the convolution
    assert y.dtype == ref.dtype == torch.bfloat16
    torch.testing.assert_close(y.float(), ref.float(), rtol=2e-2, atol=2e-2)
    g = torch.randn_like(ref)
    got = torch.autograd.grad(y, (x, w, b), g)  # the backward runs outside autocast
    want = torch.autograd.grad(ref, (x, w, b), g)
    for a, e, p in zip(got, want, (x, w, b), strict=True):
        assert a.dtype == p.dtype == torch.float32
        torch.testing.assert_close(a, e, rtol=3e-2, atol=5e-2)


def test_matmul_t_leaves_onednn_out_of_compiled_graphs(monkeypatch):
    # inductor cannot lower oneDNN's op on plain weights (a compiled batch-1 CapsNet failed
    # with a LoweringException), so a graph being compiled gets the plain product
    calls = []
    real = torch.ops.mkldnn._linear_pointwise
    monkeypatch.setattr(torch.ops.mkldnn, "_linear_pointwise", lambda *a: calls.append(1) or real(*a))
    a, b = torch.randn(3, 4), torch.randn(2, 4)
    matmul_t(a, b)
    assert calls == ([1] if torch.backends.mkldnn.is_available() else [])
    monkeypatch.setattr(torch.compiler, "is_compiling", lambda: True)
    torch.testing.assert_close(matmul_t(a, b), a @ b.t())
    assert len(calls) <= 1
