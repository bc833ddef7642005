"""``capslab memory``: the measurement, the slope fit, the files and the command."""

from __future__ import annotations

import csv
import json

import pytest
import torch

from capslab.memory import (
    MemoryConfig,
    fit_line,
    parse_blocks,
    parse_shape,
    profiler_peak_bytes,
    run_memory_study,
    write_report,
)

# small enough to take a few seconds; narrow block capsules (2-D) so that a block's
# activations outweigh its parameters, gradients and Adam state (as at the paper's batch 128)
TINY = dict(conv_channels=4, primary_types=2, block_dim=2, class_dim=4, decoder=False)


@pytest.fixture(scope="module")
def tiny_report():
    config = MemoryConfig(
        models=("capsnet", "rescapsnet", "mocapsnet"), blocks=(1, 2, 3), batch_size=64,
        dataset_shape=(1, 20, 20), model_options=TINY, steps=1, warmup=1, device="cpu",
    )
    return run_memory_study(config)


def test_profiler_peak_counts_live_bytes_exactly():
    def work():
        a = torch.empty(1_000_000, dtype=torch.uint8)
        b = torch.empty(2_000_000, dtype=torch.uint8)
        del a
        c = torch.empty(500_000, dtype=torch.uint8)
        del b, c

    assert profiler_peak_bytes(work) == 3_000_000  # a and b together, not a + b + c


def test_mocapsnet_memory_slope_flatter_than_rescapsnet(tiny_report):
    fits = tiny_report.fits()
    res, mo = fits["rescapsnet"], fits["mocapsnet"]
    assert mo["peak_bytes"]["slope"] < res["peak_bytes"]["slope"]
    # saved activations: exactly flat with the reversible blocks, growing without
    assert mo["activation_bytes"]["slope"] == pytest.approx(0.0, abs=1.0)
    assert res["activation_bytes"]["slope"] > 100_000
    # parameters, gradients and Adam state grow the same for both
    assert mo["persistent_bytes"]["slope"] == pytest.approx(res["persistent_bytes"]["slope"])
    assert fits["capsnet"]["peak_bytes"]["slope"] == 0.0  # drawn as a flat reference
    cmp = tiny_report.comparison()
    assert cmp["peak_slope_ratio"] > 1.0 and cmp["activation_slope_ratio"] == float("inf")


def test_report_rows_and_files(tiny_report, tmp_path):
    rows = tiny_report.rows
    assert [(r.model, r.blocks) for r in rows] == [
        ("capsnet", None), ("rescapsnet", 1), ("rescapsnet", 2), ("rescapsnet", 3),
        ("mocapsnet", 1), ("mocapsnet", 2), ("mocapsnet", 3),
    ]
    for r in rows:
        assert r.peak_bytes > r.persistent_bytes > 0 and r.train_seconds > 0
    paths = write_report(tiny_report, tmp_path)
    data = json.loads((tmp_path / "memory.json").read_text())
    assert data["device"] == "cpu" and len(data["rows"]) == 7
    assert set(data["fits"]) == {"capsnet", "rescapsnet", "mocapsnet"}
    with open(paths["csv"]) as f:
        table = list(csv.DictReader(f))
    assert int(table[1]["peak_bytes"]) == rows[1].peak_bytes
    assert (tmp_path / "memory.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temp files left


def test_fit_line_and_parsers():
    slope, icpt = fit_line([1, 2, 3, 4], [5.0, 7.0, 9.0, 11.0])
    assert slope == pytest.approx(2.0) and icpt == pytest.approx(3.0)
    assert fit_line([3], [7.0]) == (0.0, 7.0)
    assert parse_blocks("1-3,6") == (1, 2, 3, 6)
    assert parse_blocks("4,2,2") == (2, 4)
    assert parse_shape("3x32x32") == (3, 32, 32)
    with pytest.raises(ValueError, match="blocks"):
        parse_blocks("3-1")
    with pytest.raises(ValueError, match="CxHxW"):
        parse_shape("28x28")
    with pytest.raises(ValueError, match="unknown model"):
        MemoryConfig(models=("nope",)).validate()
    with pytest.raises(ValueError, match="blocks"):
        MemoryConfig(blocks=(0, 1)).validate()


def test_memory_command_json(tmp_path):
    from typer.testing import CliRunner

    from capslab.cli.main import app

    result = CliRunner().invoke(app, [
        "memory", "--models", "capsnet,mocapsnet", "--blocks", "1-2", "--batch-size", "2",
        "--dataset-shape", "1x20x20", "--conv-channels", "4", "--primary-types", "2",
        "--steps", "1", "--warmup", "0", "--device", "cpu", "--json", "--no-plot",
        "--out", str(tmp_path),
    ])
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout[result.stdout.index("{"):])
    assert [(r["model"], r["blocks"]) for r in data["rows"]] == [
        ("capsnet", None), ("mocapsnet", 1), ("mocapsnet", 2)]
    assert (tmp_path / "memory.csv").exists() and not (tmp_path / "memory.png").exists()
    bad = CliRunner().invoke(app, ["memory", "--models", "nope", "--out", str(tmp_path)])
    assert bad.exit_code == 2


def test_memory_command_model_options(tmp_path):
    """--model-opt reaches the models (the small configuration of the docs and the tests)."""
    from typer.testing import CliRunner

    from capslab.cli.main import app

    args = ["memory", "--models", "capsnet,rescapsnet", "--blocks", "1", "--batch-size", "2",
            "--dataset-shape", "1x20x20", "--conv-channels", "4", "--primary-types", "2",
            "--steps", "1", "--warmup", "0", "--device", "cpu", "--json", "--no-plot",
            "--out", str(tmp_path)]
    params = {}
    for extra in ([], ["--model-opt", "block_dim=2", "--model-opt", "decoder=false"]):
        result = CliRunner().invoke(app, args + extra)
        assert result.exit_code == 0, result.output
        data = json.loads(result.stdout[result.stdout.index("{"):])
        params[bool(extra)] = {r["model"]: r["parameters"] for r in data["rows"]}
    assert data["config"]["model_options"]["block_dim"] == 2
    assert data["config"]["model_options"]["decoder"] is False
    # capsnet loses its decoder; rescapsnet its decoder and most of its block weights
    assert params[True]["capsnet"] < params[False]["capsnet"]
    assert params[True]["rescapsnet"] < params[False]["rescapsnet"] - 2 * 32 * 32 * (8 * 8 - 2 * 2)
    bad = CliRunner().invoke(app, args + ["--model-opt", "wings=2"])
    assert bad.exit_code == 2 and "wings" in bad.output
