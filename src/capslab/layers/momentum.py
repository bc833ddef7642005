"""Residual and momentum (reversible) stacks of fully connected capsule blocks.

A block ``f`` is two :class:`~capslab.layers.ClassCaps` layers ``[B, N, D] -> [B, N, D]`` with
routing in each. Two ways to stack ``num_blocks`` of them:

* :class:`ResidualCapsuleStack`: ``x <- x + f(x)`` (the addition after the squash).
* :class:`MomentumCapsuleStack`: ``v <- gamma v + (1 - gamma) f(x)``, ``x <- x + v`` with
  ``v = 0`` at the start. The map ``(x, v) -> (x', v')`` is invertible
  (``x = x' - v'``, ``v = (v' - (1 - gamma) f(x)) / gamma``), so with
  ``memory_efficient=True`` the whole stack runs inside ONE autograd function that keeps only
  the final state and rebuilds every block's input in the backward pass.

Where the shortcuts go (``shortcut``). ``"block"`` (CapsLab's reading of the paper's text and
Figure 2): one shortcut around each block's pair of layers, ``x <- x + f2(f1(x))``, and one
velocity through the whole momentum stack. ``"layer"`` (the authors' code): a shortcut around
EACH capsule layer, ``x <- x + f1(x); x <- x + f2(x)``, and in the momentum stack the velocity
starts afresh at 0 in every block (each block is its own two-layer momentum network).

Exactness. Inverting in floating point loses bits at every block (the division by gamma above
all), so the reversible path keeps the state in fixed point: ``x`` and ``v`` are int64
multiples of ``2**-frac_bits``. Additions are then exact integer additions, and the
multiplication by ``gamma = num / den`` (a small rational) is made exactly invertible by
pushing the remainder it drops into an int64 "bit store" of the same shape as ``v``
(Maclaurin et al. 2015's trick, also used by the momentumnet library): the store grows by
``log2(den / num)`` bits per block, which bounds the depth (see :func:`max_exact_blocks`).
The backward pass therefore reconstructs every block's input bit for bit, and recomputing
``f`` on it gives exactly the forward's value.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from contextlib import nullcontext
from dataclasses import dataclass
from fractions import Fraction
from typing import NamedTuple

import torch
from torch import Tensor, nn
from torch.autograd.function import once_differentiable

from capslab.errors import ConfigError
from capslab.layers.class_caps import ClassCaps

#: fractional bits of the fixed-point state: resolution 2**-40 ~ 9e-13, range +-2**23
DEFAULT_FRAC_BITS = 40
#: largest denominator used to write gamma as an exact fraction
MAX_GAMMA_DENOMINATOR = 4096
#: gain of :func:`scaled_init_std`
INIT_GAIN = 1.5
#: A residual stack's functions start with the matrices of their last capsule layer at this
#: fraction of the initial std, so that the stack starts near the identity, as ResNets start
#: their branches at zero (Goyal et al. 2017) and as MoCapsNet's momentum scales its branch by
#: 1 - gamma = 0.1. At full size each branch adds a capsule about as long as its input (0.68
#: to 0.82 on MNIST at initialisation, in an unrelated direction): the sum reaching the class
#: layer is 1.1 long, its capsules start saturated (length 0.93, where the margin loss wants
#: 0.1 for nine classes of ten, and squash's gradient is small) and learn nothing for epochs
#: (docs/momentum.md).
RESIDUAL_BRANCH_SCALE = 0.1
#: where the shortcuts of a stack go (see the module docstring)
SHORTCUTS = ("block", "layer")


# --------------------------------------------------------------------------------------------
# blocks
# --------------------------------------------------------------------------------------------


def scaled_init_std(num_in: int, num_out: int, out_dim: int) -> float:
    """Std of a capsule layer's matrices that keeps the routed sum at about unit length.

    With uniform first couplings ``1/num_out`` and votes in random directions, the sum over
    ``num_in`` votes of length ``std * sqrt(out_dim) * |u|`` has length about
    ``sqrt(num_in) / num_out * std * sqrt(out_dim) * |u|``; this returns the std that makes the
    factor ``INIT_GAIN`` (3: capsule inputs are shorter than 1, and squash shortens further).
    (A fixed 0.01, the paper's value, shrinks the signal through every routed layer
    because squash maps a short ``s`` to ``|s|**2``: 3 stacked layers end near 1e-16.)
    """
    return INIT_GAIN * num_out / math.sqrt(num_in * out_dim)


def capsule_layer(
    num_in: int, in_dim: int, num_out: int, out_dim: int, routing: str = "rba",
    num_iterations: int = 3, init_std: float | None = None, sda_bias: bool = False, *,
    device: torch.device | str | None = None, dtype: torch.dtype | None = None,
) -> ClassCaps:
    """:class:`ClassCaps` with ``init_std=None`` meaning :func:`scaled_init_std`."""
    std = scaled_init_std(num_in, num_out, out_dim) if init_std is None else init_std
    return ClassCaps(num_in, in_dim, num_out, out_dim, routing, num_iterations, init_std=std,
                     sda_bias=sda_bias, device=device, dtype=dtype)


class CapsuleBlock(nn.Module):
    """``f``: two fully connected capsule layers ``[B, N, D] -> [B, N, D] -> [B, N, D]``.

    Args:
        num_capsules: capsules ``N`` in and out of each layer (32 in the paper).
        capsule_dim: pose dimension ``D`` (8 in the paper).
        routing: ``"rba"`` or ``"sda"``, used by both layers.
        num_iterations: routing iterations of each layer.
        init_std: std of the matrices; ``None`` = :func:`scaled_init_std`.
        sda_bias: give both layers the learned SDA bias (``routing="sda"`` only).
        device, dtype: where and in which type the parameters are created.
    """

    def __init__(
        self, num_capsules: int, capsule_dim: int, routing: str = "rba", num_iterations: int = 3,
        init_std: float | None = None, sda_bias: bool = False, *,
        device: torch.device | str | None = None, dtype: torch.dtype | None = None,
    ):
        super().__init__()
        n, d = num_capsules, capsule_dim
        factory = {"device": device, "dtype": dtype}
        self.caps1 = capsule_layer(n, d, n, d, routing, num_iterations, init_std, sda_bias, **factory)
        self.caps2 = capsule_layer(n, d, n, d, routing, num_iterations, init_std, sda_bias, **factory)

    def layers(self) -> tuple[nn.Module, nn.Module]:
        """The two capsule layers, in order (each gets its own shortcut with ``"layer"``)."""
        return self.caps1, self.caps2

    def forward(self, x: Tensor) -> Tensor:
        return self.caps2(self.caps1(x))


def make_blocks(
    num_blocks: int, num_capsules: int, capsule_dim: int, routing: str = "rba",
    num_iterations: int = 3, init_std: float | None = None, sda_bias: bool = False, *,
    device: torch.device | str | None = None, dtype: torch.dtype | None = None,
) -> nn.ModuleList:
    """``num_blocks`` independent :class:`CapsuleBlock`s (``num_blocks >= 0``)."""
    if num_blocks < 0:
        raise ConfigError(f"num_blocks must be >= 0, got {num_blocks}")
    return nn.ModuleList(
        CapsuleBlock(num_capsules, capsule_dim, routing, num_iterations, init_std, sda_bias,
                     device=device, dtype=dtype)
        for _ in range(num_blocks)
    )


def shortcut_segments(blocks: Sequence[nn.Module], shortcut: str) -> list[tuple[nn.Module, ...]]:
    """The residual functions of a stack, grouped by the velocity they share.

    ``"block"``: one group holding every block (``f_n`` = a whole block). ``"layer"``: one group
    per block holding its layers (``f`` = one capsule layer; each block needs ``layers()``).
    A residual stack adds a shortcut around every function; a momentum stack also restarts
    its velocity at 0 at the start of every group.
    """
    if shortcut not in SHORTCUTS:
        raise ConfigError(f"shortcut must be one of {SHORTCUTS}, got {shortcut!r}")
    if shortcut == "block":
        return [tuple(blocks)] if len(blocks) else []
    missing = [type(b).__name__ for b in blocks if not callable(getattr(b, "layers", None))]
    if missing:
        raise ConfigError(f"shortcut 'layer' needs blocks with layers(); {missing[0]} has none")
    return [tuple(block.layers()) for block in blocks]


def last_capsule_layer(f: nn.Module) -> ClassCaps:
    """The capsule layer whose output a residual function ``f`` returns (its last one)."""
    layers = [m for m in f.modules() if isinstance(m, ClassCaps)]
    if not layers:
        raise ConfigError(f"residual function {type(f).__name__} holds no capsule layer")
    return layers[-1]


class ResidualCapsuleStack(nn.Module):
    """Residual blocks ``[B, N, D] -> [B, N, D]``.

    Args:
        blocks: the residual functions (shape-preserving modules).
        shortcut: ``"block"``: ``x_{n+1} = x_n + f_n(x_n)`` for every block; ``"layer"``: the
            same around each of a block's layers (the authors' code; see the module docstring).
    """

    def __init__(self, blocks: Sequence[nn.Module], shortcut: str = "block"):
        super().__init__()
        self.blocks = blocks if isinstance(blocks, nn.ModuleList) else nn.ModuleList(blocks)
        self.shortcut = shortcut
        shortcut_segments(self.blocks, shortcut)  # a bad value is refused here

    def start_near_identity(self, scale: float | None = None) -> ResidualCapsuleStack:
        """Multiply the matrices of the last capsule layer of every residual function by
        ``scale`` (``None``: :data:`RESIDUAL_BRANCH_SCALE`), so that the stack starts close to
        the identity; ResCapsNet does it once at construction. Returns the stack."""
        scale = RESIDUAL_BRANCH_SCALE if scale is None else scale
        with torch.no_grad():
            for segment in shortcut_segments(self.blocks, self.shortcut):
                for f in segment:
                    last_capsule_layer(f).weight.mul_(scale)
        return self

    def forward(self, x: Tensor) -> Tensor:
        for segment in shortcut_segments(self.blocks, self.shortcut):
            for f in segment:
                x = x + f(x)
        return x

    def extra_repr(self) -> str:
        return f"shortcut={self.shortcut}"


# --------------------------------------------------------------------------------------------
# exact fixed-point arithmetic (pure functions on int64 tensors)
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class RationalGamma:
    """The momentum ``gamma = num / den`` as an exact fraction, ``0 < gamma <= 1``."""

    num: int
    den: int

    @classmethod
    def from_float(cls, gamma: float, max_den: int = MAX_GAMMA_DENOMINATOR) -> RationalGamma:
        if not 0.0 < gamma <= 1.0:
            raise ConfigError(
                f"gamma must be in (0, 1] for an invertible momentum block, got {gamma}"
            )
        frac = Fraction(gamma).limit_denominator(max_den)
        if frac.numerator == 0:
            raise ConfigError(f"gamma {gamma} is too small to write with denominator <= {max_den}")
        return cls(frac.numerator, frac.denominator)

    @property
    def value(self) -> float:
        """The float that both the plain and the reversible path use."""
        return self.num / self.den

    def bits_per_block(self) -> float:
        """Bits the remainder store gains per multiplication by gamma."""
        return math.log2(self.den / self.num)


def max_exact_blocks(gamma: RationalGamma) -> int:
    """Deepest stack whose remainder store fits in int64 (one spare bit for safety).

    A step maps the store ``s`` to ``floor((s * den + r) / num)`` with ``r < den``, so with
    ``c = (den - 1) / (den - num)`` the store after ``n`` steps is below ``c * (den/num)**n``;
    the next push multiplies it by ``den``. Hence ``log2(c) + n log2(den/num) + log2(den)``
    must stay below 62.
    """
    if gamma.num == gamma.den:
        return 2**31  # gamma = 1 drops no bits: no limit
    c = (gamma.den - 1) / (gamma.den - gamma.num)
    return int((62 - math.log2(gamma.den) - math.log2(c)) / gamma.bits_per_block())


def to_fixed(y: Tensor, frac_bits: int = DEFAULT_FRAC_BITS) -> Tensor:
    """Float ``[...]`` -> int64 ``[...]``: ``round(y * 2**frac_bits)`` (computed in float64)."""
    return torch.round(y.to(torch.float64) * float(2**frac_bits)).to(torch.int64)


def from_fixed(
    q: Tensor, frac_bits: int = DEFAULT_FRAC_BITS, dtype: torch.dtype = torch.float32
) -> Tensor:
    """int64 ``[...]`` -> float ``[...]`` (``q * 2**-frac_bits``, rounded once to ``dtype``)."""
    return (q.to(torch.float64) * 2.0**-frac_bits).to(dtype)


def exact_mul(value: Tensor, store: Tensor, num: int, den: int) -> tuple[Tensor, Tensor]:
    """Multiply the fixed-point ``value`` by ``num / den`` so that the step can be undone.

    The remainder ``value mod den`` is pushed onto ``store`` (base ``den``) and a digit in base
    ``num`` is popped from it into the low end of the result; ``exact_mul(..., den, num)`` runs
    the same steps backwards and returns the original pair bit for bit. Floor division and
    modulo are used throughout, so negative values are exact too.

    Args:
        value: int64 ``[...]``.
        store: int64 ``[...]`` (same shape, non-negative), the remainder store.
    Returns:
        ``(value * num / den, new store)``, both int64 ``[...]``.
    """
    store = store * den + torch.remainder(value, den)
    value = torch.div(value, den, rounding_mode="floor") * num + torch.remainder(store, num)
    store = torch.div(store, num, rounding_mode="floor")
    return value, store


class FixedState(NamedTuple):
    """The reversible stack's exact state; every field int64 ``[B, N, D]``."""

    x: Tensor
    v: Tensor
    store: Tensor


def momentum_step(
    state: FixedState, block: nn.Module, gamma: RationalGamma, frac_bits: int,
    dtype: torch.dtype = torch.float32,
) -> FixedState:
    """One momentum block on the fixed-point state (no autograd graph is built by the caller).

    ``v <- gamma v + (1 - gamma) f(x)``, ``x <- x + v``.
    """
    f = block(from_fixed(state.x, frac_bits, dtype))
    return advance(state, f, gamma, frac_bits)


def advance(state: FixedState, f: Tensor, gamma: RationalGamma, frac_bits: int) -> FixedState:
    """The state update of one block given ``f(x)`` (float ``[B, N, D]``, no graph needed)."""
    v, store = exact_mul(state.v, state.store, gamma.num, gamma.den)
    v = v + to_fixed((1.0 - gamma.value) * f, frac_bits)
    return FixedState(state.x + v, v, store)


def momentum_unstep(
    state: FixedState, block: nn.Module, gamma: RationalGamma, frac_bits: int,
    dtype: torch.dtype = torch.float32,
) -> tuple[FixedState, Tensor]:
    """Exact inverse of :func:`momentum_step`.

    Returns the block's input state and ``f(x)`` evaluated on it (``x = x' - v'``,
    ``v = (v' - (1 - gamma) f(x)) / gamma``), so a caller can reuse the evaluation.
    """
    x = state.x - state.v
    f = block(from_fixed(x, frac_bits, dtype))
    v = state.v - to_fixed((1.0 - gamma.value) * f.detach(), frac_bits)
    v, store = exact_mul(v, state.store, gamma.den, gamma.num)
    return FixedState(x, v, store), f


def initial_state(x: Tensor, frac_bits: int) -> FixedState:
    """``x [B, N, D]`` float -> fixed-point state with ``v = 0`` and an empty store."""
    q = to_fixed(x, frac_bits)
    return FixedState(q, torch.zeros_like(q), torch.zeros_like(q))


# --------------------------------------------------------------------------------------------
# the reversible autograd function
# --------------------------------------------------------------------------------------------


class MomentumSegment(NamedTuple):
    """Residual functions that share one velocity (``v = 0`` at the start), with the stack's
    exact arithmetic: what one call of the reversible autograd function runs."""

    blocks: tuple[nn.Module, ...]
    rational_gamma: RationalGamma
    frac_bits: int

    def flat_parameters(self) -> list[nn.Parameter]:
        """The functions' trainable parameters in a fixed order (inputs of the function)."""
        return [p for block in self.blocks for p in block.parameters() if p.requires_grad]


class _ReversibleMomentum(torch.autograd.Function):
    """``x0 [B, N, D] -> x_N [B, N, D]`` through every block of a segment; saves only the final
    state.

    Inputs after ``x0`` and the :class:`MomentumSegment` are the blocks' parameters (flattened),
    so that autograd hands their gradients back to the optimizer.
    """

    @staticmethod
    def forward(ctx, x0: Tensor, stack: MomentumSegment, *params: Tensor) -> Tensor:
        state = initial_state(x0, stack.frac_bits)
        for block in stack.blocks:
            state = momentum_step(state, block, stack.rational_gamma, stack.frac_bits, x0.dtype)
        ctx.stack = stack
        ctx.dtype = x0.dtype
        # the backward recomputes every block under the same autocast state (bf16 training):
        # otherwise it would evaluate f in another precision and the inversion would not be exact
        ctx.autocast = _autocast_state(x0.device.type)
        ctx.save_for_backward(*state)  # three int64 tensors, independent of depth
        return from_fixed(state.x, stack.frac_bits, x0.dtype)

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_out: Tensor):
        stack: MomentumSegment = ctx.stack
        gamma, frac_bits = stack.rational_gamma, stack.frac_bits
        one_minus = 1.0 - gamma.value
        state = FixedState(*ctx.saved_tensors)
        grad_x = grad_out  # dL/dx_{n+1}
        grad_v = torch.zeros_like(grad_out)  # dL/dv_{n+1} not counting the path through x_{n+1}
        grads: dict[int, Tensor] = {}
        for block in reversed(stack.blocks):
            with torch.enable_grad(), _autocast(ctx.autocast):  # this block's graph only
                state, f = momentum_unstep_with_grad(state, block, gamma, frac_bits, ctx.dtype)
                x_in = f.x_in
                params = [p for p in block.parameters() if p.requires_grad]
                # v_{n+1} = gamma v_n + (1-gamma) f(x_n) and x_{n+1} = x_n + v_{n+1}
                total_v = grad_v + grad_x
                vjp = torch.autograd.grad(
                    f.value, [x_in, *params], one_minus * total_v, allow_unused=True
                )
            grad_x = grad_x + _or_zeros(vjp[0], x_in)
            grad_v = gamma.value * total_v
            for p, g in zip(params, vjp[1:], strict=True):
                if g is not None:
                    grads[id(p)] = grads[id(p)] + g if id(p) in grads else g
        # the reconstruction must land on v_0 = 0 with an empty store; anything else means a
        # block is not deterministic (e.g. a nondeterministic GPU kernel)
        _check_exact_reconstruction(state.v.any() | state.store.any())
        param_grads = [grads.get(id(p)) for p in ctx.stack.flat_parameters()]
        return (grad_x if ctx.needs_input_grad[0] else None, None, *param_grads)


INEXACT_RECONSTRUCTION = (
    "reversible momentum stack: reconstruction of the first block's input is not exact "
    "(v_0 != 0); the blocks must be deterministic functions of their input"
)


def _check_exact_reconstruction(inexact: Tensor) -> None:
    """Raise when ``inexact`` (a 0-d bool) is true. On the CPU reading it costs nothing; on a
    GPU the check is queued on the device (``torch._assert_async``), so the backward pass
    never waits for the host: a failure surfaces at the next synchronisation."""
    if inexact.device.type == "cpu":
        if inexact:
            raise RuntimeError(INEXACT_RECONSTRUCTION)
    else:
        torch._assert_async(~inexact, INEXACT_RECONSTRUCTION)


def _autocast_state(device_type: str) -> dict | None:
    """Keyword arguments of ``torch.autocast`` that reproduce the current autocast state
    (``None`` on a device without autocast, such as ``meta``)."""
    if not torch.amp.is_autocast_available(device_type):
        return None
    enabled = torch.is_autocast_enabled(device_type)
    return {
        "device_type": device_type,
        "dtype": torch.get_autocast_dtype(device_type),
        "enabled": enabled,
        "cache_enabled": torch.is_autocast_cache_enabled(),
    }


def _autocast(state: dict | None):
    return nullcontext() if state is None else torch.autocast(**state)


class _Evaluated(NamedTuple):
    value: Tensor  # f(x_n), with a graph back to x_in and the block's parameters
    x_in: Tensor  # the rebuilt block input (float, requires grad)


def momentum_unstep_with_grad(
    state: FixedState, block: nn.Module, gamma: RationalGamma, frac_bits: int,
    dtype: torch.dtype,
) -> tuple[FixedState, _Evaluated]:
    """:func:`momentum_unstep` that also records ``f``'s graph on a fresh leaf input."""
    x = state.x - state.v
    x_in = from_fixed(x, frac_bits, dtype).requires_grad_(True)
    f = block(x_in)
    v = state.v - to_fixed((1.0 - gamma.value) * f.detach(), frac_bits)
    v, store = exact_mul(v, state.store, gamma.den, gamma.num)
    return FixedState(x, v, store), _Evaluated(f, x_in)


def _snap(t: Tensor, q: Tensor, frac_bits: int) -> Tensor:
    """The value of the fixed-point ``q`` with the gradient of ``t`` (``q + (t - t)``, the
    difference detached; it is exactly 0, so the value is exactly ``q``'s)."""
    return from_fixed(q, frac_bits, t.dtype) + (t - t.detach())


def _or_zeros(g: Tensor | None, like: Tensor) -> Tensor:
    return torch.zeros_like(like) if g is None else g


# --------------------------------------------------------------------------------------------
# the momentum stack module
# --------------------------------------------------------------------------------------------


class MomentumCapsuleStack(nn.Module):
    """Momentum residual blocks ``[B, N, D] -> [B, N, D]``.

    Args:
        blocks: the residual functions ``f_n`` (deterministic, shape-preserving modules).
        gamma: momentum in (0, 1]; stored as an exact fraction (0.9 -> 9/10) that both paths use.
        memory_efficient: run the stack inside the reversible autograd function (activation
            memory independent of depth; with ``shortcut="layer"`` one function per block, each
            keeping its final state, three int64 tensors of the input's shape); ``False`` uses
            plain autograd (on floats that take the same fixed-point values, see
            :meth:`_plain`).
        frac_bits: fractional bits of the fixed-point state of the reversible path.
        shortcut: ``"block"`` (one velocity through every block) or ``"layer"`` (a momentum
            step around each of a block's layers, the velocity reset to 0 in every block: the
            authors' code). See the module docstring.
    """

    def __init__(
        self,
        blocks: Sequence[nn.Module],
        gamma: float = 0.9,
        memory_efficient: bool = True,
        frac_bits: int = DEFAULT_FRAC_BITS,
        shortcut: str = "block",
    ):
        super().__init__()
        self.blocks = blocks if isinstance(blocks, nn.ModuleList) else nn.ModuleList(blocks)
        self.rational_gamma = RationalGamma.from_float(gamma)
        self.memory_efficient = memory_efficient
        if not 8 <= frac_bits <= 52:
            raise ConfigError(f"frac_bits must be in [8, 52], got {frac_bits}")
        self.frac_bits = frac_bits
        self.shortcut = shortcut
        longest = max((len(s) for s in shortcut_segments(self.blocks, shortcut)), default=0)
        limit = max_exact_blocks(self.rational_gamma)
        if memory_efficient and longest > limit:
            raise ConfigError(
                f"{longest} momentum blocks with gamma={gamma} "
                f"({self.rational_gamma.num}/{self.rational_gamma.den}) exceed the {limit} blocks "
                "the exact int64 remainder store can invert; use fewer blocks or a gamma closer "
                "to 1"
            )

    @property
    def gamma(self) -> float:
        return self.rational_gamma.value

    def flat_parameters(self) -> list[nn.Parameter]:
        """The blocks' trainable parameters in a fixed order."""
        return [p for p in self.blocks.parameters() if p.requires_grad]

    def segments(self) -> list[MomentumSegment]:
        """The groups of residual functions that each start with ``v = 0``
        (:func:`shortcut_segments`)."""
        return [MomentumSegment(group, self.rational_gamma, self.frac_bits)
                for group in shortcut_segments(self.blocks, self.shortcut)]

    # Eager even inside torch.compile: the backward rebuilds each block's input by re-running
    # the blocks eagerly, which is exact only if the forward ran the very same kernels.
    @torch.compiler.disable
    def forward(self, x: Tensor) -> Tensor:
        for segment in self.segments():
            x = self._run(segment, x)
        return x

    def _run(self, segment: MomentumSegment, x: Tensor) -> Tensor:
        """One segment: its own reversible autograd function (or plain autograd)."""
        if not self.memory_efficient:
            return self._plain(segment, x)
        if torch.is_grad_enabled() and not torch.onnx.is_in_onnx_export():
            return _ReversibleMomentum.apply(x, segment, *segment.flat_parameters())
        # inference: the same fixed-point arithmetic without an autograd node
        state = initial_state(x, self.frac_bits)
        for block in segment.blocks:
            state = momentum_step(state, block, self.rational_gamma, self.frac_bits, x.dtype)
        return from_fixed(state.x, self.frac_bits, x.dtype)

    def _plain(self, segment: MomentumSegment, x: Tensor) -> Tensor:
        """Plain autograd through ``v <- g v + (1-g) f(x)``, ``x <- x + v`` whose values are
        the reversible path's fixed-point state: each ``x`` and ``v`` takes the exact value
        (:func:`_snap`, a detached correction, so the gradient is the float maths' own). The
        forward is bitwise the memory-efficient one and the gradients differ only by the order
        of summation, at any depth (float adds of the state would differ by rounding that 16
        routed layers amplify to ~5e-5). Beyond :func:`max_exact_blocks` the remainder store
        may wrap, which only moves the state's lowest bits (< ``den * 2**-frac_bits``)."""
        g, gamma, bits = self.gamma, self.rational_gamma, self.frac_bits
        state = initial_state(x.detach(), bits)
        x = _snap(x, state.x, bits)
        v = torch.zeros_like(x)
        for block in segment.blocks:
            f = block(x)
            with torch.no_grad():
                state = advance(state, f.detach(), gamma, bits)
            v = _snap(g * v + (1.0 - g) * f, state.v, bits)
            x = _snap(x + v, state.x, bits)
        return x

    def extra_repr(self) -> str:
        g = self.rational_gamma
        return (
            f"blocks={len(self.blocks)}, gamma={g.num}/{g.den}, "
            f"memory_efficient={self.memory_efficient}, frac_bits={self.frac_bits}, "
            f"shortcut={self.shortcut}"
        )
