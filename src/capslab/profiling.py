"""Time and peak memory of a training step, measured the same way by ``capslab bench`` and
``capslab memory``.

* seconds: :func:`median_seconds`, the median of ``steps`` timed calls after ``warmup`` untimed
  ones, the device synchronised around each call (CUDA), without the profiler;
  :func:`interleaved_median_seconds` times several functions in alternating rounds, so that
  their ratios survive a machine shared with other work.
* peak memory of one training step (:func:`training_step_peak_bytes`): on CUDA
  ``torch.cuda.max_memory_allocated`` after ``reset_peak_memory_stats``. On the CPU, which has
  no allocator statistics, the same quantity is reconstructed inside the process: the bytes of
  the live tensors that exist before the step (parameters, optimizer state, the batch:
  :func:`persistent_bytes` + :func:`tensor_bytes`) plus the highest point of the running sum of
  every allocation and free that the CPU allocator reports to ``torch.profiler``
  (``profile_memory=True``) during the step (:func:`profiler_peak_bytes`). This counts tensor
  bytes, as CUDA's counter does, and is not disturbed by the allocator's or the OS's caching
  (RSS is).
* activations saved for the backward pass (:func:`saved_activation_bytes`): the distinct
  storages that ``torch.autograd.graph.saved_tensors_hooks`` sees, parameters excluded.

Tensors are counted by distinct storage, so views and shared storages count once.
"""

from __future__ import annotations

import contextlib
import functools
import gc
import itertools
import os
import statistics
import sys
import time
from collections.abc import Callable, Iterable, Iterator, Sequence

import torch


def tensor_bytes(tensors: Iterable[object]) -> int:
    """Bytes of the distinct storages behind ``tensors`` (anything else is ignored)."""
    seen: dict[int, int] = {}
    for t in tensors:
        if isinstance(t, torch.Tensor):
            s = t.untyped_storage()
            seen[s.data_ptr()] = s.nbytes()
    return sum(seen.values())


def persistent_bytes(model: torch.nn.Module, optimizer: torch.optim.Optimizer) -> int:
    """Parameters, buffers, gradients and optimizer state (distinct storages)."""
    state = [v for st in optimizer.state.values() for v in st.values()]
    grads = [p.grad for p in model.parameters() if p.grad is not None]
    return tensor_bytes([*model.parameters(), *model.buffers(), *grads, *state])


@contextlib.contextmanager
def native_stderr_silenced() -> Iterator[None]:
    """Hide the profiler backend's start/stop lines, which it writes straight to fd 2."""
    sys.stderr.flush()
    try:
        saved = os.dup(2)
    except OSError:  # no real stderr (embedded interpreter): nothing to silence
        yield
        return
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 2)
    try:
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(devnull)


def profiler_peak_bytes(fn: Callable[[], object]) -> int:
    """Highest running sum of CPU allocations minus frees while ``fn()`` runs (bytes, >= 0).

    Reads the ``[memory]`` events that the CPU allocator reports to ``torch.profiler`` when
    ``profile_memory=True`` (one event per allocation with its size, per free with minus it).
    """
    from torch.profiler import ProfilerActivity, profile

    with native_stderr_silenced(), profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        fn()
    events = sorted(
        (e for e in prof.profiler.kineto_results.events()
         if e.name() == "[memory]" and str(e.device_type()).endswith("CPU")),
        key=lambda e: e.start_ns(),
    )
    return max(itertools.accumulate((e.nbytes() for e in events), initial=0))


def saved_activation_bytes(fn: Callable[[], torch.Tensor], exclude: Sequence[torch.Tensor]) -> int:
    """Bytes of the distinct storages that autograd saves while ``fn()`` builds its graph.

    Storages of ``exclude`` (the parameters) are not counted. The graph is dropped afterwards.
    """
    skip = {t.untyped_storage().data_ptr() for t in exclude}
    saved: list[torch.Tensor] = []

    def pack(t: torch.Tensor) -> torch.Tensor:
        if t.untyped_storage().data_ptr() not in skip:
            saved.append(t)
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        fn()  # the result, and with it the graph, is dropped at once
    return tensor_bytes(saved)


def median_seconds(fn: Callable[[], object], steps: int, warmup: int, device: torch.device) -> float:
    """Median wall time of ``steps`` calls of ``fn`` after ``warmup`` untimed ones (CUDA synced)."""
    return interleaved_median_seconds([fn], steps, warmup, device)[0]


def interleaved_median_seconds(fns: Sequence[Callable[[], object]], steps: int, warmup: int,
                               device: torch.device, block: int = 1) -> list[float]:
    """Median wall time of one call of each of ``fns``, timed in ``steps`` rounds: every round
    runs each function once, starting one further along each time. Load from other processes
    then falls on all of them alike, so their ratios hold on a busy machine where back-to-back
    timings drift.

    With ``block > 1`` a round runs each function ``block + 1`` times back to back and takes
    the mean of the last ``block`` calls (:func:`block_seconds` with one lead call).
    """
    if block < 1:
        raise ValueError(f"block must be >= 1, got {block}")
    for fn in fns:
        for _ in range(warmup):
            fn()
    lead = 1 if block > 1 else 0
    return interleaved_rounds([functools.partial(block_seconds, fn, block, device, lead) for fn in fns], steps)


def block_seconds(fn: Callable[[], object], block: int, device: torch.device, lead: int = 1) -> float:
    """Mean wall time of ``block`` consecutive calls of ``fn`` (CUDA synced around them), after
    ``lead`` untimed calls: a training loop runs its steps one after the other, and the first
    step after other work ran pays for the caches and the allocator state that work left
    behind, which a short step (batch 1) would otherwise be measured by."""
    for _ in range(lead):
        fn()
    _sync(device)
    t0 = time.perf_counter()
    for _ in range(block):
        fn()
    _sync(device)
    return (time.perf_counter() - t0) / block


def interleaved_rounds(timers: Sequence[Callable[[], float]], steps: int) -> list[float]:
    """The median of ``steps`` samples of every timer (a call that returns seconds), taken in
    alternating rounds: each round calls every timer once, starting one further along each
    time. The timers may measure in other processes (``capslab bench``'s isolated rows)."""
    samples: list[list[float]] = [[] for _ in timers]
    for r in range(steps):
        for k in range(len(timers)):
            i = (r + k) % len(timers)
            samples[i].append(timers[i]())
    return [statistics.median(s) for s in samples]


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def training_step_peak_bytes(
    train_step: Callable[[], object],
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    batch: Sequence[torch.Tensor],
    device: torch.device,
) -> int:
    """Peak bytes of tensors alive during one training step, gradients cleared beforehand.

    CUDA: ``max_memory_allocated``. CPU: what exists when the step starts (parameters,
    optimizer state, the batch) plus the peak of the step's own allocations.
    """
    optimizer.zero_grad(set_to_none=True)
    gc.collect()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
        train_step()
        torch.cuda.synchronize(device)
        return torch.cuda.max_memory_allocated(device)
    baseline = persistent_bytes(model, optimizer) + tensor_bytes(batch)
    return baseline + profiler_peak_bytes(train_step)
