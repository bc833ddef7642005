import math

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
