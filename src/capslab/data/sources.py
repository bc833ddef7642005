"""Where dataset files are found, how they are verified (md5, cached) and downloaded.

Search order for every file (the first folder that holds it wins):

1. ``data_dir`` when given (labelled ``data_dir`` in listings),
2. every folder of ``$CAPSLAB_DATA`` (``os.pathsep``-separated),
3. the user cache ``$XDG_CACHE_HOME/capslab/datasets`` (default ``~/.cache/capslab/datasets``),
   where downloads go,
4. known system-wide copies (Debian's ``/usr/share/datasets/fashion-mnist``).

In each folder ``<folder>/<dataset>/<file>`` (also the usual sub-folder spellings such as
``MNIST/raw``) and ``<folder>/<file>`` are accepted. A gzip'd IDX file may also be kept
gunzipped (``train-images-idx3-ubyte``); it is then verified by the md5 of the decompressed bytes.

Checksums are computed once per file and remembered in ``$XDG_CACHE_HOME/capslab/verified.json``
keyed by path, size and modification time (in memory only when that folder is not writable).
"""

from __future__ import annotations

import functools
import gzip
import hashlib
import json
import os
import tempfile
import threading
import urllib.error
import urllib.request
import zlib
from dataclasses import dataclass
from pathlib import Path

from capslab.data.registry import DatasetSpec, FileSpec, SplitSpec, get_spec
from capslab.errors import (
    ChecksumError,
    DatasetFormatError,
    DatasetNotFoundError,
    DownloadError,
)
from capslab.io import atomic_write_text

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


def _subfolders(spec: DatasetSpec) -> list[str]:
    return list(dict.fromkeys([spec.name, *spec.folders]))


def candidate_paths(spec: DatasetSpec, base: Path, relname: str) -> list[Path]:
    """``<base>/<dataset folder>/<relname>`` for each accepted folder name, then ``<base>/<relname>``."""
    return [base / sub / relname for sub in _subfolders(spec)] + [base / relname]


@dataclass(frozen=True)
class Located:
    """A file (or an extracted CIFAR folder) that was found."""

    spec_file: str  # the registry file name it stands for
    path: Path
    variant: str  # "published", "gunzipped" or "extracted"
    origin: str  # which search folder it came from


def locate_file(name: str, filename: str, data_dir=None) -> Located | None:
    """Find registry file ``filename`` of dataset ``name``; ``None`` when it is nowhere."""
    spec = get_spec(name)
    fspec = spec.files[filename]
    for d in search_dirs(name, data_dir):
        for variant, rel in (("published", fspec.name), ("gunzipped", fspec.gunzipped_name)):
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


def require_files(name: str, data_dir=None, splits: tuple[str, ...] = ("train", "test")) -> None:
    """:class:`DatasetNotFoundError` unless every file of ``splits`` is found (nothing is read):
    a search or study checks this before it writes its run folder."""
    spec = get_spec(name)
    for split in splits:
        _, missing = locate_split(spec.name, spec.splits[split], data_dir)
        if missing:
            raise not_found_error(spec.name, split, missing, data_dir)


def not_found_error(name: str, split: str, missing: list[str], data_dir=None) -> DatasetNotFoundError:
    spec = get_spec(name)
    lines = [
        f"dataset {spec.name!r} (split {split!r}): "
        f"{'file' if len(missing) == 1 else 'files'} {', '.join(missing)} not found.",
        "Searched, in order:",
    ]
    subs = ", ".join(f"{s}/" for s in _subfolders(spec))
    for d in search_dirs(name, data_dir):
        state = "" if d.path.is_dir() else " (folder does not exist)"
        lines.append(f"  - {d.path}  [{d.origin}]{state}  (also in its sub-folders {subs})")
    lines.append(
        f"To fix: give a data folder (data_dir) or set {ENV_DATA}=DIR to a "
        f"folder holding the official files (as DIR/{spec.name}/FILE or DIR/FILE), or, when "
        f"online, download them (download=True), which saves them under {default_data_dir()}."
    )
    return DatasetNotFoundError("\n".join(lines))


# ---------------------------------------------------------------- checksums

_md5 = functools.partial(hashlib.md5, usedforsecurity=False)


def md5_file(path: str | os.PathLike) -> str:
    with open(path, "rb") as f:
        return hashlib.file_digest(f, _md5).hexdigest()


def md5_gunzipped(path: str | os.PathLike) -> str:
    """md5 of the decompressed content of a gzip file."""
    try:
        with gzip.open(path, "rb") as f:
            return hashlib.file_digest(f, _md5).hexdigest()
    except (EOFError, OSError, zlib.error) as e:
        raise DatasetFormatError(f"{path}: corrupt or truncated gzip data ({e})") from e


_stamp_lock = threading.Lock()
_stamps_memory: dict[str, dict] = {}


def _stamp_file() -> Path:
    return cache_root() / "verified.json"


def _stamps_on_disk() -> dict[str, dict]:
    try:
        return json.loads(_stamp_file().read_text())
    except (OSError, ValueError):
        return {}


def _save_stamp(key: str, value: dict) -> None:
    with _stamp_lock:
        _stamps_memory[key] = value
        stamps = {**_stamps_on_disk(), key: value}
        try:
            atomic_write_text(_stamp_file(), json.dumps(stamps, indent=1, sort_keys=True))
        except OSError:
            pass  # read-only cache: remembered for this process only


def _stamp(path: Path) -> tuple[str, dict, dict]:
    """``(key, {"size", "mtime_ns"} of path, its remembered digests or {} when out of date)``."""
    st = path.stat()
    key, ident = str(path.resolve()), {"size": st.st_size, "mtime_ns": st.st_mtime_ns}
    cached = {**_stamps_memory, **_stamps_on_disk()}.get(key, {})
    return key, ident, cached if all(cached.get(k) == v for k, v in ident.items()) else {}


def _file_digests(path: Path, want_raw: bool, force: bool) -> dict:
    """``{"md5": ..., "raw_md5": ...}`` of ``path``, from the stamp cache when still valid."""
    key, ident, cached = _stamp(path)
    value = {**({} if force else cached), **ident}
    if "md5" not in value:
        value["md5"] = md5_file(path)
    if want_raw and "raw_md5" not in value:
        with open(path, "rb") as f:
            gz = f.read(2) == b"\x1f\x8b"
        value["raw_md5"] = md5_gunzipped(path) if gz else value["md5"]
    if value != cached:
        _save_stamp(key, value)
    return value


def verify_file(path: str | os.PathLike, fspec: FileSpec, md5: str | None = None,
                force: bool = False, what: str = "") -> str:
    """Check ``path`` against ``fspec`` (or an explicit ``md5`` overriding the published one).

    A file matches its published md5, or, for gzip'd files, the pinned md5 of the decompressed
    bytes (rewritten gzip headers, or a gunzipped copy). Returns ``"md5"`` or ``"decompressed
    md5"`` (which one matched); raises :class:`ChecksumError` naming the file otherwise.
    """
    path = Path(path)
    expected = (md5 or fspec.md5).lower()
    raw_expected = None if md5 else fspec.raw_md5
    digests = _file_digests(path, False, force)
    if digests["md5"] == expected:
        return "md5"
    if raw_expected:
        digests = _file_digests(path, True, force)
        if digests.get("raw_md5") == raw_expected:
            return "decompressed md5"
    extra = f" or decompressed md5 {raw_expected}" if raw_expected else ""
    raise ChecksumError(
        f"{path}: checksum mismatch{' for ' + what if what else ''}: md5 {digests['md5']}, "
        f"expected {expected}{extra} (file {fspec.name}): it is corrupt, truncated or not the "
        "official one."
    )


def verify_member(path: str | os.PathLike, expected_md5: str, force: bool = False) -> str:
    """Check one file of an extracted CIFAR folder against its pinned md5."""
    path = Path(path)
    got = _file_digests(path, False, force)["md5"]
    if got != expected_md5:
        raise ChecksumError(f"{path}: checksum mismatch: md5 {got}, expected {expected_md5}")
    return "md5"


def cached_verification(path: str | os.PathLike) -> dict | None:
    """The remembered digests of ``path`` if still valid (same size and mtime), else ``None``."""
    try:
        return _stamp(Path(path))[2] or None
    except OSError:
        return None


# ---------------------------------------------------------------- download

def download_file(fspec: FileSpec, dest_dir: str | os.PathLike, md5: str | None = None,
                  timeout: float = 60.0, progress=None) -> Path:
    """Download ``fspec`` from its URLs (mirrors in order) into ``dest_dir/<name>``.

    Streams to a temporary file in ``dest_dir``, checks the md5 and renames atomically; a file
    with a wrong checksum is deleted and the next mirror is tried. ``progress(done, total)`` is
    called while downloading when given. Raises :class:`DownloadError` (offline, HTTP error) or
    :class:`ChecksumError` (every mirror served a wrong file).
    """
    dest_dir = Path(dest_dir)
    dest_dir.mkdir(parents=True, exist_ok=True)
    dest = dest_dir / fspec.name
    expected = (md5 or fspec.md5).lower()
    failures: list[str] = []
    checksum_failures: list[str] = []
    for url in fspec.urls:
        fd, tmp = tempfile.mkstemp(prefix=f".{fspec.name}.", suffix=".part", dir=dest_dir)
        try:
            h = _md5()
            with os.fdopen(fd, "wb") as out, urllib.request.urlopen(url, timeout=timeout) as resp:
                length = (getattr(resp, "headers", None) or {}).get("Content-Length")
                total = int(length) if length else None
                done = 0
                while block := resp.read(1 << 20):
                    out.write(block)
                    h.update(block)
                    done += len(block)
                    if progress is not None:
                        progress(done, total)
                out.flush()
                os.fsync(out.fileno())
            got = h.hexdigest()
            if got != expected:
                checksum_failures.append(f"{url}: md5 {got}, expected {expected}")
                continue
            os.replace(tmp, dest)
            key, ident, _ = _stamp(dest)
            _save_stamp(key, {**ident, "md5": got})
            return dest
        except (urllib.error.URLError, OSError, ValueError) as e:
            failures.append(f"{url}: {getattr(e, 'reason', None) or e}")
        finally:
            Path(tmp).unlink(missing_ok=True)
    if checksum_failures and not failures:
        raise ChecksumError(
            f"download of {fspec.name} rejected, wrong checksum (nothing was saved):\n  "
            + "\n  ".join(checksum_failures)
        )
    raise DownloadError(
        f"could not download {fspec.name} into {dest_dir} (offline or server unreachable?):\n  "
        + "\n  ".join(failures + checksum_failures)
        + f"\nWithout internet, copy the official file to {dest_dir}, or give a data folder "
        f"(data_dir) or set {ENV_DATA}=DIR to a folder that holds it."
    )


def download(name: str, data_dir: str | os.PathLike | None = None, splits=None,
             checksums: dict[str, str] | None = None, timeout: float = 60.0,
             progress=None) -> list[Path]:
    """Download the files of dataset ``name`` (all splits, or ``splits``) that are not already
    present and valid, into ``<data_dir or the user cache>/<dataset>/``. Returns the file paths."""
    spec = get_spec(name)
    dest = (Path(data_dir).expanduser() if data_dir else default_data_dir()) / spec.name
    wanted = spec.splits.values() if splits is None else [spec.splits[s] for s in splits]
    paths = []
    for filename in dict.fromkeys(f for s in wanted for f in s.files):
        fspec = spec.files[filename]
        md5 = (checksums or {}).get(filename)
        loc = locate_file(name, filename, data_dir)
        if loc is not None:
            try:
                verify_file(loc.path, fspec, md5)
                paths.append(loc.path)
                continue
            except (ChecksumError, DatasetFormatError):
                pass
        paths.append(download_file(fspec, dest, md5, timeout, progress))
    return paths
