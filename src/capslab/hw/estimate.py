"""Energy, latency and weight memory of one inference of a genotype on an accelerator.

``estimate`` is called by the architecture search for every candidate, so the totals are
accumulated as plain integers (total cycles, total accumulator-cycles, total weights) and the
per-layer breakdown is built only when someone reads ``HardwareEstimate.layers``. Because
every layer's power is ``array + M * acc_power``, the total energy is exactly
``(array * sum(cycles) + acc_power * sum(M * cycles)) * clock``.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from capslab.genotype import Genotype, parse_genotype
from capslab.hw import cost
from capslab.hw.accelerator import CAPSACC, Accelerator
from capslab.hw.expand import ROUTING, HardwareLayer, expand, expand_groups


@dataclass(frozen=True, slots=True)
class LayerEstimate:
    """Cost of one hardware layer. ``weights``/``sums_per_out``/``data_per_weight`` are the
    Table 1 quantities, ``accumulators`` the registers in use (Eq. 6)."""

    name: str
    kind: str
    gene: int
    cycles: int
    power_mW: float
    energy_mJ: float
    latency_ms: float
    memory_bytes: int
    weights: int
    sums_per_out: int
    data_per_weight: int
    accumulators: int

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class HardwareEstimate:
    """Totals for one genotype on one accelerator; ``layers`` is computed on first access."""

    __slots__ = (
        "_layers",
        "genotype",
        "accelerator",
        "cycles",
        "energy_mJ",
        "latency_ms",
        "memory_bytes",
        "weights",
    )

    def __init__(
        self,
        genotype: Genotype,
        accelerator: Accelerator,
        cycles: int,
        acc_cycles: int,
        weights: int,
    ) -> None:
        self.genotype = genotype
        self._layers: list[LayerEstimate] | None = None
        self.accelerator = accelerator
        self.cycles = cycles
        self.weights = weights
        self.energy_mJ = (
            accelerator.array_power_mW * cycles + accelerator.accumulator_power_mW * acc_cycles
        ) * (accelerator.clock_ns * 1e-9)
        self.latency_ms = cost.latency_ms(cycles, accelerator)
        self.memory_bytes = cost.memory_bytes(weights, accelerator)

    @property
    def memory_KiB(self) -> float:
        return self.memory_bytes / 1024

    @property
    def hardware_layers(self) -> list[HardwareLayer]:
        """The expanded operations (:func:`capslab.hw.expand`)."""
        return expand(self.genotype)

    @property
    def layers(self) -> list[LayerEstimate]:
        """Per-layer costs, in execution order (built on first access)."""
        if self._layers is None:
            self._layers = [_layer_estimate(hl, self.accelerator) for hl in expand(self.genotype)]
        return self._layers

    def objectives(self) -> tuple[float, float, float]:
        """(energy_mJ, latency_ms, memory_KiB): the three hardware objectives of the search."""
        return self.energy_mJ, self.latency_ms, self.memory_KiB

    def to_dict(self, layers: bool = True) -> dict[str, Any]:
        d: dict[str, Any] = {
            "accelerator": self.accelerator.to_dict(),
            "energy_mJ": self.energy_mJ,
            "latency_ms": self.latency_ms,
            "memory_KiB": self.memory_KiB,
            "memory_bytes": self.memory_bytes,
            "weights": self.weights,
            "cycles": self.cycles,
        }
        if layers:
            d["layers"] = [layer.to_dict() for layer in self.layers]
        return d

    def __repr__(self) -> str:
        return (
            f"HardwareEstimate(energy_mJ={self.energy_mJ:.4g}, latency_ms={self.latency_ms:.4g}, "
            f"memory_KiB={self.memory_KiB:.1f}, cycles={self.cycles}, "
            f"accelerator={self.accelerator.name!r})"
        )


def _layer_estimate(hl: HardwareLayer, acc: Accelerator) -> LayerEstimate:
    """One layer's costs from the reference formulas of :mod:`capslab.hw.cost`."""
    w, s, d = cost.layer_counts(hl.kind, hl.inch, hl.incaps, hl.k, hl.outsize, hl.outch, hl.outcaps)
    n_cycles = cost.cycles(w, s, d, acc)
    m = cost.accumulators(s, d, acc)
    power = cost.power_mW(m, acc)
    return LayerEstimate(
        name=hl.name,
        kind=hl.kind,
        gene=hl.gene,
        cycles=n_cycles,
        power_mW=power,
        energy_mJ=cost.energy_mJ(power, n_cycles, acc),
        latency_ms=cost.latency_ms(n_cycles, acc),
        memory_bytes=cost.memory_bytes(w, acc),
        weights=w,
        sums_per_out=s,
        data_per_weight=d,
        accumulators=m,
    )


_NEWER_KINDS = frozenset({"sharedclass"})  # dwconv takes the conv branch


def estimate(
    genotype: Genotype | list | dict,
    accelerator: Accelerator = CAPSACC,
    *,
    check: bool = True,
) -> HardwareEstimate:
    """Energy (mJ), latency (ms) and weight memory of one inference of ``genotype``.

    ``genotype`` may also be a decoded NASCaps list or capslab dict. It must be a buildable
    network (:meth:`~capslab.genotype.Genotype.validate`, a :class:`GenotypeError` otherwise);
    the search space's rules do not apply, so every genotype the NASCaps authors published
    (one capsule layer, convolutions with capsule fields other than 1, kernels outside
    {3, 5, 9}) gets the figures of their estimator. ``check=False`` skips the validation
    (the search loop has validated already).
    """
    if not isinstance(genotype, Genotype):
        genotype = parse_genotype(genotype)
    if check:
        genotype.validate()
    if not isinstance(accelerator, Accelerator):
        raise TypeError(f"accelerator must be an Accelerator, got {type(accelerator).__name__}")
    load = accelerator.weight_load_cycles
    cols = accelerator.cols
    mults = accelerator.rows * accelerator.pe_width
    total_cycles = 0
    total_acc_cycles = 0  # sum of accumulators x cycles
    total_weights = 0
    # Runs of identical layers (cells, routing) are costed once and multiplied; plain ints only.
    for kind, _, inch, incaps, k, outsize, outch, outcaps, count, _ in expand_groups(genotype):
        if kind == ROUTING:
            w, s, d = inch * k * k * outch, incaps, 1
        elif kind in _NEWER_KINDS:  # the newer genes' kinds: the reference formulas
            w, s, d = cost.layer_counts(kind, inch, incaps, k, outsize, outch, outcaps)
        else:
            kk = k * k * k if kind == "convcaps3d" else k * k
            w = (inch * kk + 1) * outch * outcaps * incaps
            s = (kk + 1) * inch * incaps
            d = 1 if kind == "class" else outsize * outsize * inch * incaps
        n_cycles = load * -(-w // (cols * min(mults, s))) + d
        m = cols if d == 1 else cols * max(s - mults + 1, 1)
        total_weights += count * w
        total_cycles += count * n_cycles
        total_acc_cycles += count * m * n_cycles
    return HardwareEstimate(genotype, accelerator, total_cycles, total_acc_cycles, total_weights)


@dataclass(frozen=True, slots=True)
class LayerMemory:
    """Weight memory of one hardware layer at its own width (routing layers hold couplings)."""

    name: str
    kind: str
    weights: int
    bits: int
    bytes: int

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def weight_memory_at_widths(
    genotype: Genotype | list | dict,
    widths: list[int],
    routing_bits: int | None = None,
    accelerator: Accelerator = CAPSACC,
) -> list[LayerMemory]:
    """The accelerator's weight memory of ``genotype`` with every layer at its own width.

    ``widths`` gives the bits of the layers that hold trained weights, one per such layer in
    execution order (:func:`weight_layers`); the routing layers (``sum``/``update``, whose
    "weights" are the coupling coefficients) take ``routing_bits``, else the accelerator's
    ``weight_bits``. With every width equal to ``accelerator.weight_bits`` the total is
    :attr:`HardwareEstimate.memory_bytes` (up to the per-layer rounding to whole bytes).
    Raises ``ValueError`` when ``widths`` does not give one width per weight layer.
    """
    layers = expand(genotype if isinstance(genotype, Genotype) else parse_genotype(genotype))
    trained = weight_layers(layers)
    if len(widths) != len(trained):
        raise ValueError(f"{len(widths)} widths for {len(trained)} weight layers "
                         f"({', '.join(hl.name for hl in trained)})")
    trained_bits = iter(widths)  # the weight layers take them in order
    out = []
    for hl in layers:
        w = cost.weights(hl.kind, hl.inch, hl.incaps, hl.k, hl.outch, hl.outcaps)
        if hl.kind in cost.ROUTING_KINDS:
            bits = routing_bits if routing_bits is not None else accelerator.weight_bits
        else:
            bits = next(trained_bits)
        out.append(LayerMemory(hl.name, hl.kind, w, bits, cost.memory_bytes(w, accelerator, bits)))
    return out


def weight_layers(layers: list[HardwareLayer]) -> list[HardwareLayer]:
    """The hardware layers that hold trained weights (not the routing's couplings), in order:
    one per weight tensor of the network the genotype describes."""
    return [hl for hl in layers if hl.kind not in cost.ROUTING_KINDS]
