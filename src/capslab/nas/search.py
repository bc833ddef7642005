"""NSGA-II over genotypes, driven ask/tell so that every evaluation is journaled as it finishes.

The settings of a search, their defaults and its run folder are :mod:`capslab.nas.config`'s;
this module runs the loop: :func:`run_search` starts a search, :func:`resume` continues one.

Determinism and resume: the algorithm is seeded, the operators draw only from pymoo's seeded
generator, and an evaluation's result depends only on the genotype. ``resume(run_dir)``
therefore re-runs the loop from the seed and answers every evaluation already in the journal
from it; it re-evaluates only what was in flight when the run stopped, and ends on the same
front as an uninterrupted run. Each replayed generation is checked against the journaled one.
A failed or timed-out candidate is a journaled result too: :mod:`capslab.nas.retry` forgets
it (and the generations that followed it) so that the next resume trains it again.

Generations: generation 0 evaluates the random initial population (``population`` genotypes);
each of the ``generations`` that follow evaluates ``offspring`` children. With the paper's
settings (10, 10, 20) that is 10 + 20 x 10 = 210 candidates, as in the paper's MNIST search.

Time: every candidate has a time budget (``time_limit``, see :mod:`capslab.nas.config`), and
``max_time`` caps a whole call of :func:`run_search` or :func:`resume`: no candidate starts
after it, the running ones finish (each within its budget) and are journaled, and the run stops
with status ``stopped (max-time)``, to be resumed.

Scheduling: within a generation every candidate to evaluate is handed to the pool at once,
longest expected first (by the hardware model's cycle count, a proxy of the training cost), and
a worker that finishes starts the next one at once. Generations are not overlapped: NSGA-II
selects the parents of generation g + 1 from the whole of generation g. How busy the workers
were is journaled per generation (:class:`~capslab.nas.schema.GenerationTiming`).

Multi-fidelity (``rungs``): each generation's new candidates go through successive halving
(:mod:`capslab.nas.fidelity`): all train ``rungs[0]`` epochs, the best ``promote`` share
continues from its checkpoint to the next rung, and so on. Every rung result is journaled as it
arrives; a candidate's evaluation row is written once its last rung is decided. Resuming in the
middle of a rung re-evaluates only the candidates without a journaled result at that rung (from
their last checkpoint) and recomputes the promotions from the journal.
"""

from __future__ import annotations

import os
import shutil
import time
import uuid
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from pymoo.algorithms.moo.nsga2 import NSGA2

from capslab.data import check_reachable, require_files
from capslab.errors import ConfigError, GenotypeError, JournalUnavailableError, RunMismatchError
from capslab.genotype import Genotype
from capslab.hw import estimate
from capslab.nas.config import (
    CANDIDATES_DIR,
    RUN_FILE,
    SearchConfig,
    open_journal,
    write_run_file,
)
from capslab.nas.evaluate import candidate_folder, device_kind
from capslab.nas.fidelity import promote
from capslab.nas.journal import RETRY_SECONDS, Journal
from capslab.nas.lease import RunLease
from capslab.nas.operators import (
    GenotypeDuplicates,
    GenotypeMutation,
    GenotypeRepair,
    GenotypeSampling,
    SinglePointCrossover,
)
from capslab.nas.parallel import (
    SerialPool,
    busy_seconds,
    check_gpus_per_candidate,
    make_pool,
    overall_utilisation,
)
from capslab.nas.problem import CachedEvaluations, NASCapsProblem
from capslab.nas.schema import EvaluationRecord, GenerationTiming, database_url, masked_url
from capslab.nas.space import SearchSpace, genotype_key

#: The run status of a search that reached its ``max_time``.
STOPPED_MAX_TIME = "stopped (max-time)"
#: why a call stopped when another process took its lease over (it had stopped beating)
STOPPED_LEASE_LOST = "stopped (lease lost)"


def build_algorithm(config: SearchConfig, space: SearchSpace) -> NSGA2:
    """NSGA-II with the genotype operators (duplicates eliminated by canonical form)."""
    return NSGA2(
        pop_size=config.population,
        n_offsprings=config.offspring,
        sampling=GenotypeSampling(space),
        crossover=SinglePointCrossover(space, prob=config.crossover_prob),
        mutation=GenotypeMutation(space, p_m=config.mutation_prob),
        repair=GenotypeRepair(space),
        eliminate_duplicates=GenotypeDuplicates(),
    )


@dataclass
class SearchResult:
    run_dir: Path
    run_id: str
    front: list[EvaluationRecord]  # non-dominated members of the final population
    population: list[EvaluationRecord]  # the final parent population
    evaluations: int  # evaluations in the journal (each distinct genotype once)
    evaluated_now: int  # evaluator calls made by this call (0 for a finished run)
    generations: int  # generations completed
    stopped: str | None = None  # why the call stopped before the end (STOPPED_MAX_TIME), or None
    # how busy the workers were in each generation this call evaluated (a stopped one too)
    timings: dict[int, GenerationTiming] = field(default_factory=dict)

    @property
    def utilisation(self) -> float | None:
        """Busy fraction of the workers over the generations this call evaluated."""
        return overall_utilisation(self.timings.values())

    @property
    def front_keys(self) -> list[str]:
        return sorted(r.key for r in self.front)


ProgressFn = Callable[[str, dict[str, Any]], None]


def expected_cost(genotype: Genotype) -> float:
    """Accelerator cycles of one inference (:func:`capslab.hw.estimate`): the order in which a
    generation's candidates start (longest first). 0 for a genotype the model cannot build."""
    try:
        return float(estimate(genotype).cycles)
    except GenotypeError:
        return 0.0


# ---------------------------------------------------------------------- the loop
def _deadline(max_time: float | None) -> float | None:
    """The ``time.monotonic()`` after which no candidate starts (``None``: no cap)."""
    if max_time is None:
        return None
    if max_time <= 0:
        raise ConfigError(f"max_time must be positive seconds, got {max_time:g}")
    return time.monotonic() + max_time


def _check_reachable(config: SearchConfig, pool: SerialPool) -> None:
    """Refuse data registered from Python when candidates train in other processes."""
    if type(pool) is not SerialPool:
        check_reachable(config.training.dataset, "the search's worker processes (use workers=1)")


def _drive(
    config: SearchConfig,
    journal: Journal,
    pool: SerialPool,
    progress: ProgressFn | None,
    run_dir: Path,
    deadline: float | None = None,
    lease: RunLease | None = None,
) -> SearchResult:
    space = config.build_space()
    cache = CachedEvaluations(evaluator=None, journal=journal)
    problem = NASCapsProblem(space, cache, config.objectives, config.limits)
    algorithm = build_algorithm(config, space)
    algorithm.setup(problem, termination=("n_gen", config.generations + 1), seed=config.seed)
    recorded = {g.generation: g for g in journal.generations()}
    notify = progress or (lambda event, data: None)

    def stop() -> bool:
        if lease is not None and lease.lost:
            return True
        return deadline is not None and time.monotonic() >= deadline

    def why() -> str:
        return STOPPED_LEASE_LOST if lease is not None and lease.lost else STOPPED_MAX_TIME

    evaluated_now = 0
    gen = 0
    stopped: str | None = None
    timings: dict[int, GenerationTiming] = {}
    if lease is not None and lease.taken_over is not None:
        notify("lease", {"taken_over": lease.taken_over})
    journal.set_status("running")
    try:
        while algorithm.has_next():
            pop = algorithm.ask()
            genotypes: list[Genotype] = [ind.X[0] for ind in pop]
            keys = [genotype_key(g) for g in genotypes]
            if gen in recorded and recorded[gen].offspring != keys:
                raise RunMismatchError(
                    f"generation {gen} replays differently from the journal; the code, the "
                    "search space or the seed changed since the run started"
                )
            todo: dict[str, Genotype] = {}
            for k, g in zip(keys, genotypes, strict=True):
                if cache.known(k) is None and k not in todo:
                    todo[k] = g
            cache.generation = gen
            notify(
                "generation",
                {"generation": gen, "total": config.generations + 1, "candidates": len(keys),
                 "to_evaluate": len(todo), "rungs": config.rungs},
            )
            if config.rungs is None:
                timing = _evaluate(
                    list(todo.values()), pool, cache, stop,
                    lambda rec, gen=gen: notify("evaluated", {"generation": gen, "record": rec}))
            elif todo:
                # the halving ranks all of the generation's new candidates, also those that a
                # stopped call already decided (their rows carry this generation)
                entrants = {k: g for k, g in zip(keys, genotypes, strict=True)
                            if (rec := cache.known(k)) is None or rec.generation == gen}
                timing = _successive_halving(config, entrants, pool, cache, journal, stop,
                                             notify, gen, run_dir)
            else:
                timing = None
            evaluated_now += sum(cache.known(k) is not None for k in todo)
            if timing is not None:
                timings[gen] = timing  # journaled with the generation, once it is complete
            if any(cache.known(k) is None for k in todo):
                stopped = why()  # the pool started no more: max_time is reached (or the lease lost)
                break
            algorithm.evaluator.eval(problem, pop)
            algorithm.tell(infills=pop)
            survivors = [genotype_key(ind.X[0]) for ind in algorithm.pop]
            if gen not in recorded:
                journal.record_generation(
                    gen,
                    keys,
                    survivors,
                    algorithm.random_state.bit_generator.state,
                    evaluations=len(cache.memory),
                    timing=timing,
                )
            elif recorded[gen].population != survivors:
                raise RunMismatchError(f"generation {gen}: the surviving population differs from the journal")
            notify("generation_done", {"generation": gen, "front": _front(algorithm, cache, config.limits),
                                       "timing": timing})
            gen += 1
            if algorithm.has_next() and stop():
                stopped = why()
                break
    except BaseException as exc:
        if not isinstance(exc, JournalUnavailableError):  # else nothing to write it in
            try:
                journal.set_status("interrupted")
            except Exception:  # the database itself failed: keep the original error
                pass
        raise
    if stopped != STOPPED_LEASE_LOST:  # else the run's status is its new writer's to set
        journal.set_status(stopped or "finished")
    population = [] if gen == 0 else [cache.memory[genotype_key(ind.X[0])] for ind in algorithm.pop]
    return SearchResult(
        run_dir=run_dir,
        run_id=journal.run_id,
        front=_front(algorithm, cache, config.limits) if gen else [],
        population=population,
        evaluations=len(journal.evaluations()),
        evaluated_now=evaluated_now,
        generations=gen,
        stopped=stopped,
        timings=timings,
    )


def _run_pool(
    genotypes: Iterable[Genotype],
    pool: SerialPool,
    stop: Callable[[], bool],
    keep: Callable[[EvaluationRecord], EvaluationRecord],
    spans: list[tuple[float, float]],
    **options: Any,
) -> None:
    """Evaluate ``genotypes`` in ``pool``, longest first, handing each result to ``keep`` (which
    journals it) as it arrives and adding its ``(start, finish)`` to ``spans``. Stops starting
    candidates once ``stop()`` is true, so some may be left unevaluated."""
    # longest first: the last candidates to start are the short ones, so the workers finish
    # the generation close together (the order does not change the results)
    order = sorted(genotypes, key=expected_cost, reverse=True)
    for _, rec in pool.evaluate(order, stop=stop, **options):
        rec = keep(rec)
        if rec.started_at is not None and rec.finished_at is not None:
            spans.append((rec.started_at.timestamp(), rec.finished_at.timestamp()))


def _timing(pool: SerialPool, started: float, spans: list[tuple[float, float]]) -> GenerationTiming:
    ended = time.time()
    return GenerationTiming(pool.workers, ended - started, busy_seconds(spans, started, ended))


def _evaluate(
    genotypes: list[Genotype],
    pool: SerialPool,
    cache: CachedEvaluations,
    stop: Callable[[], bool],
    evaluated: Callable[[EvaluationRecord], None],
) -> GenerationTiming | None:
    """Evaluate ``genotypes`` once each, journaling each result as it arrives (``evaluated`` is
    told of it); returns how busy the workers were (``None``: nothing to evaluate)."""
    if not genotypes:
        return None
    started, spans = time.time(), []

    def keep(rec: EvaluationRecord) -> EvaluationRecord:
        rec = cache.add(rec)
        evaluated(rec)
        return rec

    _run_pool(genotypes, pool, stop, keep, spans)
    return _timing(pool, started, spans)


def final_record(rungs: dict[int, EvaluationRecord]) -> EvaluationRecord:
    """A candidate's evaluation from its rung results: the objectives of the last rung it
    finished (a candidate that failed or ran out of time at a later rung keeps the accuracy it
    reached before, with the reason), the seconds of all its rungs, from the first one's
    start."""
    first, last = rungs[min(rungs)], rungs[max(rungs)]
    finished = [r for r in sorted(rungs) if rungs[r].ok]
    chosen = last
    if not last.ok and finished:
        chosen = replace(rungs[finished[-1]], reason=f"rung {max(rungs) + 1} {last.status}: "
                                                     f"{last.reason}")
    return replace(chosen, seconds=sum(r.seconds for r in rungs.values()),
                   started_at=first.started_at or last.started_at,
                   finished_at=last.finished_at or chosen.finished_at)


def _successive_halving(
    config: SearchConfig,
    entrants: dict[str, Genotype],
    pool: SerialPool,
    cache: CachedEvaluations,
    journal: Journal,
    stop: Callable[[], bool],
    notify: ProgressFn,
    gen: int,
    run_dir: Path,
) -> GenerationTiming | None:
    """Successive halving of one generation's new candidates over ``config.rungs``
    (:mod:`capslab.nas.fidelity`). Rung results are journaled as they arrive, a candidate's
    evaluation once it is not promoted or has finished the last rung; what the journal already
    holds (a resumed run) is not evaluated again. Returns how busy the workers were."""
    rungs = config.rungs or ()
    results = journal.rung_records(entrants)
    alive = dict(entrants)
    started, spans = time.time(), []
    evaluated_any = False
    for r, epochs in enumerate(rungs):
        need = [g for k, g in alive.items() if r not in results.get(k, {})]
        notify("rung", {"generation": gen, "rung": r, "epochs": epochs, "rungs": rungs,
                        "candidates": len(alive), "to_evaluate": len(need)})

        def keep(rec: EvaluationRecord, r: int = r) -> EvaluationRecord:
            rec = replace(rec, generation=gen)
            journal.record_rung(rec, r)
            results.setdefault(rec.key, {})[r] = rec
            notify("evaluated", {"generation": gen, "record": rec, "rung": r})
            return rec

        if need:
            evaluated_any = True
            _run_pool(need, pool, stop, keep, spans, rung=r)
        if any(r not in results.get(k, {}) for k in alive):
            break  # stopped (max_time): the rest of this rung waits for resume
        promoted = set(promote([results[k][r] for k in alive], config.promote, config.objectives,
                            config.limits)) \
            if r + 1 < len(rungs) else set()
        for k, g in alive.items():
            if k not in promoted and cache.known(k) is None:
                cache.add(final_record(results[k]))
                if not config.keep_candidates:  # its checkpoints are no longer needed
                    shutil.rmtree(candidate_folder(run_dir / CANDIDATES_DIR, g), ignore_errors=True)
        alive = {k: g for k, g in alive.items() if k in promoted}
    return _timing(pool, started, spans) if evaluated_any else None


def _front(algorithm: NSGA2, cache: CachedEvaluations, limits: dict[str, float]) -> list[EvaluationRecord]:
    """pymoo's optimum, less what is infeasible (with no feasible candidate pymoo returns the
    least infeasible) or failed."""
    opt = algorithm.opt if algorithm.opt is not None else []
    records = [cache.memory[genotype_key(ind.X[0])] for ind in opt]
    return [r for r in records if r.ok and r.feasible(limits)]


@contextmanager
def _resumable(run_dir: Path, url: str) -> Iterator[None]:
    """A journal that stayed away ends the call with one line saying how to resume."""
    try:
        yield
    except JournalUnavailableError as exc:
        db = "" if url.startswith("sqlite") else f" --db '{masked_url(url)}'"
        raise JournalUnavailableError(
            f"{exc}; the search stopped, its journaled evaluations are kept: once the database "
            f"is back, continue with `capslab search resume {run_dir}{db}`"
        ) from exc


def run_search(
    config: SearchConfig,
    run_dir: str | os.PathLike,
    *,
    db: str | None = None,
    evaluator: Callable[[Genotype], EvaluationRecord] | None = None,
    workers: int = 1,
    ray_address: str | None = None,
    mp_context: str = "spawn",
    progress: ProgressFn | None = None,
    run_id: str | None = None,
    max_time: float | None = None,
    db_retry: float = RETRY_SECONDS,
    gpus_per_candidate: float = 0.0,
) -> SearchResult:
    """Start a new search in ``run_dir`` (created; must not already hold a run).

    ``evaluator`` defaults to partial training + the hardware model (:class:`Evaluator`);
    tests pass a fast one. ``db`` is an SQLAlchemy URL or a path (default
    ``run_dir/journal.sqlite``). ``max_time`` (seconds) caps this call: no candidate starts
    after it, and the run stops with status ``stopped (max-time)`` (see :func:`resume`).
    ``db_retry``: seconds a journal write waits for a database that went away before the
    search stops with :class:`~capslab.errors.JournalUnavailableError` (and the command that
    resumes it). ``gpus_per_candidate``: with ``ray_address`` and candidates on CUDA, the GPUs
    (or share of one) each candidate asks Ray for.
    """
    run_dir = Path(run_dir)
    if (run_dir / RUN_FILE).exists():
        raise RunMismatchError(f"{run_dir} already holds a search; resume it or choose another folder")
    deadline = _deadline(max_time)
    check_gpus_per_candidate(gpus_per_candidate, ray_address, device_kind(config.training.device))
    if evaluator is None:  # missing data would fail every candidate: find or download it first
        require_files(config.training.dataset, config.training.data_dir,
                      download=config.training.download)
    evaluator = evaluator or config.evaluator(run_dir)
    # the pool first: a Ray address that refuses the connection leaves no run folder behind
    with make_pool(evaluator, workers, ray_address, mp_context,
                   device_kind(config.training.device), gpus_per_candidate) as pool:
        _check_reachable(config, pool)
        url = database_url(db, run_dir)
        # the journal's run id column holds 128 characters
        run_id = run_id or f"{run_dir.name[:100]}-{uuid.uuid4().hex[:8]}"
        with Journal(url, run_id, retry_seconds=db_retry) as journal:
            journal.create_run(config.seed, config.identity(), data_split=config.data_split())
            run_dir.mkdir(parents=True, exist_ok=True)
            write_run_file(run_dir, run_id, url, config, workers)
            with _resumable(run_dir, url), RunLease(journal) as lease:
                return _drive(config, journal, pool, progress, run_dir, deadline, lease)


def run_config(run_dir: Path, journal: Journal, info: dict[str, Any]) -> SearchConfig:
    """The configuration of the run in ``run_dir`` (``info``: its ``run.json``), refused with
    :class:`RunMismatchError` unless it is the one its journal recorded."""
    config = SearchConfig.from_dict(info["config"])
    if not config.identity_matches(journal.run_info()["config"]):
        raise RunMismatchError(f"{run_dir / RUN_FILE} does not match the journal's configuration")
    return config


def resume(
    run_dir: str | os.PathLike,
    *,
    db: str | None = None,
    evaluator: Callable[[Genotype], EvaluationRecord] | None = None,
    workers: int | None = None,
    ray_address: str | None = None,
    mp_context: str = "spawn",
    device: str | None = None,
    progress: ProgressFn | None = None,
    max_time: float | None = None,
    db_retry: float = RETRY_SECONDS,
    gpus_per_candidate: float = 0.0,
) -> SearchResult:
    """Continue the search in ``run_dir`` where it stopped (a finished run is just replayed).
    ``workers=None`` takes the number the search was started with (``run.json``; 1 for a
    search started before it was recorded). ``max_time`` caps this call afresh (the time spent
    before does not count); ``db_retry`` and ``gpus_per_candidate`` as for :func:`run_search`."""
    run_dir = Path(run_dir)
    deadline = _deadline(max_time)
    journal, info = open_journal(run_dir, db, retry_seconds=db_retry)
    if workers is None:
        workers = int(info.get("workers", 1))
    with journal, _resumable(run_dir, journal.url):
        config = run_config(run_dir, journal, info)
        if device is not None:
            config = config.on_device(device)
        check_gpus_per_candidate(gpus_per_candidate, ray_address,
                                 device_kind(config.training.device))
        # the lease first: a second writer is refused before it starts any worker
        with RunLease(journal) as lease:
            evaluator = evaluator or config.evaluator(run_dir)
            with make_pool(evaluator, workers, ray_address, mp_context,
                           device_kind(config.training.device), gpus_per_candidate) as pool:
                _check_reachable(config, pool)
                return _drive(config, journal, pool, progress, run_dir, deadline, lease)
