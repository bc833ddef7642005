"""``capslab repro`` on the command line: JSON equal to the files, --list, --dry-run (nothing
trains), and bad input as one line with exit code 2."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from capslab.cli.main import app
from capslab.repro import EXPERIMENTS


def invoke(*args: str):
    return CliRunner().invoke(app, ["repro", *args])


def test_json_result_is_the_written_results(tmp_path, mnist_root):
    out = tmp_path / "r"
    result = invoke("capsnet", "--scale", "smoke", "--out", str(out), "--data-dir", str(mnist_root),
                    "--json")
    assert result.exit_code == 0, result.output
    printed = json.loads(result.stdout)  # nothing but JSON on stdout
    written = json.loads((out / "results.json").read_text())
    assert written["format"] == "capslab-repro"
    assert printed["rows"] == written["rows"] and printed["scale"] == "smoke"
    assert printed["commands"] == [f"capslab repro capsnet --scale smoke --out {out}"]
    assert (out / "results.md").is_file() and "tables:" in result.stderr
    # the same command again: everything is reused, so --dry-run has nothing left to time
    again = invoke("capsnet", "--scale", "smoke", "--out", str(out), "--dry-run", "--json")
    assert again.exit_code == 0, again.output
    estimate = json.loads(again.stdout)
    assert estimate["total_seconds"] == 0 and all(i["done"] for i in estimate["items"])


def test_dry_run_measures_and_trains_nothing(tmp_path):
    out = tmp_path / "never"
    result = invoke("capsnet", "--scale", "smoke", "--out", str(out), "--dry-run", "--json")
    assert result.exit_code == 0, result.output
    estimate = json.loads(result.stdout)
    assert [i["label"] for i in estimate["items"]] == ["mnist seed 0", "fashion-mnist seed 0"]
    assert all(i["seconds"] > 0 and not i["done"] for i in estimate["items"])
    assert estimate["total_seconds"] == pytest.approx(sum(i["seconds"] for i in estimate["items"]))
    assert estimate["machine"]["cpu"] and estimate["device"] == "cpu"
    assert not out.exists()
    text = invoke("capsnet", "--scale", "smoke", "--out", str(out), "--dry-run")
    assert "estimated time of `capsnet` at the smoke scale" in text.stdout


def test_list():
    result = invoke("--list", "--json")
    assert result.exit_code == 0, result.output
    assert [e["name"] for e in json.loads(result.stdout)] == list(EXPERIMENTS)
    text = invoke("--list")
    assert "--scale cpu" in text.stdout and "fastrcaps" in text.stdout


@pytest.mark.parametrize(("args", "problem"), [
    (["nope", "--scale", "cpu"], "unknown reproduction 'nope'"),
    (["capsnet", "--scale", "huge"], "unknown scale 'huge'"),
    (["capsnet"], "choose a scale"),
    ([], "name a reproduction"),
    (["capsnet", "--scale", "smoke", "--device", "tpu"], "'tpu'"),
])
def test_bad_input_is_one_line_and_exit_2(tmp_path, args, problem):
    result = invoke(*args, "--out", str(tmp_path / "out"))
    assert result.exit_code == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and problem in lines[0], result.stderr
    assert not (tmp_path / "out").exists()
