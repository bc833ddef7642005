import pytest
import torch

from capslab.layers import ClassCaps, PrimaryCaps
from capslab.models import create_model, list_models


def count(m):
    return sum(p.numel() for p in m.parameters())


def test_capsnet_mnist_parameter_counts():
    m = create_model("capsnet")
    assert [count(x) for x in (m.conv, m.primary, m.class_caps, m.decoder)] == [
        20_992, 5_308_672, 1_474_560, 1_411_344]
    assert count(m) == 8_215_568


def test_capsnet_shapes_grey_and_colour():
    m = create_model("capsnet", conv_channels=16, primary_types=4)
    out = m(torch.rand(2, 1, 28, 28), torch.tensor([1, 2]))
    assert out.caps.shape == (2, 10, 16) and out.lengths.shape == (2, 10)
    assert out.reconstruction.shape == (2, 1, 28, 28)
    m = create_model("capsnet", in_channels=3, image_size=32, num_classes=100, conv_channels=16, primary_types=4)
    out = m(torch.rand(2, 3, 32, 32))
    assert out.caps.shape == (2, 100, 16) and out.reconstruction.shape == (2, 3, 32, 32)
    assert m.class_caps.num_in == 4 * 8 * 8


def test_primary_caps_type_major_order():
    layer = PrimaryCaps(in_channels=2, num_types=3, capsule_dim=4, kernel_size=3, stride=1)
    x = torch.randn(1, 2, 5, 5)
    u = layer(x)  # [1, 3*3*3, 4]
    raw = layer.conv(x)  # channel t*4 + d
    from capslab.ops import squash

    t, pos = 2, 4  # type 2, grid position (1, 1)
    assert torch.allclose(u[0, t * 9 + pos], squash(raw[0, t * 4:(t + 1) * 4].reshape(4, 9)[:, pos]))


def test_class_caps_predictions_match_einsum():
    layer = ClassCaps(6, 4, 3, 5)
    u = torch.randn(2, 6, 4)
    w = layer.weight.view(6, 4, 3, 5)
    ref = torch.einsum("bid,idje->bije", u, w)
    assert torch.allclose(layer.predictions(u), ref, atol=1e-6)


def test_registry_and_option_errors():
    assert "capsnet" in list_models()
    with pytest.raises(ValueError, match="unknown model"):
        create_model("nope")
    with pytest.raises(ValueError, match="no option"):
        create_model("capsnet", bogus=1)
    with pytest.raises(ValueError, match="routing"):
        create_model("capsnet", routing="em")


def test_class_caps_gives_the_same_output_and_gradients_at_any_batch_size():
    """ClassCaps routes batches of FROM_POSES_MIN_BATCH or more from the poses and smaller ones
    from the prediction vectors: an image's output and the gradients must not depend on which
    (float64, so only the summation order differs)."""
    from capslab.layers.class_caps import FROM_POSES_MIN_BATCH, ClassCaps

    torch.manual_seed(0)
    layer = ClassCaps(30, 8, 10, 16).double()
    u = torch.randn(FROM_POSES_MIN_BATCH, 30, 8, dtype=torch.float64)
    big = layer(u)
    small = torch.cat([layer(u[k : k + 1]) for k in range(len(u))])
    torch.testing.assert_close(big, small, rtol=1e-12, atol=1e-12)
    g_big = torch.autograd.grad(big.sum(), layer.weight)[0]
    g_small = torch.autograd.grad(torch.cat([layer(u[k : k + 1]) for k in range(len(u))]).sum(),
                                  layer.weight)[0]
    torch.testing.assert_close(g_big, g_small, rtol=1e-10, atol=1e-12)
