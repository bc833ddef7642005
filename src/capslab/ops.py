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


def exp_squash(s: Tensor, dim: int = -1, eps: float = EPS) -> Tensor:
    """Efficient-CapsNet's squash: ``(1 - exp(-|s|)) * s / |s|``.

    Lengths rise faster than Sabour's ``|s|^2 / (1 + |s|^2)`` near zero (slope 1 instead of
    0), which Mazzia et al. found to train the non-iterative routing better.

    Args:
        s: ``[..., D, ...]`` capsule vectors along ``dim``.
    Returns:
        Tensor of the same shape whose vectors keep their direction and have length in [0, 1).
    """
    norm = safe_norm(s, dim=dim, keepdim=True, eps=eps)
    if torch.onnx.is_in_onnx_export():  # ONNX has no expm1; norm >= eps keeps 1 - exp exact enough
        return s * ((1.0 - torch.exp(-norm)) / norm)
    return s * (-torch.expm1(-norm) / norm)


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


def matmul_t(a: Tensor, b: Tensor, bias: Tensor | None = None) -> Tensor:
    """``a @ b.T (+ bias)``: the product of a linear layer, by oneDNN on the CPU in float32.

    oneDNN's inner product measured 1.3-1.9x faster than ``torch.mm`` (MKL) on the AMD EPYC
    development machine for the skinny products of a batch-1 PrimaryCaps convolution (36 rows
    against 20,736 columns); it also takes transposed views without a copy. Other devices and
    dtypes, builds without oneDNN and ``torch.compile`` use ``torch.addmm``/``torch.mm``.

    Shape:
        a: ``[M, K]``; b: ``[N, K]``; bias: ``[N]``. Returns ``[M, N]``.
    """
    # inductor cannot lower the oneDNN op on plain weights: compiled graphs use the GEMM
    if (not torch.compiler.is_compiling() and _onednn_ok(a) and _onednn_ok(b)
            and (bias is None or _onednn_ok(bias))):
        return torch.ops.mkldnn._linear_pointwise(a, b, bias, "none", [], "")
    if bias is None:
        return a @ b.t()
    return torch.addmm(bias, a, b.t())


def _onednn_ok(t: Tensor) -> bool:
    return t.device.type == "cpu" and t.dtype == torch.float32 and torch.backends.mkldnn.is_available()


def image_patches(x: Tensor, kernel_size: int, stride: int = 1) -> Tensor:
    """Every ``k x k`` patch of a valid convolution as one row (im2col, transposed).

    Shape:
        x: ``[B, C, H, W]``. Returns ``[B * H' * W', C * k * k]``: rows in (batch, row, column)
        order of the output grid, columns in (channel, kernel row, kernel column) order, the
        order of ``weight.reshape(C_out, -1)``.
    """
    b, c, _, _ = x.shape
    grid = x.unfold(2, kernel_size, stride).unfold(3, kernel_size, stride)  # [B, C, H', W', k, k]
    return grid.permute(0, 2, 3, 1, 4, 5).reshape(-1, c * kernel_size * kernel_size)


def sum_patches(patches: Tensor, batch: int, size: tuple[int, int], kernel_size: int, stride: int = 1) -> Tensor:
    """The adjoint of :func:`image_patches` (col2im): every patch added back where it was cut.

    Summed one axis at a time, over the output columns then the output rows: ``W' + H'``
    strided additions instead of ``fold``'s scatter. Timed in a batch-1 CapsNet training step
    (alternating blocks in one process), this order made the step 3-4% faster than rows first
    (its second pass adds whole ``k x W`` blocks), which was itself 3% faster than ``fold``.

    Shape:
        patches: ``[B * H' * W', C * k * k]`` as :func:`image_patches` lays them out.
        Returns ``[B, C, H, W]`` with ``(H, W) = size``.
    """
    h, w = size
    k, s = kernel_size, stride
    h_out, w_out = (h - k) // s + 1, (w - k) // s + 1
    c = patches.shape[1] // (k * k)
    grid = patches.view(batch, h_out, w_out, c, k, k)
    cols = patches.new_zeros(batch, h_out, c, k, w)  # summed over (output column, kernel column)
    for j in range(w_out):
        cols[..., s * j : s * j + k] += grid[:, :, j]  # [B, H', C, k, k]
    image = patches.new_zeros(batch, c, h, w)
    for i in range(h_out):
        image[:, :, s * i : s * i + k] += cols[:, i]  # [B, C, k, W]
    return image


class _Conv2dAsGemm(torch.autograd.Function):
    """Valid convolution as three matrix products over image patches (see conv2d_as_gemm)."""

    @staticmethod
    def forward(ctx, x: Tensor, weight: Tensor, bias: Tensor | None, stride: int) -> Tensor:
        b, _, h, w = x.shape
        c_out, _, k, _ = weight.shape
        # under autocast, all in its dtype as a convolution would be; the backward (which runs
        # outside autocast) then finds every tensor in that dtype, and autograd hands each
        # gradient back in its input's dtype
        device = x.device.type
        dtype = torch.get_autocast_dtype(device) if torch.is_autocast_enabled(device) else x.dtype
        x, weight = x.to(dtype), weight.to(dtype)
        bias = None if bias is None else bias.to(dtype)
        with torch.autocast(device, enabled=False):
            patches = image_patches(x, k, stride)  # [B*L, C_in*k*k]
            y = matmul_t(patches, weight.reshape(c_out, -1), bias)  # [B*L, C_out]
        ctx.save_for_backward(patches, weight)
        ctx.geometry = (b, h, w, stride, bias is not None)
        # [B, C_out, H', W'] in channels-last strides; a copy (B x 9,216 values for PrimaryCaps),
        # since autograd forbids in-place changes of a view made inside a Function
        return y.view(b, (h - k) // stride + 1, (w - k) // stride + 1, c_out).permute(0, 3, 1, 2).clone()

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad_y: Tensor):
        patches, weight = ctx.saved_tensors
        b, h, w, stride, has_bias = ctx.geometry
        c_out, _, k, _ = weight.shape
        dy = grad_y.permute(0, 2, 3, 1).reshape(-1, c_out).to(weight.dtype)  # [B*L, C_out]
        grad_x = grad_w = grad_b = None
        if ctx.needs_input_grad[0]:
            d_patches = matmul_t(dy, weight.reshape(c_out, -1).t())  # [B*L, C_in*k*k]
            grad_x = sum_patches(d_patches, b, (h, w), k, stride)
        if ctx.needs_input_grad[1]:
            grad_w = matmul_t(dy.t(), patches.t()).view_as(weight)
        if has_bias and ctx.needs_input_grad[2]:
            grad_b = dy.sum(0)
        return grad_x, grad_w, grad_b, None


def conv2d_as_gemm(x: Tensor, weight: Tensor, bias: Tensor | None, stride: int = 1) -> Tensor:
    """A valid (unpadded) 2-D convolution computed as matrix products over image patches.

    Same maths as ``F.conv2d(x, weight, bias, stride)``, with its own backward: the input
    gradient is one product and :func:`sum_patches`, the weight gradient one product, each by
    :func:`matmul_t`. On the development CPU, for the 9x9, 256-channel PrimaryCaps layer, this
    trains 2.6x faster than oneDNN's convolution at batch 1 and is level with it at batch 12
    (``benchmarks/primary_caps_gemm.py``, docs/benchmarks.md). Under autocast it computes in
    the autocast dtype. Not twice differentiable.

    Shape:
        x: ``[B, C_in, H, W]``; weight: ``[C_out, C_in, k, k]``; bias: ``[C_out]``.
        Returns ``[B, C_out, H', W']`` with ``H' = (H - k) // stride + 1``, in channels-last
        strides.
    """
    return _Conv2dAsGemm.apply(x, weight, bias, stride)
