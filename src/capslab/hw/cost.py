"""Per-layer cost formulas of the NASCaps hardware model (paper Table 1 and Eqs. 2-7).

Every function takes and returns plain numbers so the search loop can call them millions of
times. Shapes are given as (insize, inch, incaps, k, outsize, outch, outcaps): feature-map side,
channels (capsule types), capsule dimension, kernel, and the same for the output.

Operation kinds (strings, see :mod:`capslab.hw.expand`):
- ``conv``, ``convcaps``: weights (inch*k^2 + 1)*outch*outcaps*incaps (the +1 is the bias),
  sums_per_out (k^2 + 1)*inch*incaps, data_per_weight outsize^2*inch*incaps;
- ``convcaps3d``: the same with k^3 (DeepCaps' 3-D convolutional capsule layer);
- ``class``: like ``convcaps`` with the gene's kernel, but each weight is used once
  (data_per_weight = 1);
- ``sum``, ``update`` (dynamic routing): weights inch*k^2*outch, sums_per_out incaps,
  data_per_weight 1.

The kinds of the newer genes (docs/hardware.md, "Costs of the newer genes"):
- ``dwconv`` (depthwise primary capsules): the ``conv`` formulas; the expansion gives it
  ``inch = incaps = 1`` since each filter reads one map;
- ``sharedclass`` (class capsules with FasTrCaps weight sharing): one matrix per input type
  used at all k^2 positions: weights (inch + 1)*outch*outcaps*incaps, sums_per_out as
  ``class``, data_per_weight k^2;
(self-attention routing needs no kind of its own: sum, update, sum; see :mod:`capslab.hw.expand`.)
"""

from __future__ import annotations

from capslab.hw.accelerator import Accelerator

ROUTING_KINDS = frozenset({"sum", "update"})
_KINDS = ROUTING_KINDS | {"conv", "dwconv", "convcaps", "convcaps3d", "class", "sharedclass"}


def _kernel_terms(kind: str, k: int) -> int:
    return k * k * k if kind == "convcaps3d" else k * k


def weights(kind: str, inch: int, incaps: int, k: int, outch: int, outcaps: int) -> int:
    """Number of weights W of one layer (Table 1, column ``weights``)."""
    if kind in ROUTING_KINDS:
        return inch * k * k * outch
    if kind == "sharedclass":
        return (inch + 1) * outch * outcaps * incaps
    return (inch * _kernel_terms(kind, k) + 1) * outch * outcaps * incaps


def sums_per_out(kind: str, inch: int, incaps: int, k: int) -> int:
    """Terms added for one output value S (Table 1, column ``sums_per_out``)."""
    if kind in ROUTING_KINDS:
        return incaps
    return (_kernel_terms(kind, k) + 1) * inch * incaps


def data_per_weight(kind: str, inch: int, incaps: int, outsize: int, k: int = 1) -> int:
    """Inputs multiplied by the same weight D: every output position for a convolution, once
    for the class layer and the routing layers, at each of the k^2 positions for shared class
    matrices."""
    if kind == "class" or kind in ROUTING_KINDS:
        return 1
    if kind == "sharedclass":
        return k * k
    return outsize * outsize * inch * incaps


def cycles(w: int, s: int, d: int, acc: Accelerator) -> int:
    """Eqs. 2-4: weight loads x load cycles + data_per_weight.

    One load fills ``cols`` columns with up to ``min(rows * pe_width, S)`` weights each (a column
    accumulates one output, so it never holds more terms than the output needs); each load
    takes ``rows + stages - 1`` cycles; then D inputs stream through.
    """
    per_load = acc.cols * min(acc.rows * acc.pe_width, s)
    return acc.weight_load_cycles * -(-w // per_load) + d


def accumulators(s: int, d: int, acc: Accelerator) -> int:
    """Eq. 6: accumulator registers in use. With D == 1 (class and routing layers) one per
    column; otherwise partial sums that do not fit in one column pass need
    ``S - rows*pe_width + 1`` registers per column."""
    if d == 1:
        return acc.cols
    return acc.cols * max(s - acc.rows * acc.pe_width + 1, 1)


def power_mW(m: int, acc: Accelerator) -> float:
    """Average power of a layer: the PE array plus its accumulators."""
    return acc.array_power_mW + m * acc.accumulator_power_mW


def energy_mJ(power: float, n_cycles: int, acc: Accelerator) -> float:
    """Eq. 7 for one layer: power x cycles x clock period (mW x s = mJ)."""
    return power * n_cycles * acc.clock_ns * 1e-9


def latency_ms(n_cycles: int, acc: Accelerator) -> float:
    """Eq. 5: cycles x clock period, in milliseconds."""
    return n_cycles * acc.clock_ns * 1e-6


def memory_bytes(w: int, acc: Accelerator, bits: int | None = None) -> int:
    """Weight memory: W weights of ``bits`` (default ``weight_bits``) bits, rounded up to whole
    bytes."""
    return -(-w * (acc.weight_bits if bits is None else bits) // 8)


def layer_counts(
    kind: str, inch: int, incaps: int, k: int, outsize: int, outch: int, outcaps: int
) -> tuple[int, int, int]:
    """(W, S, D) of one hardware layer."""
    if kind not in _KINDS:
        raise ValueError(f"unknown hardware layer kind {kind!r}")
    return (
        weights(kind, inch, incaps, k, outch, outcaps),
        sums_per_out(kind, inch, incaps, k),
        data_per_weight(kind, inch, incaps, outsize, k),
    )
