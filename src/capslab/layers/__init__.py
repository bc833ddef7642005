"""Capsule layers as ``nn.Module``s. Capsule tensors are ``[B, N, D]`` unless stated."""

from capslab.layers.class_caps import ClassCaps
from capslab.layers.decoder import CapsuleDecoder
from capslab.layers.input_norm import InputNormalization
from capslab.layers.primary_caps import ConvStem, PrimaryCaps

__all__ = ["ClassCaps", "CapsuleDecoder", "ConvStem", "InputNormalization", "PrimaryCaps"]
