import math

import pytest
import torch

from capslab.ops import squash
from capslab.routing import (
    coupling_coefficients,
    dynamic_routing,
    scaled_distance_agreement,
    sda_inverse_temperature,
)


def test_softmax_runs_over_output_capsules():
    logits = torch.randn(2, 5, 3)
    c = coupling_coefficients(logits)
    assert torch.allclose(c.sum(dim=2), torch.ones(2, 5))  # each input distributes over outputs
    assert not torch.allclose(c.sum(dim=1), torch.ones(2, 3))


def test_one_iteration_is_uniform_average():
    u_hat = torch.randn(3, 6, 4, 5)
    v = dynamic_routing(u_hat, num_iterations=1)
    expected = squash(u_hat.sum(dim=1) / 4)  # c = 1/n_out for every pair
    assert torch.allclose(v, expected, atol=1e-6)


def test_routing_by_agreement_pinned_two_iterations():
    # two inputs, two outputs, 2-D; hand-computed reference in float64
    u_hat = torch.tensor([[[[1.0, 0.0], [0.0, 1.0]], [[1.0, 0.0], [0.0, -1.0]]]], dtype=torch.float64)
    v, c = dynamic_routing(u_hat, 2, return_couplings=True)
    s1 = u_hat.sum(1) / 2
    v1 = squash(s1)
    b = torch.einsum("bijd,bjd->bij", u_hat, v1)
    c_ref = torch.softmax(b, dim=2)
    v_ref = squash(torch.einsum("bij,bijd->bjd", c_ref, u_hat))
    assert torch.allclose(c, c_ref) and torch.allclose(v, v_ref)
    # output 0 gets agreement from both inputs: |v0| = squash(|(1,0)|) = 0.5 at it 1
    assert math.isclose(v1[0, 0].norm().item(), 0.5, rel_tol=1e-6)
    assert c[0, 0, 0] > 0.5 and c[0, 1, 0] > 0.5


def test_agreement_increases_coupling_to_agreeing_output():
    torch.manual_seed(0)
    target = torch.randn(8)
    u_hat = torch.randn(1, 20, 3, 8) * 0.1
    u_hat[:, :, 1] = target + 0.05 * torch.randn(20, 8)  # all inputs agree on output 1
    _, c = dynamic_routing(u_hat, 3, return_couplings=True)
    assert (c[0, :, 1] > 1 / 3).all()


def test_detached_intermediate_iterations_change_only_gradient_paths():
    u = torch.randn(2, 7, 3, 4, requires_grad=True)
    v_a = dynamic_routing(u, 3, detach_intermediate=True)
    v_b = dynamic_routing(u, 3, detach_intermediate=False)
    assert torch.allclose(v_a, v_b)
    g_a = torch.autograd.grad(v_a.sum(), u)[0]
    g_b = torch.autograd.grad(v_b.sum(), u)[0]
    assert not torch.allclose(g_a, g_b)


def test_routing_gradcheck():
    u = torch.randn(1, 4, 3, 2, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda x: dynamic_routing(x, 3, detach_intermediate=False), (u,))


def test_sda_inverse_temperature_sign_and_value():
    # k = 10, p = 0.9: numerator = ln(0.9*9) - ln(0.1) = ln(81)
    t = sda_inverse_temperature(torch.tensor(2.0), torch.tensor(1.0), 10, 0.9)
    assert math.isclose(t.item(), -math.log(81.0), rel_tol=1e-6)
    assert sda_inverse_temperature(torch.tensor(50.0), torch.tensor(25.0), 10).item() < 0


def test_sda_prefers_closest_output_and_clips_predictions():
    torch.manual_seed(1)
    u_hat = torch.randn(1, 16, 4, 6)
    u_hat[:, :, 2] = torch.ones(6) * 0.3 + 0.01 * torch.randn(16, 6)
    u_norm = torch.full((1, 16), 0.5)
    v = scaled_distance_agreement(u_hat, u_norm, num_iterations=3)
    assert v.shape == (1, 4, 6)
    assert v.norm(dim=-1).argmax().item() == 2
    # with zero-length inputs every prediction is clipped to zero -> zero outputs
    v0 = scaled_distance_agreement(u_hat, torch.zeros(1, 16), num_iterations=2)
    assert torch.allclose(v0, torch.zeros_like(v0), atol=1e-6)


# --- the SDA bias of the momentum paper's code --------------------------------------------------


def _unclipped(u_hat):
    """Input lengths above every prediction's, so SDA's clipping leaves ``u_hat`` unchanged."""
    return u_hat.norm(dim=-1).amax(dim=2) + 1.0


def test_sda_bias_shifts_s_by_exactly_the_bias():
    torch.manual_seed(0)
    u_hat = torch.randn(2, 5, 3, 4, dtype=torch.float64)
    bias = torch.randn(3, 4, dtype=torch.float64)
    u_norm = _unclipped(u_hat)
    v = scaled_distance_agreement(u_hat, u_norm, num_iterations=1, bias=bias)
    # one iteration: uniform couplings 1/3, so s_j = sum_i u_hat[j|i] / 3, then + bias_j
    assert torch.allclose(v, squash(u_hat.sum(dim=1) / 3 + bias), atol=1e-12)
    without = scaled_distance_agreement(u_hat, u_norm, num_iterations=1)
    assert not torch.allclose(v, without)
    # a zero bias is the plain routing, at every number of iterations
    for r in (1, 3):
        zero = scaled_distance_agreement(u_hat, u_norm, r, bias=torch.zeros(3, 4, dtype=torch.float64))
        assert torch.allclose(zero, scaled_distance_agreement(u_hat, u_norm, r), atol=1e-12)


def test_sda_bias_enters_every_iteration_hand_computed():
    """Two iterations by hand: the biased v_1 sets the distances that the couplings of
    iteration 2 come from, and the bias is added again before the last squash."""
    torch.manual_seed(1)
    u_hat = torch.randn(1, 6, 3, 2, dtype=torch.float64)
    bias = torch.tensor([[0.1, 0.1], [0.5, -0.2], [0.0, 0.3]], dtype=torch.float64)
    v = scaled_distance_agreement(u_hat, _unclipped(u_hat), num_iterations=2, bias=bias)
    v1 = squash(u_hat.sum(dim=1) / 3 + bias)  # iteration 1: uniform couplings
    d = (v1[:, None] - u_hat).norm(dim=-1)  # [1, 6, 3]
    d_o = d.mean()
    t = sda_inverse_temperature(d_o, d_o / 2, 3)
    c = torch.softmax(t * d, dim=2)
    want = squash(torch.einsum("bij,bijd->bjd", c, u_hat) + bias)
    assert torch.allclose(v, want, atol=1e-10)


def test_sda_bias_receives_gradients():
    torch.manual_seed(2)
    u_hat = torch.randn(2, 5, 3, 4, requires_grad=True)
    bias = torch.full((3, 4), 0.1, requires_grad=True)
    v = scaled_distance_agreement(u_hat, _unclipped(u_hat.detach()), num_iterations=3, bias=bias)
    (v * torch.randn_like(v)).sum().backward()
    assert bias.grad is not None and bias.grad.abs().sum() > 0
    assert u_hat.grad.abs().sum() > 0
    # gradcheck through all iterations (nothing detached)
    u64 = torch.randn(1, 4, 3, 2, dtype=torch.float64, requires_grad=True)
    b64 = torch.randn(3, 2, dtype=torch.float64, requires_grad=True)
    n64 = _unclipped(u64.detach())
    assert torch.autograd.gradcheck(
        lambda u, b: scaled_distance_agreement(u, n64, 2, detach_intermediate=False, bias=b), (u64, b64))


@pytest.mark.parametrize("iterations", [1, 2, 3])
@pytest.mark.parametrize("detach", [True, False])
def test_routing_from_poses_is_dynamic_routing_of_the_predictions(iterations, detach):
    from capslab.routing import dynamic_routing_from_poses

    torch.manual_seed(0)
    b, n_in, d_in, n_out, dim = 3, 20, 4, 5, 6
    u = torch.randn(b, n_in, d_in, dtype=torch.float64, requires_grad=True)
    w = (torch.randn(n_in, d_in, n_out * dim, dtype=torch.float64) * 0.3).requires_grad_()
    u_hat = torch.bmm(u.transpose(0, 1), w).transpose(0, 1).reshape(b, n_in, n_out, dim)
    v_ref = dynamic_routing(u_hat, iterations, detach_intermediate=detach)
    v = dynamic_routing_from_poses(u, w, n_out, iterations, detach_intermediate=detach)
    torch.testing.assert_close(v, v_ref, rtol=1e-12, atol=1e-12)
    g = torch.randn_like(v)
    for a, r in zip(torch.autograd.grad(v, (u, w), g), torch.autograd.grad(v_ref, (u, w), g),
                    strict=True):
        torch.testing.assert_close(a, r, rtol=1e-10, atol=1e-12)


def test_routing_from_poses_applies_the_coupling_hook_to_every_iteration():
    """Quantized routing (capslab.quantize) must see the first iteration's uniform couplings
    too: with 2 bits, 1/10 rounds to 0 and every output is zero in both forms."""
    from capslab.quantize import quantized_routing
    from capslab.routing import dynamic_routing_from_poses

    torch.manual_seed(1)
    u, w = torch.randn(2, 12, 4), torch.randn(12, 4, 10 * 3)
    u_hat = torch.bmm(u.transpose(0, 1), w).transpose(0, 1).reshape(2, 12, 10, 3)
    for bits in (2, 3, 8):
        with quantized_routing(bits):
            ref = dynamic_routing(u_hat, 3)
            got = dynamic_routing_from_poses(u, w, 10, 3)
        torch.testing.assert_close(got, ref, rtol=1e-5, atol=1e-6)
        assert (ref.abs().sum() == 0) == (bits == 2)


# --- the couplings each routing returns on request (capslab explain) ----------------------------


def test_sda_and_self_attention_return_the_couplings_of_their_output():
    """``return_couplings`` changes nothing of the output (bit for bit, float64), and the
    couplings give it back: SDA weights the clipped predictions and adds its bias;
    self-attention returns ``c_ij + b_ij``, the weights of its sum."""
    from capslab.ops import exp_squash
    from capslab.routing import clip_predictions, self_attention_routing

    torch.manual_seed(3)
    u_hat = torch.randn(2, 9, 4, 5, dtype=torch.float64)
    u_norm = torch.rand(2, 9, dtype=torch.float64) * 2  # some predictions clipped, some not
    bias = torch.randn(4, 5, dtype=torch.float64) * 0.1
    clipped = clip_predictions(u_hat, u_norm)
    assert (clipped.norm(dim=-1) <= u_norm[:, :, None] + 1e-12).all()
    assert torch.equal(clipped[u_hat.norm(dim=-1) <= u_norm[:, :, None]],
                       u_hat[u_hat.norm(dim=-1) <= u_norm[:, :, None]])
    for b in (None, bias):
        for r in (1, 3):
            v, c = scaled_distance_agreement(u_hat, u_norm, r, bias=b, return_couplings=True)
            assert torch.equal(v, scaled_distance_agreement(u_hat, u_norm, r, bias=b))
            torch.testing.assert_close(c.sum(dim=2), torch.ones(2, 9, dtype=torch.float64))
            s = torch.einsum("bij,bijd->bjd", c, clipped) + (0 if b is None else b)
            torch.testing.assert_close(squash(s), v, rtol=1e-12, atol=1e-12)
    log_prior = torch.randn(9, 4, dtype=torch.float64) * 0.1
    for b in (None, log_prior):
        v, c = self_attention_routing(u_hat, b, return_couplings=True)
        assert torch.equal(v, self_attention_routing(u_hat, b))
        softmax = c if b is None else c - b
        torch.testing.assert_close(softmax.sum(dim=2), torch.ones(2, 9, dtype=torch.float64))
        torch.testing.assert_close(exp_squash(torch.einsum("bij,bijd->bjd", c, u_hat)), v,
                                   rtol=1e-12, atol=1e-12)
    v, c = dynamic_routing(u_hat, 3, return_couplings=True)
    torch.testing.assert_close(squash(torch.einsum("bij,bijd->bjd", c, u_hat)), v,
                               rtol=1e-12, atol=1e-12)
