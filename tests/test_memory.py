"""``capslab.memory``: the settings, the measurement against depth, the slope fit and the files
(the command is tested in test_memory_cli.py, the measurement functions in test_profiling.py)."""

from __future__ import annotations

import csv
import json

import pytest

from capslab.errors import ConfigError
from capslab.memory import (
    MemoryConfig,
    fit_line,
    model_at_depth,
    plan,
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
    assert set(paths) == {"json", "csv", "png"}
    data = json.loads(paths["json"].read_text())
    assert data["format"] == "capslab-memory" and data["version"] == 1
    assert data["device"] == "cpu" and len(data["rows"]) == 7
    assert data["rows"][0]["blocks"] is None and data["rows"][1]["peak_mib"] > 0
    assert data["config"] == tiny_report.config.to_dict()
    assert MemoryConfig.from_dict(data["config"]) == tiny_report.config  # reopens as settings
    assert set(data["fits"]) == {"capsnet", "rescapsnet", "mocapsnet"}
    assert data["comparison"]["activation_slope_ratio"] is None  # infinite: strict JSON has none
    with open(paths["csv"]) as f:
        table = list(csv.DictReader(f))
    assert int(table[1]["peak_bytes"]) == rows[1].peak_bytes and table[0]["blocks"] == ""
    assert paths["png"].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temp files left
    assert not (tmp_path / "nested" / "memory.png").exists()
    assert "png" not in write_report(tiny_report, tmp_path / "nested", plot=False)


def test_fit_line():
    slope, icpt = fit_line([1, 2, 3, 4], [5.0, 7.0, 9.0, 11.0])
    assert slope == pytest.approx(2.0) and icpt == pytest.approx(3.0)
    assert fit_line([3], [7.0]) == (0.0, 7.0)
    # the same bytes at every depth: exactly flat (polyfit alone leaves ~1e-9 of noise, and the
    # ResCapsNet / MoCapsNet ratio of slopes divided by it)
    assert fit_line([1, 4, 8], [87276544.0] * 3) == (0.0, 87276544.0)


def test_config_is_coerced_and_validated_on_construction():
    config = MemoryConfig(blocks=["1", 2], dataset_shape=[1, 20, 20], batch_size="4")
    assert config.blocks == (1, 2) and config.dataset_shape == (1, 20, 20) and config.batch_size == 4
    with pytest.raises(ConfigError, match="unknown model 'nope'"):
        MemoryConfig(models=("nope",))
    with pytest.raises(ConfigError, match="no models"):
        MemoryConfig(models=())
    with pytest.raises(ConfigError, match="blocks must be >= 1"):
        MemoryConfig(blocks=(0, 1))
    with pytest.raises(ConfigError, match="no depths"):
        MemoryConfig(blocks=())
    with pytest.raises(ConfigError, match="square"):
        MemoryConfig(dataset_shape=(1, 20, 28))
    with pytest.raises(ConfigError, match="dataset_shape"):
        MemoryConfig(dataset_shape=(1, 28))
    with pytest.raises(ConfigError, match="routing"):
        MemoryConfig(routing="dynamic")
    with pytest.raises(ConfigError, match="steps must be >= 1"):
        MemoryConfig(steps=0)
    with pytest.raises(ConfigError, match="device"):
        MemoryConfig(device="tpu")
    with pytest.raises(ConfigError, match="no model takes option.* wings"):
        MemoryConfig(model_options={"wings": 2})
    with pytest.raises(ConfigError, match="routing come from the memory settings"):
        MemoryConfig(model_options={"routing": "sda"})  # a field of the config, not an option
    with pytest.raises(ConfigError, match="unknown memory setting.*colour"):
        MemoryConfig.from_dict({"colour": "red"})


def test_model_at_depth_and_plan():
    config = MemoryConfig(models=("capsnet", "mocapsnet"), blocks=(1, 3), dataset_shape=(3, 20, 20),
                          gamma=0.5, model_options=TINY)
    assert plan(config) == [("capsnet", None), ("mocapsnet", 1), ("mocapsnet", 3)]
    capsnet = model_at_depth("capsnet", None, config)  # block_dim left out: capsnet has none
    assert capsnet.model_options["in_channels"] == 3 and "block_dim" not in capsnet.model_options
    deep = model_at_depth("mocapsnet", 3, config)
    assert deep.model_options["num_blocks"] == 3 and deep.model_options["gamma"] == 0.5
    shallow = model_at_depth("mocapsnet", 1, config)
    assert sum(p.numel() for p in deep.parameters()) > sum(p.numel() for p in shallow.parameters())
