"""The shape every CapsLab classifier shares: normalise -> encode -> class capsules -> decoder."""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

from torch import Tensor, nn

from capslab.errors import ConfigError
from capslab.genotype import Genotype
from capslab.layers.decoder import CapsuleDecoder
from capslab.layers.input_norm import InputNormalization
from capslab.ops import capsule_lengths


class CapsuleOutput(NamedTuple):
    """What every model returns.

    caps: ``[B, C, D]`` class capsules; lengths: ``[B, C]`` their lengths (class scores);
    reconstruction: ``[B, channels, H, W]`` in [0, 1], or ``None`` without a decoder.
    """

    caps: Tensor
    lengths: Tensor
    reconstruction: Tensor | None


def decoder_kind(decoder: bool, small_decoder: bool) -> str:
    """The models' ``decoder`` / ``small_decoder`` flags as :class:`CapsuleClassifier`'s
    ``decoder`` argument: ``"none"``, ``"small"`` or ``"full"``."""
    return "none" if not decoder else ("small" if small_decoder else "full")


class CapsuleClassifier(nn.Module):
    """Base class: subclasses build ``self`` layers and implement :meth:`encode`.

    Args:
        image_shape: ``(channels, height, width)`` of the input images.
        num_classes: number of class capsules.
        class_dim: class capsule dimension.
        decoder: ``"full"``, ``"small"`` or ``"none"``.
        normalization / mean / std: see :class:`InputNormalization`.
    """

    def __init__(
        self,
        image_shape: tuple[int, int, int],
        num_classes: int,
        class_dim: int = 16,
        decoder: str = "full",
        normalization: str = "dataset",
        mean: Sequence[float] | None = None,
        std: Sequence[float] | None = None,
    ):
        super().__init__()
        if decoder not in ("full", "small", "none"):
            raise ConfigError(f"decoder must be 'full', 'small' or 'none', got {decoder!r}")
        self.image_shape = tuple(image_shape)
        self.num_classes = num_classes
        self.input_norm = InputNormalization(normalization, mean, std, channels=image_shape[0])
        self.decoder = (
            None
            if decoder == "none"
            else CapsuleDecoder(num_classes, class_dim, self.image_shape, small=decoder == "small")
        )

    def encode(self, x: Tensor) -> Tensor:
        """``[B, channels, H, W]`` (normalised) -> class capsules ``[B, C, D]``."""
        raise NotImplementedError

    def hardware_genotype(self) -> Genotype | None:
        """The genotype the hardware model (:mod:`capslab.hw`) costs for this network, its
        weight layers in the order of the network's weight tensors; ``None`` when the network
        has no NASCaps description. Subclasses that have one override this."""
        return None

    def forward(self, x: Tensor, target: Tensor | None = None) -> CapsuleOutput:
        """``x [B, channels, H, W]`` in [0, 1]; ``target [B]`` masks the decoder (training)."""
        caps = self.encode(self.input_norm(x))
        recon = self.decoder(caps, target) if self.decoder is not None else None
        return CapsuleOutput(caps, capsule_lengths(caps), recon)
