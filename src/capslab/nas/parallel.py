"""Running evaluations in parallel: in-process, worker processes, or a Ray cluster.

A pool takes genotypes and yields ``(genotype, record)`` pairs as evaluations finish. Workers
only compute; the process driving the search writes every result to the journal, which stays
the single source of truth. Results are keyed by genotype, so the order in which workers finish
does not change the search.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from datetime import UTC, datetime
from multiprocessing import get_context

from capslab.errors import ConfigError, MissingDependencyError
from capslab.genotype import Genotype
from capslab.nas.journal import EvaluationRecord

EvaluatorFn = Callable[[Genotype], EvaluationRecord]


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

    def evaluate(self, genotypes: Iterable[Genotype]) -> Iterator[tuple[Genotype, EvaluationRecord]]:
        for g in genotypes:
            yield g, self.evaluator(g)

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

    def _submit(self, genotypes: Iterable[Genotype]) -> dict[Future, Genotype]:
        return {self._pool().submit(self.evaluator, g): g for g in genotypes}

    def evaluate(self, genotypes: Iterable[Genotype]) -> Iterator[tuple[Genotype, EvaluationRecord]]:
        pending = self._submit(genotypes)
        while pending:
            done, _ = wait(list(pending), return_when=FIRST_COMPLETED)
            broken = []
            for fut in done:
                g = pending.pop(fut)
                try:
                    yield g, fut.result()
                except BrokenProcessPool:
                    broken.append(g)
            if broken:
                # Every task still queued on the dead pool is lost too: fail the ones that were
                # running, resubmit the rest to a fresh pool.
                for g in broken:
                    yield g, _crashed(g, "out of memory or crashed: the worker process died")
                self.close()
                pending = self._submit(pending.values())

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


class RayPool(SerialPool):
    """Spread evaluations over a Ray cluster (``address`` as for ``ray.init``, e.g.
    ``ray://head:10001`` or ``auto``). Ray is imported only here."""

    def __init__(self, evaluator: EvaluatorFn, address: str, num_gpus: float = 0.0):
        super().__init__(evaluator)
        self.ray = _import_ray()
        if not self.ray.is_initialized():
            self.ray.init(address=address, ignore_reinit_error=True)
        self._task = self.ray.remote(num_gpus=num_gpus)(_call)
        self._evaluator_ref = self.ray.put(evaluator)
        self.workers = int(self.ray.cluster_resources().get("CPU", 1))

    def evaluate(self, genotypes: Iterable[Genotype]) -> Iterator[tuple[Genotype, EvaluationRecord]]:
        pending = {self._task.remote(self._evaluator_ref, g): g for g in genotypes}
        while pending:
            done, _ = self.ray.wait(list(pending), num_returns=1)
            for ref in done:
                g = pending.pop(ref)
                try:
                    yield g, self.ray.get(ref)
                except Exception as exc:  # a task lost with its node: fail the candidate
                    yield g, _crashed(g, f"error: ray task failed: {type(exc).__name__}: {exc}")


def _call(evaluator: EvaluatorFn, genotype: Genotype) -> EvaluationRecord:
    return evaluator(genotype)


def make_pool(
    evaluator: EvaluatorFn,
    workers: int = 1,
    ray_address: str | None = None,
    mp_context: str = "spawn",
) -> SerialPool:
    """The pool for ``workers`` and ``ray_address``: Ray if an address is given, processes if
    ``workers > 1``, otherwise in-process."""
    if ray_address:
        return RayPool(evaluator, ray_address)
    if workers > 1:
        return ProcessPool(evaluator, workers, mp_context=mp_context)
    return SerialPool(evaluator)
