"""``capslab.bench`` and ``capslab bench``: tiny models, one timed step; invariants, not timings."""

from __future__ import annotations

import json
import multiprocessing

import pytest
import torch
from helpers import BUILT_MARK, broken_capsnet, tiny_capsnet, tiny_capsnet_once_per_process

from capslab import bench
from capslab.bench import (
    Variant,
    bench_devices,
    measure_variant,
    run_benchmark,
    write_results,
)
from capslab.errors import ConfigError

CPU = torch.device("cpu")


TINY_VARIANTS = [Variant("tiny eager", tiny_capsnet), Variant("tiny channels-last", tiny_capsnet, True)]
#: the ceiling's (real) convolution is timed at the largest batch size: 2 in these tests, fast
SMALL_SIZES = (1, 2)


#: images per timed block in these tests (32 in a real run): one step per sample from batch 2
QUICK_BLOCK_IMAGES = 2


@pytest.fixture(autouse=True)
def quick_blocks(monkeypatch):
    monkeypatch.setattr(bench, "MIN_TIMED_IMAGES", QUICK_BLOCK_IMAGES)


@pytest.fixture(scope="module")
def measured():
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(bench, "MIN_TIMED_IMAGES", QUICK_BLOCK_IMAGES)
        return run_benchmark([CPU], TINY_VARIANTS, steps=1, warmup=0, batch_sizes=SMALL_SIZES)


def test_measure_variant_rates_at_every_batch_size_and_peak_memory():
    r = measure_variant(TINY_VARIANTS[0], CPU, steps=1, warmup=0)
    assert r.variant == "tiny eager" and r.device == "cpu"
    assert set(r.train_images_per_s) == set(r.infer_images_per_s) == {"1", "16", "128"}
    assert all(v > 0 for v in [*r.train_images_per_s.values(), *r.infer_images_per_s.values()])
    parameter_bytes = sum(p.numel() * p.element_size() for p in tiny_capsnet().parameters())
    # parameters, their gradients and two Adam moments are alive during the step, plus the batch
    assert r.peak_train_memory_MiB * 2**20 > 4 * parameter_bytes
    assert r.speedup == {} and r.of_ceiling is None  # set by run_benchmark


def test_isolated_rows_run_each_in_a_process_of_its_own(monkeypatch):
    monkeypatch.delenv(BUILT_MARK, raising=False)
    once = [Variant("a", tiny_capsnet_once_per_process), Variant("b", tiny_capsnet_once_per_process)]
    # the ceiling's forms run in workers alike; they are left out here to keep the test short
    results, ceiling = bench.measure_variants(once, CPU, steps=2, warmup=0, batch_sizes=SMALL_SIZES,
                                              isolate=True)
    assert [r.variant for r in results] == ["a", "b"]
    for r in results:
        assert set(r.train_images_per_s) == set(r.infer_images_per_s) == {"1", "2"}
        assert all(v > 0 for v in [*r.train_images_per_s.values(), *r.infer_images_per_s.values()])
        assert r.peak_train_memory_MiB > 0
    assert ceiling is None
    assert multiprocessing.active_children() == []  # every worker was ended
    assert BUILT_MARK not in __import__("os").environ  # built in the workers, not here
    with pytest.raises(RuntimeError, match="second row was built in the same process"):
        bench.measure_variants(once, CPU, steps=1, warmup=0, batch_sizes=(1,), peak_memory=False)


def test_a_failing_worker_names_its_row_and_keeps_the_traceback():
    variants = [Variant("fine", tiny_capsnet), Variant("broken one", broken_capsnet)]
    with pytest.raises(RuntimeError, match="measuring broken one") as info:
        bench.measure_variants(variants, CPU, steps=1, warmup=0, batch_sizes=(1,), isolate=True)
    assert "ValueError: this factory is broken" in str(info.value)
    assert multiprocessing.active_children() == []


def test_bf16_variant_runs_its_forward_under_autocast():
    seen = []

    def factory():
        model = tiny_capsnet()
        model.class_caps.register_forward_pre_hook(lambda _m, args: seen.append(args[0].dtype))
        return model

    r = measure_variant(Variant("tiny bf16", factory, precision="bf16"), CPU, steps=1, warmup=0,
                        batch_sizes=(16,), peak_memory=False)
    assert r.train_images_per_s["16"] > 0 and r.infer_images_per_s["16"] > 0
    assert seen and set(seen) == {torch.bfloat16}  # training and inference alike


def test_blocks_cover_at_least_the_minimum_images(monkeypatch):
    monkeypatch.setattr(bench, "MIN_TIMED_IMAGES", 32)  # the real value
    assert bench.block_steps(1) == bench.MIN_TIMED_IMAGES
    assert bench.block_steps(16) == 2 and bench.block_steps(128) == 1
    assert all(bench.block_steps(b) * b >= bench.MIN_TIMED_IMAGES for b in (1, 3, 16, 33, 128))


def test_run_benchmark_speedups_and_ceiling(measured):
    results, ceilings = measured
    assert [r.variant for r in results] == ["tiny eager", "tiny channels-last"]
    assert results[0].speedup == {"1": 1.0, "2": 1.0}
    second = results[1]
    for b in ("1", "2"):
        assert second.speedup[b] == pytest.approx(
            second.train_images_per_s[b] / results[0].train_images_per_s[b])
    [top] = ceilings
    assert top.device == "cpu" and top.memory_format in ("contiguous", "channels-last")
    assert second.of_ceiling == pytest.approx(second.train_images_per_s["2"] / top.images_per_s)


def test_reference_trains_with_default_adam_and_capslab_with_its_own():
    ref, ours = bench.default_variants()[:2]
    params = [torch.nn.Parameter(torch.zeros(3))]
    assert ref.optimizer is bench.naive_adam and not ref.optimizer(params).defaults["fused"]
    assert ours.optimizer(params).defaults["fused"] is True  # what `capslab train` builds


def test_run_benchmark_reports_progress():
    started, finished = [], []
    run_benchmark([CPU], TINY_VARIANTS[:1], steps=1, warmup=0, batch_sizes=SMALL_SIZES,
                  progress=started.append, on_result=finished.append)
    assert started == ["1 variants and the ceiling on cpu"]
    assert [type(r).__name__ for r in finished] == ["Ceiling", "BenchResult"]


def test_write_results_is_a_versioned_document(measured, tmp_path):
    results, ceilings = measured
    path = write_results(results, tmp_path / "out", ceilings)
    data = json.loads(path.read_text())
    assert path.name == "bench.json"
    assert data["format"] == "capslab-bench" and data["version"] == 1
    assert data["threads"] == torch.get_num_threads() and data["cpu"]
    assert data["batch_sizes"] == [1, 2] and data["isolated"] is False
    assert data["results"] == [r.to_dict() for r in results]
    assert data["ceilings"] == [c.to_dict() for c in ceilings]


def test_devices_and_default_variants():
    assert bench_devices("cpu") == [CPU]
    assert bench_devices("auto")[0] == CPU
    with pytest.raises(ConfigError, match="device"):
        bench_devices("tpu")
    if not torch.cuda.is_available():
        with pytest.raises(ConfigError, match="CUDA is not available"):
            bench_devices("cuda")
    names = [v.name for v in bench.default_variants(compile_=True, bf16=True)]
    assert names[1:] == ["capslab", "capslab channels-last", "capslab compiled", "capslab bf16 autocast"]
    assert bench.default_variants(bf16=True)[-1].precision == "bf16"
    assert names[0] == "plain eager (benchmarks/)"  # the reference is kept in this checkout
    assert "plain eager (benchmarks/)" not in [v.name for v in bench.default_variants(include_plain=False)]


def test_bench_command_writes_bench_json(monkeypatch, tmp_path):
    from typer.testing import CliRunner

    from capslab.cli.main import app

    monkeypatch.setattr(bench, "default_variants", lambda **_: TINY_VARIANTS[:1])
    monkeypatch.setattr(bench, "BATCH_SIZES", SMALL_SIZES)
    asked, real_run = {}, bench.run_benchmark

    def in_this_process(*args, **kwargs):
        # worker processes cost seconds to start (the tests above cover them): here the rows
        # run in this process whatever the command asked, and what it asked is kept
        asked.update(kwargs)
        return real_run(*args, **{**kwargs, "isolate": False})

    monkeypatch.setattr(bench, "run_benchmark", in_this_process)
    result = CliRunner().invoke(app, ["bench", "--steps", "1", "--warmup", "0", "--device", "cpu",
                                      "--json", "--out", str(tmp_path)])
    assert result.exit_code == 0, result.output
    printed = json.loads(result.stdout)  # only JSON on stdout
    assert printed == json.loads((tmp_path / "bench.json").read_text())
    assert printed["format"] == "capslab-bench" and printed["results"][0]["variant"] == "tiny eager"
    assert asked["isolate"] is True and printed["isolated"] is True  # a process per row by default
    assert printed["batch_sizes"] == [1, 2]
    table = CliRunner().invoke(app, ["bench", "--steps", "1", "--warmup", "0", "--device", "cpu",
                                     "--same-process", "--quiet", "--out", str(tmp_path)])
    assert table.exit_code == 0, table.output
    assert asked["isolate"] is False
    assert "ceiling: PrimaryCaps conv alone" in table.stdout and "img/s b1" in table.stdout
    assert "one process" in table.stdout and "of ceiling b2" in table.stdout

    bad = CliRunner().invoke(app, ["bench", "--device", "tpu", "--out", str(tmp_path / "bad")])
    assert bad.exit_code == 2 and bad.stdout == ""
    assert len(bad.stderr.strip().splitlines()) == 1 and "'tpu'" in bad.stderr
    assert not (tmp_path / "bad").exists()


def test_plain_reference_runs_on_the_device_of_its_input():
    """It built its routing logits on the CPU whatever the input's device (a crash on CUDA);
    ``meta`` stands in for the GPU."""
    make = bench.load_plain_reference()
    assert make is not None
    model = make().to("meta")
    out = model(torch.empty(2, 1, 28, 28, device="meta"))
    lengths = out[0] if isinstance(out, tuple) else out
    assert lengths.device.type == "meta"


def test_rows_of_finished_devices_are_written_before_the_next_device(monkeypatch, tmp_path):
    """A device that fails (say the GPU after the CPU) leaves the finished rows in bench.json,
    with ``complete`` false; every row's device is named."""
    from typer.testing import CliRunner

    from capslab.cli.main import app

    monkeypatch.setattr(bench, "default_variants", lambda **_: TINY_VARIANTS[:1])
    monkeypatch.setattr(bench, "BATCH_SIZES", (1,))
    monkeypatch.setattr(bench, "bench_devices", lambda name: [CPU, torch.device("meta")])
    real_measure = bench.measure_variants

    def failing_second(variants, device, *args, **kwargs):
        if device.type == "meta":
            raise RuntimeError("the second device broke")
        return real_measure(variants, device, *args, **{**kwargs, "isolate": False})

    monkeypatch.setattr(bench, "measure_variants", failing_second)
    result = CliRunner().invoke(app, ["bench", "--steps", "1", "--warmup", "0", "--quiet",
                                      "--out", str(tmp_path)])
    assert result.exit_code != 0 and "the second device broke" in str(result.exception)
    doc = json.loads((tmp_path / "bench.json").read_text())
    assert doc["complete"] is False and [r["device"] for r in doc["results"]] == ["cpu"]
    assert doc["device_names"] == {"cpu": bench.cpu_name()}


def test_efficient_capsnet_rows_beside_their_plain_reference(monkeypatch, tmp_path):
    from typer.testing import CliRunner

    from capslab.cli.main import app

    monkeypatch.setattr(bench, "EFFICIENT_BATCH_SIZES", (1, 2))
    variants = bench.default_variants(model="efficient-capsnet")
    assert [v.name for v in variants][:2] == [
        "plain eager (benchmarks/plain_efficient_capsnet.py)", "capslab efficient-capsnet"]
    plain, ours = variants[0].factory(), variants[1].factory()
    count = sum(p.numel() for n, p in plain.named_parameters() if not n.startswith("decoder"))
    assert count == 161_824 == sum(p.numel() for n, p in ours.named_parameters()
                                   if not n.startswith("decoder"))
    result = CliRunner().invoke(app, ["bench", "--model", "efficient-capsnet", "--steps", "1",
                                      "--warmup", "0", "--device", "cpu", "--same-process",
                                      "--json", "--out", str(tmp_path)])
    assert result.exit_code == 0, result.output
    doc = json.loads(result.stdout)
    assert doc["model"] == "efficient-capsnet" and doc["ceilings"] == []
    assert doc["batch_sizes"] == [1, 2] and doc["complete"] is True
    assert {r["variant"] for r in doc["results"]} >= {"capslab efficient-capsnet"}
    bad = CliRunner().invoke(app, ["bench", "--model", "resnet", "--out", str(tmp_path / "bad")])
    assert bad.exit_code == 2 and "resnet" in bad.stderr and not (tmp_path / "bad").exists()
