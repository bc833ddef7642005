"""The search's defaults on a GPU, checked without one: the worker count, and the candidate
time budget of a search resumed on another device."""

import os

import pytest

from capslab.nas.config import SearchConfig
from capslab.nas.evaluate import SECONDS_PER_IMAGE, default_time_limit
from capslab.nas.parallel import default_workers
from capslab.train import TrainingSettings


def test_one_worker_on_a_gpu_one_per_core_on_the_cpu():
    assert default_workers("cuda") == 1  # one CUDA context, one budget's worth of GPU
    assert default_workers("cpu") == max(1, os.cpu_count() or 1)


def search(device="cpu", **kw):
    training = TrainingSettings(model="genotype", dataset="mnist", epochs=20, subset=20000,
                                device=device)
    return SearchConfig(training=training, generations=1, population=4, offspring=2, **kw)


def test_a_default_budget_follows_the_device_on_resume():
    on_cpu = search("cpu")
    assert SECONDS_PER_IMAGE["cuda"] < SECONDS_PER_IMAGE["cpu"]
    on_gpu = on_cpu.on_device("cuda")
    assert on_gpu.training.device == "cuda"
    assert on_gpu.time_limit == default_time_limit(on_gpu.training) < on_cpu.time_limit
    assert on_gpu.on_device("cpu").time_limit == pytest.approx(on_cpu.time_limit)


def test_an_explicit_budget_stays_on_resume():
    given = search("cpu", time_limit=123.0)
    assert given.on_device("cuda").time_limit == 123.0
    assert search("cpu", time_limit=0).on_device("cuda").time_limit == 0  # 0: no limit
