"""Multi-fidelity search: the promotion rule on hand-made rungs, the rung time shares, successive
halving inside the search (journal rows per rung, promotions, resume in the middle of a rung)
and the accuracy objective at the accelerator's bit width."""

from __future__ import annotations

import hashlib
import math
import sqlite3

import pytest

from capslab.errors import ConfigError
from capslab.genotype import CAPSNET_GENOTYPE
from capslab.nas.config import SearchConfig
from capslab.nas.evaluate import Evaluator, Score
from capslab.nas.fidelity import (
    check_promote,
    check_rungs,
    promote,
    promotion_count,
    rung_time_limit,
)
from capslab.nas.journal import Journal
from capslab.nas.schema import JOURNAL_VERSION, EvaluationRecord, database_url
from capslab.nas.search import final_record, resume, run_search
from capslab.nas.space import genotype_key

RUNGS = (1, 2, 4)


def _rec(key: str, error: float | None, energy=1.0, memory=1.0, latency=1.0, status="ok"):
    return EvaluationRecord(key=key, genotype_nascaps=[], genotype={}, status=status,
                            accuracy=None if error is None else 1 - error, energy_mJ=energy,
                            memory_KiB=memory, latency_ms=latency)


# ---------------------------------------------------------------------- the rule
def test_rungs_and_fractions_are_checked():
    assert check_rungs([1, 3, 5]) == (1, 3, 5)
    assert check_rungs((5,)) == (5,)
    for bad in ([], [3, 1, 5], [1, 1, 2], [0, 2], [1.5, 2], [True, 2]):
        with pytest.raises(ConfigError, match="rungs"):
            check_rungs(bad)
    assert check_promote(1) == 1.0
    for bad in (0, -0.5, 1.01, float("nan")):
        with pytest.raises(ConfigError, match=r"promote must be a fraction in \(0, 1\]"):
            check_promote(bad)


@pytest.mark.parametrize(("n", "fraction", "kept"), [
    (10, 0.5, 5), (5, 0.5, 3), (3, 0.5, 2), (1, 0.5, 1), (10, 0.3, 3), (7, 1.0, 7),
    (10, 0.01, 1), (0, 0.5, 0),
])
def test_promotion_count_is_the_rounded_up_share(n, fraction, kept):
    assert promotion_count(n, fraction) == kept


def test_promotion_takes_whole_fronts_first():
    # A and C are non-dominated; B is dominated by A only; E by A, B and C; D failed
    records = [
        _rec("B", 0.20, 2, 2, 2), _rec("A", 0.10, 1, 1, 1), _rec("E", 0.30, 3, 3, 3),
        _rec("C", 0.05, 3, 3, 3), _rec("D", None, status="failed"),
    ]
    assert sorted(promote(records, 0.5)) == ["A", "C"]  # ceil(0.5 x 4 ok) = 2: the first front
    assert sorted(promote(records, 0.75)) == ["A", "B", "C"]  # the second front fits
    assert sorted(promote(records, 1.0)) == ["A", "B", "C", "E"]  # a failure never continues
    assert promote(records, 0.01) in (["A"], ["C"])


def test_promotion_splits_a_front_by_crowding_distance():
    # one front of five along a line: the two ends are infinitely uncrowded, then the point
    # farthest from its neighbours (Q3, whose neighbours are both 0.2 away)
    line = [_rec("Q1", 0.10, 5), _rec("Q2", 0.15, 4.5), _rec("Q3", 0.30, 3),
            _rec("Q4", 0.45, 1.5), _rec("Q5", 0.50, 1)]
    assert sorted(promote(line, 0.4)) == ["Q1", "Q5"]
    assert sorted(promote(line, 0.6)) == ["Q1", "Q3", "Q5"]
    # ties (all four points equally spaced, the inner two equally crowded) break by key
    even = [_rec(k, e, 1 - e) for k, e in (("z", 0.1), ("y", 0.2), ("x", 0.3), ("w", 0.4))]
    assert sorted(promote(even, 0.75)) == ["w", "x", "z"]


def test_promotion_does_not_depend_on_the_order_of_the_records():
    records = [_rec(f"k{i}", 0.01 * ((7 * i) % 11), 1 + (3 * i) % 5, 1 + i % 3) for i in range(11)]
    first = promote(records, 0.5)
    assert len(first) == 6
    assert promote(list(reversed(records)), 0.5) == first


def test_rung_time_limits_share_the_candidate_budget():
    assert [rung_time_limit(300, (1, 3, 5), r) for r in range(3)] == [60, 120, 120]
    assert rung_time_limit(1000, (1, 3, 5), 0) == 200
    # never more than the whole budget, all rungs together (a floor of 60 s each used to
    # give 30 s to every rung of a 30 s budget: 90 s in all)
    assert [rung_time_limit(30, (1, 3, 5), r) for r in range(3)] == pytest.approx([10, 10, 10])
    assert rung_time_limit(45, (5,), 0) == 45
    assert rung_time_limit(None, (1, 3, 5), 1) is None


def test_final_record_sums_the_rungs_seconds():
    r0 = EvaluationRecord(key="k", genotype_nascaps=[], genotype={}, status="ok", accuracy=0.5,
                          seconds=2.0, epochs=1)
    r1 = EvaluationRecord(key="k", genotype_nascaps=[], genotype={}, status="ok", accuracy=0.7,
                          seconds=3.0, epochs=3)
    final = final_record({0: r0, 1: r1})
    assert (final.accuracy, final.epochs, final.seconds) == (0.7, 3, 5.0)
    # out of time at the second rung: the first rung's accuracy stands, the reason says why
    late = EvaluationRecord(key="k", genotype_nascaps=[], genotype={}, status="timeout",
                            reason="time limit: 60 s", seconds=60.0, epochs=3)
    final = final_record({0: r0, 1: late})
    assert (final.status, final.accuracy, final.epochs, final.seconds) == ("ok", 0.5, 1, 62.0)
    assert final.reason == "rung 2 timeout: time limit: 60 s"
    failed_first = final_record({0: late})
    assert failed_first.status == "timeout" and failed_first.accuracy is None


# ---------------------------------------------------------------------- inside the search
def _fake(genotype, time_limit=None, epochs=None):
    """An accuracy that grows with the epochs, from the genotype alone."""
    h = int(hashlib.sha1(genotype_key(genotype).encode()).hexdigest()[:8], 16) / 2**32
    return Score(min(0.99, 0.3 + 0.4 * h + 0.05 * epochs), epochs=epochs)


class RungCounter:
    """Counts the evaluator's calls per rung and can simulate a crash on call ``crash_at``."""

    def __init__(self, space, crash_at=None):
        self.inner = Evaluator(_fake, space=space, rungs=RUNGS)
        self.calls: list[tuple[str, int]] = []
        self.crash_at = crash_at

    def __call__(self, genotype, rung=None):
        if self.crash_at is not None and len(self.calls) == self.crash_at:
            raise KeyboardInterrupt("simulated crash")
        self.calls.append((genotype_key(genotype), rung))
        return self.inner(genotype, rung=rung)


def _config(**kw):
    return SearchConfig(training={"model": "genotype", "dataset": "mnist", "epochs": RUNGS[-1]},
                        generations=2, population=6, offspring=6, seed=5, rungs=RUNGS,
                        promote=0.5, **kw)


def _rungs_of(run_dir, run_id):
    with Journal(database_url(None, run_dir), run_id) as journal:
        return journal.rung_records(), journal.evaluations(), journal.generations()


def test_each_generation_halves_its_new_candidates(tmp_path):
    cfg = _config()
    evaluator = RungCounter(cfg.build_space())
    result = run_search(cfg, tmp_path / "run", evaluator=evaluator)
    rungs, evaluations, generations = _rungs_of(tmp_path / "run", result.run_id)
    assert len(generations) == 3
    for gen in range(3):
        new = [r for r in evaluations if r.generation == gen]
        n = len(new)
        assert n >= 1
        per_rung = [sum(1 for r in new if i in rungs[r.key]) for i in range(3)]
        expected = [n, promotion_count(n, 0.5), promotion_count(promotion_count(n, 0.5), 0.5)]
        assert per_rung == expected
        # the ones that continued are exactly those the rule picks from the journaled rung
        for i in range(2):
            entered = [rungs[r.key][i] for r in new if i in rungs[r.key]]
            continued = sorted(r.key for r in new if i + 1 in rungs[r.key])
            assert continued == sorted(promote(entered, 0.5))
        for r in new:  # the objectives are the last rung's
            last = max(rungs[r.key])
            assert r.epochs == RUNGS[last]
            assert r.accuracy == rungs[r.key][last].accuracy
            assert math.isclose(r.seconds, sum(x.seconds for x in rungs[r.key].values()))
    assert len(evaluator.calls) == sum(len(v) for v in rungs.values())
    assert len(set(evaluator.calls)) == len(evaluator.calls)  # nothing was trained twice


@pytest.mark.parametrize("crash_at", [3, 8, 10, 17])
def test_resume_in_the_middle_of_a_rung_loses_nothing(tmp_path, crash_at):
    cfg = _config()
    space = cfg.build_space()
    reference = RungCounter(space)
    ref = run_search(cfg, tmp_path / "ref", evaluator=reference)

    crashing = RungCounter(space, crash_at=crash_at)
    with pytest.raises(KeyboardInterrupt):
        run_search(cfg, tmp_path / "run", evaluator=crashing)
    again = RungCounter(space)
    res = resume(tmp_path / "run", evaluator=again)

    assert res.front_keys == ref.front_keys
    assert crashing.calls + again.calls == reference.calls  # each (candidate, rung) once
    ref_rungs, ref_evals, _ = _rungs_of(tmp_path / "ref", ref.run_id)
    got_rungs, got_evals, _ = _rungs_of(tmp_path / "run", res.run_id)
    assert {k: sorted(v) for k, v in got_rungs.items()} == {k: sorted(v) for k, v in ref_rungs.items()}
    assert ({r.key: (r.generation, r.epochs, r.accuracy) for r in got_evals}
            == {r.key: (r.generation, r.epochs, r.accuracy) for r in ref_evals})


def test_the_paper_mode_has_no_rungs(tmp_path):
    cfg = SearchConfig(training={"model": "genotype", "dataset": "mnist"}, generations=1,
                       population=4, offspring=4)
    calls = []

    def evaluator(genotype, **options):
        calls.append(options)
        return Evaluator(lambda g, t=None: 0.8, space=cfg.build_space())(genotype)

    result = run_search(cfg, tmp_path / "run", evaluator=evaluator)
    rungs, evaluations, _ = _rungs_of(tmp_path / "run", result.run_id)
    assert rungs == {} and calls and all(c == {} for c in calls)
    assert all(r.epochs is None for r in evaluations)


def test_search_settings_refuse_bad_rungs_and_bits():
    base = {"model": "genotype", "dataset": "mnist", "epochs": 5}
    with pytest.raises(ConfigError, match="strictly increasing"):
        SearchConfig(training=base, rungs=(3, 1, 5))
    with pytest.raises(ConfigError, match=r"last rung \(3 epochs\).*training.epochs = 5"):
        SearchConfig(training=base, rungs=(1, 3))
    with pytest.raises(ConfigError, match="promote"):
        SearchConfig(training=base, rungs=(1, 5), promote=0)
    with pytest.raises(ConfigError, match="from 2 to 16"):
        SearchConfig(training=base, accuracy_bits=1)
    with pytest.raises(ConfigError, match="accuracy_bits 4 disagrees.*CapsAcc stores 8-bit"):
        SearchConfig(training=base, accuracy_bits=4)
    four = SearchConfig(training=base, accuracy_bits=4, accelerator={"weight_bits": 4, "name": "a4"})
    assert four.accelerator_model().weight_bits == 4
    # the memory objective counts the weights at the accelerator's width: half of 8 bits
    eight = SearchConfig(training=base, accuracy_bits=8)
    m4 = four.evaluator("unused").hardware(CAPSNET_GENOTYPE)[1]
    m8 = eight.evaluator("unused").hardware(CAPSNET_GENOTYPE)[1]
    assert m4 == pytest.approx(m8 / 2, rel=1e-3)


def test_a_journal_of_format_2_is_upgraded(tmp_path):
    cfg = SearchConfig(training={"model": "genotype", "dataset": "mnist"}, generations=1,
                       population=4, offspring=4)
    result = run_search(cfg, tmp_path / "run",
                        evaluator=Evaluator(lambda g, t=None: 0.8, space=cfg.build_space()))
    path = tmp_path / "run" / "journal.sqlite"
    with sqlite3.connect(path) as db:  # make it what format 2 wrote
        db.execute("DROP TABLE nas_rungs")
        db.execute("ALTER TABLE nas_evaluations DROP COLUMN epochs")
        db.execute("ALTER TABLE nas_evaluations DROP COLUMN float_accuracy")
        db.execute("ALTER TABLE nas_evaluations DROP COLUMN train_activation_KiB")  # format 4's
        db.execute("ALTER TABLE nas_evaluations DROP COLUMN train_GFLOP")
        db.execute("UPDATE capslab_meta SET value = '2' WHERE key = 'version'")
        # and its config: without the keys format 3 added
    with Journal(database_url(path), result.run_id) as journal:
        assert journal.version() == JOURNAL_VERSION == 4
        records = journal.evaluations()
        assert len(records) == result.evaluations and all(r.epochs is None for r in records)
        assert journal.rung_records() == {}
    recorded = {k: v for k, v in cfg.identity().items()
                if k not in ("rungs", "promote", "accuracy_bits", "accelerator")}
    assert cfg.identity_matches(recorded)
    assert not _config().identity_matches(recorded)  # a config with rungs is another search


def test_a_journal_of_format_3_gains_the_training_cost_columns(tmp_path):
    cfg = SearchConfig(training={"model": "genotype", "dataset": "mnist", "epochs": 2},
                       generations=1, population=4, offspring=4, rungs=(1, 2))
    result = run_search(cfg, tmp_path / "run",
                        evaluator=Evaluator(lambda g, t=None, epochs=None: 0.8,
                                            space=cfg.build_space(), rungs=cfg.rungs))
    path = tmp_path / "run" / "journal.sqlite"
    with sqlite3.connect(path) as db:  # make it what format 3 wrote
        for table in ("nas_evaluations", "nas_rungs"):
            db.execute(f"ALTER TABLE {table} DROP COLUMN train_activation_KiB")
            db.execute(f"ALTER TABLE {table} DROP COLUMN train_GFLOP")
        db.execute("UPDATE capslab_meta SET value = '3' WHERE key = 'version'")
    with Journal(database_url(path), result.run_id) as journal:
        assert journal.version() == 4
        records = journal.evaluations()
        assert len(records) == result.evaluations
        assert all(r.train_activation_KiB is None for r in records)
        assert journal.rung_records()  # the rungs read back with the new columns


def test_rung_time_limits_never_add_up_to_more_than_the_budget():
    from hypothesis import given
    from hypothesis import strategies as st

    from capslab.nas.fidelity import MIN_RUNG_SECONDS, rung_time_limits

    assert rung_time_limits(300, (1, 10)) == [60, 240]  # the floor is paid by the other rung
    assert rung_time_limits(100, (1, 3, 5)) == pytest.approx([100 / 3] * 3)

    @given(st.lists(st.integers(1, 20), min_size=1, max_size=6, unique=True),
           st.floats(1, 5000))
    def check(epochs, budget):
        rungs = tuple(sorted(epochs))
        limits = rung_time_limits(budget, rungs)
        assert sum(limits) == pytest.approx(budget)
        floor = min(MIN_RUNG_SECONDS, budget / len(rungs))
        assert all(v >= floor - 1e-9 for v in limits)

    check()


def test_the_front_marks_low_fidelity_candidates(tmp_path):
    import json

    from capslab.nas.report import full_fidelity, write_report

    cfg = _config()
    result = run_search(cfg, tmp_path / "run", evaluator=RungCounter(cfg.build_space()))
    _, evaluations, _ = _rungs_of(tmp_path / "run", result.run_id)
    low = [r for r in evaluations if r.epochs < RUNGS[-1]]
    assert low and all(not full_fidelity(r, evaluations) for r in low)
    assert all(full_fidelity(r, evaluations) for r in evaluations if r.epochs == RUNGS[-1])
    write_report(evaluations, tmp_path / "report")
    front = json.loads((tmp_path / "report" / "pareto.json").read_text())["front"]
    assert front and all(item["full_fidelity"] == (item["epochs"] == RUNGS[-1]) for item in front)
