"""Trainable networks built from NASCaps genotypes (``create_model("genotype", genotype=...)``).

How genes become layers (spatial sizes are recomputed from the real input, so a genotype
written for 64px CIFAR runs on 28px MNIST too; channels, capsule types and dimensions, kernels
and strides come from the genes):

- type 0 (conv): "same" ``Conv2d(k, stride)`` with ``out_channels * out_capsules`` channels
  (a gene's capsule fields just multiply its maps: it reads ``in_channels * in_capsules``
  maps, the previous gene's output), optional BatchNorm, ReLU. Its multiply weights are the
  ``inch * incaps * k^2 * outch * outcaps`` the hardware model counts (which adds one bias per
  ``outch * outcaps * incaps``; the network has one per output map, none with BatchNorm),
  as in the NASCaps authors' builder.
- type 1 (Sabour capsules): the first one is the primary capsule layer (a convolution whose
  channels are read as ``out_channels`` types x ``out_capsules`` dims, squashed); further
  non-last ones are :class:`~capslab.layers.conv_caps.ConvCaps2D`; the LAST one flattens the
  grid and is a fully connected :class:`~capslab.layers.ClassCaps` with routing to
  ``num_classes x out_capsules``. When the class layer is the only capsule gene it reads the
  last convolution's ``C`` maps as ``C * H * W`` one-dimensional capsules (on the genotype's
  own input size, with the gene's kernel equal to its input size, these are exactly the
  class-layer weights the hardware model counts, bias aside).
- type 2 (DeepCaps cells): :class:`~capslab.layers.conv_caps.CapsCell`; the cell just before
  the final stage has the ConvCaps3D (3-D routing) skip branch; the LAST type-2 gene is
  FlatCaps + class capsules with routing (directly on the convolution maps when no cell
  precedes it).
- ``dwcaps`` (readable format only): :class:`DepthwiseGene`, Efficient-CapsNet's depthwise
  primary capsules over the convolution's maps, a 1x1 grid of ``out_channels`` capsules.
- ``momentum`` / ``residual`` (readable format only): :class:`BlockGene`, the grid flattened
  and projected by a routed capsule layer to ``out_channels`` capsules of ``out_capsules``
  dimensions, then a :class:`~capslab.layers.momentum.MomentumCapsuleStack` (reversible,
  ``gamma``) or a :class:`~capslab.layers.momentum.ResidualCapsuleStack` (started near the
  identity) of ``blocks`` blocks, as in MoCapsNet / ResCapsNet; a 1x1 grid comes out.
- a gene's ``routing`` overrides the model's ``routing`` for that layer; ``shared`` class
  capsules share one matrix per input capsule type and class over the grid positions
  (FasTrCaps weight sharing).
- kernels larger than their input are built with "same" padding (the authors' search
  produced such genes).
- ``skip`` (xtraskip, counted from 1): the output of layer index ``skip - 1`` also feeds the
  final stage (see :func:`capslab.genotype.skip_source`); ``resize == 2``: the input is
  upsampled 2x (bilinear) first.

The number of classes comes from the dataset (``num_classes``), not from the genotype.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from capslab.errors import GenotypeError
from capslab.genotype import (
    Genotype,
    LayerKind,
    load_genotype,
    parse_genotype,
    skip_source,
)
from capslab.layers import ClassCaps, DepthwisePrimaryCaps
from capslab.layers.conv_caps import CapsCell, ConvCaps2D, FlatCaps, SameConv2d, features_to_grid
from capslab.layers.momentum import (
    MomentumCapsuleStack,
    ResidualCapsuleStack,
    capsule_layer,
    make_blocks,
)
from capslab.models.base import CapsuleClassifier, decoder_kind
from capslab.models.registry import register_model
from capslab.ops import safe_norm
from capslab.routing import dynamic_routing, scaled_distance_agreement, self_attention_routing


def as_genotype(genotype: Any) -> Genotype:
    """Accept a :class:`Genotype`, a NASCaps list, a capslab dict, a JSON string or a path."""
    if isinstance(genotype, Genotype):
        return genotype
    if isinstance(genotype, (list, tuple, dict)):
        return parse_genotype(genotype)
    if isinstance(genotype, (str, os.PathLike)):
        text = str(genotype).strip()
        if text.startswith(("[", "{")):
            try:
                return parse_genotype(json.loads(text))
            except json.JSONDecodeError as e:
                raise GenotypeError(f"genotype string is not valid JSON ({e})") from None
        return load_genotype(Path(genotype), check=False)
    raise GenotypeError(
        f"genotype must be a Genotype, a NASCaps list, a dict or a file path, got {type(genotype).__name__}"
    )


class ConvGene(nn.Sequential):
    """Type-0 gene: ``[B, C_in, H, W] -> [B, C_out, ceil(H/s), ceil(W/s)]``, conv (+BN) + ReLU."""

    def __init__(self, in_channels: int, out_channels: int, kernel: int, stride: int,
                 batchnorm: bool):
        layers: list[nn.Module] = [SameConv2d(in_channels, out_channels, kernel, stride,
                                              bias=not batchnorm)]
        if batchnorm:
            layers.append(nn.BatchNorm2d(out_channels))
        layers.append(nn.ReLU(inplace=True))
        super().__init__(*layers)


class DepthwiseGene(nn.Module):
    """``dwcaps`` gene: ``[B, C, H, W] -> [B, C / D, D, 1, 1]``, a depthwise filter as large as
    the maps (:class:`~capslab.layers.DepthwisePrimaryCaps`), read as a 1x1 capsule grid.
    ``kernel`` is the size of the maps that arrive (the builder's, not the gene's, so a
    genotype runs on another image size)."""

    def __init__(self, channels: int, capsule_dim: int, kernel: int):
        super().__init__()
        self.primary = DepthwisePrimaryCaps(channels, capsule_dim, kernel_size=kernel)

    def forward(self, x: Tensor) -> Tensor:
        return self.primary(x)[..., None, None]  # [B, T, D] -> [B, T, D, 1, 1]


class BlockGene(nn.Module):
    """``momentum`` / ``residual`` gene: ``[B, T, D_in, H, W] -> [B, N, D, 1, 1]``.

    The grid is flattened (``T * H * W`` capsules), a routed capsule layer projects it to ``N``
    capsules of ``D`` dimensions, and a momentum (reversible) or residual stack of ``blocks``
    blocks of two routed layers follows.
    """

    def __init__(self, kind: LayerKind, num_in: int, in_dim: int, num_capsules: int,
                 capsule_dim: int, blocks: int, routing: str, routing_iterations: int,
                 gamma: float = 0.9):
        super().__init__()
        self.flat = FlatCaps()
        self.project = capsule_layer(num_in, in_dim, num_capsules, capsule_dim, routing,
                                     routing_iterations)
        stack = make_blocks(blocks, num_capsules, capsule_dim, routing, routing_iterations)
        if kind == LayerKind.MOMENTUM:
            self.stack: nn.Module = MomentumCapsuleStack(stack, gamma=gamma)
        else:
            self.stack = ResidualCapsuleStack(stack).start_near_identity()

    def forward(self, grid: Tensor) -> Tensor:
        return self.stack(self.project(self.flat(grid)))[..., None, None]


class ClassStage(nn.Module):
    """Flatten one or more capsule grids and route them jointly to the class capsules.

    ``grids: list of [B, T_k, D_k, H_k, W_k] -> [B, num_classes, class_dim]``. Each source has
    its own :class:`ClassCaps` transformation matrices (so the sources may differ in capsule
    dimension); their predictions are concatenated along the input-capsule axis and routed once.
    With one source this is exactly FlatCaps + ClassCaps. ``sources`` are ``(capsules, dim)``
    or ``(capsules, dim, types)``; with ``shared`` each source's matrices are shared over its
    positions (one per type and class).
    """

    def __init__(self, sources: Sequence[tuple[int, ...]], num_classes: int, class_dim: int,
                 routing: str = "rba", routing_iterations: int = 3, shared: bool = False):
        super().__init__()
        self.flat = FlatCaps()
        self.routing = routing
        self.routing_iterations = routing_iterations
        self.caps = nn.ModuleList(
            ClassCaps(n, d, num_classes, class_dim, routing, routing_iterations,
                      share_types=(rest[0] if shared and rest else None))
            for n, d, *rest in sources
        )

    def forward(self, grids: Sequence[Tensor]) -> Tensor:
        if len(grids) != len(self.caps):
            raise ValueError(f"ClassStage expects {len(self.caps)} grid(s), got {len(grids)}")
        flats = [self.flat(g) for g in grids]  # [B, N_k, D_k]
        if len(flats) == 1:
            return self.caps[0](flats[0])  # ClassCaps' own fast paths
        u_hat = torch.cat([c.predictions(u) for c, u in zip(self.caps, flats, strict=True)], dim=1)
        if self.routing == "self-attention":
            bias = torch.cat([c.routing_bias for c in self.caps], dim=0)
            return self_attention_routing(u_hat, bias)
        if self.routing == "sda":
            u_norm = torch.cat([safe_norm(u, dim=-1) for u in flats], dim=1)
            return scaled_distance_agreement(u_hat, u_norm, self.routing_iterations)
        return dynamic_routing(u_hat, self.routing_iterations)


class GenotypeNet(CapsuleClassifier):
    """A capsule network built from a valid genotype; see the module docstring for the rules.

    ``[B, C, H, W] -> CapsuleOutput`` with ``[B, num_classes, class_dim]`` class capsules, where
    ``class_dim`` is the last gene's ``out_capsules``.

    Args:
        genotype: :class:`~capslab.genotype.Genotype`, NASCaps list, capslab dict, JSON text or
            file path. It must be buildable (:meth:`~capslab.genotype.Genotype.validate`); the
            search space's rules do not apply (one capsule layer, any kernel is fine).
        in_channels / image_size: the data (default: the genotype's first layer, the size
            divided by the resize factor).
        num_classes: class capsules (from the dataset).
        routing / routing_iterations: class-capsule routing (``"rba"`` or ``"sda"``) and the
            iterations of the class layer and of the 3-D routing in the last cell.
        conv_caps_routing: routing iterations inside type-1 ConvCaps2D genes (0 = none).
        batchnorm: BatchNorm after every type-0 convolution (the NASCaps code has one).
        coupling / squash_sum: cell options, see :class:`~capslab.layers.conv_caps.CapsCell`.
        gamma: momentum of ``momentum`` genes (0.9, MoCapsNet's).
        decoder / small_decoder / normalization / mean / std: as for ``capsnet``.
    """

    def __init__(
        self,
        genotype: Any,
        in_channels: int | None = None,
        image_size: int | None = None,
        num_classes: int = 10,
        routing: str = "rba",
        routing_iterations: int = 3,
        conv_caps_routing: int = 0,
        batchnorm: bool = True,
        coupling: str = "types+positions",
        squash_sum: bool = False,
        gamma: float = 0.9,
        decoder: bool = True,
        small_decoder: bool = False,
        normalization: str = "dataset",
        mean: Sequence[float] | None = None,
        std: Sequence[float] | None = None,
    ):
        g = as_genotype(genotype).validate()
        if in_channels is None:
            in_channels = g.in_channels
        if image_size is None:
            image_size = g.input_size // g.resize
        layers = g.layers
        class_dim = layers[-1].out_capsules
        super().__init__(
            (in_channels, image_size, image_size), num_classes, class_dim,
            decoder_kind(decoder, small_decoder), normalization, mean, std,
        )
        self.genotype = g
        self.resize = g.resize
        self.skip_source = skip_source(g)
        n = len(layers)

        size = image_size * g.resize
        channels = in_channels  # feature channels while in the convolutional part
        grid: tuple[int, int] | None = None  # (types, dim) once capsules start
        grids_seen: dict[int, tuple[int, int, int]] = {}  # layer -> (types, dim, size)
        blocks: dict[str, nn.Module] = {}
        first_caps = True
        for i, layer in enumerate(layers):
            is_last = i == n - 1
            k, s = layer.kernel, layer.stride
            if layer.kind == LayerKind.CONV:
                out = layer.out_channels * layer.out_capsules
                blocks[f"{i}_conv"] = ConvGene(channels, out, k, s, batchnorm)
                channels, size = out, -(-size // s)
                continue
            if layer.kind == LayerKind.DWCAPS:
                types, dim = layer.out_channels, layer.out_capsules
                blocks[f"{i}_dwcaps"] = DepthwiseGene(channels, dim, size)
                first_caps = False
                grid, size = (types, dim), 1
                grids_seen[i] = (types, dim, size)
                continue
            if grid is None:  # conv features -> capsule grid: C types of 1-D capsules
                grid = (channels, 1)
            gene_routing = layer.routing or routing
            if is_last:
                sources = [(grid[0] * size * size, grid[1], grid[0])]
                if self.skip_source is not None:
                    t, d, sz = grids_seen[self.skip_source]
                    sources.append((t * sz * sz, d, t))
                blocks[f"{i}_class"] = ClassStage(sources, num_classes, class_dim, gene_routing,
                                                  routing_iterations, shared=layer.shared)
                break
            types, dim = layer.out_channels, layer.out_capsules
            if layer.kind in (LayerKind.MOMENTUM, LayerKind.RESIDUAL):
                blocks[f"{i}_{layer.kind_name}"] = BlockGene(
                    layer.kind, grid[0] * size * size, grid[1], types, dim, layer.blocks,
                    gene_routing, routing_iterations, gamma,
                )
                first_caps = False
                grid, size = (types, dim), 1
                grids_seen[i] = (types, dim, size)
                continue
            if layer.kind == LayerKind.CAPS:
                name = "primary" if first_caps else "convcaps"
                # primary capsules = a capsule convolution on C one-dimensional "capsules"
                blocks[f"{i}_{name}"] = ConvCaps2D(grid[0], grid[1], types, dim, k, s,
                                                   0 if first_caps else conv_caps_routing)
            else:
                three_d = i == n - 2
                blocks[f"{i}_cell3d" if three_d else f"{i}_cell"] = CapsCell(
                    grid[0], grid[1], types, dim, k, s, skip="3d" if three_d else "2d",
                    routing_iterations=routing_iterations, coupling=coupling,
                    squash_sum=squash_sum,
                )
            first_caps = False
            grid, size = (types, dim), -(-size // s)
            grids_seen[i] = (types, dim, size)
        self.layers = nn.ModuleDict(blocks)

    # create_model() records its options on the model and checkpoints store them as JSON; keep
    # the genotype there as its exchange form (the NASCaps list, or the readable object for
    # newer genes; never a path), so a checkpoint rebuilds the same network anywhere.
    @property
    def model_options(self) -> dict[str, Any]:
        return self._model_options

    @model_options.setter
    def model_options(self, options: dict[str, Any]) -> None:
        options = dict(options)
        if "genotype" in options:
            options["genotype"] = self.genotype.exchange()
        self._model_options = options

    def hardware_genotype(self) -> Genotype:
        """The genotype this network was built from."""
        return self.genotype

    def encode(self, x: Tensor) -> Tensor:
        if self.resize == 2:
            x = F.interpolate(x, scale_factor=2, mode="bilinear", align_corners=False)
        h = x
        skip = None
        for name, block in self.layers.items():
            index = int(name.split("_", 1)[0])
            if h.dim() == 4 and not isinstance(block, (ConvGene, DepthwiseGene)):
                h = features_to_grid(h, h.shape[1])  # conv maps -> [B, C, 1, H, W]
            if isinstance(block, ClassStage):
                return block([h] if skip is None else [h, skip])
            h = block(h)
            if index == self.skip_source:
                skip = h
        raise RuntimeError("genotype network has no class stage")  # validate() prevents this


register_model("genotype")(GenotypeNet)

