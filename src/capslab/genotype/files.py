"""Genotype files: parse decoded JSON, load and save in either format (NASCaps list or capslab
object, see :mod:`capslab.genotype`).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from capslab.errors import GenotypeError
from capslab.genotype.network import Genotype, validate
from capslab.io import atomic_write_text


def parse_genotype(obj: Any) -> Genotype:
    """A genotype from decoded JSON in either format (list = NASCaps, object = capslab)."""
    if isinstance(obj, Genotype):
        return obj
    if isinstance(obj, (list, tuple)):
        return Genotype.from_nascaps(obj)
    if isinstance(obj, dict):
        return Genotype.from_dict(obj)
    raise GenotypeError(
        "a genotype is a NASCaps list of genes or a capslab object, got " + type(obj).__name__
    )


def load_genotype(path: str | os.PathLike, *, check: bool = True) -> Genotype:
    """Read a genotype file in either format (detected); validate it unless ``check=False``.
    Every error is a :class:`GenotypeError` naming the file."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as e:
        raise GenotypeError(f"{path}: cannot read genotype file ({e.strerror or e})") from None
    try:
        g = parse_genotype(json.loads(text))
        return validate(g) if check else g
    except json.JSONDecodeError as e:
        raise GenotypeError(f"{path}: not valid JSON ({e})") from None
    except GenotypeError as e:
        raise GenotypeError(f"{path}: {e}") from None


def save_genotype(g: Genotype, path: str | os.PathLike, format: str = "capslab") -> None:
    """Write ``g`` atomically as JSON: ``format="capslab"`` (readable object) or ``"nascaps"``
    (the authors' list, one gene per line)."""
    if format == "capslab":
        text = json.dumps(g.to_dict(), indent=2) + "\n"
    elif format == "nascaps":
        rows = [json.dumps(row, separators=(", ", ": ")) for row in g.to_nascaps()]
        text = "[\n  " + ",\n  ".join(rows) + "\n]\n"
    else:
        raise GenotypeError(f"unknown genotype format {format!r}; valid: 'capslab', 'nascaps'")
    atomic_write_text(path, text)
