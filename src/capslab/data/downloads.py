"""Downloads of dataset files: from the official URLs or ``$CAPSLAB_MIRRORS``, into
``<data_dir or the user cache>/<dataset>/``, md5 checked before an atomic rename.

Resumable (HTTP Range, :mod:`capslab.data.fetch`), mirrors in order, never when
``$CAPSLAB_OFFLINE`` is set (docs/data.md).
"""

from __future__ import annotations

import functools
import os
import re
import sys
from collections.abc import Callable
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from pathlib import Path

from capslab.data.checksums import (
    md5_file,
    md5_gunzipped,
    remember_digests,
    verify_file,
    verify_member,
)
from capslab.data.fetch import MirrorFailed, exclusive, fetch
from capslab.data.locations import ENV_DATA, default_data_dir, locate_extracted, locate_file
from capslab.data.registry import DatasetSpec, FileSpec, get_spec
from capslab.errors import ChecksumError, DatasetFormatError, DownloadError

ENV_OFFLINE = "CAPSLAB_OFFLINE"
ENV_MIRRORS = "CAPSLAB_MIRRORS"
#: seconds a server may stay silent (connecting, answering, between two blocks) before it fails
DEFAULT_TIMEOUT = 30.0
#: a download in progress is ``<name>.part``: no reader matches it, the next attempt continues it
PART_SUFFIX = ".part"


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
    """Within the block, every download (explicit, or automatic in
    :func:`~capslab.data.sources.require_files` and ``load_dataset``) reports through these
    callbacks. Outside any block: a one-line note on stderr and no progress display.
    ``report=None`` silences the note."""
    token = _feedback.set(DownloadFeedback(report, progress))
    try:
        yield
    finally:
        _feedback.reset(token)


def _check_download(path: Path, fspec: FileSpec, md5: str | None) -> tuple[bool, dict]:
    """Whether ``path`` is the file (its md5, or for gzip'd files the md5 of the decompressed
    bytes when no ``md5`` override is given), with the digests computed. A file with no
    checksum pinned is taken as it arrived (the download's report says it is not verified)."""
    digests = {"md5": md5_file(path)}
    if not md5 and not fspec.pinned:
        return True, digests
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
    with exclusive(dest_dir / f".{fspec.name}.lock"):
        if dest.is_file() and _check_download(dest, fspec, md5)[0]:
            return dest  # another process downloaded it while this one waited for the lock
        for url in urls:
            for _ in range(2):  # a resumed file that fails its check gets one fresh try
                try:
                    resumed = fetch(url, part, timeout, progress, size)
                except MirrorFailed as e:
                    failures.append(f"{url}: {e}")
                    break
                ok, digests = _check_download(part, fspec, md5)
                if ok:
                    os.replace(part, dest)
                    remember_digests(dest, digests)
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


def _report(name: str, fetched: list[Path], checksums: dict[str, str] | None = None) -> None:
    report = _current_feedback().report
    if fetched and report is not None:
        size = sum(p.stat().st_size for p in fetched)
        files = get_spec(name).files
        unpinned = [p.name for p in fetched if p.name in files and not files[p.name].pinned
                    and p.name not in (checksums or {})]
        check = (f"NOT verified: no md5 is pinned for {', '.join(unpinned)}" if unpinned
                 else "md5 verified")
        report(f"downloaded {name} {', '.join(p.name for p in fetched)} ({_size_text(size)}, "
               f"{check}) into {fetched[0].parent}")


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
        _report(spec.name, fetched, checksums)
    return paths


def download_missing(name: str, filenames, data_dir: str | os.PathLike | None = None,
                     checksums: dict[str, str] | None = None,
                     timeout: float = DEFAULT_TIMEOUT) -> list[Path]:
    """Download files ``filenames`` of dataset ``name`` (found missing: no copy is looked for)
    into :func:`download_dir`; see :func:`download_file`. One line reports those that arrived
    (:func:`download_feedback`), also when a later one fails. Returns their paths."""
    spec = get_spec(name)
    fetched: list[Path] = []
    try:
        for filename in filenames:
            md5 = (checksums or {}).get(filename)
            fetched.append(_download_one(spec, filename, data_dir, md5, timeout, None))
    finally:
        _report(spec.name, fetched, checksums)
    return fetched
