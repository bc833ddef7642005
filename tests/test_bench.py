"""``capslab.bench`` and ``capslab bench``: tiny models, one timed step; invariants, not timings."""

from __future__ import annotations

import json

import pytest
import torch

from capslab import bench
from capslab.bench import (
    BenchResult,
    Variant,
    bench_devices,
    measure_variant,
    run_benchmark,
    write_results,
)
from capslab.errors import ConfigError
from capslab.models import create_model

CPU = torch.device("cpu")


def tiny_capsnet() -> torch.nn.Module:
    return create_model("capsnet", conv_channels=8, primary_types=2, class_dim=4, decoder=False)


TINY_VARIANTS = [Variant("tiny eager", tiny_capsnet), Variant("tiny channels-last", tiny_capsnet, True)]


@pytest.fixture(scope="module")
def results() -> list[BenchResult]:
    return run_benchmark([CPU], TINY_VARIANTS, steps=1, warmup=0)


def test_measure_variant_rates_and_peak_memory():
    r = measure_variant(TINY_VARIANTS[0], CPU, steps=1, warmup=0)
    assert r.variant == "tiny eager" and r.device == "cpu"
    assert r.train_images_per_s_b16 > 0 and r.train_images_per_s_b128 > 0
    assert r.infer_images_per_s_b128 > 0
    parameter_bytes = sum(p.numel() * p.element_size() for p in tiny_capsnet().parameters())
    # parameters, their gradients and two Adam moments are alive during the step, plus the batch
    assert r.peak_train_memory_MiB * 2**20 > 4 * parameter_bytes
    assert r.speedup_vs_plain is None  # set by run_benchmark, relative to the first variant


def test_run_benchmark_speedups_relative_to_the_first_variant(results):
    assert [r.variant for r in results] == ["tiny eager", "tiny channels-last"]
    assert results[0].speedup_vs_plain == 1.0
    second = results[1]
    assert second.speedup_vs_plain == pytest.approx(
        second.train_images_per_s_b128 / results[0].train_images_per_s_b128)


def test_run_benchmark_reports_progress():
    started, finished = [], []
    run_benchmark([CPU], TINY_VARIANTS[:1], steps=1, warmup=0,
                  progress=started.append, on_result=finished.append)
    assert started == ["tiny eager on cpu"] and [r.variant for r in finished] == ["tiny eager"]


def test_write_results_is_a_versioned_document(results, tmp_path):
    path = write_results(results, tmp_path / "out")
    data = json.loads(path.read_text())
    assert path.name == "bench.json"
    assert data["format"] == "capslab-bench" and data["version"] == 1
    assert data["threads"] == torch.get_num_threads()
    assert data["results"] == [r.to_dict() for r in results]
    assert data["results"][0]["speedup_vs_plain"] == 1.0


def test_devices_and_default_variants():
    assert bench_devices("cpu") == [CPU]
    assert bench_devices("auto")[0] == CPU
    with pytest.raises(ConfigError, match="device"):
        bench_devices("tpu")
    if not torch.cuda.is_available():
        with pytest.raises(ConfigError, match="CUDA is not available"):
            bench_devices("cuda")
    names = [v.name for v in bench.default_variants(compile_=True)]
    assert names[1:] == ["capslab eager", "capslab channels-last", "capslab compiled"]
    assert names[0] == "plain eager (benchmarks/)"  # the reference is kept in this checkout
    assert "plain eager (benchmarks/)" not in [v.name for v in bench.default_variants(include_plain=False)]


def test_bench_command_writes_bench_json(monkeypatch, tmp_path):
    from typer.testing import CliRunner

    from capslab.cli.main import app

    monkeypatch.setattr(bench, "default_variants", lambda compile_=False: TINY_VARIANTS[:1])
    result = CliRunner().invoke(app, ["bench", "--steps", "1", "--warmup", "0", "--device", "cpu",
                                      "--json", "--out", str(tmp_path)])
    assert result.exit_code == 0, result.output
    printed = json.loads(result.stdout)  # only JSON on stdout
    assert printed == json.loads((tmp_path / "bench.json").read_text())
    assert printed["format"] == "capslab-bench" and printed["results"][0]["variant"] == "tiny eager"

    bad = CliRunner().invoke(app, ["bench", "--device", "tpu", "--out", str(tmp_path / "bad")])
    assert bad.exit_code == 2 and bad.stdout == ""
    assert len(bad.stderr.strip().splitlines()) == 1 and "'tpu'" in bad.stderr
    assert not (tmp_path / "bad").exists()
