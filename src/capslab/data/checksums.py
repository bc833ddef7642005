"""md5 checks of dataset files against their published (pinned) checksums.

Checksums are computed once per file and remembered in ``$XDG_CACHE_HOME/capslab/verified.json``
keyed by path, size and modification time (in memory only when that folder is not writable).
"""

from __future__ import annotations

import functools
import gzip
import hashlib
import json
import os
import sys
import threading
import zlib
from pathlib import Path

from capslab.data.locations import cache_root
from capslab.data.registry import FileSpec
from capslab.errors import ChecksumError, DatasetFormatError
from capslab.io import atomic_write_text

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


def remember_digests(path: Path, digests: dict) -> None:
    """Remember ``digests`` (``md5``, ``raw_md5``) just computed for ``path``, keyed by its
    current size and modification time."""
    key, ident, _ = _stamp(path)
    _save_stamp(key, {**ident, **digests})


def verify_file(path: str | os.PathLike, fspec: FileSpec, md5: str | None = None,
                force: bool = False, what: str = "") -> str:
    """Check ``path`` against ``fspec`` (or an explicit ``md5`` overriding the published one).

    A file matches its published md5, or, for gzip'd files, the pinned md5 of the decompressed
    bytes (rewritten gzip headers, or a gunzipped copy). Returns ``"md5"`` or ``"decompressed
    md5"`` (which one matched); raises :class:`ChecksumError` naming the file otherwise. A file
    with no checksum pinned (and no ``md5`` given) is not hashed: :data:`UNPINNED` is returned
    after a one-line warning (:func:`warn_unpinned`).
    """
    path = Path(path)
    expected = (md5 or fspec.md5).lower()
    raw_expected = None if md5 else fspec.raw_md5
    if not expected and not raw_expected:
        warn_unpinned(path, fspec, what)
        return UNPINNED
    digests = _file_digests(path, False, force)
    if expected and digests["md5"] == expected:
        return "md5"
    if raw_expected:
        digests = _file_digests(path, True, force)
        if digests.get("raw_md5") == raw_expected:
            return "decompressed md5"
    wanted = " or ".join(([f"{expected}"] if expected else [])
                         + ([f"decompressed md5 {raw_expected}"] if raw_expected else []))
    raise ChecksumError(
        f"{path}: checksum mismatch{' for ' + what if what else ''}: md5 {digests['md5']}, "
        f"expected {wanted} (file {fspec.name}): it is corrupt, truncated or not the "
        "official one."
    )


#: what :func:`verify_file` returns for a file with no checksum pinned
UNPINNED = "not pinned"
_warned: set[str] = set()
_warned_lock = threading.Lock()


def warn_unpinned(path: str | os.PathLike, fspec: FileSpec, what: str = "") -> None:
    """Say on stderr, once per file and process, that ``path`` is used unverified: no md5 of
    ``fspec`` is pinned in the registry (``checksums=`` pins one for a call)."""
    key = str(Path(path).resolve())
    with _warned_lock:
        if key in _warned:
            return
        _warned.add(key)
    print(f"capslab: warning: {path} is used unverified: no md5 of {fspec.name} is known for "
          f"certain{' (' + what + ')' if what else ''}, so none is pinned; pass your own with "
          "checksums= to check it.", file=sys.stderr, flush=True)


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
