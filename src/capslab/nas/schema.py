"""The search journal's storage: the database schema, the records its rows hold, and where the
database is (:class:`~capslab.nas.journal.Journal` reads and writes it).

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

Records: :class:`EvaluationRecord` (one evaluated candidate, a row of ``nas_evaluations`` or
``nas_rungs``; what evaluators return), :class:`GenerationRecord` and its
:class:`GenerationTiming` (a row of ``nas_generations``).

Where: :func:`database_url` turns a journal target (a URL, a path, or nothing: the run
folder's ``journal.sqlite``) into an SQLAlchemy URL, :func:`masked_url` hides its password,
:func:`make_engine` connects to it with the timeouts below.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
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
)
from sqlalchemy.engine import Engine, make_url

from capslab.errors import ConfigError, MissingDependencyError
from capslab.genotype import Genotype
from capslab.nas.space import genotype_key

DEFAULT_DB_NAME = "journal.sqlite"
#: Format 2: the split of each accuracy, the run's data split, the timing of each generation,
#: the ``timeout`` status. Format 3: the epochs and float accuracy of each evaluation, the rungs.
#: Format 4: each evaluation's training cost (``train_activation_KiB``, ``train_GFLOP``).
JOURNAL_VERSION = 4

#: Objective values given to a failed candidate: the worst accuracy and hardware figures far above
#: anything a real network reaches, so a failure never enters the front.
FAILED_OBJECTIVES = (1.0, 1.0e6, 1.0e9, 1.0e6)
#: the paper's four objectives, the search's default
OBJECTIVE_NAMES = ("error", "energy_mJ", "memory_KiB", "latency_ms")
#: every figure a search can minimise or limit: the paper's four and the training cost per
#: image (:mod:`capslab.training_cost`: activations saved for backward, FLOPs of a step)
COST_NAMES = (*OBJECTIVE_NAMES, "train_activation_KiB", "train_GFLOP")
#: the value of each figure for a failed candidate
WORST = dict(zip(COST_NAMES, (*FAILED_OBJECTIVES, 1.0e9, 1.0e6), strict=True))
TRAINING_COST_NAMES = COST_NAMES[len(OBJECTIVE_NAMES):]

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
    Column("train_activation_KiB", Float),
    Column("train_GFLOP", Float),
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

#: One writer per run: the process driving a run holds its row and beats it regularly
#: (:class:`capslab.nas.lease.RunLease`). A table of its own, so adding it changes no format:
#: an older CapsLab ignores it.
leases_table = Table(
    "nas_leases",
    metadata,
    Column("run_id", String(128), ForeignKey("nas_runs.run_id"), primary_key=True),
    Column("holder", String(256), nullable=False),
    Column("acquired_at", DateTime(timezone=True), nullable=False),
    Column("heartbeat_at", DateTime(timezone=True), nullable=False),
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


@dataclass(frozen=True)
class EvaluationRecord:
    """One evaluated candidate: what the journal stores and what evaluators return.

    ``genotype_nascaps`` is the exchange form (``Genotype.exchange()``: the NASCaps list, or the
    readable object for a genotype with newer genes; the name is the journal column's, kept
    since format 1) and ``genotype`` the dictionary form (``Genotype.to_dict()``); ``key`` is the
    canonical JSON of the exchange form.
    ``status`` is ``ok``, ``timeout`` (the candidate ran out of its time budget), ``failed``
    (``reason`` says why) or ``infeasible`` (over a limit of the search that is known before
    training, ``reason`` says which; not trained); ``split`` is the data split ``accuracy`` was measured on (``val``
    during a search, ``test`` for an evaluator that scores on the test split, ``None`` when
    unknown or without accuracy); ``epochs`` the epochs trained when it was measured (the last
    rung reached); ``float_accuracy`` the float32 accuracy when ``accuracy`` is that of the
    network quantized to the accelerator's bits (``None`` otherwise).
    """

    key: str
    genotype_nascaps: list | dict
    genotype: dict
    status: str  # "ok", "timeout", "failed" or "infeasible"
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
    train_activation_KiB: float | None = None
    train_GFLOP: float | None = None

    @classmethod
    def of(cls, genotype: Genotype, **values: Any) -> EvaluationRecord:
        """The record of ``genotype`` (key and both genotype forms) with the other ``values``."""
        return cls(
            key=genotype_key(genotype),
            genotype_nascaps=genotype.exchange(),
            genotype=genotype.to_dict(),
            **values,
        )

    @property
    def ok(self) -> bool:
        return self.status == "ok"

    def value(self, name: str) -> float | None:
        """The figure ``name`` of :data:`COST_NAMES` (``error`` is 1 - accuracy); ``None``
        when it was not measured."""
        if name == "error":
            return None if self.accuracy is None else 1.0 - self.accuracy
        return getattr(self, name)

    def objectives(self, names: Sequence[str] = OBJECTIVE_NAMES) -> tuple[float, ...]:
        """The figures ``names`` (default: 1 - accuracy, energy mJ, memory KiB, latency ms), all
        minimised; a failure, or a figure missing, gives every one its worst value."""
        values = [self.value(n) for n in names] if self.ok else [None]
        if any(v is None or not math.isfinite(v) for v in values):
            return tuple(WORST[n] for n in names)
        return tuple(float(v) for v in values)  # type: ignore[arg-type]

    def violations(self, limits: Mapping[str, float]) -> dict[str, float]:
        """How far each of ``limits`` (figure -> largest allowed value) is exceeded; empty
        when the candidate is feasible (a failed one exceeds every limit)."""
        values = dict(zip(limits, self.objectives(tuple(limits)), strict=True))
        return {n: values[n] - bound for n, bound in limits.items() if values[n] > bound}

    def feasible(self, limits: Mapping[str, float]) -> bool:
        return not self.violations(limits)

    # the genotype columns hold JSON text; every other field is a column of its own
    _JSON_COLUMNS = ("genotype_nascaps", "genotype")
    _SUMMARY = ("key", "generation", "status", "reason", "accuracy", "split", "epochs",
                "float_accuracy", "energy_mJ", "memory_KiB", "latency_ms", "train_activation_KiB",
                "train_GFLOP", "seconds")

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


def _engine_options(url: str) -> dict[str, Any]:
    u = make_url(url)
    if u.get_backend_name() == "sqlite":
        return {"connect_args": {"timeout": SQLITE_BUSY_TIMEOUT_S}}
    # a server: check a pooled connection before using it (it may have been closed since)
    options: dict[str, Any] = {"pool_pre_ping": True}
    if u.get_driver_name() in ("psycopg", "psycopg2") and "connect_timeout" not in u.query:
        options["connect_args"] = {"connect_timeout": CONNECT_TIMEOUT_S}
    return options


def make_engine(url: str) -> Engine:
    """``create_engine`` with a clear message when the URL's database driver is missing."""
    try:
        return create_engine(url, future=True, **_engine_options(url))
    except ModuleNotFoundError as exc:
        dialect = make_url(url).get_backend_name()
        raise MissingDependencyError(
            f"the journal URL needs the {dialect} driver {exc.name!r}, which is not installed: "
            f"`pip install {exc.name}` (or name another driver in the URL, e.g. postgresql+psycopg://)"
        ) from exc
