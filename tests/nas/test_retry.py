"""Training failed candidates again (``search resume --retry-failed``): a search whose fake
evaluator fails some candidates at their first attempt, retried with one that does not, ends
with the journal of a search that never failed, with or without rungs; what is dropped, the
SQLite copy, the candidate folders, the lease, and the command line."""

from __future__ import annotations

import hashlib
import json
import re
import sqlite3

import pytest
from typer.testing import CliRunner

from capslab.errors import CandidateTimeout, RunBusyError, RunMismatchError
from capslab.nas import RetryPlan, retry_failed
from capslab.nas.config import CANDIDATES_DIR, SearchConfig
from capslab.nas.evaluate import Evaluator, Score, key_folder
from capslab.nas.journal import Journal
from capslab.nas.retry import RETRY_PENDING
from capslab.nas.schema import database_url
from capslab.nas.search import resume, run_search
from capslab.nas.space import genotype_key
from tests.nas.conftest import journal_rows

SMALL = dict(generations=4, population=6, offspring=6, seed=3)
RUNGS = (1, 2, 4)


def _accuracy(genotype, time_limit=None, epochs=None):
    """Deterministic pseudo-accuracy from the genotype alone (growing with the epochs)."""
    h = int(hashlib.sha1(genotype_key(genotype).encode()).hexdigest()[:8], 16) / 2**32
    if epochs is None:
        return 0.5 + 0.5 * h
    return Score(min(0.99, 0.3 + 0.4 * h + 0.05 * epochs), epochs=epochs)


def _out_of_memory(genotype, time_limit=None, epochs=None):
    raise RuntimeError("CUDA out of memory (simulated)")


def _too_slow(genotype, time_limit=None, epochs=None):
    raise CandidateTimeout("time limit of 60 s exceeded (simulated)")


class FailsSome:
    """Fake evaluator: :func:`_accuracy`, except that its calls numbered in ``failing`` (from
    0) fail with ``status`` (``failed``: out of memory, ``timeout``); records what it
    evaluated as ``(key, rung)``."""

    def __init__(self, space, failing=(), status="failed", rungs=None):
        bad = _out_of_memory if status == "failed" else _too_slow
        self.ok = Evaluator(_accuracy, space=space, rungs=rungs)
        self.bad = Evaluator(bad, space=space, rungs=rungs)
        self.failing = set(failing)
        self.calls: list[tuple[str, int | None]] = []

    def __call__(self, genotype, rung=None):
        n = len(self.calls)
        self.calls.append((genotype_key(genotype), rung))
        options = {} if rung is None else {"rung": rung}
        return (self.bad if n in self.failing else self.ok)(genotype, **options)


def _config(**kw):
    return SearchConfig(training={"model": "genotype", "dataset": "mnist"}, **{**SMALL, **kw})


def _rung_config():
    return SearchConfig(training={"model": "genotype", "dataset": "mnist", "epochs": RUNGS[-1]},
                        generations=2, population=6, offspring=6, seed=5, rungs=RUNGS,
                        promote=0.5)


def _url(run_dir):
    return database_url(None, run_dir)


def _run_id(run_dir):
    return json.loads((run_dir / "run.json").read_text())["run_id"]


def _journal(run_dir):
    """journal_rows of the run in ``run_dir``, with every evaluation's reason."""
    rows, generations = journal_rows(_url(run_dir), _run_id(run_dir))
    with Journal(_url(run_dir), _run_id(run_dir)) as journal:
        reasons = {r.key: r.reason for r in journal.evaluations()}
    return rows, generations, reasons


def _rungs(run_dir):
    """{key: {rung: (generation, status, epochs, accuracy)}} of the run in ``run_dir``."""
    with Journal(_url(run_dir), _run_id(run_dir)) as journal:
        return {k: {r: (x.generation, x.status, x.epochs, x.accuracy) for r, x in v.items()}
                for k, v in journal.rung_records().items()}


# ---------------------------------------------------------------------- the invariant
@pytest.mark.parametrize("status", ["failed", "timeout"])
def test_a_retried_search_ends_as_if_nothing_had_failed(tmp_path, status):
    cfg = _config()
    space = cfg.build_space()
    reference = FailsSome(space)
    ref = run_search(cfg, tmp_path / "ref", evaluator=reference)
    ref_rows, ref_generations, _ = _journal(tmp_path / "ref")

    run = tmp_path / "run"
    run_search(cfg, run, evaluator=FailsSome(space, {7, 9, 15}, status))
    rows, generations, _ = _journal(run)
    failed = {k for k, row in rows.items() if row[1] == status}
    assert len(failed) == 3 and rows != ref_rows
    first = min(rows[k][0] for k in failed)
    assert first == 1  # calls 7 and 9 are of generation 1 (0-5 are the initial population)
    # a candidate's folder left by a failed attempt, one of a later generation, one kept
    folders = {name: key_folder(run / CANDIDATES_DIR, key) for name, key in (
        ("retried", min(failed)),
        ("later", next(k for k, row in rows.items() if row[0] > first)),
        ("kept", next(k for k, row in rows.items() if row[0] < first)))}
    for folder in folders.values():
        folder.mkdir(parents=True)
        (folder / "last.pt").write_text("a checkpoint")

    plan = retry_failed(run)
    assert plan.generation == first and plan.rung is None and plan.rerun == ()
    assert set(plan.retried) == {k for k in failed if rows[k][0] == first}
    assert plan.dropped_generations == len(generations) - first
    assert plan.dropped_evaluations == sum(row[0] > first for row in rows.values())
    assert plan.dropped_rungs == 0
    assert plan.describe() == (
        f"retrying generation 1: {len(plan.retried)} failed candidate(s) to train again; "
        f"dropped {plan.dropped_evaluations} evaluation(s) of later generations and "
        f"{plan.dropped_generations} generation record(s)")
    assert not folders["retried"].exists() and not folders["later"].exists()
    assert (folders["kept"] / "last.pt").exists()
    with Journal(_url(run), _run_id(run)) as journal:
        assert journal.run_info()["status"] == RETRY_PENDING
        assert [g.generation for g in journal.generations()] == list(range(first))
        assert {r.key for r in journal.evaluations()} == {
            k for k, row in rows.items() if row[0] <= first and k not in plan.retried}

    # the SQLite journal was copied whole, before anything was deleted
    assert re.fullmatch(r"journal\.before-retry-\d{8}T\d{6}Z\.sqlite", plan.backup.name)
    assert plan.backup.parent == run
    assert journal_rows(database_url(plan.backup), _run_id(run)) == (rows, generations)

    again = FailsSome(space)
    result = resume(run, evaluator=again)
    got_rows, got_generations, reasons = _journal(run)
    assert got_rows == ref_rows and got_generations == ref_generations
    assert all(reason is None for reason in reasons.values())
    assert result.front_keys == ref.front_keys and result.evaluations == ref.evaluations
    # trained again: the retried candidates and the future that follows from them, only
    later = {k for k, row in ref_rows.items() if row[0] > first}
    assert sorted(k for k, _ in again.calls) == sorted(set(plan.retried) | later)


def test_nothing_failed_changes_nothing(tmp_path):
    cfg = _config(generations=1)
    run = tmp_path / "run"
    run_search(cfg, run, evaluator=FailsSome(cfg.build_space()))
    before = _journal(run)
    with sqlite3.connect(run / "journal.sqlite") as db:
        updated = db.execute("SELECT updated_at FROM nas_runs").fetchall()
    plan = retry_failed(run)
    assert plan == RetryPlan(None) and plan.nothing
    assert plan.describe() == "no failed or timed-out candidate in the journal: nothing to retry"
    assert _journal(run) == before
    with sqlite3.connect(run / "journal.sqlite") as db:
        assert db.execute("SELECT updated_at FROM nas_runs").fetchall() == updated
    assert not list(run.glob("journal.before-retry-*"))
    with Journal(_url(run), _run_id(run)) as journal:
        assert journal.run_info()["status"] == "finished"


def test_a_failure_of_the_initial_population_replays_the_whole_search(tmp_path):
    cfg = _config(generations=2)
    space = cfg.build_space()
    run_search(cfg, tmp_path / "ref", evaluator=FailsSome(space))
    run_search(cfg, tmp_path / "run", evaluator=FailsSome(space, {2}))
    plan = retry_failed(tmp_path / "run")
    assert plan.generation == 0 and len(plan.retried) == 1
    assert plan.dropped_generations == cfg.generations + 1
    resume(tmp_path / "run", evaluator=FailsSome(space))
    assert _journal(tmp_path / "run")[:2] == _journal(tmp_path / "ref")[:2]


def test_a_second_retry_finds_nothing_and_a_driven_run_is_refused(tmp_path):
    cfg = _config(generations=1)
    space = cfg.build_space()
    run = tmp_path / "run"
    run_search(cfg, run, evaluator=FailsSome(space, {8}))
    with Journal(_url(run), _run_id(run)) as journal:
        journal.acquire_lease("elsewhere:1:abcdef", stale_after=60)
        with pytest.raises(RunBusyError, match="is driven by elsewhere:1:abcdef"):
            retry_failed(run)
        assert journal.run_info()["status"] == "finished"  # nothing was touched
        journal.release_lease("elsewhere:1:abcdef")
    assert not retry_failed(run).nothing
    resume(run, evaluator=FailsSome(space))
    assert retry_failed(run).nothing
    with pytest.raises(RunMismatchError, match="not a search run folder"):
        retry_failed(tmp_path / "nothing")


# ---------------------------------------------------------------------- with rungs
# calls 11-21 are generation 1's (11-16 at its first rung, 17-19 at the second, 20-21 at the
# third); a retry that trained the failed candidate only would promote other candidates than
# a search that never failed
@pytest.mark.parametrize(("failing", "status", "rung"), [
    ({17}, "timeout", 1),  # trained at rung 1, its promotion to rung 2 failed
    ({14}, "failed", 0),  # failed at the first rung
])
def test_a_retried_search_with_rungs_ends_as_if_nothing_had_failed(tmp_path, failing, status,
                                                                   rung):
    cfg = _rung_config()
    space = cfg.build_space()
    reference = FailsSome(space, rungs=RUNGS)
    ref = run_search(cfg, tmp_path / "ref", evaluator=reference)
    run = tmp_path / "run"
    run_search(cfg, run, evaluator=FailsSome(space, failing, status, rungs=RUNGS))
    before = _rungs(run)
    assert before != _rungs(tmp_path / "ref")

    plan = retry_failed(run)
    assert plan.generation == 1 and plan.rung == rung and len(plan.retried) == 1
    (retried,) = plan.retried
    assert before[retried][rung][1] == status
    # the candidates that the halving had dropped below that rung keep their results
    kept = {k for k, v in before.items() if v[0][0] == 1 and max(v) < rung}
    assert set(plan.rerun) == {k for k, v in before.items()
                               if v[0][0] == 1 and max(v) >= rung} - {retried}
    assert plan.rerun and (kept or rung == 0)

    again = FailsSome(space, rungs=RUNGS)
    result = resume(run, evaluator=again)
    assert _rungs(run) == _rungs(tmp_path / "ref")
    assert _journal(run) == _journal(tmp_path / "ref")
    assert result.front_keys == ref.front_keys
    # the candidates trained again start from their first rung; those kept are not trained
    trained = {k for k, _ in again.calls}
    assert {(k, 0) for k in [retried, *plan.rerun]} <= set(again.calls)
    assert not trained & kept
    assert len(set(again.calls)) == len(again.calls)


# ---------------------------------------------------------------------- another database
def test_a_retry_in_a_database_of_its_own(tmp_path, journal_url):
    """PostgreSQL: no copy, one transaction; an SQLite file outside the run folder is
    copied into the run folder."""
    cfg = _config(generations=2)
    space = cfg.build_space()
    run_search(cfg, tmp_path / "ref", evaluator=FailsSome(space))
    run = tmp_path / "run"
    result = run_search(cfg, run, db=journal_url, evaluator=FailsSome(space, {7}))
    plan = retry_failed(run, db=journal_url)
    assert plan.generation == 1
    if journal_url.startswith("sqlite"):
        assert plan.backup is not None and plan.backup.parent == run
    else:
        assert plan.backup is None and not list(run.glob("journal.before-retry-*"))
    resume(run, db=journal_url, evaluator=FailsSome(space))
    assert (journal_rows(journal_url, result.run_id)
            == journal_rows(_url(tmp_path / "ref"), _run_id(tmp_path / "ref")))


# ---------------------------------------------------------------------- the command line
def test_search_resume_retry_failed_on_the_command_line(tmp_path, monkeypatch):
    from capslab.cli.main import app

    cfg = _config(generations=2)
    space = cfg.build_space()
    run_search(cfg, tmp_path / "ref", evaluator=FailsSome(space))
    run = tmp_path / "run"
    run_search(cfg, run, evaluator=FailsSome(space, {7, 9}))
    monkeypatch.setattr(SearchConfig, "evaluator",
                        lambda self, run_dir=None: Evaluator(_accuracy, space=self.build_space()))
    runner = CliRunner()
    out = runner.invoke(app, ["search", "resume", str(run), "--retry-failed", "--quiet"])
    assert out.exit_code == 0, out.output
    text = " ".join(out.output.split())
    assert re.search(r"journal copied to \S*journal\.before-retry-\d{8}T\d{6}Z\.sqlite", text)
    assert "retrying generation 1: 2 failed candidate(s) to train again; dropped" in text
    assert _journal(run)[:2] == _journal(tmp_path / "ref")[:2]

    out = runner.invoke(app, ["search", "resume", str(run), "--retry-failed", "--json"])
    assert out.exit_code == 0, out.output
    assert "nothing to retry" in out.output
    assert json.loads(out.stdout)["retry"]["generation"] is None

    out = runner.invoke(app, ["search", "resume", str(tmp_path / "nothing"), "--retry-failed"])
    assert out.exit_code == 2 and "not a search run folder" in out.output
