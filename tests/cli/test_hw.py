"""``capslab hw``: tables, JSON, genotype files in both formats, custom accelerators, errors."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from capslab.cli.main import app
from capslab.genotype import CAPSNET_GENOTYPE, DEEPCAPS_GENOTYPE, save_genotype

runner = CliRunner()


def run(*args: str):
    return runner.invoke(app, ["hw", *args])


def test_table_output_for_published_models():
    r = run("--model", "capsnet")
    assert r.exit_code == 0, r.output
    assert "88.80" in r.output and "1.823" in r.output and "8,778,304" in r.output
    assert "L1 convcaps" in r.output
    r = run("--model", "deepcaps", "--no-layers")
    assert r.exit_code == 0, r.output
    assert "36.30" in r.output and "4.287" in r.output and "9,268,992" in r.output
    assert "cell.3d" not in r.output


def test_json_output():
    r = run("--model", "deepcaps", "--json")
    assert r.exit_code == 0, r.output
    d = json.loads(r.output)
    assert f"{d['energy_mJ']:.4g}" == "36.3"
    assert f"{d['latency_ms']:.4g}" == "4.287"
    assert round(d["memory_KiB"], 1) == 9051.8
    assert len(d["layers"]) == 24
    assert {"name", "kind", "cycles", "power_mW", "energy_mJ", "memory_bytes"} <= set(
        d["layers"][0]
    )
    assert sum(layer["cycles"] for layer in d["layers"]) == d["cycles"]
    assert d["genotype"] == DEEPCAPS_GENOTYPE.to_nascaps()


@pytest.mark.parametrize("fmt", ["capslab", "nascaps"])
def test_genotype_files_in_either_format(tmp_path, fmt):
    path = tmp_path / "g.json"
    save_genotype(CAPSNET_GENOTYPE, path, format=fmt)
    r = run("--genotype", str(path), "--json")
    assert r.exit_code == 0, r.output
    assert json.loads(r.output)["memory_bytes"] == 8_778_304


def test_custom_accelerator_file(tmp_path):
    acc = tmp_path / "acc.json"
    acc.write_text(json.dumps({"name": "Slow", "clock_ns": 6.0}))
    r = run("--model", "capsnet", "--accelerator", str(acc), "--json")
    assert r.exit_code == 0, r.output
    d = json.loads(r.output)
    assert d["latency_ms"] == pytest.approx(607_750 * 6e-6)  # 607,750 cycles x 6 ns
    assert d["accelerator"]["name"] == "Slow"


def test_errors_exit_2_without_traceback(tmp_path):
    cases = []
    bad_acc = tmp_path / "acc.json"
    bad_acc.write_text(json.dumps({"rowz": 3}))
    cases.append((["--model", "capsnet", "--accelerator", str(bad_acc)], "rowz"))
    invalid = tmp_path / "invalid.json"
    invalid.write_text(json.dumps([[0, 28, 1, 1, 9, 1, 28, 256, 1], [1, 28, 256, 1, 9, 2, 13, 32, 8],
                                   [1, 13, 32, 8, 9, 2, 7, 10, 16], [-1], [1]]))  # fmt: skip
    cases.append((["--genotype", str(invalid)], "layer 1: field out_size"))
    garbage = tmp_path / "garbage.json"
    garbage.write_text("not json")
    cases.append((["--genotype", str(garbage)], "not valid JSON"))
    cases.append((["--genotype", str(tmp_path / "missing.json")], "cannot read"))
    cases.append(([], "exactly one of"))
    cases.append((["--model", "capsnet", "--genotype", str(invalid)], "exactly one of"))
    for args, message in cases:
        r = run(*args)
        assert r.exit_code == 2, (args, r.output)
        assert message in r.output, (args, r.output)
        assert "Traceback" not in r.output
