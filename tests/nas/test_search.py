"""NSGA-II search with a fast fake accuracy and the real hardware model: sorting and crowding on
hand-made fronts, determinism, the journal, resume after a crash, duplicates, failures, workers."""

from __future__ import annotations

import hashlib
import json
import math
import time
from pathlib import Path

import numpy as np
import pytest
from pymoo.operators.survival.rank_and_crowding.metrics import calc_crowding_distance
from pymoo.util.nds.non_dominated_sorting import NonDominatedSorting

from capslab.errors import ConfigError, NonFiniteLossError, RunMismatchError
from capslab.genotype import CAPSNET_GENOTYPE
from capslab.nas.config import SearchConfig
from capslab.nas.evaluate import Evaluator
from capslab.nas.journal import Journal
from capslab.nas.parallel import make_pool
from capslab.nas.problem import CachedEvaluations
from capslab.nas.report import pareto_front
from capslab.nas.schema import FAILED_OBJECTIVES, database_url
from capslab.nas.search import resume, run_search
from capslab.nas.space import SearchSpace, genotype_key, sample

SMALL = dict(generations=4, population=6, offspring=6, seed=3)


def fake_accuracy(genotype, time_limit=None):
    """Deterministic pseudo-accuracy in [0.5, 1) from the genotype alone."""
    h = int(hashlib.sha1(genotype_key(genotype).encode()).hexdigest()[:8], 16)
    return 0.5 + 0.5 * h / 2**32


class Counting:
    """Fake evaluator that counts its calls and can simulate a crash after ``stop_after``."""

    def __init__(self, space, stop_after=None):
        self.inner = Evaluator(fake_accuracy, space=space)
        self.calls = 0
        self.stop_after = stop_after

    def __call__(self, genotype):
        if self.stop_after is not None and self.calls >= self.stop_after:
            raise KeyboardInterrupt("simulated crash")
        self.calls += 1
        return self.inner(genotype)


def _config(**kw):
    return SearchConfig(training={"model": "genotype", "dataset": "mnist"}, **{**SMALL, **kw})


# ---------------------------------------------------------------------- NSGA-II building blocks
def test_non_dominated_sorting_on_a_hand_made_front():
    F = np.array(
        [
            [0.10, 1.0, 1.0, 1.0],  # 0: front 0
            [0.20, 0.5, 1.0, 1.0],  # 1: front 0 (better energy)
            [0.20, 1.0, 1.0, 1.0],  # 2: dominated by 0 and 1 -> front 1
            [0.30, 2.0, 2.0, 2.0],  # 3: dominated by 2 -> front 2
            [0.90, 0.1, 9.0, 9.0],  # 4: best energy -> front 0
        ]
    )
    fronts = NonDominatedSorting().do(F)
    assert [sorted(f.tolist()) for f in fronts] == [[0, 1, 4], [2], [3]]


def test_crowding_distance_by_hand():
    # Front in 2 objectives: (0,4), (1,2), (2,1), (4,0). Ranges are 4 and 4.
    # Middle points: (1,2): (2-0)/4 + (4-1)/4 = 1.25, halved (mean over objectives) = 0.625
    #                (2,1): (4-1)/4 + (2-0)/4 = 1.25 -> 0.625; the extremes are infinite.
    F = np.array([[0.0, 4.0], [1.0, 2.0], [2.0, 1.0], [4.0, 0.0]])
    cd = calc_crowding_distance(F)
    assert np.isinf(cd[0]) and np.isinf(cd[3])
    assert cd[1] == pytest.approx(0.625) and cd[2] == pytest.approx(0.625)
    # An uneven point is less crowded than an even one: (0,4), (3,3.9), (3.5,0.5), (4,0)
    cd = calc_crowding_distance(np.array([[0.0, 4.0], [3.0, 3.9], [3.5, 0.5], [4.0, 0.0]]))
    assert cd[1] == pytest.approx(((3.5 - 0) / 4 + (4 - 0.5) / 4) / 2)
    assert cd[2] == pytest.approx(((4 - 3) / 4 + (3.9 - 0) / 4) / 2)


def test_pareto_front_of_records(tmp_path):
    space = SearchSpace()
    ev = Evaluator(fake_accuracy, space=space)
    rng = np.random.default_rng(0)
    recs = [ev(sample(space, rng)) for _ in range(30)]
    front = pareto_front(recs)
    F = np.array([r.objectives() for r in recs])
    expected = {recs[i].key for i in NonDominatedSorting().do(F, only_non_dominated_front=True)}
    assert {r.key for r in front} == expected
    for r in front:  # nothing in the front is dominated by any record
        f = np.array(r.objectives())
        assert not any(np.all(g <= f) and np.any(g < f) for g in F)


# ---------------------------------------------------------------------- the search
def test_search_is_deterministic_per_seed(tmp_path):
    cfg = _config()
    space = cfg.build_space()
    r1 = run_search(cfg, tmp_path / "a", evaluator=Counting(space))
    r2 = run_search(cfg, tmp_path / "b", evaluator=Counting(space))
    r3 = run_search(_config(seed=4), tmp_path / "c", evaluator=Counting(space))
    assert r1.front_keys == r2.front_keys
    keys1 = [e.key for e in Journal(database_url(None, tmp_path / "a"), r1.run_id).evaluations()]
    keys2 = [e.key for e in Journal(database_url(None, tmp_path / "b"), r2.run_id).evaluations()]
    assert keys1 == keys2
    assert r1.front_keys != r3.front_keys
    assert r1.generations == cfg.generations + 1
    # generation 0 = population, then `generations` offspring batches (fewer if a child was
    # already evaluated in an earlier generation)
    assert cfg.population < r1.evaluations <= cfg.population + cfg.generations * cfg.offspring


def test_resume_after_a_crash_gives_the_same_front(tmp_path):
    cfg = _config()
    space = cfg.build_space()
    full = Counting(space)
    ref = run_search(cfg, tmp_path / "ref", evaluator=full)

    crashing = Counting(space, stop_after=15)  # mid-generation 1 (6 + 6 + ...)
    with pytest.raises(KeyboardInterrupt):
        run_search(cfg, tmp_path / "run", evaluator=crashing)
    journal = Journal(database_url(None, tmp_path / "run"), _run_id(tmp_path / "run"))
    assert journal.count() == 15  # every finished evaluation was journaled
    assert journal.run_info()["status"] == "interrupted"

    again = Counting(space)
    res = resume(tmp_path / "run", evaluator=again)
    assert res.front_keys == ref.front_keys
    assert res.evaluations == ref.evaluations == full.calls
    assert again.calls == full.calls - 15  # nothing finished was repeated
    assert journal.run_info()["status"] == "finished"
    gens = journal.generations()
    assert [g.generation for g in gens] == list(range(cfg.generations + 1))

    # resuming a finished run evaluates nothing and still reports the same front
    idle = Counting(space)
    assert resume(tmp_path / "run", evaluator=idle).front_keys == ref.front_keys
    assert idle.calls == 0


def test_resume_refuses_a_changed_configuration(tmp_path):
    cfg = _config(generations=1)
    run_search(cfg, tmp_path / "run", evaluator=Counting(cfg.build_space()))
    with pytest.raises(RunMismatchError, match="already holds a search; resume it"):
        run_search(cfg, tmp_path / "run", evaluator=Counting(cfg.build_space()))
    import json

    path = tmp_path / "run" / "run.json"
    info = json.loads(path.read_text())
    info["config"]["seed"] = 99
    path.write_text(json.dumps(info))
    with pytest.raises(RunMismatchError, match="does not match"):
        resume(tmp_path / "run", evaluator=Counting(cfg.build_space()))
    with pytest.raises(RunMismatchError, match="not a search run folder"):
        resume(tmp_path / "nothing")


def test_a_search_recorded_before_a_training_field_existed_resumes(tmp_path):
    """The nested training settings follow the same rule as the search's own: a key the
    record lacks matches its default (here ``hflip``, added after searches had been run)."""
    import json
    import sqlite3

    cfg = _config(generations=1)
    crashing = Counting(cfg.build_space(), stop_after=8)
    with pytest.raises(KeyboardInterrupt):
        run_search(cfg, tmp_path / "run", evaluator=crashing)
    path = tmp_path / "run" / "run.json"
    info = json.loads(path.read_text())
    del info["config"]["training"]["hflip"]
    path.write_text(json.dumps(info))
    with sqlite3.connect(tmp_path / "run" / "journal.sqlite") as db:
        (recorded,) = db.execute("SELECT config FROM nas_runs").fetchone()
        older = json.loads(recorded)
        del older["training"]["hflip"]
        db.execute("UPDATE nas_runs SET config = ?", (json.dumps(older),))
    again = Counting(cfg.build_space())
    res = resume(tmp_path / "run", evaluator=again)
    assert again.calls == res.evaluations - 8 > 0

    # a nested field that differs is still another search
    info["config"]["training"]["hflip"] = True
    info["config"]["training"]["augment"] = True
    path.write_text(json.dumps(info))
    with pytest.raises(RunMismatchError, match="does not match"):
        resume(tmp_path / "run", evaluator=Counting(cfg.build_space()))


def _run_id(run_dir):
    import json

    return json.loads((run_dir / "run.json").read_text())["run_id"]


def test_identical_genotypes_are_evaluated_once(tmp_path):
    space = SearchSpace()
    g = sample(space, np.random.default_rng(0))
    twin = space.repair(g)  # equal genes, different object
    assert twin is not g
    journal = Journal(database_url(None, tmp_path), "r")
    journal.create_run(0, {})
    counting = Counting(space)
    cache = CachedEvaluations(counting, journal)
    a, b = cache.get(g), cache.get(twin)
    assert counting.calls == 1 and a.key == b.key and journal.count() == 1
    # a fresh cache over the same journal answers from the database
    assert CachedEvaluations(counting, journal).get(g).accuracy == a.accuracy
    assert counting.calls == 1
    # and a whole search never calls the evaluator twice for one genotype
    cfg = _config(generations=6)
    ev = Counting(cfg.build_space())
    res = run_search(cfg, tmp_path / "s", evaluator=ev)
    assert ev.calls == res.evaluations


# ---------------------------------------------------------------------- failures
def _raises(genotype, time_limit=None):
    raise ValueError("boom")


def _nan(genotype, time_limit=None):
    return float("nan")


def _slow(genotype, time_limit=None):
    time.sleep(2.0)
    return 0.9


def _nan_loss(genotype, time_limit=None):

    raise NonFiniteLossError("loss became nan at epoch 1, step 3")


def _oom(genotype, time_limit=None):
    raise RuntimeError("CUDA out of memory. Tried to allocate 2.00 GiB")


@pytest.mark.parametrize(
    "fn, status, reason",
    [
        (_raises, "failed", "error: ValueError: boom"),
        (_nan, "failed", "nan accuracy"),
        (_slow, "timeout", "time limit"),
        (_nan_loss, "failed", "nan loss"),
        (_oom, "failed", "out of memory"),
    ],
)
def test_failures_are_recorded_with_the_worst_objectives(fn, status, reason):
    space = SearchSpace()
    g = sample(space, np.random.default_rng(1))
    t0 = time.perf_counter()
    rec = Evaluator(fn, space=space, time_limit=0.2)(g)
    assert time.perf_counter() - t0 < 1.5  # the time limit interrupts, it does not wait
    assert rec.status == status and rec.reason.startswith(reason)
    assert rec.accuracy is None and rec.split is None
    assert rec.objectives() == FAILED_OBJECTIVES
    assert rec.energy_mJ is not None  # the hardware figures are still known


def test_time_limit_never_interrupts_an_import(tmp_path, monkeypatch):
    """A limit that expires while a module is being imported must not break the import: torch
    imports sympy lazily under ``except Exception``, and an interrupted import left a half-made
    ``sympy`` that failed every later candidate of the process."""
    (tmp_path / "rb_slow_import.py").write_text(
        "import time\n"
        "try:\n"
        "    time.sleep(0.6)\n"
        "    LOADED = True\n"
        "except Exception:\n"
        "    pass\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))

    def imports_slowly(genotype, time_limit=None):
        import rb_slow_import

        return 0.9 if getattr(rb_slow_import, "LOADED", False) else 0.1

    space = SearchSpace()
    g = sample(space, np.random.default_rng(1))
    rec = Evaluator(imports_slowly, space=space, time_limit=0.2)(g)
    import rb_slow_import

    assert getattr(rb_slow_import, "LOADED", False)  # the import ran to its end
    assert rec.status == "timeout" and rec.reason.startswith("time limit")
    # the next candidate of the same process is unaffected
    assert Evaluator(imports_slowly, space=space, time_limit=5)(g).accuracy == 0.9


def test_prepare_runs_outside_the_time_limit():
    class Prepared:
        prepared = False

        def prepare(self):
            time.sleep(0.5)  # e.g. the first import of torch in a worker
            self.prepared = True

        def __call__(self, genotype, time_limit=None):
            return 0.8

    space = SearchSpace()
    g = sample(space, np.random.default_rng(1))
    fn = Prepared()
    rec = Evaluator(fn, space=space, time_limit=0.3)(g)
    assert fn.prepared
    assert rec.status == "ok" and rec.accuracy == 0.8


def test_invalid_genotype_fails_cleanly():
    space = SearchSpace()
    rec = Evaluator(fake_accuracy, space=space)(CAPSNET_GENOTYPE)  # class layer not 1x1
    assert rec.status == "failed" and rec.reason.startswith("invalid genotype")


def _flaky(genotype, time_limit=None):
    a = fake_accuracy(genotype)
    if a > 0.85:
        raise RuntimeError("simulated crash of this candidate")
    return a


def test_search_goes_on_after_failures(tmp_path):
    cfg = _config()
    res = run_search(cfg, tmp_path / "run", evaluator=Evaluator(_flaky, space=cfg.build_space()))
    recs = Journal(database_url(None, tmp_path / "run"), res.run_id).evaluations()
    failed = [r for r in recs if r.status == "failed"]
    assert failed and len(failed) < len(recs)
    assert all(r.reason.startswith("error: RuntimeError") for r in failed)
    assert all(r.ok for r in res.front)


# ---------------------------------------------------------------------- parallel
def test_worker_processes_reach_the_same_front(tmp_path):
    cfg = _config(generations=2)
    serial = run_search(cfg, tmp_path / "serial", evaluator=Evaluator(fake_accuracy, space=cfg.build_space()))
    parallel = run_search(
        cfg,
        tmp_path / "parallel",
        evaluator=Evaluator(fake_accuracy, space=cfg.build_space()),
        workers=2,
        mp_context="fork",  # spawn is the default; fork keeps this test fast
    )
    assert parallel.front_keys == serial.front_keys
    assert parallel.evaluations == serial.evaluations


def test_ray_missing_is_a_clear_error():
    pytest.importorskip("sqlalchemy")
    try:
        import ray  # noqa: F401
    except ImportError:
        with pytest.raises(ImportError, match=r"pip install 'capslab\[ray\]'"):
            make_pool(Evaluator(fake_accuracy), ray_address="auto")
    else:
        pytest.skip("ray is installed")


def test_journal_rows(tmp_path):
    cfg = _config(generations=1)
    res = run_search(cfg, tmp_path / "run", evaluator=Evaluator(fake_accuracy, space=cfg.build_space()))
    journal = Journal(f"sqlite:///{tmp_path / 'run' / 'journal.sqlite'}", res.run_id)
    rec = journal.evaluations()[0]
    assert rec.generation == 0 and rec.status == "ok" and 0.5 <= rec.accuracy < 1
    assert rec.key == genotype_key(__import__("capslab.genotype").genotype.Genotype.from_nascaps(rec.genotype_nascaps))
    assert rec.genotype["format"] == "capslab-genotype"
    assert rec.started_at is not None and rec.finished_at >= rec.started_at
    assert all(math.isfinite(v) for v in rec.objectives())
    gens = journal.generations()
    assert len(gens) == 2 and len(gens[0].population) == cfg.population
    assert gens[1].rng_state["bit_generator"] == "PCG64"
    assert journal.run_info()["config"]["seed"] == cfg.seed


# ---------------------------------------------------------------------- finalize
def test_finalize_reuses_a_network_only_with_the_same_settings(tmp_path):
    from capslab.nas.report import finalize
    from capslab.results import write_json
    from capslab.train import TrainingSettings

    space = SearchSpace()
    g = sample(space, np.random.default_rng(4))
    rec = Evaluator(fake_accuracy, space=space)(g)
    calls = []

    def fake_train(config, progress=False):
        calls.append(config.epochs)
        summary = {"final_test_accuracy": 0.5 + config.epochs / 100,
                   "best_test_accuracy": 0.9,  # an epoch chosen on the test set: never reported
                   "identity": config.identity(),
                   "history": [{}] * config.epochs, "parameters": 10, "total_seconds": 1.0}
        write_json(f"{config.out}/summary.json", "summary", summary)
        return summary

    one = TrainingSettings(model="genotype", epochs=1)
    finalize([rec], tmp_path, one, train_fn=fake_train, progress=False)
    rows = finalize([rec], tmp_path, one.replace(device="cpu"), train_fn=fake_train, progress=False)
    assert calls == [1] and rows[0]["epochs"] == 1 and rows[0]["accuracy"] == 0.51  # reused
    # other settings: refused, not passed off as the new result nor trained over
    with pytest.raises(RunMismatchError, match=r"other settings \(epochs\)"):
        finalize([rec], tmp_path, one.replace(epochs=3), train_fn=fake_train, progress=False)
    rows = finalize([rec], tmp_path / "three", one.replace(epochs=3), train_fn=fake_train,
                    progress=False)
    assert calls == [1, 3] and rows[0]["epochs"] == 3
    saved = json.loads((tmp_path / "three" / "final.json").read_text())
    assert saved["format"] == "capslab-final" and saved["rows"][0]["name"] == "NASCaps-1"
    assert saved["rows"][0]["accuracy"] == 0.53 and "final epoch" in saved["accuracy_reading"]


def test_finalize_best_trains_the_most_accurate_members_under_their_front_numbers(tmp_path):
    from dataclasses import replace

    from capslab.nas.report import finalize, most_accurate
    from capslab.results import write_json
    from capslab.train import TrainingSettings

    space = SearchSpace()
    rng = np.random.default_rng(5)
    recs = [Evaluator(fake_accuracy, space=space)(sample(space, rng)) for _ in range(4)]
    recs = [replace(r, accuracy=a, energy_mJ=e)
            for r, a, e in zip(recs, (0.7, 0.9, 0.9, 0.8), (1.0, 3.0, 2.0, 1.0), strict=True)]
    assert most_accurate(recs, 2) == [1, 2] and most_accurate(recs, 1) == [2]  # tie: less energy
    assert most_accurate(recs, None) == most_accurate(recs, 9) == [0, 1, 2, 3]
    trained = []

    def fake_train(config, progress=False):
        trained.append((Path(config.out).name, config.eval_weight_bits, config.eval_accelerator,
                        config.eval_final_only))
        summary = {"final_test_accuracy": 0.5, "identity": config.identity(),
                   "history": [{"test_quantized_accuracy": 0.4}], "parameters": 10,
                   "total_seconds": 1.0}
        write_json(f"{config.out}/summary.json", "summary", summary)
        return summary

    rows = finalize(recs, tmp_path, TrainingSettings(model="genotype", epochs=1), best=2,
                    train_fn=fake_train, progress=False, weight_bits=8, accelerator_mode=True)
    assert trained == [("NASCaps-2", 8, True, True), ("NASCaps-3", 8, True, True)]  # test read once
    assert [r["name"] for r in rows] == ["NASCaps-2", "NASCaps-3"]
    assert [r["partial_accuracy"] for r in rows] == [0.9, 0.9]
    assert [r["quantized_accuracy"] for r in rows] == [0.4, 0.4]  # at the search's precision


def test_finalize_members_trains_the_members_named_by_their_front_numbers(tmp_path):
    from capslab.nas.report import finalize, front_members
    from capslab.results import write_json
    from capslab.train import TrainingSettings

    space = SearchSpace()
    rng = np.random.default_rng(6)
    recs = [Evaluator(fake_accuracy, space=space)(sample(space, rng)) for _ in range(4)]
    assert front_members(recs, (4, 1, 1)) == [0, 3]
    with pytest.raises(ConfigError, match=r"the front has members 1-4; 0, 5 named"):
        front_members(recs, (0, 2, 5))
    with pytest.raises(ConfigError, match="no member named"):
        front_members(recs, ())
    trained = []

    def fake_train(config, progress=False):
        trained.append(Path(config.out).name)
        summary = {"final_test_accuracy": 0.5, "identity": config.identity(), "history": [{}]}
        write_json(f"{config.out}/summary.json", "summary", summary)
        return summary

    one = TrainingSettings(model="genotype", epochs=1)
    rows = finalize(recs, tmp_path, one, members=(3, 1), train_fn=fake_train, progress=False)
    assert trained == ["NASCaps-1", "NASCaps-3"] and [r["name"] for r in rows] == trained
    # a later call with more members reuses the ones trained and tables them all
    rows = finalize(recs, tmp_path, one, members=(1, 2, 3), train_fn=fake_train, progress=False)
    assert trained == ["NASCaps-1", "NASCaps-3", "NASCaps-2"] and len(rows) == 3
    with pytest.raises(ConfigError, match="by best or by members, not both"):
        finalize(recs, tmp_path, one, best=1, members=(1,), train_fn=fake_train, progress=False)


def test_front_table_shows_failed_candidates():
    from capslab.cli.search import _front_table

    space = SearchSpace()
    g = sample(space, np.random.default_rng(4))
    rec = Evaluator(_raises, space=space)(g)
    table = _front_table([rec], "front")  # every candidate failed: no crash on missing accuracy
    from rich.console import Console

    console = Console(width=300, record=True)
    console.print(table)
    text = console.export_text()
    assert "failed: error: ValueError: boom" in text


def test_journal_url_without_its_driver_says_what_to_install():
    import importlib.util

    from capslab.nas.journal import Journal

    if importlib.util.find_spec("psycopg") is not None:
        pytest.skip("psycopg is installed here")
    with pytest.raises(ImportError, match="postgresql driver 'psycopg'.*pip install psycopg"):
        Journal("postgresql+psycopg://user:secret@localhost/capslab", "run")


def test_resume_takes_the_workers_the_search_was_started_with(tmp_path, monkeypatch):
    """Candidates sized for one worker time out when two share the cores: a resume without
    --workers keeps the started number; a run.json written before it was recorded gets one."""
    import json

    import capslab.nas.search as search_module

    cfg = _config(generations=1)
    space = cfg.build_space()
    real = search_module.make_pool
    pools = []
    monkeypatch.setattr(search_module, "make_pool",
                        lambda evaluator, workers, *a, **k: pools.append(workers) or real(evaluator, 1, *a, **k))
    run_search(cfg, tmp_path / "run", evaluator=Counting(space), workers=3)
    path = tmp_path / "run" / "run.json"
    assert json.loads(path.read_text())["workers"] == 3
    resume(tmp_path / "run", evaluator=Counting(space))
    resume(tmp_path / "run", evaluator=Counting(space), workers=2)
    info = json.loads(path.read_text())
    del info["workers"]
    path.write_text(json.dumps(info))
    resume(tmp_path / "run", evaluator=Counting(space))
    assert pools == [3, 3, 2, 1]
