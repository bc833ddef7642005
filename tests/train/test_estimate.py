"""``capslab.train.estimate`` and ``capslab schedule --estimate``: the arithmetic is pinned; the
measurement is checked for shape and sense, never for speed."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from capslab.cli.main import app
from capslab.train.estimate import estimate_epochs, measure_rates
from capslab.train.policies import build_schedule

TINY = ["--model-opt", "conv_channels=8", "--model-opt", "primary_types=2",
        "--model-opt", "class_dim=4", "--model-opt", "decoder=false"]


def test_estimate_epochs_pinned_for_warm_adabatch():
    # WarmAdaBatch: batch 1 for the first three epochs, then 16
    sched = build_schedule("warm-adabatch", 5, 100)
    assert [sched.batch_size(e) for e in range(5)] == [1, 1, 1, 16, 16]
    rows = estimate_epochs(sched, {1: 10.0, 16: 80.0}, eval_rate=25.0, test_size=50)
    assert [r["train_seconds"] for r in rows] == [10.0, 10.0, 10.0, 1.25, 1.25]
    assert all(r["eval_seconds"] == 2.0 for r in rows)
    assert [r["elapsed_seconds"] for r in rows] == [12.0, 24.0, 36.0, 39.25, 42.5]
    assert [r["steps"] for r in rows] == [100, 100, 100, 7, 7]
    # without evaluation only the training counts
    assert estimate_epochs(sched, {1: 10.0, 16: 80.0})[-1]["elapsed_seconds"] == 32.5


def test_estimate_epochs_needs_every_batch_size():
    sched = build_schedule("warm-adabatch", 5, 100)
    with pytest.raises(ValueError, match=r"batch size\(s\) \[16\]"):
        estimate_epochs(sched, {1: 10.0})


def test_measure_rates_at_the_asked_batch_sizes():
    options = {"conv_channels": 8, "primary_types": 2, "class_dim": 4, "decoder": False}
    train, evaluation = measure_rates([16, 1, 1], "capsnet", options, eval_batch_size=32,
                                      steps=1, warmup=0)
    assert sorted(train) == [1, 16] and all(r > 0 for r in train.values()) and evaluation > 0


def test_schedule_estimate_command(tmp_path):
    res = CliRunner().invoke(app, ["schedule", "--policy", "warm-adabatch", "--epochs", "4",
                                   "--train-size", "64", "--estimate", "--test-size", "32",
                                   "--json", *TINY])
    assert res.exit_code == 0, res.output
    doc = json.loads(res.stdout)
    assert doc["format"] == "capslab-run-estimate" and doc["policy"] == "warm-adabatch"
    assert sorted(doc["train_images_per_s"], key=int) == ["1", "16"]
    by_epoch = [64 / doc["train_images_per_s"][str(e["batch_size"])] + 32 / doc["eval_images_per_s"]
                for e in doc["epochs"]]
    assert doc["total_seconds"] == pytest.approx(sum(by_epoch))

    bad = CliRunner().invoke(app, ["schedule", "--policy", "fixed", "--epochs", "1", "--train-size",
                                   "10", "--estimate", "--model-opt", "wings=2"])
    assert bad.exit_code == 2 and "wings" in bad.stderr and len(bad.stderr.strip().splitlines()) == 1
