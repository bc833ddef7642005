"""Results as files that can be reopened: versioned JSON documents, tables and figures.

* :func:`write_json` / :func:`read_json`: JSON results with a ``format`` and a ``version``.
* :func:`write_table`: the same rows as CSV, Markdown and JSON.
* :func:`save_figure`: a matplotlib figure as PNG, written atomically.

Every layer writes its results through this module (the training loop, the studies, the search,
the benchmarks), so it sits low, beside :mod:`capslab.io`. Data files (CSV, JSON, JSONL) hold
accuracies as fractions; Markdown tables are renderings for reading, like the screen, and may
show percentages (their header says so).
"""

from __future__ import annotations

import csv
import io
import json
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from capslab.errors import RunMismatchError
from capslab.io import atomic_write_bytes, atomic_write_json, atomic_write_text

FORMAT_VERSION = 1
SUMMARY_FILE = "summary.json"


# --------------------------------------------------------------------------- versioned JSON
def versioned(kind: str, payload: dict[str, Any], version: int = FORMAT_VERSION) -> dict[str, Any]:
    """``payload`` with ``format: capslab-<kind>`` and ``version`` in front."""
    return {"format": f"capslab-{kind}", "version": version, **payload}


def check_version(data: Any, kind: str, source: str | os.PathLike, version: int = FORMAT_VERSION) -> dict:
    """``data`` if it is a CapsLab ``kind`` document this version can read, else
    :class:`RunMismatchError` naming ``source``."""
    if not isinstance(data, dict) or data.get("format") != f"capslab-{kind}":
        raise RunMismatchError(f"{source} is not a CapsLab {kind} file")
    if int(data.get("version", 0)) > version:
        raise RunMismatchError(
            f"{source} was written by a newer CapsLab ({kind} format {data['version']}, "
            f"this one reads up to {version})"
        )
    return data


def write_json(path: str | os.PathLike, kind: str, payload: dict[str, Any]) -> Path:
    """Write ``payload`` atomically as a versioned ``kind`` document."""
    atomic_write_json(path, versioned(kind, payload))
    return Path(path)


def read_json(path: str | os.PathLike, kind: str) -> dict[str, Any] | None:
    """The ``kind`` document at ``path``; ``None`` when there is none (or it is unreadable,
    e.g. cut short by a crash before atomic writes existed)."""
    path = Path(path)
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return None
    return check_version(data, kind, path)


# --------------------------------------------------------------------------- tables
@dataclass(frozen=True)
class Column:
    """One column of a table: the row key, its Markdown header, and how Markdown shows a
    value (``spec`` for :func:`format`; ``scale`` first, e.g. 100 for a percentage)."""

    key: str
    header: str | None = None
    spec: str = ""
    scale: float = 1.0

    def render(self, value: Any) -> str:
        if value is None or (isinstance(value, float) and value != value):
            return "-"
        if isinstance(value, bool):
            return "yes" if value else ""
        if isinstance(value, int | float) and self.scale != 1.0:
            value = value * self.scale
        return format(value, self.spec) if self.spec else str(value)


def table_csv(rows: Sequence[dict[str, Any]], keys: Sequence[str]) -> str:
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=list(keys), extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: "" if row.get(k) is None else row.get(k) for k in keys})
    return buf.getvalue()


def table_markdown(rows: Sequence[dict[str, Any]], columns: Sequence[Column], preamble: str = "") -> str:
    lines = [preamble] if preamble else []
    lines.append("| " + " | ".join(c.header or c.key for c in columns) + " |")
    lines.append("|" + "|".join("---" for _ in columns) + "|")
    for row in rows:
        lines.append("| " + " | ".join(c.render(row.get(c.key)) for c in columns) + " |")
    return "\n".join(lines) + "\n"


def write_table(
    rows: Sequence[dict[str, Any]],
    stem: str | os.PathLike,
    kind: str,
    columns: Sequence[Column],
    *,
    csv_keys: Sequence[str] | None = None,
    markdown: str | None = None,
    extra: dict[str, Any] | None = None,
) -> dict[str, Path]:
    """Write ``stem.csv`` (``csv_keys``, default the columns' keys), ``stem.md`` (``markdown``
    if given, else the columns rendered) and ``stem.json`` (the rows, ``extra`` beside them, as
    a versioned ``kind`` document). Returns the three paths."""
    stem = Path(stem)
    paths = {
        "csv": stem.with_suffix(".csv"),
        "markdown": stem.with_suffix(".md"),
        "json": stem.with_suffix(".json"),
    }
    keys = list(csv_keys) if csv_keys is not None else [c.key for c in columns]
    atomic_write_text(paths["csv"], table_csv(rows, keys))
    atomic_write_text(paths["markdown"], markdown if markdown is not None else table_markdown(rows, columns))
    write_json(paths["json"], kind, {**(extra or {}), "rows": list(rows)})
    return paths


# --------------------------------------------------------------------------- figures
def save_figure(fig: Any, path: str | os.PathLike, dpi: int = 110) -> Path:
    """Render a matplotlib figure to PNG, close it and write the file atomically."""
    import matplotlib.pyplot as plt

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi)
    plt.close(fig)
    path = Path(path)
    atomic_write_bytes(path, buf.getvalue())
    return path


def pyplot():
    """matplotlib's pyplot on the Agg backend (no display needed)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt
