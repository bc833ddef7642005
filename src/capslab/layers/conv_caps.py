"""Convolutional capsule layers of DeepCaps / NASCaps: ConvCaps2D, ConvCaps3D, FlatCaps, CapsCell.

Capsule GRIDS are ``[B, T, D, H, W]``: ``T`` capsule types, each a ``D``-dimensional pose vector,
at every position of an ``H x W`` grid. Flattened capsules are ``[B, N, D]`` as everywhere else
in CapsLab (see :class:`FlatCaps`).

All convolutions use TensorFlow-style "same" padding, ``out = ceil(in / stride)``, with the odd
padding pixel on the bottom/right, as the DeepCaps and NASCaps reference code (Keras) does; the
genotypes' ``outsize`` fields rely on that rule.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from capslab.errors import ConfigError
from capslab.ops import squash
from capslab.routing import COUPLING_MODES_3D, dynamic_routing_3d


def same_output_size(size: int, stride: int) -> int:
    """Spatial size after a "same"-padded convolution: ``ceil(size / stride)``."""
    return math.ceil(size / stride)


def same_padding(size: int, kernel: int, stride: int) -> tuple[int, int]:
    """``(before, after)`` padding that gives ``ceil(size / stride)`` outputs (extra pixel after)."""
    out = same_output_size(size, stride)
    total = max((out - 1) * stride + kernel - size, 0)
    return total // 2, total - total // 2


def pad_same(x: Tensor, kernel: int, stride: int) -> Tensor:
    """Pad the last two (spatial) axes of ``x [..., H, W]`` for a "same" convolution."""
    top, bottom = same_padding(x.shape[-2], kernel, stride)
    left, right = same_padding(x.shape[-1], kernel, stride)
    if top == bottom == left == right == 0:
        return x
    return F.pad(x, (left, right, top, bottom))


class SameConv2d(nn.Conv2d):
    """``nn.Conv2d`` with "same" padding: ``[B, C_in, H, W] -> [B, C_out, ceil(H/s), ceil(W/s)]``.

    Used by the genotype-built networks for type-0 genes and primary capsules.
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, stride: int = 1,
                 groups: int = 1, bias: bool = True, *, device: torch.device | str | None = None,
                 dtype: torch.dtype | None = None):
        super().__init__(in_channels, out_channels, kernel_size, stride, padding=0, groups=groups,
                         bias=bias, device=device, dtype=dtype)

    def forward(self, x: Tensor) -> Tensor:
        return super().forward(pad_same(x, self.kernel_size[0], self.stride[0]))


def features_to_grid(x: Tensor, num_types: int) -> Tensor:
    """``[B, C, H, W] -> [B, T, C / T, H, W]``: read channel ``c = t * D + d`` as type t, dim d."""
    b, c, h, w = x.shape
    if c % num_types:
        raise ConfigError(f"{c} channels do not split into {num_types} capsule types")
    return x.view(b, num_types, c // num_types, h, w)


DEFAULT_INIT_GAIN = 3.0


def capsule_conv_init_(weight: Tensor, in_dim: int, out_dim: int, gain: float = DEFAULT_INIT_GAIN) -> None:
    """Initialise a capsule convolution so capsule lengths survive a deep stack of squashes.

    ``weight ~ N(0, gain^2 D_in / (D_out fan_in))`` makes the pre-squash output length about
    ``gain`` times the input capsules' length. ``squash`` maps a length ``x`` to
    ``x^2 / (1 + x^2)``, so the length map ``L -> squash(gain L)`` has a stable fixed point
    ``L* = (1 + sqrt(1 - 4 / gain^2)) / 2`` only for ``gain >= 2`` (0.87 for gain 3), and at that
    point directions pass with gain exactly 1. PyTorch's default (gain about 0.58) lets lengths
    fall roughly quadratically per layer: DeepCaps' 12 capsule convolutions then start at
    lengths ~1e-3 and class capsules ~1e-4, and training stalls for epochs.
    """
    fan_in = weight[0].numel()  # input channels per group x kernel volume
    nn.init.normal_(weight, std=gain * math.sqrt(in_dim / (out_dim * fan_in)))


class _CapsGridConv(nn.Module):
    """What ConvCaps2D and ConvCaps3D share: their sizes, "same" output size, input check and
    description. ``[B, T_in, D_in, H, W] -> [B, T_out, D_out, ceil(H / stride), ...]``."""

    def __init__(self, in_types: int, in_dim: int, out_types: int, out_dim: int,
                 kernel_size: int, stride: int, routing_iterations: int):
        super().__init__()
        self.in_types, self.in_dim, self.out_types, self.out_dim = in_types, in_dim, out_types, out_dim
        self.kernel_size, self.stride = kernel_size, stride
        self.routing_iterations = routing_iterations

    def output_size(self, size: int) -> int:
        return same_output_size(size, self.stride)

    def _check_input(self, x: Tensor) -> None:
        if x.dim() != 5 or x.shape[1] != self.in_types or x.shape[2] != self.in_dim:
            raise ConfigError(
                f"{type(self).__name__} expects a capsule grid "
                f"[B, {self.in_types}, {self.in_dim}, H, W], got shape {tuple(x.shape)}"
            )

    def extra_repr(self) -> str:
        return (
            f"{self.in_types}x{self.in_dim} -> {self.out_types}x{self.out_dim}, "
            f"kernel={self.kernel_size}, stride={self.stride}, routing={self.routing_iterations}"
        )


class ConvCaps2D(_CapsGridConv):
    """2-D convolutional capsules: ``[B, T_in, D_in, H, W] -> [B, T_out, D_out, H', W']``.

    ``H' = ceil(H / stride)`` ("same" padding).

    Without routing (``routing_iterations=0``, DeepCaps' Conv2DCaps): the grid is read as
    ``T_in * D_in`` channels, one ``k x k`` convolution produces ``T_out * D_out`` channels, which
    are squashed per output capsule. Parameters: ``T_in D_in k^2 T_out D_out`` weights
    ``+ T_out D_out`` biases.

    With routing (``routing_iterations=r > 0``): each input type ``i`` gets its own convolution
    (a grouped convolution, ``groups=T_in``) producing votes for every output type ``j`` at every
    output position, and :func:`~capslab.routing.dynamic_routing_3d` routes them with a softmax
    over the OUTPUT types at each position (``mode="types"``; unlike :class:`ConvCaps3D`, this
    layer is not DeepCaps' 3-D routing and keeps the per-position softmax). Parameters:
    ``T_in D_in k^2 T_out D_out`` weights ``+ T_in T_out D_out`` biases.

    Weights are initialised by :func:`capsule_conv_init_` (``init_gain``), biases at zero.
    """

    def __init__(
        self,
        in_types: int,
        in_dim: int,
        out_types: int,
        out_dim: int,
        kernel_size: int = 3,
        stride: int = 1,
        routing_iterations: int = 0,
        bias: bool = True,
        init_gain: float = DEFAULT_INIT_GAIN,
        *,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ):
        if min(in_types, in_dim, out_types, out_dim, kernel_size, stride) < 1:
            raise ConfigError("ConvCaps2D sizes, kernel and stride must all be >= 1")
        if routing_iterations < 0:
            raise ConfigError(f"routing_iterations must be >= 0, got {routing_iterations}")
        super().__init__(in_types, in_dim, out_types, out_dim, kernel_size, stride,
                         routing_iterations)
        if routing_iterations == 0:
            self.conv = nn.Conv2d(in_types * in_dim, out_types * out_dim, kernel_size, stride,
                                  bias=bias, device=device, dtype=dtype)
        else:
            # groups=T_in: the votes of input type i only see that type's D_in channels
            self.conv = nn.Conv2d(in_types * in_dim, in_types * out_types * out_dim, kernel_size,
                                  stride, groups=in_types, bias=bias, device=device, dtype=dtype)
        self.init_gain = init_gain
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Weights by :func:`capsule_conv_init_` (``init_gain``), biases at zero."""
        capsule_conv_init_(self.conv.weight, self.in_dim, self.out_dim, self.init_gain)
        if self.conv.bias is not None:
            nn.init.zeros_(self.conv.bias)

    def votes(self, x: Tensor) -> Tensor:
        """``[B, T_in, D_in, H, W] -> [B, T_in, T_out, D_out, H', W']`` (routing variant only)."""
        y = self._conv(x)
        return y.view(x.shape[0], self.in_types, self.out_types, self.out_dim, *y.shape[-2:])

    def forward(self, x: Tensor) -> Tensor:
        self._check_input(x)
        if self.routing_iterations > 0:
            return dynamic_routing_3d(self.votes(x), self.routing_iterations, mode="types")
        y = self._conv(x)
        return squash(y.view(x.shape[0], self.out_types, self.out_dim, *y.shape[-2:]), dim=2)

    def _conv(self, x: Tensor) -> Tensor:
        """The grid read as ``T_in * D_in`` channels, convolved: ``[B, C_out, H', W']``."""
        b, _, _, h, w = x.shape
        return self.conv(pad_same(x.reshape(b, -1, h, w), self.kernel_size, self.stride))


class ConvCaps3D(_CapsGridConv):
    """DeepCaps' 3-D convolutional capsules with 3-D dynamic routing.

    ``[B, T_in, D_in, H, W] -> [B, T_out, D_out, H', W']`` (``H' = ceil(H / stride)``).

    The grid is viewed as a one-channel volume of depth ``T_in * D_in``. One ``Conv3d`` with
    kernel ``(D_in, k, k)`` and depth stride ``D_in`` steps through the depth one input capsule
    at a time, so its ``T_out * D_out`` output channels at depth ``i`` are input type ``i``'s votes
    for every output capsule at every position: votes ``[B, T_in, T_out, D_out, H', W']``. The
    kernel is SHARED by all input types (that is what makes the layer cheap: it has
    ``D_in k^2 T_out D_out`` weights, independent of ``T_in``), plus a ``[T_out, D_out]`` bias
    added before the squash (initialised to 0.1 as in DeepCaps).

    The votes are routed by :func:`~capslab.routing.dynamic_routing_3d` for
    ``routing_iterations`` iterations. ``coupling="types+positions"`` (default, DeepCaps'
    ``softmax_3D`` as in the paper's 3-D routing and the authors' Keras code): each input
    type's couplings are normalised over the output types and output positions jointly
    (``c.sum((types, H', W')) == 1``); ``coupling="types"``: the softmax runs over the OUTPUT
    types, separately at every output position (``c.sum(types) == 1`` at each position). In
    both modes the squash acts on each ``D_out`` vector (the authors' code squashes over
    ``D_out, H, W`` jointly; we do not).
    """

    def __init__(
        self,
        in_types: int,
        in_dim: int,
        out_types: int,
        out_dim: int,
        kernel_size: int = 3,
        stride: int = 1,
        routing_iterations: int = 3,
        coupling: str = "types+positions",
        bias_init: float = 0.1,
        init_gain: float = DEFAULT_INIT_GAIN,
        *,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ):
        if min(in_types, in_dim, out_types, out_dim, kernel_size, stride, routing_iterations) < 1:
            raise ConfigError("ConvCaps3D sizes, kernel, stride and routing_iterations must be >= 1")
        if coupling not in COUPLING_MODES_3D:
            raise ConfigError(f"coupling must be one of {COUPLING_MODES_3D}, got {coupling!r}")
        super().__init__(in_types, in_dim, out_types, out_dim, kernel_size, stride,
                         routing_iterations)
        self.coupling = coupling
        self.conv = nn.Conv3d(1, out_types * out_dim, (in_dim, kernel_size, kernel_size),
                              (in_dim, stride, stride), bias=False, device=device, dtype=dtype)
        self.init_gain, self.bias_init = init_gain, float(bias_init)
        self.bias = nn.Parameter(torch.empty(out_types, out_dim, device=device, dtype=dtype))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """The shared kernel by :func:`capsule_conv_init_` (``init_gain``), the bias at
        ``bias_init``."""
        capsule_conv_init_(self.conv.weight, self.in_dim, self.out_dim, self.init_gain)
        nn.init.constant_(self.bias, self.bias_init)

    def votes(self, x: Tensor) -> Tensor:
        """``[B, T_in, D_in, H, W] -> [B, T_in, T_out, D_out, H', W']``."""
        b, _, _, h, w = x.shape
        vol = pad_same(x.reshape(b, 1, self.in_types * self.in_dim, h, w), self.kernel_size,
                       self.stride)
        y = self.conv(vol)  # [B, T_out * D_out, T_in, H', W']
        y = y.view(b, self.out_types, self.out_dim, self.in_types, *y.shape[-2:])
        return y.permute(0, 3, 1, 2, 4, 5)

    def forward(self, x: Tensor) -> Tensor:
        self._check_input(x)
        return dynamic_routing_3d(self.votes(x), self.routing_iterations, self.bias,
                                  mode=self.coupling)

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, coupling={self.coupling}"


class FlatCaps(nn.Module):
    """``[B, T, D, H, W] -> [B, T * H * W, D]``, type-major (capsule ``n`` has type
    ``n // (H * W)``), the order :class:`~capslab.layers.PrimaryCaps` uses. No parameters."""

    def forward(self, x: Tensor) -> Tensor:
        b, t, d, h, w = x.shape
        return x.permute(0, 1, 3, 4, 2).reshape(b, t * h * w, d)


class CapsCell(nn.Module):
    """The DeepCaps block: ``[B, T_in, D_in, H, W] -> [B, T_out, D_out, ceil(H/s), ceil(W/s)]``.

    ::

        x -> ConvCaps2D(k, stride s) -> a -> ConvCaps2D(k) -> ConvCaps2D(k) -> b
                                        a -> skip: ConvCaps2D(k) or ConvCaps3D(k, routing) -> c
        out = b + c            (squash(b + c) with squash_sum=True)

    The skip branch starts from the first (strided) layer's output, as in the DeepCaps reference
    code and the NASCaps hardware expansion (its skip layer works at the reduced size). The
    sum is NOT squashed by default, like both reference implementations: capsule lengths
    leaving a cell lie in [0, 2); the next layer's convolution / transformation matrices
    rescale them. ``skip="3d"`` is the last cell of DeepCaps (3-D dynamic routing, with the
    ``coupling`` softmax of :class:`ConvCaps3D`: ``"types+positions"`` by default, or
    ``"types"``).
    """

    def __init__(
        self,
        in_types: int,
        in_dim: int,
        out_types: int,
        out_dim: int,
        kernel_size: int = 3,
        stride: int = 2,
        skip: str = "2d",
        routing_iterations: int = 3,
        coupling: str = "types+positions",
        squash_sum: bool = False,
        *,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ):
        super().__init__()
        if skip not in ("2d", "3d"):
            raise ConfigError(f"skip must be '2d' or '3d', got {skip!r}")
        self.stride = stride
        self.skip_kind = skip
        self.squash_sum = squash_sum
        factory = {"device": device, "dtype": dtype}
        self.conv1 = ConvCaps2D(in_types, in_dim, out_types, out_dim, kernel_size, stride, **factory)
        self.conv2 = ConvCaps2D(out_types, out_dim, out_types, out_dim, kernel_size, 1, **factory)
        self.conv3 = ConvCaps2D(out_types, out_dim, out_types, out_dim, kernel_size, 1, **factory)
        if skip == "3d":
            self.skip = ConvCaps3D(out_types, out_dim, out_types, out_dim, kernel_size, 1,
                                   routing_iterations, coupling, **factory)
        else:
            self.skip = ConvCaps2D(out_types, out_dim, out_types, out_dim, kernel_size, 1, **factory)

    def output_size(self, size: int) -> int:
        return same_output_size(size, self.stride)

    def forward(self, x: Tensor) -> Tensor:
        a = self.conv1(x)
        out = self.conv3(self.conv2(a)) + self.skip(a)
        return squash(out, dim=2) if self.squash_sum else out

    def extra_repr(self) -> str:
        return f"skip={self.skip_kind}, squash_sum={self.squash_sum}"
