"""Losses of capsule networks."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

RECONSTRUCTION_WEIGHT = 0.0005


def margin_loss(
    lengths: Tensor,
    target: Tensor,
    m_plus: float = 0.9,
    m_minus: float = 0.1,
    lambda_: float = 0.5,
) -> Tensor:
    """Margin loss of Sabour et al., summed over classes and AVERAGED over the batch.

    Args:
        lengths: ``[B, C]`` class-capsule lengths (not softmaxed).
        target: ``[B]`` class indices.
    Returns:
        Scalar loss.
    """
    t = F.one_hot(target, lengths.shape[1]).to(lengths.dtype)
    present = t * F.relu(m_plus - lengths).pow(2)
    absent = lambda_ * (1.0 - t) * F.relu(lengths - m_minus).pow(2)
    return (present + absent).sum(dim=1).mean()


def reconstruction_loss(reconstruction: Tensor, image: Tensor) -> Tensor:
    """Sum of squared pixel errors per image, averaged over the batch (unweighted).

    Args:
        reconstruction: ``[B, C, H, W]`` decoder output in [0, 1].
        image: ``[B, C, H, W]`` the input image in [0, 1].
    """
    return (reconstruction - image).pow(2).flatten(1).sum(dim=1).mean()


def capsule_loss(
    lengths: Tensor,
    target: Tensor,
    reconstruction: Tensor | None,
    image: Tensor,
    reconstruction_weight: float = RECONSTRUCTION_WEIGHT,
) -> tuple[Tensor, Tensor, Tensor]:
    """Total loss = margin + weight * reconstruction. Returns ``(total, margin, reconstruction)``."""
    margin = margin_loss(lengths, target)
    if reconstruction is None or reconstruction_weight == 0:
        recon = torch.zeros((), device=lengths.device, dtype=lengths.dtype)
    else:
        recon = reconstruction_loss(reconstruction, image)
    return margin + reconstruction_weight * recon, margin, recon
