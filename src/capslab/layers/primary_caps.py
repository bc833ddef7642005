"""The convolutional stem and the primary capsule layers: Sabour et al.'s PrimaryCaps and
Efficient-CapsNet's depthwise primary capsules."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from capslab.errors import ConfigError
from capslab.ops import conv2d_as_gemm, exp_squash, squash


def conv_output_size(size: int, kernel: int, stride: int, padding: int = 0) -> int:
    """Spatial size after a convolution."""
    return (size + 2 * padding - kernel) // stride + 1


class ConvStem(nn.Module):
    """Plain convolution + ReLU: ``[B, C_in, H, W] -> [B, C_out, H', W']`` (valid padding).

    ``device``, ``dtype``: where and in which type the parameters are created (``torch.nn``'s
    factory arguments), as for every layer of :mod:`capslab.layers`.
    """

    def __init__(self, in_channels: int, out_channels: int = 256, kernel_size: int = 9, stride: int = 1,
                 *, device: torch.device | str | None = None, dtype: torch.dtype | None = None):
        super().__init__()
        self.conv = nn.Conv2d(in_channels, out_channels, kernel_size, stride, device=device,
                              dtype=dtype)
        self.act = nn.ReLU(inplace=True)

    def forward(self, x: Tensor) -> Tensor:
        return self.act(self.conv(x))


#: The largest CPU batch whose PrimaryCaps convolution runs as GEMMs (:func:`conv2d_as_gemm`)
#: when training, and when not. Measured on the development machine
#: (``benchmarks/primary_caps_gemm.py``, docs/benchmarks.md): for the 9x9, 256-channel layer the
#: GEMM form trains 2.6x faster than oneDNN's convolution at batch 1, 1.2x at batch 8 and is
#: level with it at 12; without gradients it is 1.7x faster at batch 1, 1.1x at 4 and level or
#: slower from 8.
GEMM_MAX_TRAIN_BATCH = 8
GEMM_MAX_EVAL_BATCH = 4


def gemm_max_batch(training: bool) -> int:
    """The largest batch the GEMM form takes: with gradients (``training``) or without."""
    return GEMM_MAX_TRAIN_BATCH if training else GEMM_MAX_EVAL_BATCH


class GemmConv2d(nn.Conv2d):
    """``nn.Conv2d`` (valid padding, no dilation or groups) that a small CPU batch computes as
    GEMMs (:func:`capslab.ops.conv2d_as_gemm`), up to :func:`gemm_max_batch` images.

    A subclass rather than a branch in its owner, so that the module is still called: hooks on
    it (activation quantization, feature extraction) see every batch, and its parameters keep
    the names of a plain convolution.
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, stride: int = 1,
                 *, device: torch.device | str | None = None, dtype: torch.dtype | None = None):
        super().__init__(in_channels, out_channels, kernel_size, stride, device=device, dtype=dtype)

    def forward(self, x: Tensor) -> Tensor:
        # an exported graph must not depend on the batch it was traced with: the plain path
        if (x.device.type == "cpu" and not torch.onnx.is_in_onnx_export()
                and x.shape[0] <= gemm_max_batch(torch.is_grad_enabled())):
            return conv2d_as_gemm(x, self.weight, self.bias, self.stride[0])
        return super().forward(x)


class PrimaryCaps(nn.Module):
    """Convolution whose channels are read as ``num_types`` capsule types of ``capsule_dim``.

    ``[B, C_in, H, W] -> [B, num_types * H' * W', capsule_dim]``, squashed. Capsules are ordered
    type-major (all grid positions of type 0, then type 1, ...), so capsule ``i`` has type
    ``i // (H' * W')``; weight sharing in :class:`ClassCaps` relies on this order.
    """

    def __init__(
        self,
        in_channels: int = 256,
        num_types: int = 32,
        capsule_dim: int = 8,
        kernel_size: int = 9,
        stride: int = 2,
        *,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ):
        super().__init__()
        self.num_types = num_types
        self.capsule_dim = capsule_dim
        # small batches (WarmAdaBatch, AdaBatch) run as GEMMs: faster there, see GemmConv2d
        self.conv = GemmConv2d(in_channels, num_types * capsule_dim, kernel_size, stride,
                               device=device, dtype=dtype)

    def forward(self, x: Tensor) -> Tensor:
        y = self.conv(x)  # [B, T*D, H, W]
        b, _, h, w = y.shape
        # channel c = t*D + d: type-major capsules of D dims
        y = y.view(b, self.num_types, self.capsule_dim, h * w).transpose(2, 3)
        return squash(y.reshape(b, self.num_types * h * w, self.capsule_dim))


class DepthwisePrimaryCaps(nn.Module):
    """Efficient-CapsNet's primary capsules: a depthwise convolution (one ``kernel_size``
    filter per channel) whose outputs are read as capsules of ``capsule_dim``, squashed with
    :func:`~capslab.ops.exp_squash`.

    ``[B, C, H, W] -> [B, (C / capsule_dim) * H' * W', capsule_dim]``, type-major like
    :class:`PrimaryCaps` (channel ``c`` is dimension ``c % D`` of type ``c // D``). With
    ``kernel_size`` equal to the input size (Efficient-CapsNet: 9x9 on 9x9x128) the grid is 1x1
    and the layer holds ``C / D`` capsules for ``C * (K * K + 1)`` parameters.
    """

    def __init__(self, channels: int = 128, capsule_dim: int = 8, kernel_size: int = 9,
                 stride: int = 1, *, device: torch.device | str | None = None,
                 dtype: torch.dtype | None = None):
        super().__init__()
        if channels % capsule_dim:
            raise ConfigError(f"{channels} channels do not split into capsules of {capsule_dim}")
        self.num_types = channels // capsule_dim
        self.capsule_dim = capsule_dim
        self.conv = nn.Conv2d(channels, channels, kernel_size, stride, groups=channels,
                              device=device, dtype=dtype)

    def forward(self, x: Tensor) -> Tensor:
        if x.shape[-2:] == self.conv.weight.shape[-2:]:
            # the kernel covers the input: each output is one channel's dot product with its
            # filter. As a product and a sum a training step takes 0.6 ms on the CPU against
            # 4.6 for oneDNN's grouped convolution (batch 64, 128 channels of 9x9)
            y = ((x * self.conv.weight[:, 0]).sum(dim=(2, 3)) + self.conv.bias)[:, :, None, None]
        else:
            y = self.conv(x)  # [B, C, H', W']
        b, _, h, w = y.shape
        y = y.view(b, self.num_types, self.capsule_dim, h * w).transpose(2, 3)
        return exp_squash(y.reshape(b, self.num_types * h * w, self.capsule_dim))

    def extra_repr(self) -> str:
        return f"{self.num_types} types x {self.capsule_dim}-D, depthwise"
