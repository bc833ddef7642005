"""PCC study (NASCaps Table 2): the maths on synthetic histories, the resumable driver with a fake
trainer, and the command on a tiny real run."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
from scipy.stats import pearsonr

from capslab.errors import ConfigError
from capslab.genotype import Genotype
from capslab.nas.pcc import (
    PCCConfig,
    histories_to_arrays,
    markdown,
    pcc_table,
    pearson,
    run_pcc_study,
)
from capslab.results import write_json


def test_pearson_by_hand_and_against_scipy():
    # x = 1,2,3; y = 2,4,7: dx = -1,0,1; dy = -7/3,-1/3,8/3; sum dx*dy = 5; |dx|^2 = 2; |dy|^2 = 114/9
    assert pearson([1, 2, 3], [2, 4, 7]) == pytest.approx(5 / math.sqrt(2 * 114 / 9))
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=50), rng.normal(size=50)
    y = 0.6 * x + y
    assert pearson(x, y) == pytest.approx(pearsonr(x, y).statistic, abs=1e-12)
    assert pearson(x, -3 * x + 1) == pytest.approx(-1.0)
    assert math.isnan(pearson([1, 1, 1], [1, 2, 3]))  # constant: undefined, not 0
    with pytest.raises(ValueError, match="equal length"):
        pearson([1, 2], [1, 2, 3])


def test_pcc_table_on_synthetic_histories():
    final = np.array([0.90, 0.95, 0.70, 0.99])
    acc = np.stack(
        [
            np.array([0.5, 0.5, 0.5, 0.5]),  # epoch 1: all equal -> undefined
            1 - final,  # epoch 2: perfectly anti-correlated
            0.5 * final + 0.1,  # epoch 3: a linear function of the final accuracy
            final,  # epoch 4 = final
        ],
        axis=1,
    )  # [K=4, E=4]
    seconds = np.array([[1.0] * 4, [2.0] * 4, [3.0] * 4, [10.0] * 4])
    rows = pcc_table(acc, seconds)
    assert [r["epoch"] for r in rows] == [1, 2, 3, 4]
    assert math.isnan(rows[0]["pcc"])
    assert rows[1]["pcc"] == pytest.approx(-1.0)
    assert rows[2]["pcc"] == pytest.approx(1.0) and rows[3]["pcc"] == pytest.approx(1.0)
    # median over networks of cumulative seconds: epoch n -> median(n, 2n, 3n, 10n) = 2.5 n
    assert [r["mctt_s"] for r in rows] == pytest.approx([2.5, 5.0, 7.5, 10.0])
    assert "| PCC | - | -1.0000 | 1.0000 | 1.0000 |" in markdown(rows, "mnist")


def test_histories_drop_unfinished_runs():
    h = lambda accs: [{"test_accuracy": a, "epoch_seconds": 1.0} for a in accs]  # noqa: E731
    acc, sec = histories_to_arrays([h([0.1, 0.2, 0.3]), h([0.5]), h([0.2, 0.4, 0.6])], 3)
    assert acc.shape == (2, 3) and acc[1, 2] == 0.6 and sec.sum() == 6.0


def test_histories_of_runs_with_a_validation_split_use_its_accuracy():
    history = [{"val_accuracy": 0.3, "epoch_seconds": 1.0}, {"val_accuracy": 0.7, "epoch_seconds": 2.0}]
    acc, sec = histories_to_arrays([history], 2)
    assert acc.tolist() == [[0.3, 0.7]] and sec.tolist() == [[1.0, 2.0]]


def test_study_is_resumable_and_skips_failures(tmp_path):
    calls = []

    def fake_train(config, progress=False):
        run_dir = Path(config.out)
        calls.append(run_dir.name)
        if run_dir.name == "net_002":
            raise RuntimeError("the network does not fit the input")
        genotype = Genotype.from_nascaps(config.model_options["genotype"])
        quality = (len(genotype.layers) % 5) / 5 + 0.1 * len(calls)
        history = [{"epoch": e + 1, "test_accuracy": min(1.0, quality * (e + 1) / config.epochs),
                    "epoch_seconds": 2.0} for e in range(config.epochs)]
        summary = {"history": history, "identity": config.identity()}
        write_json(run_dir / "summary.json", "summary", summary)
        return summary

    cfg = PCCConfig(training={"model": "genotype", "epochs": 3, "seed": 1}, networks=5,
                    out=str(tmp_path / "pcc"))
    result = run_pcc_study(cfg, train_fn=fake_train)
    assert len(calls) == 5 and result["complete"] == 4 and list(result["failed"]) == ["2"]
    assert [r["epoch"] for r in result["rows"]] == [1, 2, 3]
    assert result["rows"][-1]["pcc"] == pytest.approx(1.0)
    assert result["rows"][0]["mctt_s"] == pytest.approx(2.0)
    for name in ("pcc.json", "pcc.csv", "pcc.md", "pcc.png", "study.json"):
        assert (tmp_path / "pcc" / name).exists()
    saved = json.loads((tmp_path / "pcc" / "pcc.json").read_text())
    assert saved["format"] == "capslab-pcc" and saved["rows"][-1]["epoch"] == 3
    assert "does not fit" in json.loads((tmp_path / "pcc" / "net_002" / "failed.json").read_text())["reason"]
    # rerun: nothing retrained (failed one neither), same table
    again = run_pcc_study(cfg, train_fn=fake_train)
    assert len(calls) == 5 and again["rows"] == result["rows"]
    with pytest.raises(ConfigError, match="outside"):
        PCCConfig(training={"model": "genotype", "epochs": 3}, report_epochs=(5,))
    with pytest.raises(ConfigError, match="no option"):  # the PCC study has policy options too
        PCCConfig(training={"model": "genotype", "policy_options": {"typo": 1}})


@pytest.mark.slow
def test_pcc_command_on_real_training(tmp_path):
    from capslab.data import load_dataset
    from capslab.errors import DatasetError

    try:
        load_dataset("mnist", "test")
    except DatasetError as exc:
        pytest.skip(f"MNIST not available: {exc}")
    from typer.testing import CliRunner

    from capslab.cli.main import app

    out = tmp_path / "pcc"
    args = ["study", "pcc", "--dataset", "mnist", "--networks", "3", "--epochs", "2",
            "--subset", "200", "--test-subset", "100", "--batch-size", "16", "--lr", "0.003",
            "--device", "cpu", "--out", str(out), "--quiet",
            "--space", "conv_layers=2,2", "--space", "strides=2", "--space", "kernels=3,5",
            "--space", "channels=4,8", "--space", "capsules=4,8", "--space", "families=sabour",
            "--space", "conv_channel_exponents=3,4", "--space", "caps_layers=2,2",
            "--space", "resizes=1", "--space", "class_dim=8"]
    res = CliRunner().invoke(app, args)
    assert res.exit_code == 0, res.output
    assert "| MCTT [s] |" in res.output  # the table is printed as written, not as rich markup
    result = json.loads((out / "pcc.json").read_text())
    assert result["complete"] == 3 and "rows" in result and result["rows"][-1]["pcc"] == pytest.approx(1.0)
    histories = [[json.loads(line) for line in (out / f"net_{i:03d}" / "metrics.jsonl").read_text().splitlines()]
                 for i in range(3)]
    assert all(len(h) == 2 for h in histories)
    assert max(h[-1]["test_accuracy"] for h in histories) > 0.3  # the networks really learn
