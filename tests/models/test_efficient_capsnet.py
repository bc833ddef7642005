"""Efficient-CapsNet: exp squash, self-attention routing (float64 against an independent
reference), depthwise primary capsules, the paper's parameter count, real learning."""

import math

import pytest
import torch
from helpers import fit_and_score, mnist_subsets

from capslab.data import BatchLoader
from capslab.layers import ClassCaps, DepthwisePrimaryCaps
from capslab.models import create_model
from capslab.ops import exp_squash
from capslab.routing import self_attention_routing


def reference_self_attention(u_hat, bias):
    """Mazzia et al.'s equations taken literally, one output at a time, in float64: the
    n_in x n_in attention matrix of each output, its row sums, a softmax over the outputs."""
    b, n_in, n_out, d = u_hat.shape
    logits = torch.empty(b, n_in, n_out, dtype=torch.float64)
    for j in range(n_out):
        u_j = u_hat[:, :, j, :]  # [B, n_in, D]
        a_j = u_j @ u_j.transpose(1, 2) / math.sqrt(d)  # [B, n_in, n_in]
        logits[:, :, j] = a_j.sum(dim=2)
    c = torch.exp(logits) / torch.exp(logits).sum(dim=2, keepdim=True)
    s = torch.zeros(b, n_out, d, dtype=torch.float64)
    for i in range(n_in):
        for j in range(n_out):
            s[:, j] += (c[:, i, j] + bias[i, j])[:, None] * u_hat[:, i, j]
    norm = s.norm(dim=-1, keepdim=True)
    return (1 - torch.exp(-norm)) * s / norm


def test_self_attention_routing_matches_the_papers_equations_in_float64():
    torch.manual_seed(0)
    u_hat = torch.randn(3, 7, 4, 5, dtype=torch.float64)
    bias = 0.1 * torch.randn(7, 4, dtype=torch.float64)
    got = self_attention_routing(u_hat, bias)
    # the only difference: CapsLab's norms hold eps = 1e-8 under the square root (a finite
    # gradient at zero), a relative 1e-8 at these lengths
    tol = {"rtol": 1e-7, "atol": 1e-9}
    torch.testing.assert_close(got, reference_self_attention(u_hat, bias), **tol)
    torch.testing.assert_close(self_attention_routing(u_hat),
                               reference_self_attention(u_hat, torch.zeros(7, 4, dtype=torch.float64)),
                               **tol)


def test_self_attention_routing_gradcheck():
    torch.manual_seed(1)
    u_hat = torch.randn(2, 4, 3, 3, dtype=torch.float64, requires_grad=True)
    bias = torch.randn(4, 3, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(self_attention_routing, (u_hat, bias))


def test_self_attention_couples_more_to_the_output_the_inputs_agree_on():
    # inputs 0-2 agree on output 0; on output 1 they point every way
    u_hat = torch.zeros(1, 3, 2, 2, dtype=torch.float64)
    u_hat[0, :, 0] = torch.tensor([1.0, 0.0])
    u_hat[0, :, 1] = torch.tensor([[1.0, 0.0], [-1.0, 0.0], [0.0, 1.0]])
    v = self_attention_routing(u_hat)
    assert v[0, 0].norm() > v[0, 1].norm()


def test_exp_squash_lengths_and_direction():
    s = torch.tensor([[3.0, 4.0], [0.0, 0.0], [1e-2, 0.0]], dtype=torch.float64)
    v = exp_squash(s)
    assert math.isclose(v[0].norm().item(), 1 - math.exp(-5), rel_tol=1e-9)
    torch.testing.assert_close(v[0] / v[0].norm(), s[0] / 5)
    assert torch.all(torch.isfinite(v)) and v[1].abs().max() == 0
    assert math.isclose(v[2].norm().item(), 1 - math.exp(-1e-2), rel_tol=1e-3)  # slope 1 at 0


def test_depthwise_primary_capsules_read_channel_groups():
    layer = DepthwisePrimaryCaps(channels=16, capsule_dim=4, kernel_size=3)
    assert sum(p.numel() for p in layer.parameters()) == 16 * (9 + 1)
    x = torch.randn(2, 16, 3, 3)
    caps = layer(x)
    assert caps.shape == (2, 4, 4)
    raw = layer.conv(x).view(2, 4, 4)  # 1x1 grid: capsule n = channels 4n .. 4n+3
    torch.testing.assert_close(caps, exp_squash(raw))


def test_efficient_capsnet_has_the_papers_parameter_count():
    model = create_model("efficient-capsnet", decoder=False)
    assert sum(p.numel() for p in model.parameters() if p.requires_grad) == 161_824
    counts = {name: p.numel() for name, p in model.named_parameters()}
    assert counts["class_caps.weight"] == 16 * 8 * 10 * 16
    assert counts["class_caps.routing_bias"] == 16 * 10
    assert counts["primary.conv.weight"] == 128 * 81
    out = create_model("efficient-capsnet", in_channels=3, image_size=32)(torch.rand(2, 3, 32, 32))
    assert out.caps.shape == (2, 10, 16) and out.reconstruction.shape == (2, 3, 32, 32)


def test_class_caps_refuses_an_unknown_routing():
    from capslab.errors import ConfigError

    with pytest.raises(ConfigError, match="self-attention"):
        ClassCaps(4, 2, 3, 2, routing="attention")


@pytest.mark.slow
def test_efficient_capsnet_learns_mnist(mnist_root):
    torch.manual_seed(0)
    train, test = mnist_subsets(2000, 500, mnist_root)
    model = create_model("efficient-capsnet")
    loader = BatchLoader(train, 32, shuffle=True, augment=False, seed=0)

    def batches(epoch):
        loader.set_epoch(epoch)
        return loader

    accuracy = fit_and_score(model, batches, test, epochs=2, lr=2e-3)
    assert accuracy > 0.85  # chance is 0.1


def test_self_attention_routing_in_capsnet_and_reversible_momentum_blocks():
    """A routing choice of every capsule layer: CapsNet takes it, and MoCapsNet's reversible
    backward gives plain autograd's gradients through self-attention layers too."""
    from capslab.layers.momentum import MomentumCapsuleStack, make_blocks

    net = create_model("capsnet", routing="self-attention", conv_channels=8, primary_types=2)
    assert net.class_caps.routing_bias.shape == (2 * 6 * 6, 10)
    torch.manual_seed(0)
    blocks = make_blocks(2, 8, 4, "self-attention", 1)
    x = 0.5 * torch.randn(5, 8, 4)
    weight = torch.randn(5, 8, 4)
    grads = {}
    for lean in (True, False):
        stack = MomentumCapsuleStack(blocks, 0.9, memory_efficient=lean)
        xi = x.clone().requires_grad_(True)
        (stack(xi) * weight).sum().backward()
        grads[lean] = [xi.grad] + [p.grad.clone() for p in blocks.parameters()]
        for p in blocks.parameters():
            p.grad = None
    assert len(grads[True]) == 1 + 2 * 2 * 2  # the input; weight and log-prior of 4 layers
    for g, w in zip(grads[True], grads[False], strict=True):
        assert w.abs().sum() > 0
        torch.testing.assert_close(g, w, rtol=1e-5, atol=1e-7)
