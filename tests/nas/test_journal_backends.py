"""The search journal against an SQLite file and a real PostgreSQL server alike: rows written
and read back, the version row, generations written once, resume after a crash, kill -9 of a
search then ``capslab search resume`` in another process, a reader and ``capslab search report``
while a search writes, a dropped server connection, no server at all.

The searches evaluate candidates with a fake accuracy (``conftest.FakeAccuracy``): the point
here is the journal, so no network is trained. The PostgreSQL cases need
``CAPSLAB_TEST_POSTGRES`` (see ``conftest.py``).
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import threading
import time
from dataclasses import replace
from datetime import UTC

import numpy as np
import pytest
from sqlalchemy import create_engine, select, update

from capslab.errors import ConfigError, RunMismatchError
from capslab.nas.config import SearchConfig
from capslab.nas.evaluate import Evaluator
from capslab.nas.journal import Journal
from capslab.nas.report import pareto_front
from capslab.nas.schema import JOURNAL_VERSION, database_url, meta_table
from capslab.nas.search import resume, run_search
from capslab.nas.space import sample
from tests.nas.conftest import (
    FakeAccuracy,
    capslab_cli,
    fake_cli,
    journal_rows,
    wait_for,
)

GENERATIONS, POPULATION, OFFSPRING, SEED = 3, 4, 4, 0
# the same search on the command line (in-process: no worker processes to start)
CLI_SEARCH = ("--dataset", "mnist", "--generations", str(GENERATIONS), "--population",
              str(POPULATION), "--offspring", str(OFFSPRING), "--seed", str(SEED), "--workers", "1")


def _config() -> SearchConfig:
    return SearchConfig(training={"model": "genotype", "dataset": "mnist"},
                        generations=GENERATIONS, population=POPULATION, offspring=OFFSPRING,
                        seed=SEED)


def _evaluator() -> Evaluator:
    return Evaluator(FakeAccuracy(), space=_config().build_space())


class StopsAfter:
    """The fake evaluator, interrupted (as by Ctrl-C) at call ``n + 1``."""

    def __init__(self, n: int):
        self.inner, self.n, self.calls = _evaluator(), n, 0

    def __call__(self, genotype):
        if self.calls >= self.n:
            raise KeyboardInterrupt("simulated crash")
        self.calls += 1
        return self.inner(genotype)


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """The uninterrupted search: its result and its journal rows."""
    run = tmp_path_factory.mktemp("reference") / "run"
    result = run_search(_config(), run, evaluator=_evaluator())
    return result, journal_rows(database_url(None, run), result.run_id)


def _records(n: int = 3):
    space = _config().build_space()
    rng = np.random.default_rng(0)
    ok = [_evaluator()(sample(space, rng)) for _ in range(n)]

    def raises(genotype, time_limit=None):
        raise ValueError("boom")

    failed = Evaluator(raises, space=space)(sample(space, rng))
    return [replace(r, generation=i) for i, r in enumerate([*ok, failed])]


def _same_instant(stored, written) -> bool:
    # SQLite gives back the UTC time without its zone, PostgreSQL with it
    return (stored if stored.tzinfo else stored.replace(tzinfo=UTC)) == written


# ---------------------------------------------------------------------- rows
def test_evaluations_and_runs_round_trip(journal_url):
    journal = Journal(journal_url, "run-a")
    config = {"seed": 7, "space": {"kernels": [3, 5]}, "training": {"lr": 0.003}}
    journal.create_run(7, config)
    records = _records()
    assert all(journal.record(r) for r in records)
    # a second result for a genotype already there is not written: the first one stays
    assert journal.record(replace(records[0], accuracy=0.123, generation=9)) is False

    back = journal.evaluations()
    assert [r.key for r in back] == [r.key for r in records]  # in the order written
    for stored, written in zip(back, records, strict=True):
        for name in ("genotype_nascaps", "genotype", "generation", "status", "reason",
                     "accuracy", "energy_mJ", "memory_KiB", "latency_ms", "seconds"):
            assert getattr(stored, name) == getattr(written, name), name  # floats exactly
        assert _same_instant(stored.started_at, written.started_at)
        assert _same_instant(stored.finished_at, written.finished_at)
        assert stored.objectives() == written.objectives()
    assert back[-1].status == "failed" and back[-1].reason == "error: ValueError: boom"
    assert journal.count() == len(records)
    assert journal.lookup(records[1].key) == back[1]
    assert journal.lookup("[]") is None

    info = journal.run_info()
    assert (info["seed"], info["config"], info["status"]) == (7, config, "running")
    journal.set_status("finished")
    assert journal.run_info()["status"] == "finished"
    with pytest.raises(RunMismatchError, match="already exists"):
        journal.create_run(7, config)
    journal.create_run(7, config, exist_ok=True)

    # another run in the same database keeps its own rows
    other = Journal(journal_url, "run-b")
    other.create_run(1, {})
    assert other.count() == 0 and other.record(records[0]) and other.count() == 1
    assert journal.count() == len(records)
    with pytest.raises(RunMismatchError, match="no run 'run-c'"):
        Journal(journal_url, "run-c").run_info()


def test_version_row(journal_url):
    Journal(journal_url, "r").close()
    journal = Journal(journal_url, "r")  # opening again keeps the one stamp
    assert journal.version() == JOURNAL_VERSION
    with journal.engine.connect() as conn:
        assert [tuple(r) for r in conn.execute(select(meta_table))] == [
            ("version", str(JOURNAL_VERSION))]
    with journal.engine.begin() as conn:
        conn.execute(update(meta_table).values(value=str(JOURNAL_VERSION + 1)))
    with pytest.raises(RunMismatchError, match="newer than this CapsLab reads"):
        Journal(journal_url, "r")


def test_many_processes_opening_a_new_journal_at_once(journal_url):
    """Searches and reports that open a new database together race on CREATE TABLE and on the
    version row; none of them may fail, and the journal ends with one stamp."""
    barrier, errors = threading.Barrier(6), []

    def open_one(i):
        barrier.wait()
        try:
            Journal(journal_url, f"r{i}").close()
        except Exception as exc:  # collected: a thread's exception would be lost
            errors.append(exc)

    threads = [threading.Thread(target=open_one, args=(i,)) for i in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    journal = Journal(journal_url, "r")
    with journal.engine.connect() as conn:
        assert len(conn.execute(select(meta_table)).all()) == 1


def test_a_generation_is_written_once(journal_url):
    journal = Journal(journal_url, "r")
    journal.create_run(0, {})
    journal.record_generation(0, ["a", "b"], ["a"], {"state": 1}, 2)
    journal.record_generation(0, ["a", "b"], ["a"], {"state": 1}, 2)  # a repeated write
    assert [(g.generation, g.offspring, g.population) for g in journal.generations()] == [
        (0, ["a", "b"], ["a"])]
    with pytest.raises(RunMismatchError, match="another search writing to this run"):
        journal.record_generation(0, ["c"], ["c"], {"state": 2}, 1)


# ---------------------------------------------------------------------- resume
def test_resume_after_a_crash(journal_url, tmp_path, reference):
    ref, ref_rows = reference
    run = tmp_path / "run"
    with pytest.raises(KeyboardInterrupt):
        run_search(_config(), run, db=journal_url, evaluator=StopsAfter(7))
    run_id = json.loads((run / "run.json").read_text())["run_id"]
    journal = Journal(journal_url, run_id)
    assert journal.count() == 7
    assert journal.run_info()["status"] == "interrupted"

    again = StopsAfter(10**6)
    result = resume(run, evaluator=again)  # the journal URL comes from run.json
    assert result.front_keys == ref.front_keys
    assert again.calls == ref.evaluations - 7  # nothing journaled is evaluated again
    assert journal_rows(journal_url, run_id) == ref_rows  # same rows, same generations
    assert journal.run_info()["status"] == "finished"


def _run_id(run) -> str | None:
    try:
        return json.loads((run / "run.json").read_text())["run_id"]
    except (OSError, ValueError, KeyError):
        return None


def _start_search(journal_url, run, **env) -> subprocess.Popen:
    return subprocess.Popen(
        fake_cli("search", "run", *CLI_SEARCH, "--db", journal_url, "--out", str(run), "--json"),
        env={**os.environ, **env}, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )


def _stop(process: subprocess.Popen) -> None:
    if process.poll() is None:
        process.kill()
    process.communicate(timeout=30)


class Reader:
    """Reads a run's journal as a report would, checking each time that it makes sense."""

    def __init__(self, url: str, run_id: str):
        self.journal = Journal(url, run_id)
        self.seen = 0

    def count(self) -> int:
        generations, evaluations = self.journal.generations(), self.journal.evaluations()
        keys = {r.key for r in evaluations}
        assert len(keys) == len(evaluations) >= self.seen  # no row twice, none vanishes
        for g in generations:  # a generation is journaled after every one of its candidates
            assert set(g.offspring) <= keys and set(g.population) <= keys
        self.seen = len(evaluations)
        return self.seen

    def settled(self) -> bool:
        before = self.count()
        time.sleep(0.3)
        return self.count() == before

    def follow(self, process: subprocess.Popen) -> tuple[str, str]:
        """Read while ``process`` writes, then its output."""
        while process.poll() is None:
            self.count()
        return process.communicate(timeout=30)


def test_kill_9_mid_search_then_resume_in_another_process(journal_url, tmp_path, reference):
    """A search (another process) is read while it writes, and ``capslab search report`` runs
    while it is mid-candidate; then it is killed with SIGKILL right there, and ``capslab search
    resume`` in a new process ends on the uninterrupted run's front and journal."""
    ref, ref_rows = reference
    run, hold, report = tmp_path / "run", tmp_path / "hold", tmp_path / "report"
    search = _start_search(journal_url, run, CAPSLAB_FAKE_SECONDS="0.05",
                           CAPSLAB_FAKE_HOLD=str(hold))
    try:
        run_id = wait_for(lambda: _run_id(run), 60, "the search to start")
        reader = Reader(journal_url, run_id)
        wait_for(lambda: reader.count() >= 5 or search.poll() is not None, 60, "5 evaluations")
        hold.touch()  # the search stops inside its next candidate
        wait_for(reader.settled, 10, "the search to stop writing")
        held = reader.seen
        out = subprocess.run(
            capslab_cli("search", "report", str(run), "--out", str(report), "--json"),
            capture_output=True, text=True, timeout=120)
        assert out.returncode == 0, out.stderr
        assert search.poll() is None  # the search was running all along
        pareto = json.loads((report / "pareto.json").read_text())
        assert pareto["evaluated"] == held < ref.evaluations
        expected = sorted(r.key for r in pareto_front(reader.journal.evaluations()))
        assert sorted(r["key"] for r in json.loads(out.stdout)["front"]) == expected

        os.kill(search.pid, signal.SIGKILL)  # in the middle of a candidate
        search.wait(timeout=30)
    finally:
        _stop(search)
    assert search.returncode == -signal.SIGKILL
    assert reader.count() == held
    assert reader.journal.run_info()["status"] == "running"  # it had no chance to say otherwise

    resumed = subprocess.Popen(
        fake_cli("search", "resume", str(run), "--workers", "1", "--json"),
        env={**os.environ, "CAPSLAB_FAKE_SECONDS": "0.05"},
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        stdout, stderr = reader.follow(resumed)
    finally:
        _stop(resumed)
    assert resumed.returncode == 0, stderr
    result = json.loads(stdout)
    assert sorted(r["key"] for r in result["front"]) == ref.front_keys
    assert result["evaluated_now"] == ref.evaluations - held  # none lost, none repeated
    assert result["evaluations"] == ref.evaluations
    assert journal_rows(journal_url, run_id) == ref_rows
    assert reader.journal.run_info()["status"] == "finished"


# ---------------------------------------------------------------------- server failures
def test_a_dropped_connection_is_opened_again(postgres_url):
    journal = Journal(postgres_url, "r")
    journal.create_run(0, {})
    first, second = _records(2)[:2]
    assert journal.record(first)
    with journal.engine.connect() as conn:
        pid = conn.exec_driver_sql("SELECT pg_backend_pid()").scalar_one()
    # the server ends the journal's (pooled) session, as a restart or a network cut would
    admin = create_engine(postgres_url)
    with admin.connect() as conn:
        assert conn.exec_driver_sql(f"SELECT pg_terminate_backend({pid})").scalar_one()
    admin.dispose()
    assert journal.record(second)
    assert [r.key for r in journal.evaluations()] == [first.key, second.key]


def test_no_server_at_the_journal_url_is_one_clear_error():
    pytest.importorskip("psycopg")
    with socket.socket() as s:  # a port where nothing listens
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    t0 = time.monotonic()
    with pytest.raises(ConfigError, match=rf"cannot open the journal postgresql\+psycopg://"
                                          rf"capslab:\*\*\*@127.0.0.1:{port}/nas") as info:
        Journal(f"postgresql+psycopg://capslab:secret@127.0.0.1:{port}/nas", "r")
    assert "secret" not in str(info.value)
    assert time.monotonic() - t0 < 15
