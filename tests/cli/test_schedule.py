"""``capslab schedule``: the table, ``--json``, ``--plot`` and its errors, through the real app."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from capslab.cli.main import app

MID = (1e-4 + 1e-3) / 2  # lr halfway through a cosine cycle over [1e-4, 1e-3]


def invoke(*args: str):
    return CliRunner().invoke(app, ["schedule", *args])


def stderr_of(result) -> str:
    """stderr where the runner keeps it apart from stdout, else the mixed output."""
    try:
        return result.stderr
    except ValueError:  # older click: stderr not captured separately
        return result.output


def test_table():
    result = invoke("-p", "exp-decay", "-e", "2", "-n", "1000")
    assert result.exit_code == 0, result.output
    assert "exp-decay schedule (16 steps)" in result.stdout
    assert "exp-decay: lr=0.001, rate=0.96, decay_steps=2000" in result.stdout
    assert "16 optimiser steps" in result.stdout


def test_table_of_every_step():
    result = invoke("--policy", "fixed", "--epochs", "1", "--train-size", "30", "--batch-size", "10", "--all")
    assert result.exit_code == 0, result.output
    assert "fixed schedule (3 steps)" in result.stdout
    assert result.stdout.count("1.0000e-03") == 3


def test_json_and_plot(tmp_path):
    png = tmp_path / "plots" / "s.png"
    result = invoke(
        "--policy", "warm-adabatch", "--epochs", "3", "--train-size", "100",
        "--policy-opt", "batch_sizes=10,50", "--policy-opt", "warm_epochs=1", "--json", "--plot", str(png),
    )
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)  # JSON only on stdout: the "plot saved" note is on stderr
    assert (data["format"], data["version"]) == ("capslab-schedule", 1)
    assert (data["policy"], data["epochs"], data["train_size"]) == ("warm-adabatch", 3, 100)
    assert data["options"] == {"lr_min": 1e-4, "lr_max": 1e-3, "warm_epochs": 1, "batch_sizes": [10, 50]}
    steps = data["steps"]
    assert len(steps) == data["total_steps"] == 10 + 2 + 2
    assert set(steps[0]) == {"epoch", "step", "lr", "batch_size"}
    assert [s["step"] for s in steps] == list(range(14))
    assert [s["batch_size"] for s in steps] == [10] * 10 + [50] * 4
    assert [s["epoch"] for s in steps] == [1] * 10 + [2, 2, 3, 3]
    assert steps[10]["lr"] == pytest.approx(1e-3)  # restart with the batch change
    assert steps[12]["lr"] == pytest.approx(MID)  # half of the 4-step second cycle
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 1000
    assert "plot saved to" in stderr_of(result)


def test_plot_with_the_table(tmp_path):
    png = tmp_path / "a.png"
    result = invoke("-p", "adabatch", "-e", "3", "-n", "100", "--policy-opt", "batch_sizes=8,32",
                    "--policy-opt", "phase_epochs=1", "--lr", "5e-3", "--plot", str(png))
    assert result.exit_code == 0, result.output
    assert "adabatch schedule (21 steps)" in result.stdout and "lr=0.005" in result.stdout
    assert "plot saved to" in result.stdout
    assert png.read_bytes()[:4] == b"\x89PNG"


def _one_error_line(result) -> str:
    assert result.exit_code == 2, result.output
    lines = [line for line in stderr_of(result).splitlines() if line.strip()]
    assert len(lines) == 1, lines
    assert lines[0].startswith("error:")
    assert "Traceback" not in result.output
    return lines[0]


def test_unknown_option_is_one_line():
    result = invoke("-p", "fixed", "-e", "1", "-n", "9", "--policy-opt", "typo=1")
    line = _one_error_line(result)
    assert "policy 'fixed' has no option(s) typo; valid options: lr" in line


def test_unknown_policy_is_one_line():
    result = invoke("-p", "cosine", "-e", "1", "-n", "9")
    line = _one_error_line(result)
    assert "unknown policy 'cosine'; choose one of" in line and "warm-adabatch" in line


def test_bad_option_value_is_one_line():
    result = invoke("-p", "exp-decay", "-e", "1", "-n", "9", "--policy-opt", "staircase=maybe")
    line = _one_error_line(result)
    assert "policy 'exp-decay': option staircase must be a bool, got 'maybe'" in line
    result = invoke("-p", "exp-decay", "-e", "1", "-n", "9", "--policy-opt", "rate")
    assert "policy option 'rate' is not of the form key=value" in _one_error_line(result)


def test_the_opt_alias_is_gone():
    result = invoke("-p", "fixed", "-e", "1", "-n", "9", "--opt", "lr=0.1")
    assert result.exit_code == 2 and "--opt" in stderr_of(result)
