"""Efficient-CapsNet (Mazzia, Salvetti and Chiaberge 2021): a small capsule network with
depthwise primary capsules and non-iterative self-attention routing."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from capslab.errors import ConfigError
from capslab.layers import ClassCaps, DepthwisePrimaryCaps
from capslab.layers.primary_caps import conv_output_size
from capslab.models.base import CapsuleClassifier, decoder_kind
from capslab.models.registry import register_model

#: the stem's convolutions as (out channels, kernel, stride), each followed by BatchNorm + ReLU
STEM = ((32, 5, 1), (64, 3, 1), (64, 3, 1), (128, 3, 2))


class ConvBNReLU(nn.Sequential):
    """Convolution (valid padding) -> BatchNorm -> ReLU."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, stride: int = 1):
        super().__init__(
            nn.Conv2d(in_channels, out_channels, kernel_size, stride),
            nn.BatchNorm2d(out_channels),
            nn.ReLU(inplace=True),
        )


class EfficientCapsNet(CapsuleClassifier):
    """Conv 5x5/32, 3x3/64, 3x3/64, 3x3/128 stride 2 (each BN + ReLU) -> depthwise primary
    capsules (``K x K`` on the stem's ``K x K`` output: 16 x 8-D for MNIST) -> class capsules
    (C x 16-D, self-attention routing) -> the decoder.

    ``[B, channels, H, W] -> CapsuleOutput``. For MNIST the encoder has 161,824 trainable
    parameters, the paper's count (the decoder, used only for the reconstruction loss, is not
    counted there). The primary kernel is the stem's output size, so any image size gives one
    grid position: 28x28 -> 9x9, 32x32 -> 11x11.

    Args:
        primary_dim: dimension of the primary capsules (128 channels / 8 = 16 capsules).
        class_dim: dimension of the class capsules.
        routing: ``"self-attention"`` (the paper's), ``"rba"`` or ``"sda"`` for comparison.
    """

    def __init__(
        self,
        in_channels: int = 1,
        image_size: int = 28,
        num_classes: int = 10,
        primary_dim: int = 8,
        class_dim: int = 16,
        routing: str = "self-attention",
        routing_iterations: int = 3,
        decoder: bool = True,
        small_decoder: bool = False,
        normalization: str = "dataset",
        mean: Sequence[float] | None = None,
        std: Sequence[float] | None = None,
    ):
        super().__init__(
            (in_channels, image_size, image_size), num_classes, class_dim,
            decoder_kind(decoder, small_decoder), normalization, mean, std,
        )
        layers, channels, size = [], in_channels, image_size
        for out, kernel, stride in STEM:
            layers.append(ConvBNReLU(channels, out, kernel, stride))
            channels, size = out, conv_output_size(size, kernel, stride)
        if size < 1:
            raise ConfigError(f"image_size {image_size} is too small for Efficient-CapsNet's stem")
        self.stem = nn.Sequential(*layers)
        self.primary = DepthwisePrimaryCaps(channels, primary_dim, kernel_size=size)
        self.class_caps = ClassCaps(
            self.primary.num_types, primary_dim, num_classes, class_dim, routing,
            routing_iterations,
        )
        self.reset_parameters()
        # the stem computes channels-last: oneDNN's convolutions and their backward passes are
        # faster in that layout on the CPU (1.1-1.4x for these layers at batch 64)
        self.stem.to(memory_format=torch.channels_last)

    def reset_parameters(self) -> None:
        """He-normal convolutions and capsule matrices (the paper's Keras ``he_normal``; for the
        4-D capsule weight Keras takes the fan-in as outputs x inputs x input dimension), zero
        biases and routing log-priors."""
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                fan_in = m.weight[0].numel()
                nn.init.normal_(m.weight, std=(2.0 / fan_in) ** 0.5)
                nn.init.zeros_(m.bias)
        caps = self.class_caps
        nn.init.normal_(caps.weight, std=(2.0 / (caps.num_out * caps.num_in * caps.in_dim)) ** 0.5)
        if caps.routing_bias is not None:
            nn.init.zeros_(caps.routing_bias)

    def encode(self, x: Tensor) -> Tensor:
        features = self.stem(x.contiguous(memory_format=torch.channels_last))
        return self.class_caps(self.primary(features))


register_model("efficient-capsnet")(EfficientCapsNet)
