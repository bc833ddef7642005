"""An accelerator described as data: the micro-architectural numbers the cost model needs.

The default, :data:`CAPSACC`, is the CapsAcc accelerator as modelled by NASCaps: a 16x16 array of
processing elements (one multiplier each), one pipeline stage, 3 ns clock, 8-bit weights and
25-bit accumulators, with the 45 nm synthesis power figures.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

from capslab.errors import AcceleratorError


@dataclass(frozen=True, slots=True)
class Accelerator:
    """A systolic processing-element array.

    rows x cols PEs, each with ``pe_width`` multipliers; ``pipeline_stages`` adds to the cycles
    needed to load a group of weights; ``clock_ns`` is the clock period; ``weight_bits`` sets
    the memory footprint; ``pe_power_mW`` is the average power of one PE and
    ``accumulator_power_mW`` that of one ``accumulator_bits``-wide accumulator register.
    """

    rows: int = 16
    cols: int = 16
    pe_width: int = 1
    pipeline_stages: int = 1
    clock_ns: float = 3.0
    weight_bits: int = 8
    accumulator_bits: int = 25
    pe_power_mW: float = 0.4815
    accumulator_power_mW: float = 0.2303
    name: str = "CapsAcc"

    def __post_init__(self) -> None:
        # the annotations are strings here ("int", "float", "str"); integers are checked first
        for f in sorted(fields(self), key=lambda f: f.type != "int"):
            v, must = getattr(self, f.name), f"accelerator field {f.name} must be"
            if f.type == "str":
                if not isinstance(v, str) or not v:
                    raise AcceleratorError(f"{must} a non-empty string, got {v!r}")
            elif f.type == "int":
                if not isinstance(v, int) or isinstance(v, bool):
                    raise AcceleratorError(f"{must} an integer, got {v!r}")
                if v <= 0:
                    raise AcceleratorError(f"{must} positive, got {v}")
            else:
                if not isinstance(v, int | float) or isinstance(v, bool):
                    raise AcceleratorError(f"{must} a number, got {v!r}")
                if not (v > 0 and math.isfinite(v)):
                    raise AcceleratorError(f"{must} a positive finite number, got {v}")
                object.__setattr__(self, f.name, float(v))

    # Derived numbers used by the cost formulas.
    @property
    def array_power_mW(self) -> float:
        """Power of the whole PE array (123.264 mW for CapsAcc)."""
        return self.rows * self.cols * self.pe_power_mW

    @property
    def weight_load_cycles(self) -> int:
        """Cycles to shift one group of weights into the array (Eq. 2: 16 for CapsAcc)."""
        return self.rows + self.pipeline_stages - 1

    # Conversions.
    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any], *, source: str = "accelerator") -> Accelerator:
        if not isinstance(d, dict):
            raise AcceleratorError(
                f"{source}: an accelerator is a JSON object, got {type(d).__name__}"
            )
        valid = [f.name for f in fields(cls)]
        unknown = sorted(set(d) - set(valid))
        if unknown:
            raise AcceleratorError(f"{source}: unknown key(s) {unknown}; valid keys: {valid}")
        try:
            return cls(**d)
        except AcceleratorError as e:
            raise AcceleratorError(f"{source}: {e}") from None

    @classmethod
    def from_file(cls, path: str | os.PathLike) -> Accelerator:
        """Read a JSON object whose keys are a subset of the fields (missing ones keep the
        CapsAcc defaults; a missing ``name`` becomes the file's stem)."""
        path = Path(path)
        try:
            text = path.read_text(encoding="utf-8")
        except OSError as e:
            raise AcceleratorError(
                f"{path}: cannot read accelerator file ({e.strerror or e})"
            ) from None
        try:
            d = json.loads(text)
        except json.JSONDecodeError as e:
            raise AcceleratorError(f"{path}: not valid JSON ({e})") from None
        if isinstance(d, dict) and "name" not in d:
            d = {**d, "name": path.stem}  # not "CapsAcc": these are someone else's numbers
        return cls.from_dict(d, source=str(path))

    def describe(self) -> str:
        return (
            f"{self.name}: {self.rows}x{self.cols} PEs x {self.pe_width} mult, "
            f"{self.pipeline_stages} stage(s), {self.clock_ns:g} ns clock, "
            f"{self.weight_bits}-bit weights, {self.array_power_mW:.3f} mW array"
        )


CAPSACC = Accelerator()
"""CapsAcc as modelled in NASCaps (the default everywhere)."""
