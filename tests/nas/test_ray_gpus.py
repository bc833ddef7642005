"""GPU shares under Ray, tested on a GPU-less machine: a local Ray cluster that declares two GPUs
(Ray assigns them and sets CUDA_VISIBLE_DEVICES as on real ones)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from capslab.errors import ConfigError
from capslab.nas.parallel import check_gpus_per_candidate
from tests.nas.conftest import _module

ROOT = Path(__file__).resolve().parents[2]

SCRIPT = r'''
import json, os, sys, time
import numpy as np
import ray
from capslab.nas.parallel import RayPool, SerialPool
from capslab.nas.schema import EvaluationRecord
from capslab.nas.space import SearchSpace, genotype_key, sample
from tests.nas.conftest import fake_accuracy_of


class Recording:
    """Sleeps 1 s and leaves what the task saw (its GPUs, when it ran) in a file."""

    def __init__(self, folder):
        self.folder = folder

    def __call__(self, genotype, **options):
        start = time.time()
        time.sleep(1.0)
        key = genotype_key(genotype)
        seen = {"gpus": os.environ.get("CUDA_VISIBLE_DEVICES"), "start": start, "end": time.time()}
        with open(os.path.join(self.folder, f"{abs(hash(key))}.json"), "w") as f:
            json.dump(seen, f)
        return EvaluationRecord.of(genotype, status="ok", accuracy=fake_accuracy_of(key),
                                   energy_mJ=1.0, memory_KiB=1.0, latency_ms=1.0)


folder, share = sys.argv[1], float(sys.argv[2])
space = SearchSpace.for_dataset("mnist", conv_layers=(1, 1), caps_layers=(2, 2), families=("sabour",))
rng = np.random.default_rng(0)
genotypes = list({genotype_key(g): g for g in (sample(space, rng) for _ in range(8))}.values())
ray.init(num_cpus=4, num_gpus=2, include_dashboard=False, log_to_driver=False)
with RayPool(Recording(folder), "auto", num_gpus=share) as pool:
    records = {genotype_key(g): r.accuracy for g, r in pool.evaluate(genotypes)}
    workers = pool.workers
with SerialPool(Recording(folder + "-serial")) as pool:
    serial = {genotype_key(g): r.accuracy for g, r in pool.evaluate(genotypes)}
print(json.dumps({"workers": workers, "same_as_serial": records == serial, "n": len(genotypes)}))
'''


def _run(tmp_path, share: float) -> tuple[dict, list[dict]]:
    _module("ray", "ray")
    folder = tmp_path / f"share{share}"
    folder.mkdir()
    (tmp_path / f"share{share}-serial").mkdir()
    script = tmp_path / "gpus.py"
    script.write_text(SCRIPT)
    # RAY_AUTH_MODE disabled: a new local cluster would otherwise write a token to
    # ~/.ray/auth_token, which every later driver on this machine then presents to other heads
    env = {**os.environ, "PYTHONPATH": str(ROOT), "RAY_USAGE_STATS_ENABLED": "0",
           "RAY_AUTH_MODE": "disabled"}
    env.pop("RAY_ADDRESS", None)
    done = subprocess.run([sys.executable, str(script), str(folder), str(share)], env=env,
                          capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    summary = json.loads(done.stdout.strip().splitlines()[-1])
    return summary, [json.loads(p.read_text()) for p in folder.glob("*.json")]


def _overlapping(tasks: list[dict]) -> list[list[dict]]:
    """For each task, the tasks running at its start (itself included)."""
    return [[t for t in tasks if t["start"] <= s["start"] < t["end"]] for s in tasks]


def test_whole_gpus_are_distinct_and_bound_the_concurrency(tmp_path):
    summary, tasks = _run(tmp_path, 1.0)
    assert summary["workers"] == 2 and summary["same_as_serial"]
    assert len(tasks) == summary["n"]
    assert all(t["gpus"] in ("0", "1") for t in tasks)
    groups = _overlapping(tasks)
    assert max(len(g) for g in groups) == 2  # two GPUs: two candidates at once, never three
    assert all(len({t["gpus"] for t in g}) == len(g) for g in groups)  # each its own GPU


def test_half_gpus_share_a_gpu_between_two(tmp_path):
    summary, tasks = _run(tmp_path, 0.5)
    assert summary["workers"] == 4 and summary["same_as_serial"]
    groups = _overlapping(tasks)
    assert max(len(g) for g in groups) > 2  # more candidates at once than GPUs
    for g in groups:  # never more than two on one GPU
        ids = [t["gpus"] for t in g]
        assert all(ids.count(i) <= 2 for i in set(ids))


def test_the_option_is_refused_where_it_means_nothing():
    check_gpus_per_candidate(0, None, "cpu")  # a CPU-only run: unchanged
    with pytest.raises(ConfigError, match="give --ray-address too"):
        check_gpus_per_candidate(0.5, None, "cuda")
    with pytest.raises(ConfigError, match="needs the candidates on CUDA"):
        check_gpus_per_candidate(0.5, "127.0.0.1:6379", "cpu")
    with pytest.raises(ConfigError, match="a fraction in \\(0, 1\\] or a whole number"):
        check_gpus_per_candidate(1.5, "127.0.0.1:6379", "cuda")


def test_the_command_line_refuses_a_share_without_ray(tmp_path):
    from typer.testing import CliRunner

    from capslab.cli.main import app

    result = CliRunner().invoke(app, ["search", "run", "--gpus-per-candidate", "0.5",
                                      "--out", str(tmp_path / "run")])
    assert result.exit_code == 2
    assert "--gpus-per-candidate asks Ray for GPUs: give --ray-address too" in result.output
    assert not (tmp_path / "run").exists()
