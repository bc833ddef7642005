"""Training-time augmentation on whole batches (vectorised, no per-sample Python loop).

The random draws (:func:`shift_offsets`, :func:`flip_mask`) are made on the CPU from a seeded
generator and kept apart from their application (:func:`shift`, :func:`flip`), so that a loader
on a GPU can draw a whole epoch's offsets at once and copy them to the device in one transfer
instead of waiting for a copy at every step.

Also the fixed, deterministic ways a dataset's images are presented: :func:`center_pad` (a
black canvas around each image, ``pad_to``), :func:`resize_area` (smallNORB's 96 -> 48) and
:func:`resize_bilinear` (your own data's ``--resize``: any size, up or down).
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor


def shift_offsets(batch: int, max_shift: int, generator: torch.Generator | None = None) -> Tensor:
    """Random crop offsets ``[2, batch]`` (rows, columns) in ``[0, 2 * max_shift]``, on the CPU."""
    return torch.randint(0, 2 * int(max_shift) + 1, (2, batch), generator=generator)


def shift(images: Tensor, offsets: Tensor, max_shift: int) -> Tensor:
    """Pad every image by ``max_shift`` zeros and crop back to its size at ``offsets``
    (``[2, B]``, on the images' device): a translation by up to ``max_shift`` pixels.

    ``images``: ``[B, C, H, W]``, any dtype (uint8 or float), any device.
    """
    b, c, h, w = images.shape
    p = int(max_shift)
    padded = F.pad(images, (p, p, p, p))  # [B, C, H+2p, W+2p]
    dev = images.device
    rows = offsets[0][:, None] + torch.arange(h, device=dev)  # [B, H]
    cols = offsets[1][:, None] + torch.arange(w, device=dev)  # [B, W]
    flat = (rows[:, :, None] * (w + 2 * p) + cols[:, None, :]).reshape(b, 1, h * w)
    out = torch.gather(padded.reshape(b, c, -1), 2, flat.expand(b, c, h * w))
    return out.reshape(b, c, h, w)


def flip_mask(batch: int, p: float = 0.5, generator: torch.Generator | None = None) -> Tensor:
    """Which of ``batch`` images to flip, each with probability ``p``: bool ``[batch]``, CPU."""
    return torch.rand(batch, generator=generator) < p


def flip(images: Tensor, mask: Tensor) -> Tensor:
    """The images whose ``mask`` entry is true flipped left-right."""
    return torch.where(mask[:, None, None, None], images.flip(-1), images)


def random_shift(images: Tensor, max_shift: int = 2, generator: torch.Generator | None = None) -> Tensor:
    """:func:`shift` at offsets drawn from ``generator``: a pure function of its state."""
    if max_shift <= 0 or images.numel() == 0:
        return images
    return shift(images, shift_offsets(images.shape[0], max_shift, generator).to(images.device),
                 max_shift)


def random_hflip(images: Tensor, p: float = 0.5, generator: torch.Generator | None = None) -> Tensor:
    """Flip each image left-right with probability ``p`` (for CIFAR-like data, not digits)."""
    if p <= 0 or images.numel() == 0:
        return images
    return flip(images, flip_mask(images.shape[0], p, generator).to(images.device))


def augment_batch(images: Tensor, generator: torch.Generator | None = None, max_shift: int = 2,
                  hflip: bool = False) -> Tensor:
    """The training augmentation: random shift by up to ``max_shift``, then optional flip."""
    out = random_shift(images, max_shift, generator)
    if hflip:
        out = random_hflip(out, 0.5, generator)
    return out


def center_pad(images: Tensor, size: int) -> Tensor:
    """Place every image in the middle of a black ``size`` x ``size`` canvas (``pad_to``); an
    odd margin leaves the extra row and column below and right.

    Shape: ``[B, C, H, W]`` -> ``[B, C, size, size]``, same dtype and device.
    """
    h, w = images.shape[-2:]
    if size < h or size < w:
        raise ValueError(f"cannot pad {h}x{w} images to {size}x{size}")
    top, left = (size - h) // 2, (size - w) // 2
    return F.pad(images, (left, size - w - left, top, size - h - top))


def resize_area(images: Tensor | np.ndarray, size: int, chunk: int = 1024) -> Tensor:
    """uint8 images resized to ``size`` x ``size`` by area averaging (each output pixel the
    mean of the input pixels it covers; 96 -> 48 averages 2x2 blocks), rounded to the nearest
    integer (halves to even): deterministic, the same on every machine. Done ``chunk`` images
    at a time, so the float copy stays small; a numpy array (also a read-only view of a file's
    bytes) is read chunk by chunk, never copied whole.

    Shape: ``[B, C, H, W]`` uint8 -> ``[B, C, size, size]`` uint8 tensor (on the images' device).
    """
    device = images.device if isinstance(images, Tensor) else torch.device("cpu")
    out = torch.empty((*images.shape[:2], size, size), dtype=torch.uint8, device=device)
    for start in range(0, images.shape[0], chunk):
        part = images[start : start + chunk]
        part = part.float() if isinstance(part, Tensor) else torch.from_numpy(part.astype(np.float32))
        resized = F.interpolate(part, size=(size, size), mode="area")
        out[start : start + chunk] = resized.round().clamp_(0, 255).to(torch.uint8)
    return out


def resize_bilinear(images: np.ndarray, size: int) -> np.ndarray:
    """Images brought to ``size`` x ``size`` pixels: bilinear, antialiased when shrinking
    (aspect ratios are not kept).

    Shape:
        ``images``: ``[N, C, H, W]`` uint8; returns ``[N, C, size, size]`` uint8.
    """
    if images.shape[2:] == (size, size):
        return images
    x = torch.from_numpy(images.astype(np.float32))  # a copy: the pixels may be read-only
    out = F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False,
                        antialias=True)
    return out.round_().clamp_(0, 255).to(torch.uint8).numpy()
