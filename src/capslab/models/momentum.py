"""Deep capsule networks with residual (ResCapsNet) and momentum (MoCapsNet) blocks.

Layout (Gugglberger et al., Momentum Capsule Networks): conv 9x9 -> PrimaryCaps 9x9/2 ->
capsule layer 1 (all primary capsules -> 32 x 8-D) -> ``num_blocks`` blocks of two fully
connected capsule layers (32 -> 32, routing in every layer) -> capsule layer 2
(32 -> classes x 16-D) -> decoder.

Two options give the authors' code where it differs from the paper's text (the default is
CapsLab's reading of the text): ``shortcut="layer"`` puts a shortcut around each capsule layer
of a block (and restarts MoCapsNet's velocity in every block) instead of one around the pair;
``sda_bias=True`` adds a learned bias (initialised to 0.1) to ``s_j`` in SDA routing.
"""

from __future__ import annotations

import inspect
from collections.abc import Sequence

from torch import Tensor, nn

from capslab.errors import ConfigError
from capslab.layers import ConvStem, PrimaryCaps
from capslab.layers.momentum import (
    DEFAULT_FRAC_BITS,
    SHORTCUTS,
    MomentumCapsuleStack,
    ResidualCapsuleStack,
    capsule_layer,
    make_blocks,
)
from capslab.layers.primary_caps import conv_output_size
from capslab.models.base import CapsuleClassifier, decoder_kind
from capslab.models.registry import register_model


class BlockCapsNet(CapsuleClassifier):
    """Shared body of ResCapsNet and MoCapsNet; ``stack`` is built by the subclass.

    ``[B, channels, H, W] -> CapsuleOutput``; the stack maps ``[B, block_capsules, block_dim]``
    to the same shape. ``stack_factory(blocks, shortcut)`` builds it.

    ``shortcut``: ``"block"`` (default, the paper's text: ``x + f2(f1(x))`` per block) or
    ``"layer"`` (the authors' code: ``x + f1(x)``, then ``+ f2(.)``, MoCapsNet's velocity reset
    in every block). ``sda_bias``: with ``routing="sda"``, every capsule layer learns a bias
    added to ``s_j`` (the authors' code). The other options are widths, routing and the
    decoder, as in :class:`~capslab.models.capsnet.CapsNet`.
    """

    def __init__(
        self,
        stack_factory,
        in_channels: int = 1,
        image_size: int = 28,
        num_classes: int = 10,
        num_blocks: int = 1,
        routing: str = "rba",
        routing_iterations: int = 3,
        conv_channels: int = 256,
        primary_types: int = 32,
        primary_dim: int = 8,
        block_capsules: int = 32,
        block_dim: int = 8,
        class_dim: int = 16,
        init_std: float | None = None,
        decoder: bool = True,
        small_decoder: bool = False,
        normalization: str = "per-image",
        mean: Sequence[float] | None = None,
        std: Sequence[float] | None = None,
        shortcut: str = "block",
        sda_bias: bool = False,
    ):
        if shortcut not in SHORTCUTS:
            raise ConfigError(f"shortcut must be one of {SHORTCUTS}, got {shortcut!r}")
        if sda_bias and routing != "sda":
            raise ConfigError(f"sda_bias is a bias of SDA routing; routing is {routing!r}")
        if num_blocks < 0:
            raise ConfigError(f"num_blocks must be >= 0, got {num_blocks}")
        for name, value in (
            ("conv_channels", conv_channels), ("primary_types", primary_types),
            ("primary_dim", primary_dim), ("block_capsules", block_capsules),
            ("block_dim", block_dim), ("class_dim", class_dim),
            ("routing_iterations", routing_iterations),
        ):
            if value < 1:
                raise ConfigError(f"{name} must be >= 1, got {value}")
        super().__init__(
            (in_channels, image_size, image_size), num_classes, class_dim,
            decoder_kind(decoder, small_decoder), normalization, mean, std,
        )
        grid = conv_output_size(conv_output_size(image_size, 9, 1), 9, 2)
        if grid < 1:
            raise ConfigError(f"image_size {image_size} is too small for two 9x9 convolutions")
        self.num_blocks = num_blocks
        self.conv = ConvStem(in_channels, conv_channels, 9, 1)
        self.primary = PrimaryCaps(conv_channels, primary_types, primary_dim, 9, 2)
        self.caps1 = capsule_layer(primary_types * grid * grid, primary_dim, block_capsules,
                                   block_dim, routing, routing_iterations, init_std, sda_bias)
        blocks = make_blocks(num_blocks, block_capsules, block_dim, routing, routing_iterations,
                             init_std, sda_bias)
        self.stack = stack_factory(blocks, shortcut)
        self.caps2 = capsule_layer(block_capsules, block_dim, num_classes, class_dim, routing,
                                   routing_iterations, init_std, sda_bias)

    def encode(self, x: Tensor) -> Tensor:
        u = self.caps1(self.primary(self.conv(x)))  # [B, block_capsules, block_dim]
        return self.caps2(self.stack(u))  # [B, classes, class_dim]


class ResCapsNet(BlockCapsNet):
    """Residual capsule network: ``x_{n+1} = x_n + f(x_n)``. Options as :class:`BlockCapsNet`.

    Every residual function starts short (:meth:`ResidualCapsuleStack.start_near_identity`):
    at full size one block adds a capsule about as long as its input in a random direction, and
    the class layer's capsules then start saturated and do not learn for epochs
    (docs/momentum.md).
    """

    def __init__(self, **options):
        def factory(blocks: nn.ModuleList, shortcut: str) -> ResidualCapsuleStack:
            return ResidualCapsuleStack(blocks, shortcut).start_near_identity()

        super().__init__(factory, **options)


class MoCapsNet(BlockCapsNet):
    """Momentum capsule network.

    Args:
        gamma: momentum in (0, 1] (0.9 in the paper).
        memory_efficient: reversible backward through the blocks (memory flat in depth);
            ``False`` runs the same maths under plain autograd.
        frac_bits: fixed-point fractional bits of the reversible state.
        **options: as :class:`BlockCapsNet`.
    """

    def __init__(
        self,
        gamma: float = 0.9,
        memory_efficient: bool = True,
        frac_bits: int = DEFAULT_FRAC_BITS,
        **options,
    ):
        def factory(blocks: nn.ModuleList, shortcut: str) -> MomentumCapsuleStack:
            return MomentumCapsuleStack(blocks, gamma, memory_efficient, frac_bits, shortcut)

        super().__init__(factory, **options)


def _register(name: str, cls: type[BlockCapsNet]) -> None:
    """Register ``cls`` as model ``name`` with the signature of what ``cls(**options)`` accepts
    (BlockCapsNet's options less ``stack_factory``, then the class's own), so that the registry
    lists and checks every option."""
    own = list(inspect.signature(cls.__init__).parameters.values())[1:-1]  # less self, **options
    shared = list(inspect.signature(BlockCapsNet.__init__).parameters.values())[2:]
    cls.__signature__ = inspect.Signature(
        [p.replace(kind=inspect.Parameter.KEYWORD_ONLY) for p in (*shared, *own)]
    )
    register_model(name)(cls)


_register("rescapsnet", ResCapsNet)
_register("mocapsnet", MoCapsNet)
# the registered names, importable as the factory functions they once were
rescapsnet = ResCapsNet
mocapsnet = MoCapsNet
