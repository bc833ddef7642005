"""Training-time augmentation on whole batches (vectorised, no per-sample Python loop)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor


def random_shift(images: Tensor, max_shift: int = 2, generator: torch.Generator | None = None) -> Tensor:
    """Pad every image by ``max_shift`` zeros and crop back to its size at a random offset:
    a random translation by up to ``max_shift`` pixels in each direction.

    ``images``: ``[B, C, H, W]``, any dtype (uint8 or float), any device. Offsets are drawn on
    the CPU from ``generator``, so the result is a pure function of the generator's state.
    """
    if max_shift <= 0 or images.numel() == 0:
        return images
    b, c, h, w = images.shape
    p = int(max_shift)
    offsets = torch.randint(0, 2 * p + 1, (2, b), generator=generator).to(images.device)
    padded = F.pad(images, (p, p, p, p))  # [B, C, H+2p, W+2p]
    dev = images.device
    rows = offsets[0][:, None] + torch.arange(h, device=dev)  # [B, H]
    cols = offsets[1][:, None] + torch.arange(w, device=dev)  # [B, W]
    flat = (rows[:, :, None] * (w + 2 * p) + cols[:, None, :]).reshape(b, 1, h * w)
    out = torch.gather(padded.reshape(b, c, -1), 2, flat.expand(b, c, h * w))
    return out.reshape(b, c, h, w)


def random_hflip(images: Tensor, p: float = 0.5, generator: torch.Generator | None = None) -> Tensor:
    """Flip each image left-right with probability ``p`` (for CIFAR-like data, not digits)."""
    if p <= 0 or images.numel() == 0:
        return images
    flip = (torch.rand(images.shape[0], generator=generator) < p).to(images.device)
    return torch.where(flip[:, None, None, None], images.flip(-1), images)


def augment_batch(images: Tensor, generator: torch.Generator | None = None, max_shift: int = 2,
                  hflip: bool = False) -> Tensor:
    """The training augmentation: random shift by up to ``max_shift``, then optional flip."""
    out = random_shift(images, max_shift, generator)
    if hflip:
        out = random_hflip(out, 0.5, generator)
    return out
