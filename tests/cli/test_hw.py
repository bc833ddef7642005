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


# Shapes the NASCaps authors' own search published, written small here: the class layer as the
# only capsule gene, and convolutions whose capsule fields are not 1. Both are outside the
# paper's search space but buildable, so every command that reads a genotype file takes them.
ONLY_CLASS_CAPS = [[0, 28, 1, 1, 9, 2, 14, 8, 1], [1, 14, 8, 1, 14, 1, 1, 10, 16], [-1], [1]]
CONV_CAPSULE_FIELDS = [[0, 28, 1, 1, 9, 2, 14, 4, 2], [0, 14, 4, 2, 3, 2, 7, 8, 1],
                       [1, 7, 8, 1, 3, 1, 7, 8, 4], [1, 7, 8, 4, 7, 1, 1, 10, 16], [-1], [1]]  # fmt: skip


def _file(tmp_path, name, genes):
    path = tmp_path / name
    path.write_text(json.dumps(genes))
    return path


@pytest.mark.parametrize("genes", [ONLY_CLASS_CAPS, CONV_CAPSULE_FIELDS], ids=["only-class", "conv-fields"])
def test_published_shapes_get_figures_from_hw_and_info(tmp_path, genes):
    from capslab.genotype import Genotype
    from capslab.hw import estimate
    from capslab.models.genotype_net import GenotypeNet

    path = _file(tmp_path, "g.chr", genes)
    expected = estimate(Genotype.from_nascaps(genes))
    r = run("--genotype", str(path), "--json")
    assert r.exit_code == 0, r.output
    d = json.loads(r.output)
    assert (d["cycles"], d["memory_bytes"]) == (expected.cycles, expected.memory_bytes)
    assert d["energy_mJ"] == pytest.approx(expected.energy_mJ) and d["genotype"] == genes
    r = run("--genotype", str(path))  # the tables
    assert r.exit_code == 0, r.output
    assert f"{expected.memory_bytes:,}" in r.output and f"{expected.cycles:,}" in r.output
    assert f"L{len(genes) - 3} class" in r.output
    r = runner.invoke(app, ["info", "--genotype", str(path), "--json"])
    assert r.exit_code == 0, r.output
    d = json.loads(r.stdout)
    assert d["dataset"] == "mnist" and d["layers"][-1]["output_shape"] == [1, 28, 28]  # decoder
    assert d["parameters"] == sum(p.numel() for p in GenotypeNet(genes).parameters())
    r = runner.invoke(app, ["info", "--genotype", str(path)])
    assert r.exit_code == 0 and "total" in r.output


def test_really_invalid_genotypes_are_one_line_exit_2_in_hw_and_info(tmp_path):
    no_chain = _file(tmp_path, "chain.chr", [*CONV_CAPSULE_FIELDS[:2], [1, 7, 16, 1, 3, 1, 7, 8, 4],
                                              *CONV_CAPSULE_FIELDS[3:]])  # fmt: skip
    negative = _file(tmp_path, "neg.chr", [ONLY_CLASS_CAPS[0], [1, 14, 8, 1, 14, 1, 1, -10, 16],
                                           [-1], [1]])  # fmt: skip
    cases = [
        (no_chain, "layer 2: field in_channels is 16 but layer 1 outputs 8"),
        (negative, "layer 1: field out_channels must be positive, got -10"),
    ]
    for path, message in cases:
        for command in (["hw", "--genotype", str(path)], ["info", "--genotype", str(path)]):
            r = runner.invoke(app, command)
            assert r.exit_code == 2, (command, r.output)
            assert message in r.output and path.name in r.output, (command, r.output)
            assert "Traceback" not in r.output and len(r.output.strip().splitlines()) == 1
