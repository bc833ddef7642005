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


def conv2d_as_gemm(x: Tensor, weight: Tensor, bias: Tensor | None, stride: int = 1) -> Tensor:
    """A valid (unpadded) 2-D convolution computed as one matrix product over unfolded patches.

    Same maths as ``F.conv2d(x, weight, bias, stride)``. On the CPU at batch 1, oneDNN's
    backward of a large-kernel convolution is about 2x slower than this GEMM and its
    autograd (``fold`` for the input gradient); at batch 2 and above oneDNN is faster
    (``capslab bench`` and docs/benchmarks.md).

    Shape:
        x: ``[B, C_in, H, W]``; weight: ``[C_out, C_in, k, k]``; bias: ``[C_out]``.
        Returns ``[B, C_out, H', W']`` with ``H' = (H - k) // stride + 1``.
    """
    b, _, h, w = x.shape
    c_out, _, k, _ = weight.shape
    cols = torch.nn.functional.unfold(x, k, stride=stride)  # [B, C_in*k*k, H'*W']
    y = weight.reshape(c_out, -1) @ cols  # [B, C_out, H'*W']
    if bias is not None:
        y = y + bias[:, None]
    return y.view(b, c_out, (h - k) // stride + 1, (w - k) // stride + 1)
