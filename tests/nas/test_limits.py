"""Objectives chosen by the user and limits: the training cost as a figure of the search,
candidates over a limit journaled as infeasible and never on the front."""

from __future__ import annotations

import json

import numpy as np
import pytest
from typer.testing import CliRunner

import capslab.nas.config as config_module
from capslab.cli.main import app
from capslab.errors import ConfigError
from capslab.nas.config import SearchConfig
from capslab.nas.evaluate import Evaluator, over_limits
from capslab.nas.fidelity import promote
from capslab.nas.journal import Journal
from capslab.nas.report import pareto_front
from capslab.nas.schema import WORST, EvaluationRecord, database_url
from capslab.nas.search import run_search
from capslab.nas.space import SearchSpace, genotype_key, sample
from capslab.training_cost import genotype_training_cost
from tests.nas.conftest import fake_accuracy_of

SMALL_SPACE = {"conv_layers": [2, 2], "kernels": [3, 5], "strides": [2], "channels": [4, 8],
               "capsules": [4, 8], "conv_channel_exponents": [3, 4], "caps_layers": [2, 3],
               "families": ["sabour"]}


class FakeTrainedAccuracy:
    """Stands in for partial training: the pseudo-accuracy of the genotype's key."""

    split = "val"

    def __init__(self, *args, **kwargs):
        self.calls = 0

    def __call__(self, genotype, time_limit=None, epochs=None):
        return fake_accuracy_of(genotype_key(genotype))


def record(**values):
    base = dict(key="k", genotype_nascaps=[], genotype={}, status="ok", accuracy=0.9,
                energy_mJ=1.0, memory_KiB=100.0, latency_ms=0.5, train_activation_KiB=50.0,
                train_GFLOP=0.2)
    return EvaluationRecord(**{**base, **values})


def test_objectives_by_name_and_limits():
    r = record()
    assert r.objectives() == pytest.approx((0.1, 1.0, 100.0, 0.5))
    assert r.objectives(("error", "train_activation_KiB")) == pytest.approx((0.1, 50.0))
    assert r.violations({"memory_KiB": 200}) == {} and r.feasible({"memory_KiB": 200})
    assert r.violations({"memory_KiB": 80, "error": 0.2}) == pytest.approx({"memory_KiB": 20.0})
    failed = record(status="failed", accuracy=None)
    assert failed.objectives(("error", "train_GFLOP")) == (WORST["error"], WORST["train_GFLOP"])
    assert not failed.feasible({"memory_KiB": 1e6})  # a failure is over every limit
    missing = record(train_GFLOP=None)  # a figure never measured counts as the worst
    assert missing.objectives(("train_GFLOP",)) == (WORST["train_GFLOP"],)
    assert over_limits({"memory_KiB": 3168.0, "energy_mJ": 1.0}, {"memory_KiB": 2048}) == \
        "over limit: memory_KiB 3,168 > 2,048"


def test_promotion_ranks_infeasible_candidates_last():
    fast = record(key="a", accuracy=0.99, memory_KiB=900.0)  # best accuracy, over the limit
    slow = record(key="b", accuracy=0.70, memory_KiB=100.0)
    assert promote([fast, slow], 0.5) == ["a"]
    assert promote([fast, slow], 0.5, limits={"memory_KiB": 500}) == ["b"]


def test_evaluator_does_not_train_a_candidate_over_a_limit_known_before_training():
    space = SearchSpace(**SMALL_SPACE)
    rng = np.random.default_rng(0)
    genotypes = [sample(space, rng) for _ in range(6)]
    plain = Evaluator(FakeTrainedAccuracy(), space=space)
    memories = sorted(plain.hardware(g)[1] for g in genotypes)
    limit = memories[len(memories) // 2]
    trained = []

    def accuracy(genotype, time_limit=None):
        trained.append(genotype_key(genotype))
        return 0.8

    limited = Evaluator(accuracy, space=space, limits={"memory_KiB": limit,
                                                       "train_activation_KiB": 1e9})
    records = [limited(g) for g in genotypes]
    for g, rec in zip(genotypes, records, strict=True):
        if rec.memory_KiB > limit:
            assert rec.status == "infeasible" and rec.accuracy is None
            assert rec.reason.startswith("over limit: memory_KiB")
            assert genotype_key(g) not in trained
        else:
            assert rec.ok and genotype_key(g) in trained
        cost = genotype_training_cost(g)  # traced because a limit names it
        assert rec.train_activation_KiB == pytest.approx(cost.activation_KiB)
        assert rec.train_GFLOP == pytest.approx(cost.train_flops / 1e9)
    assert {r.status for r in records} == {"ok", "infeasible"}


def test_search_with_training_cost_objectives_and_a_limit(tmp_path, monkeypatch):
    monkeypatch.setattr(config_module, "TrainedAccuracy", FakeTrainedAccuracy)
    space = SearchSpace(**SMALL_SPACE)
    rng = np.random.default_rng(1)
    acts = sorted(genotype_training_cost(sample(space, rng)).activation_KiB for _ in range(8))
    limit = acts[len(acts) // 2]
    cfg = SearchConfig(training={"model": "genotype", "dataset": "mnist"}, generations=2,
                       population=6, offspring=4, space=SMALL_SPACE, seed=3,
                       objectives=("error", "memory_KiB", "train_activation_KiB"),
                       limits={"train_activation_KiB": limit})
    result = run_search(cfg, tmp_path / "run")
    with Journal(database_url(tmp_path / "run" / "journal.sqlite"), result.run_id) as journal:
        records = journal.evaluations()
    infeasible = [r for r in records if r.status == "infeasible"]
    assert infeasible and all(r.train_activation_KiB > limit for r in infeasible)
    assert all(r.train_activation_KiB is not None for r in records)  # journaled (format 4)
    assert result.front and all(r.ok and r.train_activation_KiB <= limit for r in result.front)
    front = pareto_front(records, cfg.objectives, cfg.limits)
    assert {r.key for r in front} >= {r.key for r in result.front}
    assert not {r.key for r in front} & {r.key for r in infeasible}
    # the front is non-dominated on the chosen objectives only
    F = np.array([r.objectives(cfg.objectives) for r in front])
    for i in range(len(F)):
        assert not any(np.all(F[j] <= F[i]) and np.any(F[j] < F[i]) for j in range(len(F)))
    with pytest.raises(ConfigError, match="unknown objective or limit 'speed'"):
        SearchConfig(training={"model": "genotype"}, limits={"speed": 1})


def test_search_command_takes_objectives_and_limits(tmp_path, monkeypatch):
    monkeypatch.setattr(config_module, "TrainedAccuracy", FakeTrainedAccuracy)
    import capslab.nas.search as search

    monkeypatch.setattr(search, "require_files", lambda *a, **k: None)
    out = tmp_path / "run"
    args = ["search", "run", "--generations", "1", "--population", "4", "--offspring", "2",
            "--space", "families=sabour", "--space", "conv_layers=2,2", "--space", "kernels=3",
            "--space", "strides=2", "--space", "channels=4,8", "--space", "capsules=4,8",
            "--space", "conv_channel_exponents=3,4", "--space", "caps_layers=2,3",
            "--objectives", "error,latency_ms,train_GFLOP", "--limit", "memory_KiB=100000",
            "--out", str(out), "--json", "--quiet"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    saved = json.loads((out / "run.json").read_text())["config"]
    assert saved["objectives"] == ["error", "latency_ms", "train_GFLOP"]
    assert saved["limits"] == {"memory_KiB": 100000.0}
    bad = CliRunner().invoke(app, [*args[:-4], "--limit", "speed=3", "--out", str(tmp_path / "bad")])
    assert bad.exit_code == 2 and "speed" in bad.stderr and not (tmp_path / "bad").exists()
