"""Where dataset files are found: the folders searched, in order, and the copies in them.

Search order for every file (the first folder that holds it wins):

1. ``data_dir`` when given (labelled ``data_dir`` in listings),
2. every folder of ``$CAPSLAB_DATA`` (``os.pathsep``-separated),
3. the user cache ``$XDG_CACHE_HOME/capslab/datasets`` (default ``~/.cache/capslab/datasets``),
   where downloads go,
4. known system-wide copies (Debian's ``/usr/share/datasets/fashion-mnist``).

In each folder ``<folder>/<dataset>/<file>`` (also the usual sub-folder spellings such as
``MNIST/raw``) and ``<folder>/<file>`` are accepted. A gzip'd IDX file may also be kept
gunzipped (``train-images-idx3-ubyte``); it is then verified by the md5 of the decompressed bytes
(:mod:`capslab.data.checksums`). A zip of one file (affNIST's ``test.mat.zip``) may also be
kept extracted (``test.mat``).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from capslab.data.registry import DatasetSpec, SplitSpec, get_spec

ENV_DATA = "CAPSLAB_DATA"
#: origin label of the folder given as ``data_dir``
DATA_DIR = "data_dir"


def cache_root() -> Path:
    """``$XDG_CACHE_HOME/capslab`` (``~/.cache/capslab`` by default)."""
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "capslab"


def default_data_dir() -> Path:
    """Where downloads go and the last user folder searched: ``<cache_root>/datasets``."""
    return cache_root() / "datasets"


@dataclass(frozen=True)
class SearchDir:
    path: Path
    origin: str  # "data_dir", "CAPSLAB_DATA", "cache", "system"


def search_dirs(name: str, data_dir: str | os.PathLike | None = None) -> list[SearchDir]:
    """The folders searched for dataset ``name``, in order."""
    out: list[SearchDir] = []
    if data_dir is not None and str(data_dir):
        out.append(SearchDir(Path(data_dir).expanduser(), DATA_DIR))
    env = (part.strip() for part in os.environ.get(ENV_DATA, "").split(os.pathsep))
    out += [SearchDir(Path(part).expanduser(), ENV_DATA) for part in env if part]
    out.append(SearchDir(default_data_dir(), "cache"))
    out += [SearchDir(Path(d), "system") for d in get_spec(name).offline_dirs]
    unique: dict[str, SearchDir] = {}  # the first of the folders that are the same wins
    for d in out:
        unique.setdefault(os.path.abspath(d.path), d)
    return list(unique.values())


def subfolders(spec: DatasetSpec) -> list[str]:
    """The folder names the files of ``spec`` may sit in under a search folder, in order."""
    return list(dict.fromkeys([spec.name, *spec.folders]))


def candidate_paths(spec: DatasetSpec, base: Path, relname: str) -> list[Path]:
    """``<base>/<dataset folder>/<relname>`` for each accepted folder name, then ``<base>/<relname>``."""
    return [base / sub / relname for sub in subfolders(spec)] + [base / relname]


@dataclass(frozen=True)
class Located:
    """A file (or an extracted CIFAR folder) that was found."""

    spec_file: str  # the registry file name it stands for
    path: Path
    variant: str  # "published", "gunzipped", "unzipped" or "extracted"
    origin: str  # which search folder it came from


def locate_file(name: str, filename: str, data_dir=None) -> Located | None:
    """Find registry file ``filename`` of dataset ``name``; ``None`` when it is nowhere."""
    spec = get_spec(name)
    fspec = spec.files[filename]
    for d in search_dirs(name, data_dir):
        for variant, rel in (("published", fspec.name), ("gunzipped", fspec.gunzipped_name),
                             ("unzipped", fspec.unzipped_name)):
            if rel is None:
                continue
            for p in candidate_paths(spec, d.path, rel):
                if p.is_file():
                    return Located(filename, p, variant, d.origin)
    return None


def locate_extracted(name: str, split: SplitSpec, data_dir=None) -> Located | None:
    """Find the extracted folder of a CIFAR tarball that holds every batch of ``split``."""
    if not split.folder:
        return None
    spec = get_spec(name)
    for d in search_dirs(name, data_dir):
        for p in candidate_paths(spec, d.path, split.folder):
            if p.is_dir() and all((p / Path(m).name).is_file() for m in split.members):
                return Located(split.files[0], p, "extracted", d.origin)
    return None


def locate_split(name: str, split: SplitSpec, data_dir=None) -> tuple[list[Located], list[str]]:
    """``(found, missing file names)`` for every file of ``split``."""
    found, missing = [], []
    for filename in split.files:
        loc = locate_file(name, filename, data_dir) or locate_extracted(name, split, data_dir)
        if loc is None:
            missing.append(filename)
        else:
            found.append(loc)
    return found, missing
