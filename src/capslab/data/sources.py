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

Missing files are downloaded (:func:`require_files` with ``download=True``, which
``load_dataset`` does by default) from the official URLs or ``$CAPSLAB_MIRRORS``, into
``<data_dir or the user cache>/<dataset>/``: resumable (HTTP Range), mirrors in order, md5
checked before an atomic rename, never when ``$CAPSLAB_OFFLINE`` is set (docs/data.md).
"""

from __future__ import annotations

import functools
import gzip
import hashlib
import http.client
import json
import os
import re
import sys
import threading
import urllib.error
import urllib.request
import zlib
from collections.abc import Callable
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from pathlib import Path

try:
    import fcntl
except ImportError:  # Windows: downloads are not locked against other processes
    fcntl = None

from capslab import __version__
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

ENV_OFFLINE = "CAPSLAB_OFFLINE"
ENV_MIRRORS = "CAPSLAB_MIRRORS"
#: seconds a server may stay silent (connecting, answering, between two blocks) before it fails
DEFAULT_TIMEOUT = 30.0
#: a download in progress is ``<name>.part``: no reader matches it, the next attempt continues it
PART_SUFFIX = ".part"
_CHUNK = 1 << 16
_MAX_RECONNECTIONS = 20  # per mirror, each after the previous connection brought new bytes
_USER_AGENT = f"capslab/{__version__} (python-urllib)"


def offline() -> bool:
    """Whether ``$CAPSLAB_OFFLINE`` is set (anything but empty, ``0``, ``false``, ``no``, ``off``):
    then nothing is downloaded and no connection is made."""
    return os.environ.get(ENV_OFFLINE, "").strip().lower() not in ("", "0", "false", "no", "off")


def file_urls(fspec: FileSpec) -> tuple[str, ...]:
    """The URLs tried, in order, for ``fspec``: its official ones, or those of ``$CAPSLAB_MIRRORS``.

    ``$CAPSLAB_MIRRORS`` (base URLs separated by spaces or commas) replaces the official URLs:
    the file is fetched from ``<base>/<dataset>/<file>`` (the layout of a data folder), or, when
    a base holds ``{file}``, from that template with ``{dataset}`` and ``{file}`` filled in.
    """
    bases = [b for b in re.split(r"[\s,]+", os.environ.get(ENV_MIRRORS, "")) if b]
    if not bases:
        return tuple(fspec.urls)
    return tuple(
        b.replace("{dataset}", fspec.dataset).replace("{file}", fspec.name) if "{file}" in b
        else "/".join(p for p in (b.rstrip("/"), fspec.dataset, fspec.name) if p)
        for b in bases
    )


def download_dir(name: str, data_dir: str | os.PathLike | None = None) -> Path:
    """Where the files of dataset ``name`` are downloaded: ``<data_dir or the user cache>/<name>``."""
    return (Path(data_dir).expanduser() if data_dir else default_data_dir()) / get_spec(name).name


def _note_on_stderr(text: str) -> None:
    print(f"capslab: {text}", file=sys.stderr, flush=True)


@dataclass(frozen=True)
class DownloadFeedback:
    """What downloads show: ``report(line)`` gets one line per dataset saying what was downloaded
    and where; ``progress(file name, bytes done, total bytes or None)`` is called as bytes arrive."""

    report: Callable[[str], None] | None = _note_on_stderr
    progress: Callable[[str, int, int | None], None] | None = None


_feedback: ContextVar[DownloadFeedback | None] = ContextVar("capslab_download_feedback",
                                                            default=None)


def _current_feedback() -> DownloadFeedback:
    return _feedback.get() or DownloadFeedback()


@contextmanager
def download_feedback(report: Callable[[str], None] | None = _note_on_stderr,
                      progress: Callable[[str, int, int | None], None] | None = None):
    """Within the block, every download (explicit, or automatic in :func:`require_files` and
    ``load_dataset``) reports through these callbacks. Outside any block: a one-line note on
    stderr and no progress display. ``report=None`` silences the note."""
    token = _feedback.set(DownloadFeedback(report, progress))
    try:
        yield
    finally:
        _feedback.reset(token)


class _MirrorFailed(Exception):
    """One URL could not deliver the file; the message says why."""


def _reason(exc: BaseException, timeout: float) -> str:
    if isinstance(exc, urllib.error.HTTPError):
        return f"HTTP {exc.code} {exc.reason}"
    reason = exc.reason if isinstance(exc, urllib.error.URLError) else exc
    if isinstance(reason, TimeoutError):
        return f"timed out: no data from the server for {timeout:g} s"
    return str(reason) or type(reason).__name__


def _kept(part: Path) -> str:
    size = part.stat().st_size if part.exists() else 0
    return f" ({size} bytes kept in {part.name}, continued next time)" if size else ""


@contextmanager
def _exclusive(lock: Path):
    """Hold an exclusive lock on the file ``lock`` (created, removed at the end), so that two
    processes never write the same ``.part``. No lock where ``fcntl`` is missing (Windows)."""
    if fcntl is None:
        yield
        return
    while True:
        fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o644)
        fcntl.flock(fd, fcntl.LOCK_EX)
        try:
            if os.fstat(fd).st_ino == os.stat(lock).st_ino:
                break  # still the file of that name: its last holder removes it before unlocking
        except FileNotFoundError:
            pass
        os.close(fd)
    try:
        yield
    finally:
        lock.unlink(missing_ok=True)
        os.close(fd)


def _body_start(resp, offset: int) -> int:
    """Where the body of ``resp`` starts in the file: the Content-Range start of a 206 answer,
    0 when the server ignored the Range header (200: everything again)."""
    if getattr(resp, "status", None) != 206:
        return 0
    header = resp.headers.get("Content-Range", "")
    m = re.match(r"bytes\s+(\d+)-", header)
    if m is None or int(m.group(1)) > offset:
        raise _MirrorFailed(f"bad Content-Range {header!r} for bytes from {offset}")
    return int(m.group(1))


def _get(url: str, part: Path, timeout: float, progress) -> tuple[int, int | None]:
    """One request that continues ``part`` (a Range request when it holds bytes). Returns
    ``(bytes now in part, file size announced by the server or None)``."""
    offset = part.stat().st_size if part.exists() else 0
    headers = {"User-Agent": _USER_AGENT, "Accept-Encoding": "identity"}
    if offset:
        headers["Range"] = f"bytes={offset}-"
    request = urllib.request.Request(url, headers=headers)
    with urllib.request.urlopen(request, timeout=timeout) as resp:
        start = _body_start(resp, offset) if offset else 0
        length = str(resp.headers.get("Content-Length") or "").strip()
        total = start + int(length) if length.isdigit() else None
        with open(part, "r+b" if start else "wb") as out:
            out.truncate(start)
            out.seek(start)
            done = start
            if progress is not None:
                progress(done, total)
            while block := resp.read(_CHUNK):
                out.write(block)
                done += len(block)
                if progress is not None:
                    progress(done, total)
            out.flush()
            os.fsync(out.fileno())
    return done, total


def _fetch(url: str, part: Path, timeout: float, progress, size: int | None) -> bool:
    """Complete ``part`` from ``url``, reconnecting with a Range request while each connection
    brings new bytes. Returns whether bytes from before this call were kept (a resumed file).
    Raises :class:`_MirrorFailed`."""
    held = part.stat().st_size if part.exists() else 0
    if size is not None and held >= size:
        if held == size:
            return True  # complete: an earlier run stopped between the last byte and the rename
        part.unlink()
        held = 0
    reconnections = 0
    while True:
        before = part.stat().st_size if part.exists() else 0
        try:
            done, total = _get(url, part, timeout, progress)
        except urllib.error.HTTPError as e:
            e.close()
            if e.code == 416 and before:  # nothing after our offset: the checksum decides
                return True
            raise _MirrorFailed(_reason(e, timeout)) from e
        except (OSError, http.client.HTTPException, ValueError) as e:
            grew = part.exists() and part.stat().st_size > before
            if grew and reconnections < _MAX_RECONNECTIONS:
                reconnections += 1
                continue
            raise _MirrorFailed(_reason(e, timeout) + _kept(part)) from e
        if total is None or done >= total:
            return held > 0
        if done > before and reconnections < _MAX_RECONNECTIONS:  # dropped: continue it
            reconnections += 1
            continue
        raise _MirrorFailed(f"connection closed after {done} of {total} bytes" + _kept(part))


def _check_download(path: Path, fspec: FileSpec, md5: str | None) -> tuple[bool, dict]:
    """Whether ``path`` is the file (its md5, or for gzip'd files the md5 of the decompressed
    bytes when no ``md5`` override is given), with the digests computed."""
    digests = {"md5": md5_file(path)}
    if digests["md5"] == (md5 or fspec.md5).lower():
        return True, digests
    if fspec.raw_md5 and not md5:
        try:
            digests["raw_md5"] = md5_gunzipped(path)
        except DatasetFormatError:
            return False, digests
        return digests["raw_md5"] == fspec.raw_md5, digests
    return False, digests


def _where_to_put(filename: str, dest_dir: Path) -> str:
    return (f"Without internet, copy the official file {filename} to {dest_dir}, or give a data "
            f"folder (data_dir) or set {ENV_DATA}=DIR to a folder that holds it.")


def download_file(fspec: FileSpec, dest_dir: str | os.PathLike, md5: str | None = None,
                  timeout: float = DEFAULT_TIMEOUT, progress=None, urls=None) -> Path:
    """Download ``fspec`` into ``dest_dir/<name>`` from the first of its URLs that delivers it.

    Bytes go to ``<name>.part``, a name no reader matches. A dropped connection is continued
    with an HTTP Range request, and so is a ``.part`` left by an earlier, interrupted run (a
    server that ignores Range sends the whole file again). The md5 is checked before the atomic
    rename to ``<name>``: a wrong file is deleted and the next URL tried. Only one process at a
    time downloads a given file (a lock file beside it, removed afterwards).

    Args:
        fspec: the file; ``fspec.md5`` is expected unless ``md5`` overrides it.
        dest_dir: the folder to save it in (created).
        timeout: seconds a server may stay silent before it counts as failed.
        progress: ``progress(bytes done, total or None)``, called as bytes arrive.
        urls: the URLs to try in order (default :func:`file_urls`: official or ``$CAPSLAB_MIRRORS``).

    Raises :class:`DownloadError` (``$CAPSLAB_OFFLINE`` set, no connection, HTTP error, time-out)
    or :class:`ChecksumError` (every URL served a wrong file; nothing is kept).
    """
    dest_dir = Path(dest_dir)
    urls = file_urls(fspec) if urls is None else tuple(urls)
    if offline():
        raise DownloadError(f"{fspec.name} was not downloaded: {ENV_OFFLINE} is set, so no "
                            f"connection is made. {_where_to_put(fspec.name, dest_dir)}")
    if not urls:
        raise DownloadError(f"no URL to download {fspec.name} from. "
                            f"{_where_to_put(fspec.name, dest_dir)}")
    try:
        dest_dir.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise DownloadError(f"cannot create {dest_dir} to download {fspec.name} into "
                            f"({e.strerror or e})") from e
    dest, part = dest_dir / fspec.name, dest_dir / (fspec.name + PART_SUFFIX)
    size = fspec.size if md5 is None else None  # an md5 override describes another file
    failures: list[str] = []
    wrong: list[str] = []
    with _exclusive(dest_dir / f".{fspec.name}.lock"):
        if dest.is_file() and _check_download(dest, fspec, md5)[0]:
            return dest  # another process downloaded it while this one waited for the lock
        for url in urls:
            for _ in range(2):  # a resumed file that fails its check gets one fresh try
                try:
                    resumed = _fetch(url, part, timeout, progress, size)
                except _MirrorFailed as e:
                    failures.append(f"{url}: {e}")
                    break
                ok, digests = _check_download(part, fspec, md5)
                if ok:
                    os.replace(part, dest)
                    key, ident, _ = _stamp(dest)
                    _save_stamp(key, {**ident, **digests})
                    return dest
                part.unlink(missing_ok=True)
                if not resumed:
                    wrong.append(f"{url}: md5 {digests['md5']}, expected {(md5 or fspec.md5).lower()}")
                    break
    if wrong and not failures:
        raise ChecksumError(f"download of {fspec.name} rejected, wrong checksum (nothing was "
                            "saved):\n  " + "\n  ".join(wrong))
    error = DownloadError(
        f"could not download {fspec.name} into {dest_dir} (offline or server unreachable?):\n  "
        + "\n  ".join(failures + wrong) + "\n" + _where_to_put(fspec.name, dest_dir)
    )
    error.failures = failures + wrong  # the reasons alone, for callers that word their own message
    raise error


def _size_text(n: int) -> str:
    return f"{n} B" if n < 1024 else f"{n / 1024:.1f} KiB" if n < 1 << 20 else f"{n / (1 << 20):.1f} MiB"


def _report(name: str, fetched: list[Path]) -> None:
    report = _current_feedback().report
    if fetched and report is not None:
        size = sum(p.stat().st_size for p in fetched)
        report(f"downloaded {name} {', '.join(p.name for p in fetched)} ({_size_text(size)}, "
               f"md5 verified) into {fetched[0].parent}")


def _download_one(spec: DatasetSpec, filename: str, data_dir, md5: str | None, timeout: float,
                  progress) -> Path:
    progress = progress or _current_feedback().progress
    return download_file(spec.files[filename], download_dir(spec.name, data_dir), md5, timeout,
                         None if progress is None else functools.partial(progress, filename))


def _valid_copy(spec: DatasetSpec, filename: str, data_dir, md5: str | None) -> Path | None:
    """A copy of ``filename`` that is found and passes its checksum (also as an extracted CIFAR
    folder), else ``None``."""
    loc = locate_file(spec.name, filename, data_dir)
    try:
        if loc is not None:
            verify_file(loc.path, spec.files[filename], md5)
            return loc.path
        for split in spec.splits.values():
            if filename in split.files and (ext := locate_extracted(spec.name, split, data_dir)):
                for member in split.members:
                    if member in spec.member_md5:
                        verify_member(ext.path / Path(member).name, spec.member_md5[member])
                return ext.path
    except (ChecksumError, DatasetFormatError):
        pass
    return None


def download(name: str, data_dir: str | os.PathLike | None = None, splits=None,
             checksums: dict[str, str] | None = None, timeout: float = DEFAULT_TIMEOUT,
             progress=None) -> list[Path]:
    """Download the files of dataset ``name`` (all splits, or ``splits``) that are not already
    present and valid, into :func:`download_dir`; see :func:`download_file`. Returns the path of
    every file (found or downloaded).

    ``progress(file name, bytes done, total or None)`` defaults to the one of
    :func:`download_feedback`, which also reports one line saying what was downloaded and where.
    """
    spec = get_spec(name)
    wanted = spec.splits.values() if splits is None else [spec.splits[s] for s in splits]
    paths: list[Path] = []
    fetched: list[Path] = []
    try:
        for filename in dict.fromkeys(f for s in wanted for f in s.files):
            md5 = (checksums or {}).get(filename)
            path = _valid_copy(spec, filename, data_dir, md5)
            if path is None:
                path = _download_one(spec, filename, data_dir, md5, timeout, progress)
                fetched.append(path)
            paths.append(path)
    finally:
        _report(spec.name, fetched)
    return paths


# ---------------------------------------------------------------- missing files

def require_files(name: str, data_dir=None, splits: tuple[str, ...] = ("train", "test"),
                  download: bool = False, checksums: dict[str, str] | None = None,
                  timeout: float = DEFAULT_TIMEOUT) -> None:
    """Make sure every file of ``splits`` is found (nothing is read); with ``download``, the
    missing ones are downloaded first (into :func:`download_dir`; one line is reported, see
    :func:`download_feedback`). A search or study calls this before it writes its run folder,
    ``load_dataset`` before it reads.

    Raises :class:`DatasetNotFoundError` for a file that is missing and was not downloaded:
    ``download=False``, ``$CAPSLAB_OFFLINE`` set (no connection is made) or the download failed
    (no connection, HTTP error, time-out); the message says which and where to put the files.
    :class:`ChecksumError` when every URL served a wrong file.
    """
    spec = get_spec(name)
    missing = {s: locate_split(spec.name, spec.splits[s], data_dir)[1] for s in splits}
    missing = {s: files for s, files in missing.items() if files}
    if not missing:
        return
    split, files = next(iter(missing.items()))
    dest = download_dir(spec.name, data_dir)
    if not download:
        raise not_found_error(spec.name, split, files, data_dir)
    if offline():
        raise not_found_error(spec.name, split, files, data_dir, why=(
            f"Nothing was downloaded because {ENV_OFFLINE} is set; unset it to download them "
            f"into {dest}."))
    fetched: list[Path] = []
    try:
        for filename in dict.fromkeys(f for fs in missing.values() for f in fs):
            md5 = (checksums or {}).get(filename)
            fetched.append(_download_one(spec, filename, data_dir, md5, timeout, None))
    except DownloadError as e:
        reasons = "; ".join(getattr(e, "failures", None) or [str(e)])
        raise not_found_error(spec.name, split, files, data_dir, why=(
            f"Downloading them into {dest} failed (offline or server unreachable?): {reasons}."
        )) from e
    finally:
        _report(spec.name, fetched)


def not_found_error(name: str, split: str, missing: list[str], data_dir=None,
                    why: str = "") -> DatasetNotFoundError:
    """The error for files of ``split`` found nowhere: the folders searched and how to fix it.
    ``why`` says why nothing was downloaded (default: a hint that downloading is possible)."""
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
    fix = (f"To fix: give a data folder (data_dir) or set {ENV_DATA}=DIR to a folder holding the "
           f"official files (as DIR/{spec.name}/FILE or DIR/FILE)")
    lines.append(f"{fix}. {why}" if why else
                 f"{fix}, or, when online, let CapsLab download them (download=True) into "
                 f"{download_dir(spec.name, data_dir)}.")
    return DatasetNotFoundError("\n".join(lines))
