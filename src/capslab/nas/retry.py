"""Training a search's failed candidates again: ``capslab search resume RUN --retry-failed``.

A candidate that failed or ran out of time stays journaled as such, and a resume answers every
journaled candidate from the journal, so it never trains that one again. :func:`retry_failed`
prepares a run so that the next resume does. It finds the earliest generation ``g`` whose new
candidates (generation 0: the initial population) include one journaled as failed or timed out
(a candidate is evaluated in the first generation that asks for it, and its rows carry that
generation), and forgets, in one transaction (:meth:`~capslab.nas.journal.Journal.drop_for_retry`):

- the evaluations and rung results of generation g's failed candidates;
- the generation records from g on, and the evaluations and rung results first journaled in a
  later generation: the parents of every later generation depend on the retried results, so
  they are a future that the resume computes again. An evaluation of generation g or earlier
  stays, and the resume reuses it wherever the new future asks for it again.

The resume then replays generations 0 to g - 1 from the journal, unchanged; asks for the same
offspring of generation g (the algorithm's state depends on the earlier results only); trains
its retried candidates; and goes on from the new results. With results that depend only on the
genotype it ends with the journal of a search in which they never failed (tested).

Multi-fidelity (``rungs``): a failure at rung r changes which candidates the rungs after r
promote (a failed candidate is never promoted; retried, it may be), so generation g's
successive halving is decided again from the lowest rung ``r`` at which one of its candidates
failed. The candidates that the halving had dropped below r keep their results (the promotions
below r do not change); every other candidate of generation g (those that reached rung r) is
trained again from its first rung, whether it failed or not: a candidate continues a rung from
its checkpoint of the rung before, which the search deletes once the candidate is decided
(unless ``keep_candidates``), and a kept checkpoint is that of its last epoch, not of rung r's.
A candidate whose promotion failed (trained at rung 1, failed at rung 2) is thus trained again
from rung 1, with each rung's own time share, as a new candidate is.

Checkpoints: with rungs, a candidate trains with ``resume`` in its folder under ``candidates/``
(:func:`~capslab.nas.evaluate.candidate_folder`) and would continue from whatever checkpoint a
failed attempt left there; the folders of every candidate trained again and of every later
evaluation forgotten are therefore removed (with ``keep_candidates`` and no rungs they hold
only the metrics of a run that is replaced).

Safety: an SQLite journal is first copied whole to ``journal.before-retry-<UTC time>.sqlite``
in the run folder (:meth:`~capslab.nas.journal.Journal.backup`); another database (PostgreSQL)
is not copied, the deletion being one transaction. The run's lease is held throughout, so a
search driving the run refuses the retry (:class:`~capslab.errors.RunBusyError`).
"""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from capslab.errors import RunMismatchError
from capslab.nas.config import CANDIDATES_DIR, open_journal
from capslab.nas.evaluate import key_folder
from capslab.nas.journal import RETRY_SECONDS, Journal
from capslab.nas.lease import RunLease
from capslab.nas.schema import EvaluationRecord
from capslab.nas.search import run_config

#: The statuses of a result that a retry keeps (any other, ``failed`` or ``timeout``, is retried).
KEPT_STATUSES = ("ok", "infeasible")
#: The run's status once its failed candidates are forgotten, until a resume trains them.
RETRY_PENDING = "stopped (retry pending)"
#: The name of the journal's copy in the run folder, with the UTC time of the retry.
BACKUP_NAME = "journal.before-retry-{stamp}.sqlite"


@dataclass(frozen=True)
class RetryPlan:
    """What :func:`retry_failed` forgot so that the next resume trains it again.

    ``generation``: the earliest generation with a failed or timed-out candidate (``None``:
    nothing failed, nothing changed); ``retried``: the keys of its failed candidates;
    ``rung`` (multi-fidelity only): the lowest rung, counted from 0, at which one of them
    failed, and ``rerun`` the keys of its other candidates that reached that rung, trained
    again for the promotions; ``dropped_evaluations``: evaluations first journaled after
    ``generation``; ``dropped_rungs``: rung results deleted (of the candidates trained again
    and of later generations); ``dropped_generations``: generation records deleted (from
    ``generation`` on); ``backup``: the SQLite journal's copy, if one was made.
    """

    generation: int | None
    retried: tuple[str, ...] = ()
    rung: int | None = None
    rerun: tuple[str, ...] = ()
    dropped_evaluations: int = 0
    dropped_rungs: int = 0
    dropped_generations: int = 0
    backup: Path | None = None

    @property
    def nothing(self) -> bool:
        """True when no candidate had failed (the journal was left as it was)."""
        return self.generation is None

    def describe(self) -> str:
        """One line for people: what is trained again and what was dropped."""
        if self.nothing:
            return "no failed or timed-out candidate in the journal: nothing to retry"
        rerun = "" if not self.rerun else (
            f" and {len(self.rerun)} more of its candidates that reached rung {self.rung + 1}"
            " (the promotions from there on change)")
        rungs = f", {self.dropped_rungs} rung result(s)" if self.dropped_rungs else ""
        return (f"retrying generation {self.generation}: {len(self.retried)} failed "
                f"candidate(s) to train again{rerun}; dropped {self.dropped_evaluations} "
                f"evaluation(s) of later generations{rungs} and {self.dropped_generations} "
                "generation record(s)")

    def to_dict(self) -> dict[str, Any]:
        """A JSON-friendly view (``--json``)."""
        return {"generation": self.generation, "retried": list(self.retried), "rung": self.rung,
                "rerun": list(self.rerun), "dropped_evaluations": self.dropped_evaluations,
                "dropped_rungs": self.dropped_rungs,
                "dropped_generations": self.dropped_generations,
                "backup": None if self.backup is None else str(self.backup)}


def plan_retry(journal: Journal) -> RetryPlan:
    """What a retry of ``journal``'s run would train again (nothing is changed; the counts of
    dropped rows are left at 0). See the module for the rule."""
    return _plan(journal.evaluations(), journal.rung_records())


def _plan(evaluations: list[EvaluationRecord],
          rungs: dict[str, dict[int, EvaluationRecord]]) -> RetryPlan:
    """:func:`plan_retry` from the journal's evaluations and rung results."""
    failed: dict[str, int] = {}  # key -> the generation that evaluated it
    for rec in evaluations:
        if rec.status not in KEPT_STATUSES:
            failed[rec.key] = rec.generation
    failed_at: dict[str, int] = {}  # key -> the rung it failed at
    for key, by_rung in rungs.items():
        for r, rec in sorted(by_rung.items()):
            # a failure at a later rung leaves an `ok` evaluation (the earlier rung's accuracy)
            if rec.status not in KEPT_STATUSES:
                failed.setdefault(key, rec.generation)
                failed_at.setdefault(key, r)
    if not failed:
        return RetryPlan(None)
    generation = min(failed.values())
    retried = sorted(k for k, g in failed.items() if g == generation)
    lowest = [failed_at[k] for k in retried if k in failed_at]
    if not lowest:
        return RetryPlan(generation, tuple(retried))
    rung = min(lowest)
    rerun = sorted(k for k, by_rung in rungs.items()
                   if k not in failed_at and max(by_rung) >= rung
                   and min(rec.generation for rec in by_rung.values()) == generation)
    return RetryPlan(generation, tuple(retried), rung, tuple(rerun))


def _later_keys(evaluations: list[EvaluationRecord],
                rungs: dict[str, dict[int, EvaluationRecord]], generation: int) -> set[str]:
    """The candidates first journaled after ``generation`` (evaluated, or at some rung)."""
    keys = {rec.key for rec in evaluations if rec.generation > generation}
    return keys | {key for key, by_rung in rungs.items()
                   if any(rec.generation > generation for rec in by_rung.values())}


def _backup(journal: Journal, run_dir: Path) -> Path:
    """Copy the SQLite ``journal`` to the run folder under :data:`BACKUP_NAME`; a name already
    taken (two retries within a second) gets a number."""
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    path = run_dir / BACKUP_NAME.format(stamp=stamp)
    n = 1
    while path.exists():
        n += 1
        path = run_dir / BACKUP_NAME.format(stamp=f"{stamp}-{n}")
    return journal.backup(path)


def _remove_folders(candidates: Path, keys: set[str]) -> None:
    """Remove the candidate folders of ``keys``: a retried candidate must not continue from a
    checkpoint that a failed attempt, or a forgotten future, left there."""
    for key in sorted(keys):
        folder = key_folder(candidates, key)
        try:
            shutil.rmtree(folder)
        except FileNotFoundError:
            continue
        except OSError as exc:
            raise RunMismatchError(
                f"cannot remove the candidate folder {folder} ({exc.strerror or exc}): remove it "
                "by hand before resuming, or the candidate would continue from its checkpoint"
            ) from exc


def retry_failed(run_dir: str | os.PathLike, db: str | None = None, *,
                 db_retry: float = RETRY_SECONDS) -> RetryPlan:
    """Prepare the search in ``run_dir`` so that the next :func:`~capslab.nas.search.resume`
    trains its failed and timed-out candidates again (see the module for what is forgotten
    and why). An SQLite journal is copied to the run folder first (``RetryPlan.backup``).

    Args:
        run_dir: the run folder of :func:`~capslab.nas.search.run_search`.
        db: the journal's URL, if not the one in ``run.json`` (e.g. to give its password).
        db_retry: seconds a journal write waits for a database that went away.

    Returns:
        The :class:`RetryPlan`; with nothing failed, ``generation`` is ``None`` and nothing
        was changed.
    """
    run_dir = Path(run_dir)
    journal, info = open_journal(run_dir, db, retry_seconds=db_retry)
    with journal:
        run_config(run_dir, journal, info)  # what resume refuses is refused before any change
        with RunLease(journal):  # no search may write while rows are forgotten
            evaluations, rungs = journal.evaluations(), journal.rung_records()
            plan = _plan(evaluations, rungs)
            if plan.nothing:
                return plan
            later = _later_keys(evaluations, rungs, plan.generation)
            backup = _backup(journal, run_dir) if journal.engine.dialect.name == "sqlite" else None
            again = [*plan.retried, *plan.rerun]
            counts = journal.drop_for_retry(again, plan.generation, status=RETRY_PENDING)
            _remove_folders(run_dir / CANDIDATES_DIR, later | set(again))
    return replace(plan, dropped_evaluations=counts["evaluations"], dropped_rungs=counts["rungs"],
                   dropped_generations=counts["generations"], backup=backup)
