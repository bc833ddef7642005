"""Post-training quantization: the grids keep their promises (levels, error bound, symmetry),
bit widths outside 2-16 are refused, and quantize_model / quantized quantize exactly the
tensors of the chosen groups (capsule matrices included), the activations and the routing
coefficients, without touching the original network."""

from __future__ import annotations

import pytest
import torch
from helpers import fit, fit_and_score, mnist_subsets

import capslab.routing as routing
from capslab.data import BatchLoader
from capslab.errors import ConfigError
from capslab.evaluation import evaluate
from capslab.genotype import CAPSNET_GENOTYPE
from capslab.models import create_model
from capslab.quantize import (
    GROUPS,
    QuantizationSettings,
    evaluate_quantized,
    layer_groups,
    quantization_scale,
    quantize_model,
    quantize_per_sample,
    quantize_tensor,
    quantize_unit_interval,
    quantized,
    quantized_routing,
)

TINY_CAPSNET = {"conv_channels": 8, "primary_types": 2, "primary_dim": 4, "class_dim": 6}
LEARNING_CAPSNET = {**TINY_CAPSNET, "primary_types": 4}  # 0.735 after one epoch on 1,000 images
TINY_MOCAPSNET = {**TINY_CAPSNET, "num_blocks": 1, "block_capsules": 4, "block_dim": 4}


def distinct(t: torch.Tensor) -> int:
    return t.unique().numel()


# ------------------------------------------------------------------------------ the grids
@pytest.mark.parametrize("bits", [2, 3, 4, 8, 12, 16])
def test_weight_grid_levels_error_bound_and_symmetry(bits):
    torch.manual_seed(bits)
    x = torch.randn(4000) * 0.3
    x[:5] = torch.tensor([0.0, 1e-9, -1e-9, 2.5, -0.7])
    q = quantize_tensor(x, bits)
    scale = quantization_scale(x, bits)
    assert scale.item() == pytest.approx(2.5 / (2 ** (bits - 1) - 1))
    assert distinct(q) <= 2**bits - 1 and q.dtype == x.dtype and q.shape == x.shape
    assert (x - q).abs().max() <= scale / 2 * (1 + 1e-5)  # round to nearest, no clipping
    k = q / scale  # every value is an integer multiple of the scale
    assert torch.allclose(k, k.round(), atol=1e-3) and k.abs().max() <= 2 ** (bits - 1) - 1 + 1e-3
    assert q[0] == 0 and q[3] == pytest.approx(2.5)  # zero stays zero, max|x| kept
    assert torch.equal(quantize_tensor(-x, bits), -q)  # symmetric
    assert torch.equal(quantize_tensor(q, bits), q)  # idempotent: already on the grid
    if bits <= 8:  # the grid is really used: coarse widths do not return the input
        assert not torch.equal(q, x)


def test_two_bits_is_ternary_and_zero_tensors_stay_zero():
    x = torch.tensor([-1.0, -0.6, -0.4, 0.0, 0.3, 0.51, 1.0])
    assert quantize_tensor(x, 2).tolist() == [-1.0, -1.0, 0.0, 0.0, 0.0, 1.0, 1.0]
    zeros = torch.zeros(3, 5)
    assert torch.equal(quantize_tensor(zeros, 4), zeros)
    assert torch.equal(quantize_per_sample(zeros, 4), zeros)


def test_activations_have_one_scale_per_sample():
    torch.manual_seed(0)
    x = torch.randn(3, 7, 5)
    x[1] *= 100  # a loud sample must not coarsen the grid of the others
    q = quantize_per_sample(x, 4)
    for b in range(3):
        assert torch.equal(q[b], quantize_tensor(x[b], 4))
        assert distinct(q[b]) <= 15
    assert torch.equal(quantize_per_sample(x[:1], 4), q[:1])  # independent of the batch


def test_routing_grid_is_unsigned_on_the_unit_interval():
    c = torch.softmax(torch.randn(2, 30, 10), dim=2)
    for bits in (2, 3, 8):
        q = quantize_unit_interval(c, bits)
        levels = 2**bits - 1
        assert distinct(q) <= 2**bits and (q >= 0).all() and (q <= 1).all()
        assert torch.allclose(q * levels, (q * levels).round(), atol=1e-4)
        assert (c - q).abs().max() <= 0.5 / levels + 1e-6
    assert quantize_unit_interval(torch.tensor([0.0, 0.2, 0.5, 0.9, 1.0]), 2).tolist() == \
        pytest.approx([0.0, 1 / 3, 2 / 3, 1.0, 1.0])


@pytest.mark.parametrize("bits", [1, 0, 17, 32, 2.5, True, "8"])
def test_bits_outside_2_to_16_are_one_line_config_errors(bits):
    with pytest.raises(ConfigError, match="from 2 to 16") as info:
        quantize_tensor(torch.ones(3), bits)
    assert "\n" not in str(info.value)


def test_settings_are_checked_on_construction():
    with pytest.raises(ConfigError, match="weight_bits must be an integer from 2 to 16, got 17"):
        QuantizationSettings(weight_bits=17)
    with pytest.raises(ConfigError, match="routing_bits must be an integer from 2 to 16, got 1"):
        QuantizationSettings(routing_bits=1)
    with pytest.raises(ConfigError, match="groups"):
        QuantizationSettings(groups=("capsules",))
    with pytest.raises(ConfigError, match="unknown quantization setting"):
        QuantizationSettings.from_dict({"bits": 8})
    s = QuantizationSettings.from_dict({"weight_bits": "8", "groups": ["capsule"]})
    assert s.weight_bits == 8 and s.groups == ("capsule",)
    assert s.describe() == "8-bit weights (capsule)"


# ------------------------------------------------------------------------------ layer groups
def test_layer_groups_cover_every_capsule_matrix():
    capsnet = layer_groups(create_model("capsnet", **TINY_CAPSNET))
    assert capsnet == {
        "conv": ["conv.conv.weight"], "primary": ["primary.conv.weight"],
        "capsule": ["class_caps.weight"],
        "decoder": ["decoder.net.0.weight", "decoder.net.2.weight", "decoder.net.4.weight"],
    }
    mo = layer_groups(create_model("mocapsnet", **TINY_MOCAPSNET))
    assert mo["capsule"] == ["caps1.weight", "stack.blocks.0.caps1.weight",
                             "stack.blocks.0.caps2.weight", "caps2.weight"]
    deep = layer_groups(create_model("deepcaps", conv_channels=8, num_types=2,
                                     capsule_dims=(2, 4, 4, 4)))
    assert deep["conv"] == ["stem.0.weight"] and deep["primary"] == []
    assert "cells.3.skip.conv.weight" in deep["capsule"]  # the ConvCaps3D kernel
    assert len(deep["capsule"]) == 4 * 4 + 1  # 4 capsule convolutions per cell + ClassCaps
    gen = layer_groups(create_model("genotype", genotype=CAPSNET_GENOTYPE))
    assert gen["primary"] == ["layers.1_primary.conv.weight"]
    assert gen["capsule"] == ["layers.2_class.caps.0.weight"]


# ------------------------------------------------------------------------------ quantize_model
@pytest.mark.parametrize("groups", [("capsule",), ("conv", "decoder"), GROUPS])
def test_quantize_model_quantizes_exactly_the_chosen_groups(groups):
    torch.manual_seed(0)
    net = create_model("mocapsnet", **TINY_MOCAPSNET)
    before = {k: v.clone() for k, v in net.state_dict().items()}
    q = quantize_model(net, QuantizationSettings(weight_bits=3, groups=groups))
    assert all(torch.equal(v, before[k]) for k, v in net.state_dict().items())  # untouched
    chosen = {n for g in groups for n in layer_groups(net)[g]}
    assert chosen
    for name, value in q.state_dict().items():
        if name in chosen:
            assert distinct(value) <= 7 and not torch.equal(value, before[name]), name
            assert torch.equal(value, quantize_tensor(before[name], 3))
        else:  # other groups, biases, BatchNorm and buffers stay float, bit for bit
            assert torch.equal(value, before[name]), name
    assert type(q) is type(net) and q.quantization.groups == groups


def test_activation_bits_quantize_the_inputs_of_quantized_layers_per_sample():
    torch.manual_seed(0)
    net = create_model("capsnet", **TINY_CAPSNET).eval()
    q = quantize_model(net, weight_bits=None, activation_bits=3, groups=("capsule",))
    seen = {}
    q.class_caps.register_forward_pre_hook(lambda m, args: seen.update(u=args[0]))
    q.primary.register_forward_pre_hook(lambda m, args: seen.update(features=args[0]))
    x = torch.rand(2, 1, 28, 28)
    q(x)
    assert all(distinct(seen["u"][b]) <= 7 for b in range(2))
    assert distinct(seen["features"][0]) > 7  # the primary layer's input is not quantized
    with torch.no_grad():
        # per-sample scales: batch-independent, up to the order in which a GEMM of another batch
        # size sums (bit for bit on some CPUs, 1e-14 apart on others; a scale shared by the
        # batch would move the outputs by the quantization error, 1e-8 here)
        torch.testing.assert_close(q(x[1:]).caps, q(x).caps[1:], rtol=1e-4, atol=1e-12)
        assert not torch.equal(q(x).caps, net(x).caps)


def test_small_batches_of_the_gemm_primary_caps_are_quantized_like_large_ones():
    # PrimaryCaps computes up to 4 images (8 in training) as GEMMs and more by convolution;
    # the activation quantization hooked on its convolution must see both
    torch.manual_seed(0)
    net = create_model("capsnet", **TINY_CAPSNET).eval()
    q = quantize_model(net, weight_bits=None, activation_bits=3, groups=("primary",))
    calls = []
    q.primary.conv.register_forward_pre_hook(lambda m, args: calls.append(args[0].shape[0]))
    x = torch.rand(9, 1, 28, 28)
    with torch.no_grad():
        large = q(x).caps  # the convolution
        small = q(x[:2]).caps  # the GEMMs
        float_small = net(x[:2]).caps
    assert calls == [9, 2]
    scale = large.abs().max()  # an untrained tiny network's capsules are about 1e-7 long
    assert (small - large[:2]).abs().max() <= 1e-3 * scale
    assert (small - float_small).abs().max() > 0.1 * scale  # 3-bit inputs do change them


def test_routing_bits_quantize_coupling_coefficients_only_during_forward():
    torch.manual_seed(0)
    u_hat = torch.randn(2, 12, 5, 4)
    with quantized_routing(2):
        _, c = routing.dynamic_routing(u_hat, 3, return_couplings=True)
        assert torch.allclose(c * 3, (c * 3).round(), atol=1e-5) and distinct(c) <= 4
        votes = torch.randn(1, 3, 2, 4, 3, 3)
        _, c3 = routing.dynamic_routing_3d(votes, 2, return_couplings=True)
        assert distinct(c3) <= 4
    _, c = routing.dynamic_routing(u_hat, 3, return_couplings=True)
    assert distinct(c) > 4 and torch.allclose(c.sum(2), torch.ones(2, 12))

    net = create_model("capsnet", **TINY_CAPSNET).eval()
    q = quantize_model(net, weight_bits=None, routing_bits=2)
    x = torch.rand(2, 1, 28, 28)
    with torch.no_grad():
        assert not torch.allclose(q(x).caps, net(x).caps)
        assert routing._coupling_transform is None  # restored after the forward
        with pytest.raises(RuntimeError):
            q(torch.rand(2, 3, 28, 28))  # wrong channels: the forward fails ...
    assert routing._coupling_transform is None  # ... and the hook is still restored


def test_quantized_context_restores_the_model_bit_for_bit():
    torch.manual_seed(0)
    net = create_model("capsnet", **TINY_CAPSNET).eval()
    before = {k: v.clone() for k, v in net.state_dict().items()}
    x = torch.rand(3, 1, 28, 28)
    settings = QuantizationSettings(weight_bits=4, activation_bits=4, routing_bits=4)
    with torch.no_grad():
        expected = quantize_model(net, settings)(x).caps
        with quantized(net, settings) as m:
            assert m is net and distinct(net.class_caps.weight) <= 15
            assert torch.equal(net(x).caps, expected)  # the copy and the context agree
        assert all(torch.equal(v, before[k]) for k, v in net.state_dict().items())
        assert not net._forward_pre_hooks and not net.class_caps._forward_pre_hooks
        plain = net(x).caps
    assert not torch.equal(plain, expected)


def test_giving_settings_and_fields_together_is_refused():
    net = create_model("capsnet", **TINY_CAPSNET)
    with pytest.raises(ConfigError, match="not both"):
        quantize_model(net, QuantizationSettings(), weight_bits=4)


# ------------------------------------------------------------------------------ a trained network
@pytest.fixture(scope="module")
def trained_capsnet(mnist_root):
    """A small CapsNet trained one epoch on 1,000 MNIST images, with its data."""
    torch.manual_seed(0)
    train, test = mnist_subsets(1000, 200)
    net = create_model("capsnet", **LEARNING_CAPSNET)
    fit_and_score(net, lambda e: BatchLoader(train, 32, shuffle=True, seed=e), test, epochs=1,
                  lr=1e-2)
    return net, train, test


def test_sixteen_bits_keep_the_float_accuracy_of_a_trained_network(trained_capsnet):
    net, _, test = trained_capsnet
    loader = BatchLoader(test, 100, shuffle=False)
    base = evaluate(net, loader)
    assert base["test_accuracy"] > 0.5  # it learned something, so the comparison means something
    all16 = QuantizationSettings(weight_bits=16, activation_bits=16, routing_bits=16)
    q16 = evaluate_quantized(net, loader, all16)
    assert abs(q16["test_accuracy"] - base["test_accuracy"]) <= 0.01
    assert q16["test_loss"] == pytest.approx(base["test_loss"], rel=1e-2)
    # 2 bits everywhere really changes the network (no monotonicity is asserted in between)
    q2 = evaluate_quantized(net, loader, weight_bits=2, activation_bits=2, routing_bits=2)
    assert q2["test_loss"] != pytest.approx(base["test_loss"], rel=1e-3)
    assert evaluate(net, loader) == base  # evaluate_quantized restored the network


# ---------------------------------------------------------------- the accelerator mode
def test_power_of_two_scales_are_powers_of_two_and_never_clip():
    from capslab.quantize import power_of_two_scale, quantization_scale, quantize_weight

    scales = torch.tensor([0.0, 1e-3, 0.3, 1.0, 5.5])
    p2 = power_of_two_scale(scales)
    assert p2[0] == 0
    logs = torch.log2(p2[1:])
    assert torch.equal(logs, torch.round(logs)) and torch.all(p2[1:] >= scales[1:])
    assert torch.all(p2[1:] < 2 * scales[1:])  # the next power, not more
    w = torch.randn(1000)
    q = quantize_weight(w, 8, power_of_two=True)
    step = power_of_two_scale(quantization_scale(w, 8))
    assert torch.equal(q / step, torch.round(q / step))  # integers times a power of two
    assert (w - q).abs().max() <= step / 2  # nothing clipped: the range only grew


def test_fixed_scales_saturate_and_the_power_of_two_routing_grid():
    from capslab.quantize import quantize_unit_interval_power_of_two, quantize_with_scale

    x = torch.tensor([-5.0, -0.26, 0.0, 0.26, 5.0])
    assert quantize_with_scale(x, 0.5, 3).tolist() == [-1.5, -0.5, 0.0, 0.5, 1.5]
    c = torch.tensor([0.0, 0.1, 0.49, 1.0])
    q = quantize_unit_interval_power_of_two(c, 4)  # steps of 1/8
    assert torch.equal(q * 8, torch.round(q * 8)) and q[-1] == 1.0 and q[0] == 0.0


def test_calibration_fixes_one_range_per_layer_input():
    from capslab.quantize import calibrate

    torch.manual_seed(0)
    net = create_model("capsnet", **TINY_CAPSNET).eval()
    images = torch.rand(24, 1, 28, 28)
    seen: dict[str, float] = {}

    def record(name):
        def hook(module, args):
            seen[name] = max(seen.get(name, 0.0), float(args[0].abs().max()))
        return hook

    settings = calibrate(net, [images[:12], (images[12:], None)], weight_bits=8, activation_bits=8)
    # the ranges are what the weight-quantized network's layers receive, largest over the set
    with quantized(net, weight_bits=8) as q:
        handles = [dict(q.named_modules())[n].register_forward_pre_hook(record(n))
                   for n in settings.activation_ranges]
        with torch.no_grad():
            q(images)
        for h in handles:
            h.remove()
    assert settings.activation_ranges == pytest.approx(seen, rel=1e-6)
    assert settings.mode == "calibrated" and "calibrated activation scales" in settings.describe()
    # static scales: an image's quantized inputs lie on the layer's fixed grid, whatever the
    # image (the per-image mode would put a bright and a dim image on different grids)
    q = quantize_model(net, settings.replace(power_of_two=True))
    captured = []
    site = dict(q.named_modules())["primary.conv"]
    handle = site.register_forward_pre_hook(lambda m, a: captured.append(a[0]))
    with torch.no_grad():
        q(images[:2] * torch.tensor([1.0, 0.2]).view(2, 1, 1, 1))
    handle.remove()
    from capslab.quantize import max_level, power_of_two_scale

    step = float(power_of_two_scale(torch.tensor(
        settings.activation_ranges["primary.conv"] / max_level(8), dtype=torch.float64)))
    levels = captured[0] / step
    assert torch.allclose(levels, torch.round(levels), atol=1e-4)
    with pytest.raises(ConfigError, match="no calibrated range for layer"):
        quantize_model(net, settings.replace(activation_ranges={"conv.conv": 1.0}))
    with pytest.raises(ConfigError, match="give activation_bits"):
        calibrate(net, [images], weight_bits=8)


def test_calibrated_eight_bits_keep_the_accuracy_of_a_trained_network(trained_capsnet):
    from capslab.quantize import calibrate

    net, train, test = trained_capsnet
    loader = BatchLoader(test, 100, shuffle=False)
    base = evaluate(net, loader)
    assert base["test_accuracy"] > 0.5
    calibration = [x for x, _ in BatchLoader(train.subset(list(range(256))), 64, shuffle=False)]
    for power_of_two in (False, True):
        settings = calibrate(net, calibration, weight_bits=8, activation_bits=8, routing_bits=8,
                             power_of_two=power_of_two)
        q = evaluate_quantized(net, loader, settings)
        assert abs(q["test_accuracy"] - base["test_accuracy"]) <= 0.02


def test_quantization_aware_training_sees_the_grid_and_keeps_float_weights():
    from capslab.losses import capsule_loss
    from capslab.quantize import QuantizationAwareTraining, quantize_weight

    torch.manual_seed(0)
    net = create_model("capsnet", **TINY_CAPSNET).train()
    x, y = torch.rand(6, 1, 28, 28), torch.arange(6)
    qat = QuantizationAwareTraining(net, 3)
    w = net.class_caps.weight
    before = w.detach().clone()
    seen = []
    handle = net.class_caps.register_forward_pre_hook(lambda m, a: seen.append(a[0].detach()))
    qat.step()
    assert torch.equal(w.detach(), quantize_weight(before, 3))  # the forward sees the grid
    out = net(x, y)
    capsule_loss(out.lengths, y, out.reconstruction, x)[0].backward()
    qat.restore()
    handle.remove()
    assert torch.equal(w.detach(), before)  # float masters back, their gradients kept
    assert w.grad is not None and w.grad.abs().sum() > 0
    levels = seen[0] / (seen[0].abs().reshape(6, -1).amax(dim=1).view(6, 1, 1) / 3)
    assert torch.allclose(levels, torch.round(levels), atol=1e-4)  # inputs on a 3-bit grid
    net.eval()
    seen.clear()
    handle = net.class_caps.register_forward_pre_hook(lambda m, a: seen.append(a[0].detach()))
    net(x)
    handle.remove()
    assert len(torch.unique(seen[0])) > 7  # evaluation runs float
    qat.close()


def test_quantization_aware_training_recovers_low_bit_accuracy(trained_capsnet, tmp_path):
    """Fine-tuning the trained network one epoch with 2-bit (ternary) weights and inputs,
    quantization-aware, against the same fine-tuning in float, both then quantized to 2-bit
    weights post training (routing float: 2-bit couplings round 1/10 to 0 for both)."""
    import copy

    from capslab.quantize import QuantizationAwareTraining

    net, train, test = trained_capsnet
    loader = BatchLoader(test, 100, shuffle=False)
    scores = {}
    for aware in (False, True):
        torch.manual_seed(1)
        model = copy.deepcopy(net)
        qat = QuantizationAwareTraining(model, 2, routing_bits=0) if aware else None
        fit(model, lambda e: BatchLoader(train, 32, shuffle=True, seed=5), epochs=1, lr=1e-3,
            qat=qat)
        if qat:
            qat.close()
        settings = QuantizationSettings(weight_bits=2,
                                        groups=("conv", "primary", "capsule"))
        scores[aware] = evaluate_quantized(model, loader, settings)["test_accuracy"]
    assert scores[True] > scores[False] + 0.05, scores


def test_evaluation_builds_no_autograd_graph():
    """Summing the loss over batches with a graph kept every batch's activations alive (a
    DeepCaps evaluation of 2,000 images took 7.6 GB at batch 32, 24 GB at 256)."""
    from capslab.data import BatchLoader, ImageDataset, dataset_info
    from capslab.evaluation import evaluate
    from capslab.models import create_model

    model = create_model("capsnet", conv_channels=8, primary_types=4, class_dim=8)
    seen = []
    model.register_forward_hook(lambda *_: seen.append(torch.is_grad_enabled()))
    data = ImageDataset(torch.zeros(6, 1, 28, 28, dtype=torch.uint8), torch.arange(6) % 10,
                        dataset_info("mnist"))
    result = evaluate(model, BatchLoader(data, 3, shuffle=False))
    assert seen == [False, False] and isinstance(result["test_loss"], float)
    assert torch.is_grad_enabled()  # restored for the caller
