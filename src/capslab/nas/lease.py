"""One writer per search run: a lease in the journal, kept alive by a heartbeat.

The process that drives a run (``search run``, ``search resume``) takes the run's lease before
it trains anything and beats it every :data:`HEARTBEAT_SECONDS` from a daemon thread. A second
writer is refused with one line naming the holder and since when
(:class:`~capslab.errors.RunBusyError`); a lease whose holder has not beaten for
:data:`STALE_SECONDS` (killed, its machine gone) is taken over, as Optuna does with its
heartbeats; so is at once the lease of a process of this machine that no longer exists
(:func:`holder_dead`). Readers (``search report``, ``capslab report``) never take it. The
holder's name is ``host:pid:token``, so the message says where the other writer runs.
"""

from __future__ import annotations

import os
import socket
import threading
import uuid
from types import TracebackType

from capslab.errors import JournalUnavailableError
from capslab.nas.journal import Journal

#: seconds between two heartbeats of the writer
HEARTBEAT_SECONDS = 10.0
#: a lease not beaten for this long is abandoned and may be taken over
STALE_SECONDS = 60.0


def holder_name() -> str:
    """``host:pid:token``: where the writer runs, and which of its leases this is."""
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:6]}"


def holder_dead(holder: str) -> bool:
    """Is ``holder`` a process of THIS machine that no longer exists? (Killed, or stopped by
    a journal that went away and so could not release its lease.) Its lease need not go
    stale first. Holders of other machines are never judged here."""
    host, _, rest = holder.partition(":")
    pid = rest.partition(":")[0]
    if host != socket.gethostname() or not pid.isdigit():
        return False
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return True
    except PermissionError:  # someone else's process: alive
        return False
    return False


class RunLease:
    """Context manager: hold ``journal``'s run lease while the block runs.

    Args:
        journal: the run's journal.
        heartbeat: seconds between heartbeats (a daemon thread beats).
        stale_after: a lease older than this (since its last heartbeat) is taken over.
    """

    def __init__(self, journal: Journal, heartbeat: float = HEARTBEAT_SECONDS,
                 stale_after: float = STALE_SECONDS):
        if not 0 < heartbeat < stale_after:
            raise ValueError(f"heartbeat {heartbeat} must be positive and below stale_after {stale_after}")
        self.journal = journal
        self.holder = holder_name()
        self.heartbeat = heartbeat
        self.stale_after = stale_after
        self.taken_over: dict | None = None
        self.lost = False
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def __enter__(self) -> RunLease:
        self.taken_over = self.journal.acquire_lease(self.holder, self.stale_after, holder_dead)
        self._thread = threading.Thread(target=self._beat, name="capslab-lease", daemon=True)
        self._thread.start()
        return self

    def _beat(self) -> None:
        while not self._stop.wait(self.heartbeat):
            try:
                if not self.journal.heartbeat(self.holder):
                    self.lost = True  # another process took it over: we were presumed dead
                    return
            except Exception:  # noqa: BLE001 - a missed beat is retried at the next one
                continue

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        if isinstance(exc, JournalUnavailableError):
            return  # nothing to release it in: the lease goes stale and is taken over
        try:
            self.journal.release_lease(self.holder)
        except Exception:  # noqa: BLE001 - a lease left behind goes stale and is taken over
            if exc is None:
                raise
