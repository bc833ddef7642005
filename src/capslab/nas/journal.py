"""The search journal: every evaluation and every generation of a run, in a real database.

SQLAlchemy keeps it portable: a single SQLite file in the run folder by default, or any
SQLAlchemy URL (PostgreSQL for a team sharing one journal). Only the process that drives the
search writes to it; workers return results and never touch the database. The tables, the
format version and the records stored are :mod:`capslab.nas.schema`'s; :class:`Journal` opens
the database (creating the tables, checking or upgrading the format) and holds the queries.

Transactions: an evaluation, or a generation with its run's timestamp, is one transaction,
committed before the search goes on, so a killed search loses only what was in flight and
readers (reports, while the search runs) see whole rows only. Writing an evaluation or a
generation that is already there changes nothing, so a write repeated after a lost connection
(or by a second process) never doubles a row. Several processes may open a new database at once.
"""

from __future__ import annotations

import json
import os
import sqlite3
import time
from collections.abc import Callable, Iterable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlalchemy import Table, delete, func, insert, select, update
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.exc import DBAPIError, IntegrityError, OperationalError

from capslab.errors import ConfigError, JournalUnavailableError, RunBusyError, RunMismatchError
from capslab.io import atomic_write_bytes
from capslab.nas.schema import (
    JOURNAL_VERSION,
    EvaluationRecord,
    GenerationRecord,
    GenerationTiming,
    evaluations_table,
    generations_table,
    leases_table,
    make_engine,
    masked_url,
    meta_table,
    metadata,
    rungs_table,
    runs_table,
)

#: The columns format 3 added to ``nas_evaluations`` (an upgrade from format 2 adds them).
#: the evaluation columns each format added (the rungs table copies them)
ADDED_COLUMNS = {
    3: (("epochs", "INTEGER"), ("float_accuracy", "FLOAT")),
    4: (("train_activation_KiB", "FLOAT"), ("train_GFLOP", "FLOAT")),
}
#: Attempts of one transaction that failed on another integrity race (a lease inserted twice).
WRITE_ATTEMPTS = 3
#: Seconds a write waits, retrying with backoff, for a database that went away (a restart,
#: a network cut) before the search stops with :class:`JournalUnavailableError`.
RETRY_SECONDS = 120.0
#: first and longest pause between two tries of a write
RETRY_FIRST, RETRY_LONGEST = 0.2, 5.0
#: tries at switching a new SQLite file to WAL while other processes open it (about 5 s)
OPEN_ATTEMPTS = 10


def _now() -> datetime:
    return datetime.now(UTC)


def _aware(t: datetime) -> datetime:
    """SQLite hands timestamps back without their zone; they were written in UTC."""
    return t if t.tzinfo is not None else t.replace(tzinfo=UTC)


def _connection_lost(exc: DBAPIError) -> bool:
    """Did ``exc`` come from a connection that broke or could not be made (not from the SQL)?
    SQLAlchemy marks a broken connection; a refused one is an ``OperationalError`` of the
    driver (PostgreSQL's "connection refused", "the database system is shutting down")."""
    if exc.connection_invalidated:
        return True
    if isinstance(exc, OperationalError):
        text = str(exc.orig or exc).lower()
        return not ("syntax" in text or "no such table" in text or "locked" in text)
    return False


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


class Journal:
    """Read and write the journal of one run (``run_id``) in the database at ``url``."""

    def __init__(self, url: str, run_id: str, engine: Engine | None = None,
                 retry_seconds: float = RETRY_SECONDS):
        self.url = url
        self.run_id = run_id
        self.retry_seconds = retry_seconds
        self.engine = engine or make_engine(url)
        for attempt in range(OPEN_ATTEMPTS):
            try:
                with self.engine.connect() as conn:
                    if self.engine.dialect.name == "sqlite":
                        # A crash must not lose a committed evaluation; WAL keeps readers
                        # (reports) unblocked while the search writes.
                        conn.exec_driver_sql("PRAGMA journal_mode=WAL")
                break
            except OperationalError as exc:  # no server there, wrong password, unwritable file
                # SQLite answers "locked" at once, without its busy timeout, when another
                # process is switching the same new file to WAL: wait for it instead
                if "locked" in str(exc.orig or exc) and attempt < OPEN_ATTEMPTS - 1:
                    time.sleep(0.1 * (attempt + 1))
                    continue
                self.engine.dispose()
                raise ConfigError(
                    f"cannot open the journal {masked_url(url)}: {_first_line(exc.orig or exc)}"
                ) from exc
        self._create_tables()
        self._check_version()

    def _create_tables(self) -> None:
        """Create the missing tables. Two processes opening a new database at once race on
        CREATE TABLE (PostgreSQL then refuses one of them): the loser finds them made."""
        for attempt in range(WRITE_ATTEMPTS):
            try:
                metadata.create_all(self.engine)
                return
            except DBAPIError:
                if attempt == WRITE_ATTEMPTS - 1:
                    raise
                time.sleep(0.1 * (attempt + 1))

    def _check_version(self) -> None:
        """Stamp a new journal with :data:`JOURNAL_VERSION`; refuse one of a newer format."""
        version = select(meta_table.c.value).where(meta_table.c.key == "version")
        with self.engine.connect() as conn:
            row = conn.execute(version).first()
        if row is None:
            try:
                self._write(lambda conn: conn.execute(
                    insert(meta_table).values(key="version", value=str(JOURNAL_VERSION))))
            except IntegrityError:  # another process stamped it first: check its stamp
                pass
            with self.engine.connect() as conn:
                row = conn.execute(version).first()
        if int(row[0]) in (2, 3):
            self._upgrade(int(row[0]))
            row = (JOURNAL_VERSION,)
        if int(row[0]) > JOURNAL_VERSION:
            raise RunMismatchError(
                f"the journal in {masked_url(self.url)} has format {row[0]}, newer than this "
                f"CapsLab reads ({JOURNAL_VERSION})"
            )
        if int(row[0]) < JOURNAL_VERSION:
            raise RunMismatchError(
                f"the journal in {masked_url(self.url)} has format {row[0]}, older than this "
                f"CapsLab reads ({JOURNAL_VERSION}): its candidates were scored on the test "
                "split; start a new search in another database or folder"
            )

    def _upgrade(self, found: int) -> None:
        """Format 2 or 3 -> :data:`JOURNAL_VERSION`: add the evaluation columns the later formats
        introduced and stamp the new version, in one transaction. The rung table (format 3) is
        made by ``create_all`` with every column when it is missing, so only a format-3 journal's
        rung table gains columns here."""

        def work(conn: Connection) -> None:
            stamp = conn.execute(select(meta_table.c.value).where(
                meta_table.c.key == "version").with_for_update()).scalar_one()
            if int(stamp) != found:  # another process upgraded it meanwhile
                return
            for version in range(found + 1, JOURNAL_VERSION + 1):
                tables = ["nas_evaluations"] + (["nas_rungs"] if found >= 3 else [])
                for table in tables:
                    for name, sql_type in ADDED_COLUMNS[version]:
                        conn.exec_driver_sql(f"ALTER TABLE {table} ADD COLUMN {name} {sql_type}")
            conn.execute(update(meta_table).where(meta_table.c.key == "version")
                         .values(value=str(JOURNAL_VERSION)))

        self._write(work)

    def version(self) -> int:
        """The format version stamped in this journal."""
        with self.engine.connect() as conn:
            return int(conn.execute(
                select(meta_table.c.value).where(meta_table.c.key == "version")).scalar_one())

    def _write(self, work: Callable[[Connection], Any], retry: bool = True) -> Any:
        """``work(conn)`` in one transaction, committed or rolled back whole.

        A transaction whose connection was lost, or that cannot connect (the server restarts,
        the network is cut), is run again on a fresh connection, with a pause that doubles
        from :data:`RETRY_FIRST` to :data:`RETRY_LONGEST` s, for up to ``retry_seconds``;
        then :class:`JournalUnavailableError` names the database (never its password). It may
        have been committed before the connection went: an evaluation or a generation
        already there is not written twice. ``retry=False``: one try (a heartbeat)."""
        deadline: float | None = None if retry else time.monotonic()
        pause = RETRY_FIRST
        while True:
            try:
                with self.engine.begin() as conn:
                    return work(conn)
            except DBAPIError as exc:
                if not _connection_lost(exc):
                    raise
                now = time.monotonic()
                deadline = deadline if deadline is not None else now + self.retry_seconds
                if now >= deadline:
                    raise JournalUnavailableError(
                        f"the journal {masked_url(self.url)} stayed unreachable for "
                        f"{self.retry_seconds:.0f} s ({_first_line(exc.orig or exc)})"
                    ) from exc
                time.sleep(min(pause, deadline - now))
                pause = min(2 * pause, RETRY_LONGEST)

    # --- runs --------------------------------------------------------------------------------
    def create_run(self, seed: int, config: dict, exist_ok: bool = False,
                   data_split: dict | None = None) -> None:
        """Register this run. An existing run with the same id is an error unless ``exist_ok``.
        ``data_split`` describes the split candidates are scored on (stored as JSON)."""
        now = _now()
        row = dict(run_id=self.run_id, seed=int(seed), config=json.dumps(config, sort_keys=True),
                   status="running", created_at=now, updated_at=now,
                   data_split=None if data_split is None else json.dumps(data_split, sort_keys=True))
        try:
            self._write(lambda conn: conn.execute(insert(runs_table).values(**row)))
        except IntegrityError:  # the run id is the primary key: the run exists
            if not exist_ok:
                raise RunMismatchError(
                    f"run {self.run_id!r} already exists in {masked_url(self.url)}; resume it instead"
                ) from None

    def run_info(self) -> dict[str, Any]:
        with self.engine.connect() as conn:
            row = conn.execute(select(runs_table).where(runs_table.c.run_id == self.run_id)).first()
        if row is None:
            raise RunMismatchError(f"no run {self.run_id!r} in {masked_url(self.url)}")
        split = None if row.data_split is None else json.loads(row.data_split)
        return {**row._mapping, "config": json.loads(row.config), "data_split": split}

    def _touch_run(self, conn: Any, **values: Any) -> None:
        """Update this run's row (``values`` and ``updated_at``) inside ``conn``'s transaction."""
        conn.execute(
            update(runs_table)
            .where(runs_table.c.run_id == self.run_id)
            .values(**values, updated_at=_now())
        )

    def set_status(self, status: str) -> None:
        self._write(lambda conn: self._touch_run(conn, status=status))

    # --- the writer's lease (one writer per run; readers never take it) ------------------------
    def acquire_lease(self, holder: str, stale_after: float,
                      is_dead: Callable[[str], bool] = lambda holder: False) -> dict[str, Any] | None:
        """Make ``holder`` the one writer of this run, in one transaction. A lease held by
        another holder whose last heartbeat is younger than ``stale_after`` seconds refuses
        with :class:`RunBusyError` naming the holder and since when, unless ``is_dead(its
        holder)``; an older one (its holder died or hangs) is taken over. Returns the lease
        taken over (``holder``, ``acquired_at``, ``heartbeat_at``) or None."""
        now = _now()

        def work(conn: Connection) -> dict[str, Any] | None:
            row = conn.execute(select(leases_table).where(leases_table.c.run_id == self.run_id)
                               .with_for_update()).first()
            if row is None:
                conn.execute(insert(leases_table).values(
                    run_id=self.run_id, holder=holder, acquired_at=now, heartbeat_at=now))
                return None
            beat = _aware(row.heartbeat_at)
            age = (now - beat).total_seconds()
            if row.holder != holder and age < stale_after and not is_dead(row.holder):
                since = _aware(row.acquired_at).strftime("%Y-%m-%d %H:%M:%S UTC")
                raise RunBusyError(
                    f"run {self.run_id!r} is driven by {row.holder} (since {since}, last "
                    f"heartbeat {age:.0f} s ago); wait for it to finish or stop it first"
                )
            conn.execute(update(leases_table).where(leases_table.c.run_id == self.run_id)
                         .values(holder=holder, acquired_at=now, heartbeat_at=now))
            return None if row.holder == holder else {
                "holder": row.holder, "acquired_at": _aware(row.acquired_at), "heartbeat_at": beat}

        for attempt in range(WRITE_ATTEMPTS):
            try:
                return self._write(work)
            except IntegrityError:  # another process inserted the lease first: read it again
                if attempt == WRITE_ATTEMPTS - 1:
                    raise
        return None

    def heartbeat(self, holder: str) -> bool:
        """Renew ``holder``'s lease; False if it no longer holds it (taken over)."""
        def work(conn: Connection) -> bool:
            result = conn.execute(update(leases_table).where(
                leases_table.c.run_id == self.run_id, leases_table.c.holder == holder)
                .values(heartbeat_at=_now()))
            return result.rowcount == 1

        return self._write(work, retry=False)  # the next beat is the retry

    def release_lease(self, holder: str) -> None:
        """Give the lease up (only ``holder``'s own)."""
        self._write(lambda conn: conn.execute(delete(leases_table).where(
            leases_table.c.run_id == self.run_id, leases_table.c.holder == holder)))

    def lease(self) -> dict[str, Any] | None:
        """The current lease of this run (``holder``, ``acquired_at``, ``heartbeat_at``) or None."""
        with self.engine.connect() as conn:
            row = conn.execute(select(leases_table).where(
                leases_table.c.run_id == self.run_id)).first()
        if row is None:
            return None
        return {"holder": row.holder, "acquired_at": _aware(row.acquired_at),
                "heartbeat_at": _aware(row.heartbeat_at)}

    # --- evaluations -------------------------------------------------------------------------
    def lookup(self, key: str) -> EvaluationRecord | None:
        """The journaled evaluation of ``key`` in this run, or None."""
        with self.engine.connect() as conn:
            row = conn.execute(
                select(evaluations_table).where(
                    evaluations_table.c.run_id == self.run_id, evaluations_table.c.key == key
                )
            ).first()
        return None if row is None else EvaluationRecord.from_row(row)

    def record(self, rec: EvaluationRecord) -> bool:
        """Insert one evaluation in its own transaction. Returns False if the key was already
        there (the first result is kept: identical genotypes are evaluated once)."""
        return self._insert_once(evaluations_table, rec.to_row(),
                                 lambda: self.lookup(rec.key) is not None)

    def _insert_once(self, table: Table, values: dict[str, Any], present: Callable[[], bool]) -> bool:
        """Insert a row of this run in its own transaction; False if ``present()`` says that
        the unique row was already there (any other integrity error, e.g. no such run, is
        raised)."""
        try:
            self._write(lambda conn: conn.execute(insert(table).values(run_id=self.run_id, **values)))
        except IntegrityError:
            if not present():
                raise
            return False
        return True

    def evaluations(self) -> list[EvaluationRecord]:
        """Every evaluation of this run in the order it was journaled."""
        with self.engine.connect() as conn:
            rows = conn.execute(
                select(evaluations_table)
                .where(evaluations_table.c.run_id == self.run_id)
                .order_by(evaluations_table.c.id)
            ).all()
        return [EvaluationRecord.from_row(r) for r in rows]

    def count(self) -> int:
        """The number of evaluations of this run."""
        with self.engine.connect() as conn:
            return int(conn.execute(
                select(func.count()).select_from(evaluations_table)
                .where(evaluations_table.c.run_id == self.run_id)
            ).scalar_one())

    # --- rungs -------------------------------------------------------------------------------
    def record_rung(self, rec: EvaluationRecord, rung: int) -> bool:
        """Insert one candidate's result at one rung in its own transaction. Returns False if
        it was already there (the first result is kept)."""
        return self._insert_once(rungs_table, {**rec.to_row(), "rung": rung},
                                 lambda: rung in self.rung_records([rec.key]).get(rec.key, {}))

    def rung_records(self, keys: Iterable[str] | None = None) -> dict[str, dict[int, EvaluationRecord]]:
        """``{key: {rung: record}}`` of this run's rung results (of ``keys`` only, if given)."""
        query = select(rungs_table).where(rungs_table.c.run_id == self.run_id)
        if keys is not None:
            query = query.where(rungs_table.c.key.in_(list(keys)))
        with self.engine.connect() as conn:
            rows = conn.execute(query.order_by(rungs_table.c.rung)).all()
        out: dict[str, dict[int, EvaluationRecord]] = {}
        for r in rows:
            out.setdefault(r.key, {})[r.rung] = EvaluationRecord.from_row(r)
        return out

    # --- generations -------------------------------------------------------------------------
    def record_generation(
        self,
        generation: int,
        offspring: Iterable[str],
        population: Iterable[str],
        rng_state: dict,
        evaluations: int,
        timing: GenerationTiming | None = None,
    ) -> None:
        """Journal one finished generation (``timing``: how busy the workers were while its
        candidates were evaluated). Writing the same generation again is a no-op; another one
        under the same number (two searches driving one run) is refused."""
        offspring, population = list(offspring), list(population)
        times = {} if timing is None else dict(
            workers=int(timing.workers), wall_seconds=float(timing.wall_seconds),
            busy_seconds=float(timing.busy_seconds))
        row = dict(run_id=self.run_id, generation=generation, offspring=json.dumps(offspring),
                   population=json.dumps(population), rng_state=json.dumps(rng_state),
                   evaluations=int(evaluations), finished_at=_now(), **times)

        def work(conn: Connection) -> None:
            conn.execute(insert(generations_table).values(**row))
            self._touch_run(conn)

        try:
            self._write(work)
        except IntegrityError:
            there = {g.generation: g for g in self.generations()}.get(generation)
            if there is None:  # not a duplicate: e.g. no such run
                raise
            if (there.offspring, there.population) != (offspring, population):
                raise RunMismatchError(
                    f"generation {generation} of run {self.run_id!r} is already in "
                    f"{masked_url(self.url)} with other candidates: is another search writing "
                    "to this run?"
                ) from None

    def generations(self) -> list[GenerationRecord]:
        t = generations_table.c
        with self.engine.connect() as conn:
            rows = conn.execute(
                select(t.generation, t.offspring, t.population, t.rng_state, t.evaluations,
                       t.workers, t.wall_seconds, t.busy_seconds)
                .where(t.run_id == self.run_id)
                .order_by(t.generation)
            ).all()
        return [
            GenerationRecord(gen, json.loads(offspring), json.loads(pop), json.loads(rng), n,
                             None if workers is None else GenerationTiming(workers, wall, busy))
            for gen, offspring, pop, rng, n, workers, wall, busy in rows
        ]

    # --- retrying failed candidates ----------------------------------------------------------
    def drop_for_retry(self, keys: Iterable[str], generation: int,
                       status: str | None = None) -> dict[str, int]:
        """Forget, in one transaction, what a resume recomputes when generation ``generation``
        is evaluated again (:func:`capslab.nas.retry.retry_failed`): the evaluations and rung
        results of ``keys`` (its candidates to train again), the evaluations and rung results
        first journaled in a later generation, and the generation records from ``generation``
        on; ``status`` (if given) becomes the run's. Returns the rows deleted: ``retried``
        (evaluations of ``keys``), ``evaluations`` (of later generations), ``rungs`` and
        ``generations``."""
        keys = sorted(set(keys))
        e, r, g = evaluations_table.c, rungs_table.c, generations_table.c

        def work(conn: Connection) -> dict[str, int]:
            counts = {
                "retried": conn.execute(delete(evaluations_table).where(
                    e.run_id == self.run_id, e.key.in_(keys))).rowcount,
                "evaluations": conn.execute(delete(evaluations_table).where(
                    e.run_id == self.run_id, e.generation > generation)).rowcount,
                "rungs": conn.execute(delete(rungs_table).where(
                    r.run_id == self.run_id, r.key.in_(keys))).rowcount,
            }
            counts["rungs"] += conn.execute(delete(rungs_table).where(
                r.run_id == self.run_id, r.generation > generation)).rowcount
            counts["generations"] = conn.execute(delete(generations_table).where(
                g.run_id == self.run_id, g.generation >= generation)).rowcount
            self._touch_run(conn, **({} if status is None else {"status": status}))
            return counts

        return self._write(work)

    def backup(self, path: str | os.PathLike) -> Path:
        """Copy this SQLite journal's whole database to ``path``, atomically
        (:func:`capslab.io.atomic_write_bytes`), as SQLite serialises it through a connection:
        the copy holds what the write-ahead log holds too, which a plain file copy would miss.
        Another database: ConfigError."""
        if self.engine.dialect.name != "sqlite":
            raise ConfigError(f"only an SQLite journal can be copied to a file, not "
                              f"{masked_url(self.url)}")
        path = Path(path)
        raw = self.engine.raw_connection()
        try:
            atomic_write_bytes(path, raw.driver_connection.serialize())
        except (OSError, sqlite3.Error) as exc:
            raise ConfigError(f"cannot copy the journal to {path}: {_first_line(exc)}") from exc
        finally:
            raw.close()
        return path

    def close(self) -> None:
        self.engine.dispose()

    def __enter__(self) -> Journal:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
