"""benchmarks/gpu_check.py in its CPU smoke mode: every part runs and is recorded."""

import importlib.util
import json
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "gpu_check.py"


def test_gpu_check_smoke_runs_every_part_and_records_it(mnist_root, tmp_path, monkeypatch):
    monkeypatch.setenv("CAPSLAB_DATA", str(mnist_root))
    spec = importlib.util.spec_from_file_location("gpu_check", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    assert module.main(["--smoke", "--out", str(tmp_path)]) == 0
    doc = json.loads((tmp_path / "gpu_check.json").read_text())
    assert doc["format"] == "capslab-gpu-check" and doc["smoke"] and doc["device_name"]
    parts = doc["parts"]
    assert set(parts) == {"bench", "train_resume", "search"}
    assert all("error" not in p for p in parts.values()), parts
    assert {r["variant"] for r in parts["bench"]["rows"]} >= {"plain eager (benchmarks/)", "capslab"}
    assert parts["bench"]["ceilings"]
    assert parts["train_resume"]["resume_max_abs_difference"] == 0.0
    assert parts["search"]["population_statuses"] and parts["search"]["passed"]
