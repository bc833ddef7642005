"""DeepCaps (Rajasegaran et al., CVPR 2019) in the form NASCaps describes and measures."""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from capslab.errors import ConfigError
from capslab.genotype import Genotype, skip_value
from capslab.layers import ClassCaps
from capslab.layers.conv_caps import CapsCell, FlatCaps, SameConv2d, features_to_grid
from capslab.models.base import CapsuleClassifier, decoder_kind
from capslab.models.registry import register_model


class DeepCaps(CapsuleClassifier):
    """Conv 3x3 + ReLU + BatchNorm -> four CapsCells -> FlatCaps -> ClassCaps -> decoder.

    Layers are indexed as in the genotype (:mod:`capslab.genotype`): layer 0 is the stem
    convolution, layers 1..n the ``n`` cells, layer n + 1 the flatten + class capsule stage.
    Shapes for the default configuration (``S`` = input size, times ``resize``):

    - ``[B, C, S, S]`` -> conv ``[B, 128, S, S]`` read as a capsule grid ``[B, 128, 1, S, S]``
      (128 one-dimensional capsules per position, as DeepCaps' ConvertToCaps does);
    - cell 1 (stride 2): ``[B, 32, 4, S/2, S/2]``; cells 2-4 (stride 2 each): ``[B, 32, 8, ...]``
      down to ``ceil(S/16)``; the last cell's skip branch is a :class:`ConvCaps3D` with 3-D
      dynamic routing;
    - FlatCaps of cell 4 and of the layer ``skip`` points at (``skip=4``: layer 3, the third
      cell, as in DeepCaps), concatenated: ``[B, 32 (s4^2 + s3^2), 8]``;
    - ClassCaps with ``routing_iterations`` of routing-by-agreement -> ``[B, classes, class_dim]``.

    32x32x3 with ``resize=2`` (64x64) is the published DeepCaps genotype of NASCaps
    (:data:`~capslab.genotype.DEEPCAPS_GENOTYPE`, which has ``skip 4, resize 2`` too):
    cells 64 -> 32 -> 16 -> 8 -> 4 and 4x4x32 + 8x8x32 = 2,560 capsules into the class layer.

    Args:
        in_channels, image_size, num_classes: the data.
        resize: 1 (native size) or 2: upsample the input 2x (bilinear) before the first
            convolution (28 -> 56, 32 -> 64), as the DeepCaps paper does; the genotype's resize
            factor. The decoder still reconstructs the original.
        conv_channels: channels of the first convolution (128).
        num_types: capsule types in every cell (32).
        capsule_dims: capsule dimension of each cell's output (4, 8, 8, 8); the number of
            cells is ``len(capsule_dims)``, the last one has the 3-D routing skip.
        kernel_size: kernel of every convolution (3).
        class_dim: class capsule dimension (16, as in NASCaps' genotype; the authors' code
            used 32).
        routing_iterations: iterations of the class layer and of the 3-D routing (3).
        skip: the genotype's skip (xtraskip): ``skip = s`` also feeds the output of layer index
            ``s - 1`` (cell ``s - 1``) to the class capsules. 4 (the third cell) as in DeepCaps;
            -1 for none. Valid: -1 and ``2..len(capsule_dims)`` (the last cell feeds the class
            capsules anyway).
        coupling: 3-D routing softmax, ``"types+positions"`` (default, DeepCaps' softmax_3D:
            over output types and positions jointly) or ``"types"`` (per position); see
            :class:`~capslab.layers.conv_caps.ConvCaps3D`.
        squash_sum: squash the sum at the end of every cell (default False, as DeepCaps).
        decoder / small_decoder / normalization / mean / std: as for ``capsnet``.
    """

    def __init__(
        self,
        in_channels: int = 1,
        image_size: int = 28,
        num_classes: int = 10,
        resize: int = 1,
        conv_channels: int = 128,
        num_types: int = 32,
        capsule_dims: Sequence[int] = (4, 8, 8, 8),
        kernel_size: int = 3,
        class_dim: int = 16,
        routing_iterations: int = 3,
        skip: int = 4,
        coupling: str = "types+positions",
        squash_sum: bool = False,
        decoder: bool = True,
        small_decoder: bool = False,
        normalization: str = "dataset",
        mean: Sequence[float] | None = None,
        std: Sequence[float] | None = None,
    ):
        dims = [int(d) for d in capsule_dims]
        if not dims:
            raise ConfigError("deepcaps: capsule_dims must name at least one cell")
        if type(resize) is not int or resize not in (1, 2):  # not a bool, not a float
            raise ConfigError(f"deepcaps: resize must be 1 or 2, got {resize!r}")
        # cells are layers 1..n; the last one feeds the class capsules anyway
        skips = [skip_value(layer) for layer in range(1, len(dims))]
        if type(skip) is not int or skip not in (-1, *skips):
            valid = ", ".join(str(s) for s in (-1, *skips))
            raise ConfigError(
                f"deepcaps: skip must be one of {valid} (-1 = none; skip = s also feeds layer "
                "index s - 1, cell s - 1, to the class capsules; not the last cell, which feeds "
                f"them anyway), got {skip!r}"
            )
        skip_layer = None if skip == -1 else skip - 1  # the layer index = the 1-based cell
        if skip_layer is not None and dims[skip_layer - 1] != dims[-1]:
            raise ConfigError(
                f"deepcaps: skip {skip} points at cell {skip_layer}, which has "
                f"{dims[skip_layer - 1]}-D capsules but the last cell has {dims[-1]}-D; "
                "both feed one class layer"
            )
        super().__init__(
            (in_channels, image_size, image_size), num_classes, class_dim,
            decoder_kind(decoder, small_decoder), normalization, mean, std,
        )
        self.resize = resize
        self.skip = skip
        self.skip_layer = skip_layer
        self.stem = nn.Sequential(
            SameConv2d(in_channels, conv_channels, kernel_size, 1),
            nn.ReLU(inplace=True),
            nn.BatchNorm2d(conv_channels),
        )
        self.conv_channels = conv_channels
        size = image_size * resize
        sizes = []
        cells = []
        in_types, in_dim = conv_channels, 1
        for i, d in enumerate(dims):
            last = i == len(dims) - 1
            cells.append(CapsCell(in_types, in_dim, num_types, d, kernel_size, 2,
                                  skip="3d" if last else "2d",
                                  routing_iterations=routing_iterations, coupling=coupling,
                                  squash_sum=squash_sum))
            size = cells[-1].output_size(size)
            sizes.append(size)
            in_types, in_dim = num_types, d
        self.cells = nn.ModuleList(cells)
        self.flat = FlatCaps()
        num_in = num_types * sizes[-1] ** 2
        if skip_layer is not None:
            num_in += num_types * sizes[skip_layer - 1] ** 2
        self.class_caps = ClassCaps(num_in, dims[-1], num_classes, class_dim, "rba",
                                    routing_iterations)
        self._genes = deepcaps_genes(in_channels, image_size * resize, conv_channels, num_types,
                                     dims, sizes, kernel_size, num_classes, class_dim, skip,
                                     resize)

    def hardware_genotype(self) -> Genotype:
        """NASCaps' description of DeepCaps at this network's sizes:
        :data:`~capslab.genotype.DEEPCAPS_GENOTYPE` for CIFAR-10 (3 x 32 x 32, resize 2)."""
        return Genotype.from_nascaps(self._genes)

    def encode(self, x: Tensor) -> Tensor:
        if self.resize == 2:
            x = F.interpolate(x, scale_factor=2, mode="bilinear", align_corners=False)
        h = features_to_grid(self.stem(x), self.conv_channels)  # [B, 128, 1, S, S]
        skip = None
        for layer, cell in enumerate(self.cells, start=1):  # layer index: the stem is layer 0
            h = cell(h)
            if layer == self.skip_layer:
                skip = h
        u = self.flat(h)  # [B, T s_last^2, D]
        if skip is not None:
            u = torch.cat([u, self.flat(skip)], dim=1)  # last cell first, as DeepCaps
        return self.class_caps(u)


# registered as the class itself, so create_model / model_options see its real signature
register_model("deepcaps")(DeepCaps)


def deepcaps_genes(in_channels: int, size: int, conv_channels: int, num_types: int,
                   dims: list[int], sizes: list[int], kernel_size: int, num_classes: int,
                   class_dim: int, skip: int, resize: int) -> list[list[int]]:
    """The NASCaps genes of a DeepCaps: the stem at the resized input ``size``, one cell gene
    per cell (its output side in ``sizes``) and the class capsules with a kernel covering the
    last grid. As the authors wrote it, the stem's maps enter the first cell as ``num_types``
    capsule types of ``conv_channels / num_types`` dimensions."""
    genes = [[0, size, in_channels, 1, kernel_size, 1, size, conv_channels, 1]]
    types, caps = ((num_types, conv_channels // num_types) if conv_channels % num_types == 0
                   else (conv_channels, 1))
    side = size
    for d, out in zip(dims, sizes, strict=True):
        genes.append([2, side, types, caps, kernel_size, 2, out, num_types, d])
        side, types, caps = out, num_types, d
    genes.append([2, side, types, caps, side, 1, 1, num_classes, class_dim])
    return genes + [[skip], [resize]]
