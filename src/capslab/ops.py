"""Pure tensor functions shared by every capsule layer.

Shapes use ``...`` for any leading dimensions; ``dim`` is the capsule (pose) axis.
"""

from __future__ import annotations

import torch
from torch import Tensor

EPS = 1e-8


def safe_norm(s: Tensor, dim: int = -1, keepdim: bool = False, eps: float = EPS) -> Tensor:
    """Euclidean norm with ``eps`` inside the square root.

    ``torch.linalg.norm`` has an undefined (NaN) gradient at exactly zero; capsules that are
    all zero occur (dead ReLUs, zero padding), so every norm in CapsLab goes through here.
    """
    return torch.sqrt((s * s).sum(dim=dim, keepdim=keepdim) + eps)


def squash(s: Tensor, dim: int = -1, eps: float = EPS) -> Tensor:
    """Squash non-linearity of Sabour et al.: ``|s|^2 / (1 + |s|^2) * s / |s|``.

    Args:
        s: ``[..., D, ...]`` capsule vectors along ``dim``.
    Returns:
        Tensor of the same shape whose vectors keep their direction and have length in [0, 1).
    """
    sq = (s * s).sum(dim=dim, keepdim=True)
    return s * (sq / (1.0 + sq) / torch.sqrt(sq + eps))


def capsule_lengths(v: Tensor) -> Tensor:
    """``[B, N, D] -> [B, N]``: length of every capsule (the class probability in CapsNet)."""
    return safe_norm(v, dim=-1)


def mask_capsules(v: Tensor, target: Tensor | None = None) -> Tensor:
    """Zero every class capsule but one.

    Args:
        v: ``[B, C, D]`` class capsules.
        target: ``[B]`` class indices (training); ``None`` selects the longest capsule (test time).
    Returns:
        ``[B, C, D]`` with all capsules but the selected one set to zero.
    """
    index = select_class(v, target)
    one_hot = torch.nn.functional.one_hot(index, v.shape[1]).to(v.dtype)
    return v * one_hot.unsqueeze(-1)


def select_class(v: Tensor, target: Tensor | None = None) -> Tensor:
    """``[B, C, D] -> [B]``: the target class if given, else the index of the longest capsule."""
    if target is not None:
        return target
    return capsule_lengths(v).argmax(dim=1)


def selected_capsule(v: Tensor, target: Tensor | None = None) -> Tensor:
    """``[B, C, D] -> [B, D]``: only the selected capsule (the input of the small decoder)."""
    index = select_class(v, target)
    return v[torch.arange(v.shape[0], device=v.device), index]
