"""Running evaluations in parallel: in-process, worker processes, or a Ray cluster.

A pool takes genotypes and yields ``(genotype, record)`` pairs as evaluations finish. Workers
only compute; the process driving the search writes every result to the journal, which stays
the single source of truth. Results are keyed by genotype, so the order in which workers finish
does not change the search.

A pool keeps at most ``workers`` candidates running and starts the next one, in the order
given, as soon as one finishes (so a slow candidate never holds up the others). ``stop`` (a
function) is asked before each start: once it answers true no candidate starts, the running
ones finish and ``evaluate`` returns without the rest. Keyword ``options`` of ``evaluate``
are passed on to every evaluator call (the search's ``rung``). :func:`utilisation` measures how busy
the workers were.
"""

from __future__ import annotations

import os
import socket
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from datetime import UTC, datetime
from multiprocessing import get_context
from typing import Any

from capslab.errors import ConfigError, MissingDependencyError
from capslab.genotype import Genotype
from capslab.nas.schema import EvaluationRecord

EvaluatorFn = Callable[[Genotype], EvaluationRecord]
StopFn = Callable[[], bool]


def busy_seconds(spans: Iterable[tuple[float, float]], start: float, end: float) -> float:
    """Seconds that the ``(begin, finish)`` spans of evaluations spend inside ``[start, end]``,
    summed over the spans (two workers busy for one second are two busy seconds)."""
    return float(sum(max(0.0, min(b, end) - max(a, start)) for a, b in spans))


def utilisation(spans: Iterable[tuple[float, float]], workers: int, start: float,
                end: float) -> float | None:
    """How busy ``workers`` were over ``[start, end]``: :func:`busy_seconds` over
    ``workers x (end - start)``, in [0, 1]; ``None`` for an empty window (a pure function).

    Example: two workers over 10 s, one busy 0-10 s, the other 0-4 s: (10 + 4) / 20 = 0.7.
    """
    capacity = workers * (end - start)
    if capacity <= 0:
        return None
    return min(1.0, busy_seconds(spans, start, end) / capacity)


def overall_utilisation(timings: Iterable[Any]) -> float | None:
    """Busy seconds over worker seconds (``workers x wall_seconds``), summed over the
    :class:`~capslab.nas.schema.GenerationTiming` of several generations; ``None`` if none
    evaluated anything."""
    timed = [t for t in timings if t is not None]
    capacity = sum(t.workers * t.wall_seconds for t in timed)
    return min(1.0, sum(t.busy_seconds for t in timed) / capacity) if capacity > 0 else None


def _stopped(stop: StopFn | None) -> bool:
    return stop is not None and bool(stop())


def _crashed(genotype: Genotype, reason: str) -> EvaluationRecord:
    now = datetime.now(UTC)
    return EvaluationRecord.of(
        genotype, status="failed", reason=reason, started_at=now, finished_at=now
    )


class SerialPool:
    """Evaluate one genotype after another in this process."""

    workers = 1

    def __init__(self, evaluator: EvaluatorFn):
        self.evaluator = evaluator

    def evaluate(self, genotypes: Iterable[Genotype], stop: StopFn | None = None,
                 **options: Any) -> Iterator[tuple[Genotype, EvaluationRecord]]:
        for g in genotypes:
            if _stopped(stop):
                return
            yield g, self.evaluator(g, **options)

    def close(self) -> None:
        pass

    def __enter__(self):
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _init_worker(threads: int) -> None:
    # Several training processes on one machine must not each grab every core.
    os.environ.setdefault("OMP_NUM_THREADS", str(threads))
    os.environ.setdefault("MKL_NUM_THREADS", str(threads))


class ProcessPool(SerialPool):
    """Evaluate up to ``workers`` genotypes at once in worker processes
    (:class:`concurrent.futures.ProcessPoolExecutor`). A worker that dies (e.g. killed for
    memory) fails its candidate and the pool is rebuilt."""

    def __init__(self, evaluator: EvaluatorFn, workers: int, mp_context: str = "spawn"):
        if workers < 1:
            raise ConfigError(f"workers must be >= 1, got {workers}")
        super().__init__(evaluator)
        self.workers = workers
        self.mp_context = mp_context
        self._executor: ProcessPoolExecutor | None = None

    def _pool(self) -> ProcessPoolExecutor:
        if self._executor is None:
            threads = max(1, (os.cpu_count() or 1) // self.workers)
            self._executor = ProcessPoolExecutor(
                max_workers=self.workers,
                mp_context=get_context(self.mp_context),
                initializer=_init_worker,
                initargs=(threads,),
            )
        return self._executor

    def evaluate(self, genotypes: Iterable[Genotype], stop: StopFn | None = None,
                 **options: Any) -> Iterator[tuple[Genotype, EvaluationRecord]]:
        queue = deque(genotypes)
        pending: dict[Future, Genotype] = {}

        def fill() -> None:
            # no more than `workers` at once: the executor would otherwise start a queued
            # candidate on its own, also after `stop`
            while queue and len(pending) < self.workers and not _stopped(stop):
                g = queue.popleft()
                pending[self._pool().submit(self.evaluator, g, **options)] = g

        fill()
        while pending:
            done, _ = wait(list(pending), return_when=FIRST_COMPLETED)
            results, broken = [], []
            for fut in done:
                g = pending.pop(fut)
                try:
                    results.append((g, fut.result()))
                except BrokenProcessPool:
                    broken.append(g)
            if broken:
                # The other tasks on the dead pool are lost too: fail the ones that died with
                # it, start the rest again on a fresh pool.
                results += [(g, _crashed(g, "out of memory or crashed: the worker process died"))
                            for g in broken]
                self.close()
                queue.extendleft(reversed(list(pending.values())))
                pending.clear()
            fill()  # the next candidates start before the results are handed on
            yield from results

    def close(self) -> None:
        if self._executor is not None:
            self._executor.shutdown(wait=True, cancel_futures=True)
            self._executor = None


def _import_ray():
    try:
        import ray
    except ImportError:
        raise MissingDependencyError(
            "evaluating on a Ray cluster needs Ray, which is not installed: pip install 'capslab[ray]'"
        ) from None
    return ray


#: Seconds to wait for a Ray head to accept a connection before giving up (``ray.init`` itself
#: retries a wrong address for minutes).
RAY_CONNECT_TIMEOUT_S = 10.0


def _check_ray_address(address: str, timeout: float = RAY_CONNECT_TIMEOUT_S) -> None:
    """Refuse at once a ``host:port`` (or ``ray://host:port``) where nothing listens."""
    target = address.removeprefix("ray://")
    host, sep, port = target.rpartition(":")
    if not sep or not port.isdigit():
        if address in ("auto", "local"):
            return
        raise ConfigError(f"Ray address {address!r} is not host:port, ray://host:port or 'auto'")
    host = host.strip("[]") or "127.0.0.1"
    try:
        socket.create_connection((host, int(port)), timeout=timeout).close()
    except OSError as exc:
        raise ConfigError(
            f"no Ray cluster answers at {address} ({exc.strerror or exc}): check the address, or "
            "start a head there with `ray start --head`"
        ) from None


def _lost_reason(exc: BaseException) -> str:
    """The journal's reason for a candidate whose Ray task was lost (not one that raised)."""
    name = type(exc).__name__
    if name == "OutOfMemoryError":
        return f"out of memory: Ray's memory monitor killed the worker ({_first_line(exc)})"
    if name == "TaskCancelledError":
        return "error: the Ray task was cancelled"
    return f"out of memory or crashed: the Ray worker or its node died ({name})"


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


class RayPool(SerialPool):
    """Spread evaluations over a Ray cluster (``address`` as for ``ray.init``: ``host:port`` of
    the head, ``ray://head:10001`` or ``auto``). Ray is imported only here.

    Each candidate is one Ray task (one CPU, ``num_gpus`` GPUs: a fraction shares a GPU; Ray
    gives the task its GPU in ``CUDA_VISIBLE_DEVICES``, so a candidate on ``cuda`` trains on
    the GPU Ray assigned it). A task whose worker process or
    node dies is run again up to ``max_retries`` times by Ray; after that the candidate is a
    ``failed`` record, so the search goes on and every candidate is recorded exactly once. An
    exception raised by the evaluator itself is a bug and propagates, as with worker processes.
    If this pool connected to Ray, :meth:`close` disconnects; a connection made before by the
    caller is left open (and used whatever ``address`` says).
    """

    def __init__(
        self,
        evaluator: EvaluatorFn,
        address: str,
        num_gpus: float = 0.0,
        max_retries: int = 1,
    ):
        if max_retries < 0:
            raise ConfigError(f"max_retries must be >= 0, got {max_retries}")
        super().__init__(evaluator)
        self.ray = _import_ray()
        self._owns_ray = not self.ray.is_initialized()
        if self._owns_ray:
            _check_ray_address(address)
            self.ray.init(address=address)
        self.max_retries = max_retries
        self.num_gpus = num_gpus
        self._task = self.ray.remote(
            num_gpus=num_gpus, max_retries=max_retries, retry_exceptions=False
        )(_call)
        self._evaluator_ref = self.ray.put(evaluator)
        resources = self.ray.cluster_resources()
        self.workers = max(1, int(resources.get("CPU", 1)))
        if num_gpus > 0:
            gpus = resources.get("GPU", 0)
            if gpus < num_gpus:
                self.close()
                raise ConfigError(
                    f"the Ray cluster at {address} declares {gpus:g} GPU(s); a candidate asks "
                    f"for {num_gpus:g} (--gpus-per-candidate)"
                )
            # as many candidates at once as the GPU shares allow (and the CPUs: one each)
            self.workers = max(1, min(self.workers, int(gpus / num_gpus + 1e-9)))
        exc = self.ray.exceptions
        self._lost = (exc.WorkerCrashedError, exc.NodeDiedError, exc.OutOfMemoryError,
                      exc.ObjectLostError, exc.TaskCancelledError)

    def evaluate(self, genotypes: Iterable[Genotype], stop: StopFn | None = None,
                 **options: Any) -> Iterator[tuple[Genotype, EvaluationRecord]]:
        queue = deque(genotypes)
        pending: dict[Any, Genotype] = {}

        def fill() -> None:  # one task per CPU of the cluster, as with worker processes
            while queue and len(pending) < self.workers and not _stopped(stop):
                g = queue.popleft()
                pending[self._task.remote(self._evaluator_ref, g, options)] = g

        try:
            fill()
            while pending:
                done, _ = self.ray.wait(list(pending), num_returns=1)
                for ref in done:
                    g = pending.pop(ref)
                    try:
                        rec = self.ray.get(ref)
                    except self._lost as exc:  # retries spent: fail the candidate, go on
                        rec = _crashed(g, _lost_reason(exc))
                    fill()
                    yield g, rec
        finally:
            # the caller stopped early (an error, Ctrl-C): do not leave candidates running
            if pending and self.ray.is_initialized():
                for ref in pending:
                    self.ray.cancel(ref, force=True)

    def close(self) -> None:
        if self._owns_ray and self.ray.is_initialized():
            self.ray.shutdown()
            self._owns_ray = False


def _call(evaluator: EvaluatorFn, genotype: Genotype, options: dict[str, Any]) -> EvaluationRecord:
    return evaluator(genotype, **options)


def check_gpus_per_candidate(gpus: float, ray_address: str | None, device_kind: str) -> None:
    """:class:`ConfigError` unless ``gpus`` GPUs per candidate can be asked for: 0, or a
    positive share (a fraction, or whole GPUs) with a Ray cluster and candidates on CUDA."""
    if gpus == 0:
        return
    if not gpus > 0 or (gpus > 1 and gpus != int(gpus)):
        raise ConfigError(f"--gpus-per-candidate must be a fraction in (0, 1] or a whole number "
                          f"of GPUs, got {gpus:g}")
    if not ray_address:
        raise ConfigError("--gpus-per-candidate asks Ray for GPUs: give --ray-address too")
    if device_kind != "cuda":
        raise ConfigError("--gpus-per-candidate needs the candidates on CUDA (--device cuda); "
                          f"they train on {device_kind}")


def default_workers(device_kind: str) -> int:
    """How many candidates one machine evaluates at once by default: one per CPU core on the
    CPU; one on CUDA, whatever the cores, since every process would hold a CUDA context of its
    own on the same GPU while each candidate's time budget assumes a GPU to itself (sharing
    GPUs among candidates is Ray's work: ``--ray-address``)."""
    return 1 if device_kind == "cuda" else max(1, os.cpu_count() or 1)


def make_pool(
    evaluator: EvaluatorFn,
    workers: int = 1,
    ray_address: str | None = None,
    mp_context: str = "spawn",
    device_kind: str = "cpu",
    gpus_per_candidate: float = 0.0,
) -> SerialPool:
    """The pool for ``workers`` and ``ray_address``: Ray if an address is given, processes if
    ``workers > 1``, otherwise in-process. ``workers=0`` is :func:`default_workers` for the
    candidates' ``device_kind``. ``gpus_per_candidate`` (Ray only, candidates on CUDA): the
    GPUs (or share of one) each candidate's task asks Ray for."""
    check_gpus_per_candidate(gpus_per_candidate, ray_address, device_kind)
    if workers == 0:
        workers = default_workers(device_kind)
    if ray_address:
        return RayPool(evaluator, ray_address, num_gpus=gpus_per_candidate)
    if workers > 1:
        return ProcessPool(evaluator, workers, mp_context=mp_context)
    return SerialPool(evaluator)
