"""Shared experiment machinery: versioned JSON, tables as CSV/Markdown/JSON, atomic figures,
run-or-reuse by identity (with a fake trainer: no training here)."""

from __future__ import annotations

import csv
import json

import pytest

from capslab.errors import NonFiniteLossError, RunMismatchError
from capslab.experiments import run_or_failure, run_or_reuse
from capslab.results import Column, read_json, save_figure, table_markdown, write_json, write_table
from capslab.train import TrainConfig


def test_versioned_json_round_trip_and_refusals(tmp_path):
    path = write_json(tmp_path / "a.json", "thing", {"x": 1})
    data = json.loads(path.read_text())
    assert (data["format"], data["version"], data["x"]) == ("capslab-thing", 1, 1)
    assert read_json(path, "thing")["x"] == 1
    assert read_json(tmp_path / "missing.json", "thing") is None
    with pytest.raises(RunMismatchError, match="not a CapsLab other file"):
        read_json(path, "other")
    path.write_text(json.dumps({"format": "capslab-thing", "version": 99}))
    with pytest.raises(RunMismatchError, match="newer CapsLab"):
        read_json(path, "thing")


def test_write_table_three_formats(tmp_path):
    rows = [{"name": "a", "accuracy": 0.9512, "count": 1200, "ok": True, "gap": None},
            {"name": "b", "accuracy": 0.5, "count": 3, "ok": False, "gap": 0.25}]
    columns = [Column("name"), Column("accuracy", "accuracy [%]", ".2f", 100), Column("count", "n", ","),
               Column("ok", "ok"), Column("gap", "gap", ".1f")]
    paths = write_table(rows, tmp_path / "t", "table", columns, extra={"note": "x"})
    parsed = list(csv.DictReader(paths["csv"].open()))
    assert parsed[0]["accuracy"] == "0.9512" and parsed[0]["gap"] == ""  # raw fractions in CSV
    md = paths["markdown"].read_text()
    assert "| name | accuracy [%] | n | ok | gap |" in md and "| a | 95.12 | 1,200 | yes | - |" in md
    doc = json.loads(paths["json"].read_text())
    assert doc["format"] == "capslab-table" and doc["note"] == "x" and doc["rows"] == rows
    assert table_markdown([], columns).count("\n") == 2


def test_save_figure_is_atomic_png(tmp_path):
    from capslab.results import pyplot

    fig, ax = pyplot().subplots()
    ax.plot([0, 1], [1, 0])
    path = save_figure(fig, tmp_path / "sub" / "f.png")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert [p.name for p in path.parent.iterdir()] == ["f.png"]  # no temporary file left


def fake_train(calls, fail=None):
    def train(config, progress=False):
        calls.append(config.seed)
        if fail is not None:
            raise fail
        summary = {"identity": config.identity(), "history": [{"test_accuracy": 0.5}]}
        write_json(f"{config.out}/summary.json", "summary", summary)
        return summary

    return train


def test_run_or_reuse_and_run_or_failure(tmp_path):
    calls = []
    cfg = TrainConfig(epochs=1, out=str(tmp_path / "r"))
    assert not run_or_reuse(cfg, fake_train(calls)).reused
    assert run_or_reuse(cfg.replace(device="cpu"), fake_train(calls)).reused and calls == [0]
    with pytest.raises(RunMismatchError, match=r"other settings \(seed\)"):
        run_or_reuse(cfg.replace(seed=1), fake_train(calls))
    # many-network studies: a network that cannot be trained is a reason, not a crash ...
    outcome, reason = run_or_failure(cfg.replace(out=str(tmp_path / "n")),
                                     fake_train(calls, NonFiniteLossError("loss became nan")))
    assert outcome is None and reason == "NonFiniteLossError: loss became nan"
    outcome, reason = run_or_failure(cfg.replace(out=str(tmp_path / "s")),
                                     fake_train(calls, RuntimeError("shape mismatch")))
    assert reason.startswith("RuntimeError")
    # ... but a folder of other settings still stops the study
    with pytest.raises(RunMismatchError):
        run_or_failure(cfg.replace(seed=2), fake_train(calls))
