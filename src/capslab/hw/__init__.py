"""Hardware model of NASCaps: energy, latency and memory of a genotype on an accelerator
(CapsAcc by default). Pure Python, no torch, fast enough for the search loop."""

from capslab.hw.accelerator import CAPSACC, Accelerator
from capslab.hw.estimate import (
    HardwareEstimate,
    LayerEstimate,
    LayerMemory,
    estimate,
    weight_memory_at_widths,
)
from capslab.hw.expand import HardwareLayer, expand

__all__ = [
    "CAPSACC",
    "Accelerator",
    "HardwareEstimate",
    "HardwareLayer",
    "LayerEstimate",
    "LayerMemory",
    "estimate",
    "expand",
    "weight_memory_at_widths",
]
