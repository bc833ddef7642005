"""Resumable HTTP transfer of one URL into a ``.part`` file (Range requests, reconnections
while bytes arrive), and the lock that keeps two processes from writing the same file."""

from __future__ import annotations

import http.client
import os
import re
import urllib.error
import urllib.request
from contextlib import contextmanager
from pathlib import Path

try:
    import fcntl
except ImportError:  # Windows: downloads are not locked against other processes
    fcntl = None

from capslab import __version__

_CHUNK = 1 << 16
_MAX_RECONNECTIONS = 20  # per mirror, each after the previous connection brought new bytes
_USER_AGENT = f"capslab/{__version__} (python-urllib)"


class MirrorFailed(Exception):
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
def exclusive(lock: Path):
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
        raise MirrorFailed(f"bad Content-Range {header!r} for bytes from {offset}")
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


def fetch(url: str, part: Path, timeout: float, progress, size: int | None) -> bool:
    """Complete ``part`` from ``url``, reconnecting with a Range request while each connection
    brings new bytes. Returns whether bytes from before this call were kept (a resumed file).
    Raises :class:`MirrorFailed`."""
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
            raise MirrorFailed(_reason(e, timeout)) from e
        except (OSError, http.client.HTTPException, ValueError) as e:
            grew = part.exists() and part.stat().st_size > before
            if grew and reconnections < _MAX_RECONNECTIONS:
                reconnections += 1
                continue
            raise MirrorFailed(_reason(e, timeout) + _kept(part)) from e
        if total is None or done >= total:
            return held > 0
        if done > before and reconnections < _MAX_RECONNECTIONS:  # dropped: continue it
            reconnections += 1
            continue
        raise MirrorFailed(f"connection closed after {done} of {total} bytes" + _kept(part))
