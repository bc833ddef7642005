"""The servers of the search tests, and the fast fake evaluator their searches use.

``CAPSLAB_TEST_POSTGRES`` (an SQLAlchemy URL of a PostgreSQL database the tests may write to)
and ``CAPSLAB_TEST_RAY`` (``host:port`` of a Ray head) name real servers; ``.ci/services.sh``
starts both on 127.0.0.1 and sets them. Without them the tests that need them are skipped with
the reason; in CI (``CI=true``) they fail instead, so a CI run can never skip them silently.

Run as a script, this file is the ``capslab`` command whose candidates are evaluated by
:class:`FakeAccuracy` instead of a training (the search, the journal, resume and the command
line are the real ones)::

    CAPSLAB_FAKE_SECONDS=0.1 python tests/nas/conftest.py search run --db URL --out RUN ...
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

SERVICES_HINT = "start them with: source .ci/services.sh; start_services"
THIS_FILE = str(Path(__file__).resolve())


def _server(variable: str, what: str) -> str:
    """The value of ``variable``; without it a skip here, a failure in CI."""
    value = os.environ.get(variable, "").strip()
    if value:
        return value
    reason = f"{variable} is not set: no {what} to test against ({SERVICES_HINT})"
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(f"CI must test against a real {what}: {reason}", pytrace=False)
    pytest.skip(reason)


def _module(name: str, extra: str):
    """Import an optional package the servers' tests need; missing in CI is a failure."""
    try:
        return __import__(name)
    except ImportError:
        reason = f"{name} is not installed: pip install -e '.[{extra}]'"
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(reason, pytrace=False)
        pytest.skip(reason)


# ---------------------------------------------------------------------- PostgreSQL
@pytest.fixture
def postgres_url():
    """A URL of the test database whose tables live in a fresh schema of their own (dropped
    afterwards), so every test starts from an empty journal."""
    base = _server("CAPSLAB_TEST_POSTGRES", "PostgreSQL server")
    _module("psycopg", "postgres")
    from sqlalchemy import create_engine
    from sqlalchemy.engine import make_url

    schema = f"capslab_test_{uuid.uuid4().hex[:12]}"
    admin = create_engine(base, pool_pre_ping=True)
    with admin.begin() as conn:
        conn.exec_driver_sql(f"CREATE SCHEMA {schema}")
    url = make_url(base).update_query_dict({"options": f"-csearch_path={schema}"})
    try:
        yield url.render_as_string(hide_password=False)
    finally:
        with admin.begin() as conn:
            conn.exec_driver_sql(f"DROP SCHEMA {schema} CASCADE")
        admin.dispose()


class PostgresControl:
    """Stops and starts the test PostgreSQL server of ``.ci/services.sh`` (its folder is
    ``$CAPSLAB_SERVICES_DIR``), as an operator restarting it would."""

    def __init__(self, services_dir: str, url: str):
        from sqlalchemy.engine import make_url

        folder = Path(services_dir)
        self.bindir = (folder / "pg_bindir").read_text().strip()
        self.data, self.sock = folder / "pgdata", folder / "pgsock"
        self.log = folder / "logs" / "postgres.log"
        self.port = make_url(url).port
        self.running = True

    def _pg_ctl(self, *args: str) -> None:
        cmd = [f"{self.bindir}/pg_ctl", "-D", str(self.data), *args]
        if os.geteuid() == 0:  # the server runs as Debian's postgres user (see services.sh)
            cmd = ["runuser", "-u", "postgres", "--", *cmd]
        subprocess.run(cmd, check=True, capture_output=True, timeout=90)

    def stop(self) -> None:
        self._pg_ctl("-m", "fast", "-w", "-t", "60", "stop")
        self.running = False

    def start(self) -> None:
        self._pg_ctl("-l", str(self.log), "-w", "-t", "60", "start", "-o",
                     f"-c listen_addresses=127.0.0.1 -p {self.port} -k {self.sock}")
        self.running = True


@pytest.fixture
def postgres_restarts(postgres_url):
    """``(url, control)``: a journal URL and the :class:`PostgresControl` of its server; the
    server is running again after the test whatever happened."""
    control = PostgresControl(_server("CAPSLAB_SERVICES_DIR", "restartable PostgreSQL server"),
                              postgres_url)
    try:
        yield postgres_url, control
    finally:
        if not control.running:
            control.start()


@pytest.fixture(params=["sqlite", "postgresql"])
def journal_url(request, tmp_path):
    """The same test against an SQLite file and a PostgreSQL database."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'journal.sqlite'}"
    return request.getfixturevalue("postgres_url")


# ---------------------------------------------------------------------- Ray
@pytest.fixture(scope="module")
def ray_address():
    """The Ray head's address; this process is connected to it for the test module and no
    longer (other tests fork worker processes, which is unsafe beside Ray's threads)."""
    address = _server("CAPSLAB_TEST_RAY", "Ray cluster")
    ray = _module("ray", "ray")
    # Ray's workers cannot import this test module: its fake evaluators travel by value
    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])
    if not ray.is_initialized():
        ray.init(address=address, log_to_driver=False)
    yield address
    ray.shutdown()


# ---------------------------------------------------------------------- fake evaluation
def fake_accuracy_of(key: str) -> float:
    """Deterministic pseudo-accuracy in [0.5, 1) from a genotype's key alone."""
    return 0.5 + 0.5 * int(hashlib.sha1(key.encode()).hexdigest()[:8], 16) / 2**32


class FakeAccuracy:
    """The accuracy function of a fast search: :func:`fake_accuracy_of`, after ``seconds``
    and, while the file ``hold`` exists, no answer at all (a test holds a search mid-run).
    With ``pids`` (a folder) each process that evaluates a candidate leaves a file named by
    its process id there."""

    def __init__(self, seconds: float = 0.0, hold: str | None = None, pids: str | None = None):
        self.seconds = seconds
        self.hold = hold
        self.pids = pids

    def __call__(self, genotype, time_limit=None, epochs=None):
        from capslab.nas.evaluate import Score
        from capslab.nas.space import genotype_key

        if self.pids:
            Path(self.pids, str(os.getpid())).touch()
        if self.seconds:
            time.sleep(self.seconds)
        while self.hold and os.path.exists(self.hold):
            time.sleep(0.02)
        accuracy = fake_accuracy_of(genotype_key(genotype))
        if epochs is None:
            return accuracy
        return Score(min(0.99, accuracy + 0.01 * epochs), epochs=epochs)  # a rung


class DiesOnce(FakeAccuracy):
    """The first call anywhere (the claim is a file in ``folder``) writes ``{"pid", "key"}`` to
    ``folder/victim.json`` and waits to be killed; every other call, a retry of the killed one
    too, is a plain :class:`FakeAccuracy`."""

    def __init__(self, folder: str, seconds: float = 0.0):
        super().__init__(seconds)
        self.folder = folder

    def __call__(self, genotype, time_limit=None) -> float:
        from capslab.nas.space import genotype_key

        try:
            os.close(os.open(os.path.join(self.folder, "claimed"), os.O_CREAT | os.O_EXCL))
        except FileExistsError:
            return super().__call__(genotype, time_limit)
        tmp = os.path.join(self.folder, "victim.tmp")
        with open(tmp, "w") as f:
            json.dump({"pid": os.getpid(), "key": genotype_key(genotype)}, f)
        os.replace(tmp, os.path.join(self.folder, "victim.json"))
        time.sleep(120)  # the test kills this process here
        raise AssertionError("the worker evaluating this candidate was not killed")


def wait_for(predicate, timeout: float, what: str, every: float = 0.05):
    """Poll ``predicate()`` until it returns a true value (returned) or ``timeout`` passes."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(every)
    raise AssertionError(f"timed out after {timeout:g} s waiting for {what}")


def journal_rows(url: str, run_id: str) -> tuple[dict, list]:
    """What a search's journal says, without timings: {key: (generation, status, accuracy,
    energy, memory, latency)} and [(generation, offspring, population, evaluations)]."""
    from capslab.nas.journal import Journal

    with Journal(url, run_id) as journal:
        evaluations = journal.evaluations()
        generations = journal.generations()
    keys = [r.key for r in evaluations]
    assert len(keys) == len(set(keys)), "a genotype was journaled twice"
    rows = {r.key: (r.generation, r.status, r.accuracy, r.energy_mJ, r.memory_KiB, r.latency_ms)
            for r in evaluations}
    return rows, [(g.generation, g.offspring, g.population, g.evaluations) for g in generations]


def fake_cli(*args: str) -> list[str]:
    """The argv of ``capslab ARGS`` with the fake evaluator (this file as a script)."""
    return [sys.executable, THIS_FILE, *args]


def capslab_cli(*args: str) -> list[str]:
    """The argv of the real ``capslab ARGS``."""
    return [sys.executable, "-m", "capslab.cli.main", *args]


def _fake_capslab(argv: list[str]) -> None:
    """``capslab`` with FakeAccuracy (``$CAPSLAB_FAKE_SECONDS`` per candidate, held while
    ``$CAPSLAB_FAKE_HOLD`` exists, process ids left in ``$CAPSLAB_FAKE_PIDS``) and no
    dataset."""
    import capslab.nas.config as config
    import capslab.nas.search as search
    from capslab.cli.main import app
    from capslab.nas.evaluate import Evaluator

    accuracy = FakeAccuracy(float(os.environ.get("CAPSLAB_FAKE_SECONDS", "0")),
                            os.environ.get("CAPSLAB_FAKE_HOLD"), os.environ.get("CAPSLAB_FAKE_PIDS"))

    def evaluator(config, run_dir=None):
        return Evaluator(accuracy, space=config.build_space(), rungs=config.rungs)

    config.SearchConfig.evaluator = evaluator
    search.require_files = lambda *args, **kwargs: None  # the fake needs no dataset
    app(argv, prog_name="capslab")


if __name__ == "__main__":
    _fake_capslab(sys.argv[1:])
