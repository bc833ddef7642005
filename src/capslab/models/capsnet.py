"""The baseline CapsNet of Sabour, Frosst and Hinton (2017), with FasTrCaps' options."""

from __future__ import annotations

from collections.abc import Sequence

from torch import Tensor

from capslab.errors import ConfigError
from capslab.genotype import Genotype
from capslab.layers import ClassCaps, ConvStem, PrimaryCaps
from capslab.layers.primary_caps import conv_output_size
from capslab.models.base import CapsuleClassifier, decoder_kind
from capslab.models.registry import register_model


class CapsNet(CapsuleClassifier):
    """Conv 9x9/256 -> PrimaryCaps 9x9/2 (32 x 8-D) -> ClassCaps (C x 16-D, routing) -> decoder.

    ``[B, channels, H, W] -> CapsuleOutput`` (28x28 gives 6x6x32 = 1,152 primary capsules,
    32x32 gives 8x8x32 = 2,048).
    """

    def __init__(
        self,
        in_channels: int = 1,
        image_size: int = 28,
        num_classes: int = 10,
        conv_channels: int = 256,
        primary_types: int = 32,
        primary_dim: int = 8,
        class_dim: int = 16,
        routing: str = "rba",
        routing_iterations: int = 3,
        weight_sharing: bool = False,
        small_decoder: bool = False,
        decoder: bool = True,
        normalization: str = "dataset",
        mean: Sequence[float] | None = None,
        std: Sequence[float] | None = None,
    ):
        super().__init__(
            (in_channels, image_size, image_size), num_classes, class_dim,
            decoder_kind(decoder, small_decoder), normalization, mean, std,
        )
        self.conv = ConvStem(in_channels, conv_channels, 9, 1)
        self.primary = PrimaryCaps(conv_channels, primary_types, primary_dim, 9, 2)
        grid = conv_output_size(conv_output_size(image_size, 9, 1), 9, 2)
        if grid < 1:
            raise ConfigError(f"image_size {image_size} is too small for two 9x9 convolutions")
        self.class_caps = ClassCaps(
            primary_types * grid * grid, primary_dim, num_classes, class_dim, routing,
            routing_iterations, share_types=primary_types if weight_sharing else None,
        )

        self._genes = capsnet_genes(in_channels, image_size, num_classes, conv_channels,
                                    primary_types, primary_dim, class_dim)

    def encode(self, x: Tensor) -> Tensor:
        return self.class_caps(self.primary(self.conv(x)))

    def hardware_genotype(self) -> Genotype:
        """NASCaps' description of CapsNet at this network's sizes (same padding, as the
        authors costed it): :data:`~capslab.genotype.CAPSNET_GENOTYPE` at the defaults."""
        return Genotype.from_nascaps(self._genes)


def capsnet_genes(in_channels: int, image_size: int, num_classes: int, conv_channels: int,
                  primary_types: int, primary_dim: int, class_dim: int) -> list[list[int]]:
    """The NASCaps genes of a CapsNet: the 9x9 stem, primary capsules (9x9, stride 2) and the
    class capsules with a 9x9 kernel over the primary grid, each side halved by stride 2
    (same padding), then no skip and no resize."""
    s1, s2 = image_size, -(-image_size // 2)
    return [[0, s1, in_channels, 1, 9, 1, s1, conv_channels, 1],
            [1, s1, conv_channels, 1, 9, 2, s2, primary_types, primary_dim],
            [1, s2, primary_types, primary_dim, 9, 2, -(-s2 // 2), num_classes, class_dim],
            [-1], [1]]


register_model("capsnet")(CapsNet)
