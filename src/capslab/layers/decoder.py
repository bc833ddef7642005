"""Reconstruction decoder: class capsules -> image."""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from capslab.ops import mask_capsules, selected_capsule


class CapsuleDecoder(nn.Module):
    """Fully connected decoder ``FC 512 ReLU -> FC 1024 ReLU -> FC prod(image_shape) sigmoid``.

    Args:
        num_classes: class capsules ``C``.
        capsule_dim: class capsule dimension ``D``.
        image_shape: ``(channels, height, width)`` of the image to reconstruct.
        small: FasTrCaps small decoder: read only the selected ``D``-vector instead of the
            masked ``C x D`` capsules.
        hidden: widths of the two hidden layers.
        device, dtype: where and in which type the parameters are created.
    Forward: ``v [B, C, D]``, ``target [B] | None`` -> ``[B, *image_shape]`` in [0, 1].
    """

    def __init__(
        self,
        num_classes: int,
        capsule_dim: int,
        image_shape: tuple[int, int, int],
        small: bool = False,
        hidden: tuple[int, int] = (512, 1024),
        *,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ):
        super().__init__()
        self.small = small
        self.image_shape = tuple(image_shape)
        in_features = capsule_dim if small else num_classes * capsule_dim
        factory = {"device": device, "dtype": dtype}
        self.net = nn.Sequential(
            nn.Linear(in_features, hidden[0], **factory),
            nn.ReLU(inplace=True),
            nn.Linear(hidden[0], hidden[1], **factory),
            nn.ReLU(inplace=True),
            nn.Linear(hidden[1], math.prod(self.image_shape), **factory),
            nn.Sigmoid(),
        )

    def forward(self, v: Tensor, target: Tensor | None = None) -> Tensor:
        x = selected_capsule(v, target) if self.small else mask_capsules(v, target).flatten(1)
        return self.net(x).view(v.shape[0], *self.image_shape)
