"""The search journal: every evaluation and every generation of a run, in a real database.

SQLAlchemy keeps it portable: a single SQLite file in the run folder by default, or any
SQLAlchemy URL (PostgreSQL for a team sharing one journal). Only the process that drives the
search writes to it; workers return results and never touch the database.

Tables
- ``nas_runs``: one row per run (id, seed, configuration as JSON, status, timestamps, and the
  data split candidates are scored on, as JSON).
- ``nas_evaluations``: one row per distinct genotype per run, unique on (run_id, key); the key is
  the genotype's canonical exchange form, so a genotype is trained at most once per run. Its
  ``split`` says which split the accuracy was measured on (``val`` or ``test``), ``epochs`` after
  how many epochs of training, and ``float_accuracy`` the float32 accuracy when ``accuracy`` is
  the quantized network's (a search with ``accuracy_bits``).
- ``nas_rungs``: with multi-fidelity evaluation (:mod:`capslab.nas.fidelity`), one row per
  candidate per rung it trained (the same columns, plus ``rung``), unique on (run_id, key,
  rung); the candidate's row in ``nas_evaluations`` is written once its last rung is decided.
- ``capslab_meta``: the journal's format version. Only :data:`JOURNAL_VERSION` is read; a
  format-2 journal is brought to format 3 when opened (the new columns are empty, the rung
  table is added); a newer one, or format 1 (which scored candidates on the test split), is
  refused with one line.
- ``nas_generations``: per generation the keys of the offspring asked for, the surviving
  population, the state of the algorithm's random generator and how busy the workers were
  (workers, wall and busy seconds of the evaluations made). ``resume`` replays the search
  from the seed and checks every replayed generation against these rows.

Transactions: an evaluation, or a generation with its run's timestamp, is one transaction,
committed before the search goes on, so a killed search loses only what was in flight and
readers (reports, while the search runs) see whole rows only. Writing an evaluation or a
generation that is already there changes nothing, so a write repeated after a lost connection
(or by a second process) never doubles a row. Several processes may open a new database at once.
"""

from __future__ import annotations

import json
import math
import os
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlalchemy import (
    Column,
    DateTime,
    Float,
    ForeignKey,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    UniqueConstraint,
    create_engine,
    func,
    insert,
    select,
    update,
)
from sqlalchemy.engine import Connection, Engine, make_url
from sqlalchemy.exc import DBAPIError, IntegrityError, OperationalError

from capslab.errors import ConfigError, MissingDependencyError, RunMismatchError
from capslab.genotype import Genotype
from capslab.nas.space import genotype_key

DEFAULT_DB_NAME = "journal.sqlite"
#: Format 2: the split of each accuracy, the run's data split, the timing of each generation,
#: the ``timeout`` status. Format 3: the epochs and float accuracy of each evaluation, the rungs.
JOURNAL_VERSION = 3
#: The columns format 3 added to ``nas_evaluations`` (an upgrade from format 2 adds them).
_ADDED_IN_3 = (("epochs", "INTEGER"), ("float_accuracy", "FLOAT"))

#: Objective values given to a failed candidate: the worst accuracy and hardware figures far above
#: anything a real network reaches, so a failure never enters the front.
FAILED_OBJECTIVES = (1.0, 1.0e6, 1.0e9, 1.0e6)
OBJECTIVE_NAMES = ("error", "energy_mJ", "memory_KiB", "latency_ms")

metadata = MetaData()

meta_table = Table(
    "capslab_meta",
    metadata,
    Column("key", String(64), primary_key=True),
    Column("value", Text, nullable=False),
)

runs_table = Table(
    "nas_runs",
    metadata,
    Column("run_id", String(128), primary_key=True),
    Column("seed", Integer, nullable=False),
    Column("config", Text, nullable=False),
    Column("status", String(32), nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("updated_at", DateTime(timezone=True), nullable=False),
    Column("data_split", Text),
)

evaluations_table = Table(
    "nas_evaluations",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("run_id", String(128), ForeignKey("nas_runs.run_id"), nullable=False, index=True),
    Column("key", Text, nullable=False),
    Column("genotype_nascaps", Text, nullable=False),
    Column("genotype", Text, nullable=False),
    Column("generation", Integer, nullable=False),
    Column("status", String(16), nullable=False),
    Column("reason", Text),
    Column("accuracy", Float),
    Column("split", String(8)),
    Column("energy_mJ", Float),
    Column("memory_KiB", Float),
    Column("latency_ms", Float),
    Column("seconds", Float),
    Column("started_at", DateTime(timezone=True)),
    Column("finished_at", DateTime(timezone=True)),
    Column("epochs", Integer),
    Column("float_accuracy", Float),
    UniqueConstraint("run_id", "key", name="uq_nas_evaluation_run_key"),
)

rungs_table = Table(
    "nas_rungs",
    metadata,
    Column("run_id", String(128), ForeignKey("nas_runs.run_id"), primary_key=True),
    Column("key", Text, primary_key=True),
    Column("rung", Integer, primary_key=True),
    *(Column(c.name, c.type) for c in evaluations_table.columns
      if c.name not in ("id", "run_id", "key")),
)

generations_table = Table(
    "nas_generations",
    metadata,
    Column("run_id", String(128), ForeignKey("nas_runs.run_id"), primary_key=True),
    Column("generation", Integer, primary_key=True),
    Column("offspring", Text, nullable=False),
    Column("population", Text, nullable=False),
    Column("rng_state", Text, nullable=False),
    Column("evaluations", Integer, nullable=False),
    Column("finished_at", DateTime(timezone=True), nullable=False),
    Column("workers", Integer),
    Column("wall_seconds", Float),
    Column("busy_seconds", Float),
)


def _now() -> datetime:
    return datetime.now(UTC)


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


@dataclass(frozen=True)
class EvaluationRecord:
    """One evaluated candidate: what the journal stores and what evaluators return.

    ``genotype_nascaps`` is the exchange list (``Genotype.to_nascaps()``) and ``genotype`` the
    dictionary form (``Genotype.to_dict()``); ``key`` is the canonical JSON of the exchange list.
    ``status`` is ``ok``, ``timeout`` (the candidate ran out of its time budget) or ``failed``
    (``reason`` says why); ``split`` is the data split ``accuracy`` was measured on (``val``
    during a search, ``test`` for an evaluator that scores on the test split, ``None`` when
    unknown or without accuracy); ``epochs`` the epochs trained when it was measured (the last
    rung reached); ``float_accuracy`` the float32 accuracy when ``accuracy`` is that of the
    network quantized to the accelerator's bits (``None`` otherwise).
    """

    key: str
    genotype_nascaps: list
    genotype: dict
    status: str  # "ok", "timeout" or "failed"
    reason: str | None = None
    accuracy: float | None = None
    split: str | None = None
    energy_mJ: float | None = None
    memory_KiB: float | None = None
    latency_ms: float | None = None
    seconds: float = 0.0
    started_at: datetime | None = None
    finished_at: datetime | None = None
    generation: int = -1
    epochs: int | None = None
    float_accuracy: float | None = None

    @classmethod
    def of(cls, genotype: Genotype, **values: Any) -> EvaluationRecord:
        """The record of ``genotype`` (key and both genotype forms) with the other ``values``."""
        return cls(
            key=genotype_key(genotype),
            genotype_nascaps=genotype.to_nascaps(),
            genotype=genotype.to_dict(),
            **values,
        )

    @property
    def ok(self) -> bool:
        return self.status == "ok"

    def objectives(self) -> tuple[float, float, float, float]:
        """(1 - accuracy, energy mJ, memory KiB, latency ms), all minimised; failures the worst."""
        if not self.ok:
            return FAILED_OBJECTIVES
        values = (1.0 - self.accuracy, self.energy_mJ, self.memory_KiB, self.latency_ms)
        if any(v is None or not math.isfinite(v) for v in values):
            return FAILED_OBJECTIVES
        return tuple(float(v) for v in values)  # type: ignore[return-value]

    # the genotype columns hold JSON text; every other field is a column of its own
    _JSON_COLUMNS = ("genotype_nascaps", "genotype")
    _SUMMARY = ("key", "generation", "status", "reason", "accuracy", "split", "epochs",
                "float_accuracy", "energy_mJ", "memory_KiB", "latency_ms", "seconds")

    def to_row(self) -> dict[str, Any]:
        row = {c.name: getattr(self, c.name) for c in evaluations_table.columns
               if c.name not in ("id", "run_id")}
        return {k: json.dumps(v) if k in self._JSON_COLUMNS else v for k, v in row.items()}

    @classmethod
    def from_row(cls, row: Any) -> EvaluationRecord:
        m = {k: v for k, v in row._mapping.items() if k not in ("id", "run_id", "rung")}
        m.update({k: json.loads(m[k]) for k in cls._JSON_COLUMNS}, seconds=m["seconds"] or 0.0)
        return cls(**m)

    def summary(self) -> dict[str, Any]:
        """A flat, JSON-friendly view (for tables and reports)."""
        return {k: getattr(self, k) or "" if k == "reason" else getattr(self, k) for k in self._SUMMARY}


@dataclass(frozen=True)
class GenerationTiming:
    """How busy the workers were while a generation's candidates were evaluated:
    ``busy_seconds`` of evaluation over ``workers`` x ``wall_seconds`` (see
    :func:`capslab.nas.parallel.utilisation`)."""

    workers: int
    wall_seconds: float
    busy_seconds: float

    @property
    def utilisation(self) -> float | None:
        """Busy fraction in [0, 1]; ``None`` when nothing was evaluated."""
        capacity = self.workers * self.wall_seconds
        return min(1.0, self.busy_seconds / capacity) if capacity > 0 else None


@dataclass(frozen=True)
class GenerationRecord:
    generation: int
    offspring: list[str]
    population: list[str]
    rng_state: dict
    evaluations: int
    timing: GenerationTiming | None = None  # None: nothing was evaluated for it


def database_url(target: str | os.PathLike | None, run_dir: str | os.PathLike | None = None) -> str:
    """Turn a journal target into an SQLAlchemy URL: a URL is kept, a path becomes SQLite, nothing means
    ``<run_dir>/journal.sqlite``."""
    if target is None:
        if run_dir is None:
            raise ConfigError("a journal needs either a database URL or a run folder")
        target = Path(run_dir) / DEFAULT_DB_NAME
    text = str(target)
    if "://" in text:
        try:
            make_url(text)
        except Exception as exc:  # sqlalchemy's ArgumentError: a malformed URL
            raise ConfigError(f"journal URL {text!r} is not a database URL: {exc}") from None
        return text
    path = Path(text).expanduser().resolve()
    path.parent.mkdir(parents=True, exist_ok=True)
    return f"sqlite:///{path}"


def masked_url(url: str) -> str:
    """The URL with any password hidden (what is written to run.json and printed)."""
    return make_url(url).render_as_string(hide_password=True)


#: Seconds a PostgreSQL connection attempt may take (libpq waits forever by default) and a
#: SQLite connection waits for another process's write lock (a report reading while a search
#: writes, two processes opening one file).
CONNECT_TIMEOUT_S = 10
SQLITE_BUSY_TIMEOUT_S = 30
#: Attempts of one transaction whose connection was lost (a database restart, a network cut).
WRITE_ATTEMPTS = 3


def _engine_options(url: str) -> dict[str, Any]:
    u = make_url(url)
    if u.get_backend_name() == "sqlite":
        return {"connect_args": {"timeout": SQLITE_BUSY_TIMEOUT_S}}
    # a server: check a pooled connection before using it (it may have been closed since)
    options: dict[str, Any] = {"pool_pre_ping": True}
    if u.get_driver_name() in ("psycopg", "psycopg2") and "connect_timeout" not in u.query:
        options["connect_args"] = {"connect_timeout": CONNECT_TIMEOUT_S}
    return options


def _engine(url: str) -> Engine:
    """``create_engine`` with a clear message when the URL's database driver is missing."""
    try:
        return create_engine(url, future=True, **_engine_options(url))
    except ModuleNotFoundError as exc:
        dialect = make_url(url).get_backend_name()
        raise MissingDependencyError(
            f"the journal URL needs the {dialect} driver {exc.name!r}, which is not installed: "
            f"`pip install {exc.name}` (or name another driver in the URL, e.g. postgresql+psycopg://)"
        ) from exc


class Journal:
    """Read and write the journal of one run (``run_id``) in the database at ``url``."""

    def __init__(self, url: str, run_id: str, engine: Engine | None = None):
        self.url = url
        self.run_id = run_id
        self.engine = engine or _engine(url)
        try:
            with self.engine.connect() as conn:
                if self.engine.dialect.name == "sqlite":
                    # A crash must not lose a committed evaluation; WAL keeps readers (reports)
                    # unblocked while the search writes.
                    conn.exec_driver_sql("PRAGMA journal_mode=WAL")
        except OperationalError as exc:  # no server there, wrong password, unwritable file
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
        if int(row[0]) == 2:
            self._upgrade_from_2()
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

    def _upgrade_from_2(self) -> None:
        """Format 2 -> 3: add the evaluation columns format 3 introduced (the rung table is
        made by ``create_all``) and stamp the new version, in one transaction."""

        def work(conn: Connection) -> None:
            stamp = conn.execute(select(meta_table.c.value).where(
                meta_table.c.key == "version").with_for_update()).scalar_one()
            if int(stamp) != 2:  # another process upgraded it meanwhile
                return
            for name, sql_type in _ADDED_IN_3:
                conn.exec_driver_sql(f"ALTER TABLE nas_evaluations ADD COLUMN {name} {sql_type}")
            conn.execute(update(meta_table).where(meta_table.c.key == "version")
                         .values(value=str(JOURNAL_VERSION)))

        self._write(work)

    def version(self) -> int:
        """The format version stamped in this journal."""
        with self.engine.connect() as conn:
            return int(conn.execute(
                select(meta_table.c.value).where(meta_table.c.key == "version")).scalar_one())

    def _write(self, work: Callable[[Connection], Any]) -> Any:
        """``work(conn)`` in one transaction, committed or rolled back whole. A transaction
        whose connection was lost is run again on a fresh one (it may have been committed
        before the connection went: an evaluation or a generation already there is not
        written twice)."""
        for attempt in range(WRITE_ATTEMPTS):
            try:
                with self.engine.begin() as conn:
                    return work(conn)
            except DBAPIError as exc:
                if not exc.connection_invalidated or attempt == WRITE_ATTEMPTS - 1:
                    raise
                time.sleep(0.2 * (attempt + 1))

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

    def close(self) -> None:
        self.engine.dispose()

    def __enter__(self) -> Journal:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
