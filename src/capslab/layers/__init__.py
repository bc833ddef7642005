"""Capsule layers as ``nn.Module``s. Capsule tensors are ``[B, N, D]``; capsule grids are
``[B, types, D, H, W]``."""

from capslab.layers.class_caps import ClassCaps
from capslab.layers.conv_caps import CapsCell, ConvCaps2D, ConvCaps3D, FlatCaps
from capslab.layers.decoder import CapsuleDecoder
from capslab.layers.input_norm import InputNormalization
from capslab.layers.primary_caps import ConvStem, DepthwisePrimaryCaps, GemmConv2d, PrimaryCaps

__all__ = [
    "CapsCell", "CapsuleDecoder", "ClassCaps", "ConvCaps2D", "ConvCaps3D", "ConvStem",
    "DepthwisePrimaryCaps", "FlatCaps",
    "GemmConv2d", "InputNormalization", "PrimaryCaps",
]
