"""Input normalisation kept inside the model, so checkpoints carry it and the decoder can
reconstruct the raw [0, 1] image."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from capslab.errors import ConfigError

NORMALIZATIONS = ("dataset", "per-image", "none")


class InputNormalization(nn.Module):
    """``[B, C, H, W] -> [B, C, H, W]``.

    ``mode="dataset"``: ``(x - mean_c) / std_c`` with per-channel dataset statistics;
    ``mode="per-image"``: each image standardised by its own mean and std (the momentum
    paper's choice); ``mode="none"``: identity. ``device``, ``dtype``: of the ``mean`` and
    ``std`` buffers (float32 by default).
    """

    def __init__(
        self,
        mode: str = "dataset",
        mean: Sequence[float] | None = None,
        std: Sequence[float] | None = None,
        channels: int = 1,
        *,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ):
        super().__init__()
        if mode not in NORMALIZATIONS:
            raise ConfigError(f"normalization must be one of {NORMALIZATIONS}, got {mode!r}")
        self.mode = mode
        mean = list(mean) if mean is not None else [0.0] * channels
        std = list(std) if std is not None else [1.0] * channels
        factory = {"device": device, "dtype": dtype or torch.float32}
        self.register_buffer("mean", torch.tensor(mean, **factory).view(1, -1, 1, 1))
        self.register_buffer("std", torch.tensor(std, **factory).view(1, -1, 1, 1))

    def forward(self, x: Tensor) -> Tensor:
        if self.mode == "dataset":
            return (x - self.mean) / self.std
        if self.mode == "per-image":
            flat = x.flatten(1)
            mu = flat.mean(dim=1).view(-1, 1, 1, 1)
            sd = flat.std(dim=1).clamp_min(1.0 / flat.shape[1] ** 0.5).view(-1, 1, 1, 1)
            return (x - mu) / sd
        return x

    def extra_repr(self) -> str:
        return f"mode={self.mode}"
