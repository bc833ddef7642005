import math

import torch

from capslab.losses import capsule_loss, margin_loss, reconstruction_loss


def test_margin_loss_hand_computed():
    lengths = torch.tensor([[0.8, 0.3, 0.05], [0.95, 0.2, 0.5]])
    target = torch.tensor([0, 2])
    # sample 0: (0.9-0.8)^2 + 0.5*(0.3-0.1)^2 + 0 = 0.01 + 0.02 = 0.03
    # sample 1: 0.5*(0.95-0.1)^2 + 0.5*(0.2-0.1)^2 + (0.9-0.5)^2 = 0.36125+0.005+0.16 = 0.52625
    expected = (0.03 + 0.52625) / 2  # averaged over the batch, summed over classes
    assert math.isclose(margin_loss(lengths, target).item(), expected, rel_tol=1e-5)


def test_margin_loss_zero_when_confident():
    lengths = torch.tensor([[0.95, 0.05, 0.0]])
    assert margin_loss(lengths, torch.tensor([0])).item() == 0.0


def test_reconstruction_loss_is_sum_of_squares_averaged_over_batch():
    a = torch.zeros(2, 1, 2, 2)
    b = torch.ones(2, 1, 2, 2) * 0.5
    assert math.isclose(reconstruction_loss(a, b).item(), 4 * 0.25, rel_tol=1e-6)


def test_capsule_loss_weighting():
    lengths = torch.tensor([[0.5, 0.5]])
    recon = torch.zeros(1, 1, 28, 28)
    image = torch.ones(1, 1, 28, 28)
    total, margin, rec = capsule_loss(lengths, torch.tensor([0]), recon, image)
    assert math.isclose(rec.item(), 784.0)
    assert math.isclose(total.item(), margin.item() + 0.0005 * 784, rel_tol=1e-6)
    total, _, rec = capsule_loss(lengths, torch.tensor([0]), None, image)
    assert rec.item() == 0 and math.isclose(total.item(), margin.item())
