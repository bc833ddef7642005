"""``capslab memory`` through the command line: files, ``--json``, options and bad input."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from capslab.cli.main import app

TINY = ["--batch-size", "2", "--dataset-shape", "1x20x20",
        "--model-opt", "conv_channels=4", "--model-opt", "primary_types=2",
        "--model-opt", "block_dim=2", "--model-opt", "class_dim=4", "--model-opt", "decoder=false",
        "--steps", "1", "--warmup", "0", "--device", "cpu"]


def invoke(*args: str):
    return CliRunner().invoke(app, ["memory", *args])


def test_memory_writes_versioned_files_and_a_table(tmp_path):
    result = invoke("--models", "capsnet,mocapsnet", "--blocks", "1,2", *TINY, "--out", str(tmp_path))
    assert result.exit_code == 0, result.output
    assert "mocapsnet" in result.stdout and "written:" in result.stdout
    for name in ("memory.json", "memory.csv", "memory.png"):
        assert (tmp_path / name).is_file()
    data = json.loads((tmp_path / "memory.json").read_text())
    assert data["format"] == "capslab-memory" and data["version"] == 1
    assert [(r["model"], r["blocks"]) for r in data["rows"]] == [
        ("capsnet", None), ("mocapsnet", 1), ("mocapsnet", 2)]
    # --model-opt reaches the models, typed; each model gets the options it takes
    assert data["config"]["model_options"] == {
        "conv_channels": 4, "primary_types": 2, "block_dim": 2, "class_dim": 4, "decoder": False}
    assert data["config"]["blocks"] == [1, 2] and data["config"]["dataset_shape"] == [1, 20, 20]


def test_memory_json_prints_only_the_report(tmp_path):
    result = invoke("--models", "rescapsnet", "--blocks", "1-2", *TINY, "--json", "--no-plot",
                    "--out", str(tmp_path))
    assert result.exit_code == 0, result.output
    printed = json.loads(result.stdout)  # nothing but JSON on stdout
    assert printed == json.loads((tmp_path / "memory.json").read_text())
    assert [r["blocks"] for r in printed["rows"]] == [1, 2]
    assert (tmp_path / "memory.csv").is_file() and not (tmp_path / "memory.png").exists()
    assert "written:" in result.stderr


@pytest.mark.parametrize(("args", "problem"), [
    (["--models", "capsnet,nope"], "unknown model 'nope'"),
    (["--blocks", "x"], "blocks: cannot read 'x'"),
    (["--blocks", "0-2"], "blocks must be >= 1"),
    (["--dataset-shape", "28x28"], "CxHxW"),
    (["--routing", "dynamic"], "routing"),
    (["--model-opt", "wings=2"], "wings"),
    (["--model-opt", "decoder"], "key=value"),
    (["--device", "tpu"], "'tpu'"),
])
def test_bad_input_is_one_line_and_exit_2(tmp_path, args, problem):
    out = tmp_path / "out"
    result = invoke(*args, "--out", str(out))
    assert result.exit_code == 2
    assert result.stdout == ""
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and problem in lines[0], result.stderr
    assert "--" not in lines[0]  # the library names settings, not command-line flags
    assert not out.exists()  # refused before any measurement or file
