"""The rows of a reproduction table, how they are judged and how they are written.

One :class:`Row` per headline number: the paper's value (with its source), CapsLab's measured
value, the unit, the settings and seeds of the runs, which reading of the paper it used
(``variant``), how the scale differs from the paper's, and ``measured_by``: the files, relative
to the output folder, that the number was read from (a run's ``summary.json``, a study's JSON),
with ``key`` saying what in them. Nothing in a row is typed in by hand except the paper's value.

Accuracies are fractions in every data file (``results.json``); the Markdown table shows
percentages. The verdict compares the two numbers by the row's stated criterion; a row measured
at a reduced scale can fail a criterion that the paper's scale would meet, which its
``scale_note`` says.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from capslab.errors import ConfigError

#: readings of a paper a row may use: CapsLab's reading of the text, or the authors' code
VARIANTS = ("capslab", "authors")
REPRODUCED, NOT_REPRODUCED, NO_PAPER_NUMBER, NOT_MEASURED = (
    "reproduced", "not reproduced", "no paper number", "not measured")

#: unit -> (scale for display, format spec, suffix); values are stored unscaled
UNITS: dict[str, tuple[float, str, str]] = {
    "accuracy": (100.0, ".2f", " %"),  # a fraction, shown as a percentage
    "fraction": (100.0, ".1f", " %"),
    "epochs": (1.0, ".0f", ""),
    "parameters": (1e-6, ".2f", " M"),
    "mJ": (1.0, ".2f", " mJ"),
    "ms": (1.0, ".3f", " ms"),
    "KiB": (1.0, ",.1f", " KiB"),
    "MiB/block": (1.0, ".2f", " MiB/block"),
    "ratio": (1.0, ".2f", "x"),
    "pcc": (1.0, ".4f", ""),
    "s": (1.0, ".1f", " s"),
}


def format_value(value: float | None, unit: str) -> str:
    """``value`` in ``unit`` for people (``0.9937, "accuracy"`` -> ``"99.37 %"``); ``-`` for none."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    scale, spec, suffix = UNITS[unit]
    return format(value * scale, spec) + suffix


@dataclass
class Row:
    """One headline number of a paper next to CapsLab's measurement.

    Attributes:
        experiment: the reproduction's name (``capsnet``, ``fastrcaps``, ...).
        claim: what is measured, in words.
        paper: the paper's value (a fraction for accuracies), ``None`` when the paper gives none.
        source: where the paper's value comes from (paper, table or section).
        measured: CapsLab's value, ``None`` when the runs could not give one.
        unit: a key of :data:`UNITS`.
        settings: how the runs were made (data, epochs, batch, policy, model options).
        seeds: the seeds of the runs the value comes from.
        variant: ``"capslab"`` or ``"authors"`` (see :data:`VARIANTS`).
        scale_note: how the settings differ from the paper's; empty when they do not.
        measured_by: files (relative to the output folder) the value was read from.
        key: what in those files (``best_test_accuracy, mean over runs``).
        criterion: the test of the verdict, in words.
        verdict: ``reproduced``, ``not reproduced``, ``no paper number`` or ``not measured``.
        note: anything else a reader needs (which policy won, why a value is missing).
    """

    experiment: str
    claim: str
    paper: float | None
    source: str
    measured: float | None
    unit: str
    settings: str
    seeds: list[int]
    variant: str = "capslab"
    scale_note: str = ""
    measured_by: list[str] = field(default_factory=list)
    key: str = ""
    criterion: str = ""
    verdict: str = ""
    note: str = ""

    def __post_init__(self) -> None:
        if self.unit not in UNITS:
            raise ConfigError(f"unknown unit {self.unit!r}; known: {', '.join(UNITS)}")
        if self.variant not in VARIANTS:
            raise ConfigError(f"variant must be one of {VARIANTS}, got {self.variant!r}")
        if self.measured is not None and not math.isfinite(self.measured):
            raise ValueError(f"{self.claim}: measured value {self.measured} is not finite")
        if not self.verdict:
            self.verdict = (NOT_MEASURED if self.measured is None
                            else NO_PAPER_NUMBER if self.paper is None else "")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def within(row: Row, tolerance: float) -> Row:
    """Judge ``row``: reproduced when ``|measured - paper| <= tolerance`` (in the row's unit)."""
    scale, spec, suffix = UNITS[row.unit]
    shown = format(tolerance * scale, spec.replace(",", "")) + suffix
    if row.unit == "accuracy":
        shown = f"{100 * tolerance:.2f} points"
    row.criterion = f"|CapsLab - paper| <= {shown.strip()}"
    if row.measured is not None and row.paper is not None:
        # a hair of slack: a value printed with the paper's digits must not fail on float noise
        ok = abs(row.measured - row.paper) <= tolerance * (1 + 1e-9) + 1e-12
        row.verdict = REPRODUCED if ok else NOT_REPRODUCED
    return row


def relative(row: Row, tolerance: float) -> Row:
    """Judge ``row``: reproduced when the measured value is within ``tolerance`` (a fraction)
    of the paper's."""
    row.criterion = f"within {100 * tolerance:.0f} % of the paper's value"
    if row.measured is not None and row.paper is not None:
        ok = abs(row.measured - row.paper) <= tolerance * abs(row.paper)
        row.verdict = REPRODUCED if ok else NOT_REPRODUCED
    return row


def judged(row: Row, ok: bool | None, criterion: str) -> Row:
    """Judge ``row`` by a criterion computed elsewhere (``None``: could not be decided)."""
    row.criterion = criterion
    if ok is not None:
        row.verdict = REPRODUCED if ok else NOT_REPRODUCED
    return row


def differences(current: Mapping[str, Any], paper: Mapping[str, Any]) -> str:
    """How a scale's settings differ from the paper's, in words; ``""`` when they do not.

    Both mappings go from a label (``"training images"``, ``"epochs"``) to a value; numbers
    read ``1,000 of 60,000 training images``, anything else ``model tiny (paper: full)``.
    """
    parts = []
    for label, want in paper.items():
        got = current.get(label)
        if got == want:
            continue
        if isinstance(got, int) and isinstance(want, int) and not isinstance(got, bool):
            parts.append(f"{got:,} of {want:,} {label}")
        else:
            parts.append(f"{label} {got} (paper: {want})")
    return "; ".join(parts)


def mean(values: Sequence[float]) -> float | None:
    values = [float(v) for v in values if v is not None]
    return sum(values) / len(values) if values else None


# --------------------------------------------------------------------------- Markdown
COLUMNS = ("claim", "variant", "paper", "CapsLab", "verdict", "settings", "seeds",
           "scale vs paper", "measured by")


def _cell(text: Any) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def row_cells(row: Mapping[str, Any]) -> list[str]:
    """The Markdown cells of a row (a :class:`Row` as a dict)."""
    paper = format_value(row["paper"], row["unit"])
    paper = f"{paper} ({row['source']})" if row["source"] else paper
    verdict = row["verdict"] + (f" ({row['criterion']})" if row["criterion"] else "")
    claim = row["claim"] + (f". {row['note']}" if row["note"] else "")
    by = ", ".join(f"`{p}`" for p in row["measured_by"][:3])
    if len(row["measured_by"]) > 3:
        by += f" and {len(row['measured_by']) - 3} more"
    if row["key"]:
        by += f": {row['key']}"
    return [_cell(c) for c in (
        claim, row["variant"], paper, format_value(row["measured"], row["unit"]), verdict,
        row["settings"], ", ".join(map(str, row["seeds"])) or "-",
        row["scale_note"] or "as in the paper", by)]


def rows_markdown(rows: Sequence[Mapping[str, Any]]) -> str:
    """A Markdown table of rows (dicts)."""
    lines = ["| " + " | ".join(COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
    lines += ["| " + " | ".join(row_cells(r)) + " |" for r in rows]
    return "\n".join(lines) + "\n"


def verdict_counts(rows: Sequence[Mapping[str, Any]]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for r in rows:
        counts[r["verdict"]] = counts.get(r["verdict"], 0) + 1
    return counts


def experiment_markdown(result: Mapping[str, Any], level: int = 2) -> str:
    """One experiment's section: title, what was run, its table, what was not run."""
    h = "#" * level
    lines = [f"{h} `{result['name']}`: {result['title']}", ""]
    if result.get("description"):
        lines += [result["description"], ""]
    counts = verdict_counts(result["rows"])
    lines += [f"Scale `{result['scale']}`. Rows: " + ", ".join(f"{n} {v}" for v, n in counts.items())
              + f". Wall time {result['seconds']:.0f} s.", ""]
    lines.append(rows_markdown(result["rows"]))
    if result.get("not_run"):
        lines += ["Not measured at this scale (run `--scale paper` for these):", ""]
        lines += [f"- {item}" for item in result["not_run"]]
        lines.append("")
    for note in result.get("notes", []):
        lines += [note, ""]
    return "\n".join(lines).rstrip() + "\n"


def results_markdown(results: Mapping[str, Any]) -> str:
    """The whole ``results.md``: header (scale, commands, machine, dates), then every
    experiment's section."""
    machine = results["machine"]
    lines = [
        f"# CapsLab reproduction, scale `{results['scale']}`",
        "",
        "Commands:",
        "",
        *[f"    {c}" for c in results["commands"]],
        "",
        f"- machine: {machine['cpu']}, {machine['threads']} torch threads, device "
        f"{machine['device']}; torch {machine['torch']}, Python {machine['python']}, "
        f"{machine['platform']}",
        f"- finished: {results['finished']} (first started {results['started']})",
        "- rows: " + ", ".join(f"{n} {v}" for v, n in verdict_counts(results["rows"]).items()),
        "",
        "Accuracies are test accuracies in percent; every number comes from the files named in "
        "its row (relative to the output folder). `scale vs paper` says where the settings "
        "differ from the paper's.",
        "",
    ]
    for result in results["experiments"].values():
        lines.append(experiment_markdown(result))
    return "\n".join(lines).rstrip() + "\n"
