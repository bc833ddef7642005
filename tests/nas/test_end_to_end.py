"""END-TO-END NASCaps search with the real trainer on an MNIST subset (CPU, about a minute on a
loaded 2-core machine), then the report, the finalize step and the command line.

Marked ``slow`` so it is easy to find (``pytest -m slow``); ``make test`` runs it too.
"""

from __future__ import annotations

import csv
import json

import pytest
from typer.testing import CliRunner

from capslab.genotype import Genotype
from capslab.hw import estimate
from capslab.nas.config import SearchConfig
from capslab.nas.journal import Journal
from capslab.nas.report import finalize, pareto_front, write_report
from capslab.nas.schema import database_url
from capslab.nas.search import resume, run_search
from capslab.train import TrainingSettings

# A small space that trains in about a second per candidate: two convolutions, Sabour capsules.
SMALL_SPACE = {
    "conv_layers": [2, 2],
    "kernels": [3, 5],
    "strides": [2],
    "channels": [4, 8],
    "capsules": [4, 8],
    "conv_channel_exponents": [3, 4],
    "caps_layers": [2, 3],
    "families": ["sabour"],
    "resizes": [1],
    "class_dim": 8,
}


def _mnist_or_skip():
    from capslab.data import load_dataset
    from capslab.errors import DatasetError

    try:
        load_dataset("mnist", "test")
    except DatasetError as exc:  # CI sets CAPSLAB_DATA; elsewhere say why it did not run
        pytest.skip(f"MNIST not available: {exc}")


TRAINING = TrainingSettings(model="genotype", dataset="mnist", epochs=1, subset=300,
                            test_subset=200, batch_size=16, lr=3e-3, device="cpu", seed=0)


def _config(**kw):
    base = dict(training=TRAINING, generations=2, population=4, offspring=4, seed=0,
                time_limit=120, space=SMALL_SPACE)
    base.update(kw)
    return SearchConfig(**base)


@pytest.mark.slow
def test_end_to_end_search_on_mnist_subset(tmp_path):
    _mnist_or_skip()
    cfg = _config()
    result = run_search(cfg, tmp_path / "run")
    records = Journal(database_url(None, tmp_path / "run"), result.run_id).evaluations()
    assert 8 <= len(records) <= cfg.population + cfg.generations * cfg.offspring
    assert all(r.status == "ok" for r in records), [r.reason for r in records]
    # Partial training really learns: the best candidate is far above chance (10%).
    assert max(r.accuracy for r in records) > 0.4
    # The hardware objectives are the hardware model's.
    for r in records[:3]:
        est = estimate(Genotype.from_nascaps(r.genotype_nascaps))
        assert r.energy_mJ == pytest.approx(est.energy_mJ)
        assert r.memory_KiB == pytest.approx(est.memory_KiB)
        assert r.latency_ms == pytest.approx(est.latency_ms)
    assert result.front and all(r.ok for r in result.front)
    assert {r.generation for r in records} == {0, 1, 2}

    # resuming a finished run trains nothing
    again = resume(tmp_path / "run")
    assert again.evaluated_now == 0 and again.front_keys == result.front_keys

    paths = write_report(records, tmp_path / "report", baseline_accuracy={"CapsNet": 0.9967})
    rows = list(csv.DictReader(paths["candidates"].open()))
    assert len(rows) == len(records)
    front = json.loads(paths["pareto_json"].read_text())["front"]
    assert {f["key"] for f in front} == {r.key for r in pareto_front(records)}
    assert all(Genotype.from_dict(f["genotype"]).to_nascaps() == f["genotype_nascaps"] for f in front)
    assert paths["plot"].stat().st_size > 10_000

    # finalize: train the best front member again (1 epoch here), resumable
    from capslab.train import train

    calls = []

    def train_fn(config, progress=False):
        calls.append(config.out)
        return train(config.replace(plots=False), progress=progress)

    best = max(result.front, key=lambda r: r.accuracy)
    rows = finalize([best], tmp_path / "final", TRAINING, train_fn=train_fn, progress=False)
    assert rows[0]["status"] == "ok" and rows[0]["accuracy"] > 0.3
    assert rows[0]["energy_mJ"] == best.energy_mJ
    assert (tmp_path / "final" / "final.md").read_text().count("NASCaps-1") == 1
    finalize([best], tmp_path / "final", TRAINING, train_fn=train_fn, progress=False)
    assert len(calls) == 1  # already trained: not retrained


@pytest.mark.slow
def test_search_command_line(tmp_path):
    _mnist_or_skip()
    from capslab.cli.main import app

    runner = CliRunner()
    space = [f"--space={k}={','.join(map(str, v)) if isinstance(v, list) else v}"
             for k, v in SMALL_SPACE.items()]
    out = tmp_path / "cli"
    args = ["search", "run", "--dataset", "mnist", "--generations", "0", "--population", "2",
            "--epochs", "1", "--subset", "200", "--test-subset", "100", "--batch-size", "16",
            "--lr", "0.003", "--device", "cpu", "--out", str(out), "--quiet", *space]
    res = runner.invoke(app, args)
    assert res.exit_code == 0, res.output
    assert "2 candidates in the journal" in res.output
    res = runner.invoke(app, ["search", "resume", str(out), "--quiet"])
    assert res.exit_code == 0 and "0 trained now" in res.output, res.output
    res = runner.invoke(app, ["search", "report", str(out), "--baseline-accuracy", "deepcaps=0.9972"])
    assert res.exit_code == 0, res.output
    assert (out / "report" / "pareto.csv").exists() and (out / "report" / "objectives.png").exists()
    res = runner.invoke(app, ["search", "finalize", str(out), "--epochs", "1", "--subset", "100",
                              "--test-subset", "100"])
    assert res.exit_code == 0, res.output
    table = json.loads((out / "final" / "final.json").read_text())["rows"]
    assert table and all(row["status"] == "ok" for row in table)
    assert "| energy [mJ] | latency [ms] |" in res.output  # printed as written, not as markup
    # more epochs: the networks trained for 1 epoch are not passed off as the new results
    res = runner.invoke(app, ["search", "finalize", str(out), "--epochs", "2", "--subset", "100",
                              "--test-subset", "100"])
    assert res.exit_code == 2 and "other settings (epochs)" in res.output, res.output
    # a schedule of its own: policy options on top of the search's, a bad one refused first
    schedule = ["--policy", "exp-decay", "--policy-opt", "decay_every=epoch", "--policy-opt", "rate=0.9",
                "--hflip"]
    res = runner.invoke(app, ["search", "finalize", str(out), "--epochs", "1", "--subset", "100",
                              "--test-subset", "100", "--out", str(tmp_path / "decayed"), *schedule])
    assert res.exit_code == 0, res.output
    trained = json.loads(next((tmp_path / "decayed").glob("NASCaps-*/summary.json")).read_text())
    assert trained["config"]["policy_options"] == {"decay_every": "epoch", "rate": 0.9}
    assert trained["config"]["eval_final_only"] is True and trained["config"]["hflip"] is True
    res = runner.invoke(app, ["search", "finalize", str(out), "--policy-opt", "speed=9",
                              "--out", str(tmp_path / "bad")])
    assert res.exit_code == 2 and "speed" in res.output and not (tmp_path / "bad").exists(), res.output
    # chosen members by their front numbers; a number off the front, or with --best, is one line
    res = runner.invoke(app, ["search", "finalize", str(out), "--epochs", "1", "--subset", "100",
                              "--test-subset", "100", "--members", "1"])
    assert res.exit_code == 0 and "| NASCaps-1 |" in res.output, res.output
    for bad in (["--members", "9"], ["--members", "x"], ["--members", "1", "--best", "1"]):
        res = runner.invoke(app, ["search", "finalize", str(out), "--out", str(tmp_path / "bad"), *bad])
        assert res.exit_code == 2 and not (tmp_path / "bad").exists(), res.output
    # a second run into the same folder is refused with a hint, not a traceback
    res = runner.invoke(app, args)
    assert res.exit_code == 2 and "resume" in res.output


@pytest.mark.slow
def test_multi_fidelity_search_at_8_bits_with_the_real_trainer(tmp_path):
    """Rungs 1, 2, 3 and the 8-bit accuracy objective with real training: each rung continues
    the candidate's own checkpoint (it adds epochs, it does not start again), both accuracies
    are journaled, the checkpoints are removed once a candidate is decided, and the
    report shows the rungs."""
    _mnist_or_skip()
    cfg = _config(training=TRAINING.replace(epochs=3), generations=1, rungs=(1, 2, 3),
                  promote=0.5, accuracy_bits=8)
    res = run_search(cfg, tmp_path / "run")
    with Journal(database_url(None, tmp_path / "run"), res.run_id) as journal:
        rungs = journal.rung_records()
        records = journal.evaluations()
    assert len(records) == res.evaluations >= 8
    assert all(r.status == "ok" for r in records)
    promoted = [k for k, v in rungs.items() if 1 in v]
    assert promoted and all(set(v) <= {0, 1, 2} for v in rungs.values())
    for k in promoted:  # a rung-2 run trained one epoch after the rung-1 checkpoint
        assert rungs[k][1].epochs == 2 and rungs[k][1].seconds < 3 * rungs[k][0].seconds
    for r in records:
        assert r.float_accuracy is not None and abs(r.accuracy - r.float_accuracy) <= 0.05
    assert max(r.accuracy for r in records) > 0.3  # real learning on 300 images
    assert not any((tmp_path / "run" / "candidates").glob("*/last.pt"))

    paths = write_report(records, tmp_path / "report", rungs=rungs)
    with open(paths["rungs_csv"]) as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == sum(len(v) for v in rungs.values())
    assert {int(r["epochs"]) for r in rows} == {1, 2, 3}
