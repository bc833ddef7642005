"""The C allocator behind CPU tensors: large tensors without a page fault on every step.

glibc's ``malloc`` hands every block above its mmap threshold (at most 32 MiB) to the kernel
with ``mmap`` and gives it back with ``munmap`` when it is freed. A training step on the CPU
allocates and frees tensors of tens of MiB (CapsNet at batch 128: the stem's 50 MiB output and
its gradient, the routing's 47-94 MiB intermediates), so every step pays a page fault, and the
kernel zeroing a fresh page, for each 4 KiB of each of them. On the development machine that
was about a fifth of a batch-128 CapsNet step (docs/benchmarks.md).

:func:`keep_freed_memory` asks ``malloc`` to serve every block from its heap (``M_MMAP_MAX =
0``) and to keep freed memory there (``M_TRIM_THRESHOLD`` at its maximum), so the next step
reuses pages that are already mapped. The cost is the usual one of a training process: it
keeps its peak memory until it exits (preloading jemalloc or tcmalloc, which Intel recommends
for PyTorch on CPUs, makes the same trade). Set ``CAPSLAB_MALLOC=system`` to leave ``malloc``
as it is. Elsewhere than Linux with glibc it does nothing.

The training loop turns it on with the first epoch whose batch has at least
:data:`KEEP_FREED_MIN_BATCH` images (:func:`keep_freed_memory_for`): at batch 1 few blocks are
large enough to be mapped afresh, and the heap-only setting measured no faster there (52-56
against 51-53 CapsNet images/s in three alternating pairs of processes on the development
machine), so a batch-1 process keeps its small footprint; from batch 4 on it is faster. The
setting is process-wide: a WarmAdaBatch run switches when its batch grows.
:func:`release_freed_memory` undoes it and hands the kept memory back to the system; the
architecture search calls it after every candidate it trains in its own process, so a long
search holds the memory of the candidate it trains, not the peak of every candidate so far
(docs/nas.md, "Memory of a long search").
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import sys

#: ``mallopt`` parameters (glibc's malloc.h).
M_TRIM_THRESHOLD = -1
M_MMAP_MAX = -4
#: The largest value ``mallopt`` takes (an ``int``): freed heap memory is never trimmed.
_KEEP_ALL = 2**31 - 1

#: glibc's defaults, restored by :func:`release_freed_memory` (the trim threshold's initial value)
DEFAULT_MMAP_MAX = 65536
DEFAULT_TRIM_THRESHOLD = 128 * 1024

#: The smallest training batch from which the loop keeps freed memory (see the module).
KEEP_FREED_MIN_BATCH = 2

_applied: bool | None = None


def keep_freed_memory_for(device, batch_size: int) -> bool:
    """:func:`keep_freed_memory` for a training step of ``batch_size`` images on ``device``
    (a ``torch.device``): from :data:`KEEP_FREED_MIN_BATCH` images on the CPU. Returns whether
    malloc keeps freed memory now."""
    if device.type == "cpu" and batch_size >= KEEP_FREED_MIN_BATCH:
        return keep_freed_memory()
    return keeps_freed_memory()


def keeps_freed_memory() -> bool:
    """Whether malloc keeps freed memory in this process now (changes nothing)."""
    return bool(_applied)


def _libc():
    """glibc's handle, or None where there is no ``mallopt`` (musl, other systems)."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c"))
        libc.mallopt.argtypes = (ctypes.c_int, ctypes.c_int)
        return libc
    except (OSError, AttributeError, TypeError):
        return None


def release_freed_memory() -> bool:
    """Undo :func:`keep_freed_memory`: malloc's defaults back, and the freed memory it kept
    returned to the system (``malloc_trim``). The next :func:`keep_freed_memory` applies the
    setting again. Returns whether anything was released."""
    global _applied
    if not _applied:
        return False
    _applied = None
    libc = _libc()
    if libc is None:
        return False
    libc.mallopt(M_MMAP_MAX, DEFAULT_MMAP_MAX)
    libc.mallopt(M_TRIM_THRESHOLD, DEFAULT_TRIM_THRESHOLD)
    trim = getattr(libc, "malloc_trim", None)
    if trim is not None:
        trim.argtypes = (ctypes.c_size_t,)
        trim(0)
    return True


def keep_freed_memory() -> bool:
    """Serve large CPU allocations from malloc's heap and keep freed memory for reuse (once per
    process; see the module). Returns whether malloc keeps freed memory."""
    global _applied
    if _applied is not None:
        return _applied
    _applied = False
    if os.environ.get("CAPSLAB_MALLOC", "").strip().lower() == "system":
        return False
    libc = _libc()
    if libc is None:  # musl and others have no mallopt
        return False
    # mmap off first: from here on no large block leaves the heap
    _applied = bool(libc.mallopt(M_MMAP_MAX, 0)) and bool(libc.mallopt(M_TRIM_THRESHOLD, _KEEP_ALL))
    return _applied
