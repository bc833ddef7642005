"""The published genotypes: CapsNet and DeepCaps as NASCaps genes."""

from __future__ import annotations

from capslab.genotype.network import Genotype

CAPSNET_GENOTYPE = Genotype.from_nascaps(
    [
        [0, 28, 1, 1, 9, 1, 28, 256, 1],
        [1, 28, 256, 1, 9, 2, 14, 32, 8],
        [1, 14, 32, 8, 9, 2, 7, 10, 16],
        [-1],
        [1],
    ]
)
"""The published CapsNet genotype (same padding: 28 -> 28 -> 14 -> 7)."""

DEEPCAPS_GENOTYPE = Genotype.from_nascaps(
    [
        [0, 64, 3, 1, 3, 1, 64, 128, 1],
        [2, 64, 32, 4, 3, 2, 32, 32, 4],
        [2, 32, 32, 4, 3, 2, 16, 32, 8],
        [2, 16, 32, 8, 3, 2, 8, 32, 8],
        [2, 8, 32, 8, 3, 2, 4, 32, 8],
        [2, 4, 32, 8, 4, 1, 1, 10, 16],
        [4],
        [2],
    ]
)
"""The published DeepCaps genotype (CIFAR-10 sized: 32px x resize 2 = 64)."""
