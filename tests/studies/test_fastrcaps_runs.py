"""Every FasTrCaps policy trains a tiny CapsNet on an MNIST subset through the trainer, and a
tiny end-to-end ``capslab study fastrcaps`` run writes its files and resumes."""

from __future__ import annotations

import csv
import json
import os

import pytest

from capslab.train.policies import build_schedule

pytestmark = pytest.mark.skipif(
    not any(
        os.path.isdir(os.path.join(d, "mnist"))
        for d in (os.environ.get("CAPSLAB_DATA", ""), os.path.expanduser("~/.cache/capslab/datasets"))
        if d
    ),
    reason="MNIST not found (set CAPSLAB_DATA)",
)

TINY = {"conv_channels": 16, "primary_types": 8}
# reduced batch phases: batch 1 would take minutes on a CPU
POLICY_RUNS = [
    ("fixed", {}, 1),
    ("exp-decay", {"decay_steps": 20}, 1),
    ("one-cycle", {}, 1),
    ("warm-restarts", {"cycle_epochs": 0.5}, 1),
    ("adabatch", {"batch_sizes": [16, 64], "phase_epochs": [1]}, 2),
    ("warm-adabatch", {"batch_sizes": [16, 64], "warm_epochs": 1}, 2),
]


@pytest.mark.parametrize("policy, options, epochs", POLICY_RUNS, ids=[r[0] for r in POLICY_RUNS])
def test_policy_trains_tiny_capsnet(policy, options, epochs):
    from capslab.train import TrainConfig, train

    config = TrainConfig(
        model="capsnet", model_options={**TINY, "decoder": False}, dataset="mnist", epochs=epochs,
        batch_size=16, policy=policy, policy_options=options, subset=600, test_subset=250,
        device="cpu", plots=False, checkpoints=False,
    )
    summary = train(config, progress=False)
    # 10 classes: chance is 10 %
    assert summary["best_test_accuracy"] > 0.5, (policy, summary["best_test_accuracy"])
    # the trainer followed the schedule: batch size per epoch, lr of the epoch's last step
    schedule = build_schedule(policy, epochs, 600, 16, None, options)
    for e, record in enumerate(summary["history"]):
        assert record["batch_size"] == schedule.batch_size(e)
        assert record["lr"] == pytest.approx(schedule.lr(e, schedule.steps_in_epoch(e) - 1))
    assert summary["history"][-1]["steps"] == schedule.total_steps


def test_study_command_end_to_end_and_resume(tmp_path):
    from typer.testing import CliRunner

    from capslab.cli.main import app

    out = tmp_path / "study"
    args = [
        "study", "fastrcaps", "--dataset", "mnist", "--subset", "300", "--test-subset", "150",
        "--epochs", "1", "--repeats", "1", "--policies", "fixed,warm-restarts",
        "--policy-opt", "cycle_epochs=0.5", "--batch-size", "16", "--model-opt", "conv_channels=16",
        "--model-opt", "primary_types=8", "--out", str(out), "--device", "cpu", "--no-run-plots", "--quiet",
    ]
    runner = CliRunner()
    first = runner.invoke(app, args)
    assert first.exit_code == 0, first.output
    assert "trained 4 run(s), reused 0" in first.output
    for name in ("study.csv", "study.md", "study.json", "pareto.png", "curves.png"):
        assert (out / name).stat().st_size > 0, name
    rows = list(csv.DictReader((out / "study.csv").open()))
    assert [(r["policy"], r["variant"]) for r in rows] == [
        ("fixed", "baseline"), ("fixed", "ws"), ("warm-restarts", "baseline"), ("warm-restarts", "ws"),
    ]
    assert int(rows[0]["parameters"]) > int(rows[1]["parameters"])  # weight sharing + small decoder
    assert rows[0]["epochs_to_target"] == "1"  # the baseline reaches its own peak
    summary = json.loads((out / "runs" / "warm-restarts__ws" / "seed0" / "summary.json").read_text())
    assert summary["config"]["policy_options"] == {"cycle_epochs": 0.5}
    assert summary["config"]["model_options"]["weight_sharing"] is True
    assert (out / "runs" / "fixed__baseline" / "seed0" / "metrics.jsonl").exists()
    assert not (out / "runs" / "fixed__baseline" / "seed0" / "last.pt").exists()  # cleaned up

    mtime = (out / "runs" / "fixed__baseline" / "seed0" / "summary.json").stat().st_mtime_ns
    second = runner.invoke(app, [*args, "--goal", "params"])
    assert second.exit_code == 0, second.output
    assert "trained 0 run(s), reused 4" in second.output
    assert (out / "runs" / "fixed__baseline" / "seed0" / "summary.json").stat().st_mtime_ns == mtime
    assert json.loads((out / "study.json").read_text())["choice"]["variant"] == "ws"

    bad = runner.invoke(app, [*args[:-1], "--policy-opt", "warm_epochs=2"])
    assert bad.exit_code == 2 and "none of the policies" in bad.output
