"""The search at real scale: candidates scored on a validation split (the test split never
touched), a time budget per candidate, timeouts recorded as such, busy workers and their
utilisation, the search-wide ``max_time`` and resuming after it. Fake accuracies and tiny
networks keep every test within seconds."""

from __future__ import annotations

import json
import socket
import time
from datetime import UTC, datetime

import numpy as np
import pytest
from typer.testing import CliRunner

from capslab.errors import ConfigError, MissingDependencyError, RunMismatchError
from capslab.nas.config import SearchConfig, default_val_size
from capslab.nas.evaluate import (
    BUDGET_CEILING_S,
    BUDGET_FLOOR_S,
    Evaluator,
    TrainedAccuracy,
    candidate_budget,
    default_time_limit,
)
from capslab.nas.journal import Journal
from capslab.nas.parallel import ProcessPool, busy_seconds, overall_utilisation, utilisation
from capslab.nas.schema import FAILED_OBJECTIVES, GenerationTiming, database_url, meta_table
from capslab.nas.search import STOPPED_MAX_TIME, expected_cost, resume, run_search
from capslab.nas.space import SearchSpace, genotype_key, sample
from capslab.train import TrainingSettings
from tests.nas.conftest import FakeAccuracy, fake_accuracy_of

SMALL = dict(generations=3, population=6, offspring=6, seed=3)


def _config(**kw) -> SearchConfig:
    return SearchConfig(training={"model": "genotype", "dataset": "mnist"}, **{**SMALL, **kw})


class Recording:
    """An evaluator (fake accuracy after ``seconds``) that records when each call started."""

    def __init__(self, space, seconds: float = 0.0, time_limit: float | None = None):
        self.inner = Evaluator(FakeAccuracy(seconds), space=space, time_limit=time_limit)
        self.starts: list[float] = []
        self.keys: list[str] = []

    def __call__(self, genotype):
        self.starts.append(time.monotonic())
        self.keys.append(genotype_key(genotype))
        return self.inner(genotype)


def _run_id(run_dir) -> str:
    return json.loads((run_dir / "run.json").read_text())["run_id"]


def _journal(run_dir) -> Journal:
    return Journal(database_url(None, run_dir), _run_id(run_dir))


# ---------------------------------------------------------------------- utilisation
def test_utilisation_of_a_hand_made_timeline():
    # two workers over [0, 10]: one busy all along, the other 0-4 s -> (10 + 4) / 20
    assert utilisation([(0, 10), (0, 4)], 2, 0, 10) == pytest.approx(0.7)
    # spans are clipped to the window: only 3 s of (-2, 3) and 2 s of (8, 12) count
    assert busy_seconds([(-2, 3), (8, 12)], 0, 10) == pytest.approx(5.0)
    assert utilisation([(-2, 3), (8, 12)], 1, 0, 10) == pytest.approx(0.5)
    # a span wholly outside counts nothing; an idle window is 0; an empty window has none
    assert utilisation([(11, 12)], 2, 0, 10) == 0.0
    assert utilisation([], 4, 0, 10) == 0.0
    assert utilisation([(0, 1)], 2, 5, 5) is None
    # a generation each: 14 busy of 20 worker-seconds, then 3 of 6 -> 17 / 26 overall
    timings = [GenerationTiming(2, 10.0, 14.0), None, GenerationTiming(3, 2.0, 3.0)]
    assert timings[0].utilisation == pytest.approx(0.7)
    assert overall_utilisation(timings) == pytest.approx(17 / 26)
    assert overall_utilisation([]) is None


class Durations:
    """Fake accuracy after 2 s for the genotype ``slow`` (a key), 0.2 s for any other."""

    def __init__(self, slow: str):
        self.slow = slow

    def __call__(self, genotype, time_limit=None):
        time.sleep(2.0 if genotype_key(genotype) == self.slow else 0.2)
        return fake_accuracy_of(genotype_key(genotype))


def test_the_pool_starts_the_next_candidate_as_soon_as_a_worker_is_free():
    """One long candidate does not hold up the short ones: with two workers the four short
    ones run one after another beside it and are all done before it."""
    space = SearchSpace()
    rng = np.random.default_rng(0)
    genotypes = [sample(space, rng) for _ in range(5)]
    long_key = genotype_key(genotypes[0])
    with ProcessPool(Evaluator(Durations(long_key), space=space), 2, mp_context="fork") as pool:
        started = datetime.now(UTC).timestamp()
        done = [rec for _, rec in pool.evaluate(genotypes)]
        ended = datetime.now(UTC).timestamp()
    assert [r.key for r in done][-1] == long_key  # every short one came back first
    assert all(r.ok for r in done)
    spans = [(r.started_at.timestamp(), r.finished_at.timestamp()) for r in done]
    assert utilisation(spans, 2, started, ended) > 0.5  # idle only while the pool starts


def test_a_pool_starts_nothing_once_told_to_stop_and_finishes_what_runs():
    space = SearchSpace()
    rng = np.random.default_rng(1)
    genotypes = [sample(space, rng) for _ in range(6)]
    cap = time.monotonic() + 0.1
    with ProcessPool(Evaluator(FakeAccuracy(0.5), space=space), 2, mp_context="fork") as pool:
        done = [rec for _, rec in pool.evaluate(genotypes, stop=lambda: time.monotonic() >= cap)]
    assert len(done) == 2 and all(r.ok for r in done)  # the two running ones, no more
    assert {r.key for r in done} == {genotype_key(g) for g in genotypes[:2]}


# ---------------------------------------------------------------------- time budget
def test_the_default_time_budget_formula():
    # 30 s + 3 x epochs x (training images + 0.35 x validation images) x seconds per image
    assert candidate_budget(1, 500, 100, 0.04) == pytest.approx(30 + 3 * (500 + 35) * 0.04)
    assert candidate_budget(2, 500, 100, 0.04) == pytest.approx(30 + 3 * 2 * (500 + 35) * 0.04)
    # larger images cost more by their area (CIFAR-10's 32 x 32 against MNIST's 28 x 28)
    assert candidate_budget(1, 5000, 0, 0.04, 32 * 32) == pytest.approx(
        30 + 3 * 5000 * 0.04 * 1024 / 784)
    assert candidate_budget(1, 10, 0, 0.04) == BUDGET_FLOOR_S  # never below the floor
    assert candidate_budget(50, 60000, 0, 0.04) == BUDGET_CEILING_S  # nor above the ceiling
    cpu = TrainingSettings(model="genotype", epochs=1, subset=500, val_size=100, device="cpu")
    assert default_time_limit(cpu) == pytest.approx(94.2)
    # the paper's MNIST setting on a GPU: about the authors' 300 s
    gpu = TrainingSettings(model="genotype", epochs=5, val_size=5000, device="cuda")
    assert default_time_limit(gpu) == pytest.approx(300, abs=5)


def test_a_search_gets_a_validation_split_and_a_time_budget_by_default():
    cfg = SearchConfig(training={"model": "genotype", "dataset": "mnist", "epochs": 1,
                                 "subset": 500, "device": "cpu"})
    assert cfg.training.val_size == 100 == default_val_size(cfg.training)  # 20 % of 500
    assert cfg.time_limit == pytest.approx(94.2)
    assert cfg.evaluator().time_limit == pytest.approx(94.2)
    assert cfg.evaluator().accuracy_fn.split == "val"
    full = SearchConfig(training={"model": "genotype", "dataset": "mnist"})
    assert full.training.val_size == 5000  # 20 % of 60,000 capped at 5,000
    tiny = SearchConfig(training={"model": "genotype", "dataset": "mnist", "subset": 20})
    assert tiny.training.val_size == 10  # at least one image per class
    given = SearchConfig(training={"model": "genotype", "dataset": "mnist", "val_size": 300},
                         time_limit=12)
    assert (given.training.val_size, given.time_limit) == (300, 12)
    assert _config(time_limit=0).evaluator().time_limit is None  # 0: no limit
    with pytest.raises(ConfigError, match="time_limit must be >= 0"):
        _config(time_limit=-1)
    # resolved once: what run.json stores is what a resume rebuilds
    assert SearchConfig.from_dict(cfg.to_dict()).identity() == cfg.identity()


def _sleeps_when_unlucky(genotype, time_limit=None):
    accuracy = fake_accuracy_of(genotype_key(genotype))
    if accuracy > 0.8:
        time.sleep(5.0)  # far over the budget below: stopped by the timer
    return accuracy


def test_a_candidate_over_its_budget_is_a_timeout_and_the_search_finishes(tmp_path):
    cfg = _config(generations=2)
    t0 = time.monotonic()
    result = run_search(cfg, tmp_path / "run",
                        evaluator=Evaluator(_sleeps_when_unlucky, space=cfg.build_space(),
                                            time_limit=0.2))
    assert time.monotonic() - t0 < 30  # no candidate ran its 5 s
    records = _journal(tmp_path / "run").evaluations()
    timeouts = [r for r in records if r.status == "timeout"]
    assert timeouts and len(timeouts) < len(records)
    for r in timeouts:
        assert fake_accuracy_of(r.key) > 0.8 and r.reason.startswith("time limit")
        assert r.accuracy is None and r.objectives() == FAILED_OBJECTIVES
        assert r.seconds < 2
    assert all(r.ok for r in records if fake_accuracy_of(r.key) <= 0.8)
    assert result.stopped is None and result.generations == cfg.generations + 1
    assert _journal(tmp_path / "run").run_info()["status"] == "finished"
    assert result.front and all(r.ok for r in result.front)


# ---------------------------------------------------------------------- scheduling
def test_candidates_start_longest_first_and_the_workers_time_is_journaled(tmp_path):
    cfg = _config()
    ev = Recording(cfg.build_space())
    result = run_search(cfg, tmp_path / "run", evaluator=ev)
    journal = _journal(tmp_path / "run")
    by_key = {r.key: r for r in journal.evaluations()}
    for gen in range(cfg.generations + 1):
        costs = [expected_cost(_genotype(by_key[k])) for k in ev.keys
                 if by_key[k].generation == gen]
        assert costs == sorted(costs, reverse=True)  # longest expected first
    generations = journal.generations()
    for g in generations:
        t = g.timing
        assert t is not None and t.workers == 1 and 0 < t.busy_seconds <= t.wall_seconds
        assert 0 < t.utilisation <= 1
    assert result.timings.keys() == {g.generation for g in generations}
    assert 0 < result.utilisation <= 1
    assert result.utilisation == pytest.approx(overall_utilisation(g.timing for g in generations))


def _genotype(record):
    from capslab.genotype import Genotype

    return Genotype.from_nascaps(record.genotype_nascaps)


# ---------------------------------------------------------------------- max_time
def test_max_time_stops_cleanly_and_resume_ends_on_the_same_front(tmp_path):
    cfg = _config()
    space = cfg.build_space()
    reference_ev = Recording(space)
    reference = run_search(cfg, tmp_path / "reference", evaluator=reference_ev)

    ev = Recording(space, seconds=0.1)
    t0 = time.monotonic()
    stopped = run_search(cfg, tmp_path / "run", evaluator=ev, max_time=1.0)
    assert stopped.stopped == STOPPED_MAX_TIME
    assert 0 < len(ev.starts) < len(reference_ev.starts)
    assert max(ev.starts) < t0 + 1.0 + 0.1  # no candidate started after the cap
    journal = _journal(tmp_path / "run")
    assert journal.run_info()["status"] == STOPPED_MAX_TIME
    assert journal.count() == len(ev.starts)  # every finished evaluation was journaled
    assert len(journal.generations()) == stopped.generations < cfg.generations + 1

    again = Recording(space)
    done = resume(tmp_path / "run", evaluator=again)  # no cap this time
    assert done.stopped is None and journal.run_info()["status"] == "finished"
    assert done.front_keys == reference.front_keys
    assert done.evaluations == reference.evaluations == len(ev.starts) + len(again.starts)
    assert not set(ev.keys) & set(again.keys)  # nothing finished was evaluated again


def test_max_time_must_be_positive(tmp_path):
    cfg = _config()
    with pytest.raises(ConfigError, match="max_time must be positive"):
        run_search(cfg, tmp_path / "run", evaluator=Recording(cfg.build_space()), max_time=0)
    assert not (tmp_path / "run").exists()


# ---------------------------------------------------------------------- the validation split
def test_the_journal_records_the_split_of_the_run_and_of_each_accuracy(tmp_path):
    class ValAccuracy(FakeAccuracy):
        split = "val"

    cfg = SearchConfig(training={"model": "genotype", "dataset": "mnist", "subset": 400,
                                 "seed": 5}, generations=0, population=4)
    run_search(cfg, tmp_path / "run", evaluator=Evaluator(ValAccuracy(), space=cfg.build_space()))
    journal = _journal(tmp_path / "run")
    split = journal.run_info()["data_split"]
    assert split["accuracy_on"] == "val" and split["val_size"] == 80 and split["seed"] == 5
    assert split["subset"] == 400 and split["stratified"] is True
    assert {r.split for r in journal.evaluations()} == {"val"}


SMALL_SPACE = {"conv_layers": [2, 2], "kernels": [3], "strides": [2], "channels": [4, 4],
               "capsules": [4, 4], "conv_channel_exponents": [3, 3], "caps_layers": [2, 2],
               "families": ["sabour"], "resizes": [1], "class_dim": 8}


def test_trained_accuracy_is_the_validation_accuracy_and_never_reads_the_test_split(
        mnist_root, monkeypatch):
    import capslab.train.loop as trainer

    read, evaluated, summaries = [], [], []
    real_load, real_evaluate, real_train = trainer.load_dataset, trainer.evaluate, trainer.train

    def load(name, split, **kw):
        read.append(split)
        return real_load(name, split, **kw)

    def evaluate(model, loader, *args, **kw):
        evaluated.append(loader.dataset.split)
        return real_evaluate(model, loader, *args, **kw)

    def train(config, **kw):
        summaries.append(real_train(config, **kw))
        return summaries[-1]

    monkeypatch.setattr(trainer, "load_dataset", load)
    monkeypatch.setattr(trainer, "evaluate", evaluate)
    monkeypatch.setattr("capslab.train.train", train)
    training = TrainingSettings(model="genotype", dataset="mnist", epochs=1, subset=100,
                                val_size=50, batch_size=25, lr=3e-3, device="cpu", seed=0)
    space = SearchSpace.for_dataset("mnist", **SMALL_SPACE)
    genotype = sample(space, np.random.default_rng(0))
    record = Evaluator(TrainedAccuracy(training), space=space)(genotype)
    assert record.status == "ok", record.reason
    assert read == ["train"] and evaluated == ["val"]  # the test split was never touched
    assert record.split == "val"
    assert record.accuracy == summaries[0]["best_val_accuracy"]
    assert summaries[0]["val_size"] == 50 and summaries[0]["train_size"] == 100


# ---------------------------------------------------------------------- journal format, folders
def test_a_journal_of_the_previous_format_is_refused_in_one_line(tmp_path):
    from sqlalchemy import update

    url = f"sqlite:///{tmp_path / 'journal.sqlite'}"
    journal = Journal(url, "r")
    with journal.engine.begin() as conn:
        conn.execute(update(meta_table).values(value="1"))
    journal.close()
    with pytest.raises(RunMismatchError, match="has format 1, older than this CapsLab reads") as err:
        Journal(url, "r")
    assert "\n" not in str(err.value)


def test_a_refused_ray_address_leaves_no_run_folder(tmp_path):
    with socket.socket() as s:  # a port where nothing listens
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    cfg = _config()
    with pytest.raises((ConfigError, MissingDependencyError)):
        run_search(cfg, tmp_path / "run", evaluator=Recording(cfg.build_space()),
                   ray_address=f"127.0.0.1:{port}")
    assert not (tmp_path / "run").exists()


# ---------------------------------------------------------------------- command line
@pytest.fixture
def fake_cli(monkeypatch):
    """``capslab`` whose candidates get a fake accuracy after 0.1 s (no dataset read)."""
    import capslab.nas.config as config
    import capslab.nas.search as search
    from capslab.cli.main import app

    def evaluator(config, run_dir=None):
        return Evaluator(FakeAccuracy(0.1), space=config.build_space())

    monkeypatch.setattr(config.SearchConfig, "evaluator", evaluator)
    monkeypatch.setattr(search, "require_files", lambda *a, **k: None)
    runner = CliRunner()
    return lambda *args: runner.invoke(app, list(args))


SEARCH = ("search", "run", "--dataset", "mnist", "--generations", "3", "--population", "4",
          "--offspring", "4", "--epochs", "1", "--subset", "500", "--workers", "1", "--json")


def test_command_line_max_time_resume_and_report(fake_cli, tmp_path):
    out = str(tmp_path / "run")
    res = fake_cli(*SEARCH, "--out", out, "--max-time", "0.6", "--val-size", "50",
                   "--candidate-time-limit", "40")
    assert res.exit_code == 0, res.output
    stopped = json.loads(res.stdout)
    assert stopped["status"] == STOPPED_MAX_TIME and stopped["evaluated_now"] > 0
    info = json.loads((tmp_path / "run" / "run.json").read_text())["config"]
    assert info["training"]["val_size"] == 50 and info["time_limit"] == 40

    res = fake_cli("search", "resume", out, "--workers", "1", "--json")
    assert res.exit_code == 0, res.output
    done = json.loads(res.stdout)
    assert done["status"] == "finished" and done["generations"] == 4
    assert done["evaluations"] == stopped["evaluated_now"] + done["evaluated_now"]
    assert 0 < done["utilisation"] <= 1

    res = fake_cli("search", "report", out, "--json")
    assert res.exit_code == 0, res.output
    report = json.loads(res.stdout)
    assert report["status"] == "finished" and report["data_split"]["val_size"] == 50
    assert report["workers"]["generations"] == 4 and 0 < report["workers"]["utilisation"] <= 1
    rows = (tmp_path / "run" / "report" / "generations.csv").read_text().splitlines()
    assert rows[0].startswith("generation,offspring,evaluations,workers") and len(rows) == 5


@pytest.mark.parametrize("option, message", [
    (("--max-time", "-5"), "max_time must be positive"),
    (("--val-size", "0"), "val_size must be a positive number"),
    (("--val-size", "60000"), "leaves no training image"),
    (("--time-limit", "-1"), "time_limit must be >= 0"),
    (("--rungs", "3,1,5"), "rungs must be strictly increasing epoch counts, got 3,1,5"),
    (("--rungs", "1,x"), "--rungs: 'x' is not a whole number of epochs"),
    (("--rungs", "1,3", "--epochs", "5"), "the last rung (3 epochs) must be"),
    (("--rungs", "1,3", "--promote", "0"), "promote must be a fraction in (0, 1], got 0.0"),
    (("--rungs", "1,3", "--promote", "1.5"), "promote must be a fraction in (0, 1]"),
    (("--accuracy-bits", "1"), "accuracy_bits must be an integer from 2 to 16, got 1"),
    (("--accuracy-bits", "17"), "accuracy_bits must be an integer from 2 to 16, got 17"),
    (("--accuracy-bits", "4"), "accuracy_bits 4 disagrees with the accelerator description"),
])
def test_command_line_refuses_bad_values_in_one_line(fake_cli, tmp_path, option, message):
    res = fake_cli(*SEARCH, "--out", str(tmp_path / "run"), *option)
    assert res.exit_code == 2 and message in res.output, res.output
    assert len(res.output.strip().splitlines()) == 1
    assert not (tmp_path / "run").exists()
