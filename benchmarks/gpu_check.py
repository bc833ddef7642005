"""One run that proves CapsLab's CUDA paths on a GPU and records what it measured.

    .venv/bin/python benchmarks/gpu_check.py --out runs/gpu-check           # on a GPU: < 10 min on one H100
    .venv/bin/python benchmarks/gpu_check.py --smoke --out runs/gpu-smoke   # anywhere: the same steps, tiny, on the CPU

What it does, in order (each part is recorded even when a later one fails):

1. **bench**: ``capslab bench``'s rows on the device at batch 1, 16 and 128 (the plain eager
   reference, CapsLab's CapsNet, the PrimaryCaps-convolution ceiling).
2. **train + resume**: the MNIST CapsNet of Sabour et al. on all 60,000 training images with
   ``--deterministic``, once straight through and once stopped after its first epoch and
   resumed; the two final weights must be equal (``resume_max_abs_difference`` 0).
3. **search**: a small NSGA-II search on the device (one generation, 4 + 2 candidates of the
   paper's space, 1 epoch on 2,000 images), with the default worker count (one on a GPU).

Everything goes to ``OUT/gpu_check.json`` (a ``capslab-gpu-check`` document: the GPU's name,
torch and CUDA versions, every figure, each part's seconds and error if any). Exit code 0 when
every part passed. ``--smoke`` runs the same code on the CPU at toy sizes (CI runs it).
"""

from __future__ import annotations

import argparse
import sys
import time
import traceback
from pathlib import Path

import torch

from capslab.bench import default_variants, run_benchmark
from capslab.checkpoint import load_checkpoint
from capslab.device import device_name, resolve_device
from capslab.nas.config import SearchConfig
from capslab.nas.search import run_search
from capslab.results import write_json
from capslab.train import TrainConfig, TrainingSettings, train

KIND = "gpu-check"
#: small Sabour-family networks, so that the smoke search takes seconds on two cores
SMOKE_SPACE = {"conv_layers": [2, 2], "kernels": [3], "strides": [2], "channels": [4, 4],
               "capsules": [4, 4], "conv_channel_exponents": [3, 3], "caps_layers": [2, 2],
               "families": ["sabour"]}


def sizes(smoke: bool) -> dict:
    if smoke:
        return {"batch_sizes": (1, 2), "bench_steps": 1, "subset": 256, "test_subset": 128,
                "epochs": 2, "search_subset": 200, "search_test_subset": 100,
                "space": SMOKE_SPACE}
    return {"batch_sizes": (1, 16, 128), "bench_steps": 3, "subset": None, "test_subset": None,
            "epochs": 3, "search_subset": 2000, "search_test_subset": 1000, "space": {}}


def check_bench(device: torch.device, s: dict) -> dict:
    results, ceilings = run_benchmark([device], default_variants(), steps=s["bench_steps"],
                                      warmup=1, batch_sizes=s["batch_sizes"], isolate=False)
    return {"rows": [r.to_dict() for r in results], "ceilings": [c.to_dict() for c in ceilings]}


def check_resume(device: torch.device, s: dict, out: Path) -> dict:
    base = dict(model="capsnet", dataset="mnist", epochs=s["epochs"], batch_size=128,
                subset=s["subset"], test_subset=s["test_subset"], seed=0, device=str(device),
                deterministic=True, plots=False)
    straight = train(TrainConfig(**base, out=str(out / "straight")), progress=False)
    train(TrainConfig(**base, out=str(out / "resumed"), stop_after=1), progress=False)
    resumed = train(TrainConfig(**base, out=str(out / "resumed"), resume=True), progress=False)
    a = load_checkpoint(out / "straight" / "last.pt")["model"]
    b = load_checkpoint(out / "resumed" / "last.pt")["model"]
    diff = max((a[k].float() - b[k].float()).abs().max().item() for k in a)
    return {
        "epochs": s["epochs"], "train_images": straight["train_size"],
        "test_accuracy": straight["final_test_accuracy"],
        "resumed_test_accuracy": resumed["final_test_accuracy"],
        "images_per_second": [h["images_per_second"] for h in straight["history"]],
        "resume_max_abs_difference": diff, "passed": diff == 0.0,
    }


def check_search(device: torch.device, s: dict, out: Path) -> dict:
    config = SearchConfig(
        training=TrainingSettings(model="genotype", dataset="mnist", epochs=1,
                                  subset=s["search_subset"], test_subset=s["search_test_subset"],
                                  device=str(device), seed=0),
        generations=1, population=4, offspring=2, seed=0, space=s["space"],
    )
    started = time.perf_counter()
    result = run_search(config, out / "search", workers=0)
    statuses = [r.status for r in result.population]
    return {"seconds": time.perf_counter() - started, "evaluations": result.evaluations,
            "front": len(result.front), "candidate_time_limit_s": config.time_limit,
            "population_statuses": statuses,
            "accuracies": [r.accuracy for r in result.front],
            "passed": all(st == "ok" for st in statuses)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("runs/gpu-check"))
    parser.add_argument("--device", default="cuda", help="cuda or cuda:N (cpu with --smoke)")
    parser.add_argument("--smoke", action="store_true", help="toy sizes on the CPU (for CI)")
    args = parser.parse_args(argv)
    device = resolve_device("cpu" if args.smoke else args.device)
    s = sizes(args.smoke)
    args.out.mkdir(parents=True, exist_ok=True)
    doc: dict = {
        "device": str(device), "device_name": device_name(device), "smoke": args.smoke,
        "torch": torch.__version__, "cuda": torch.version.cuda, "parts": {},
    }
    parts = [("bench", lambda: check_bench(device, s)),
             ("train_resume", lambda: check_resume(device, s, args.out)),
             ("search", lambda: check_search(device, s, args.out))]
    ok = True
    for name, run in parts:
        started = time.perf_counter()
        print(f"gpu_check: {name} on {doc['device_name']} ...", file=sys.stderr, flush=True)
        try:
            part = run()
        except Exception as exc:  # recorded and reported; the next parts still run
            part = {"error": f"{type(exc).__name__}: {exc}", "traceback": traceback.format_exc(),
                    "passed": False}
        part["seconds"] = time.perf_counter() - started
        ok = ok and part.get("passed", True)
        doc["parts"][name] = part
        write_json(args.out / "gpu_check.json", KIND, doc)  # each part kept as it finishes
        print(f"gpu_check: {name}: {'ok' if part.get('passed', True) else 'FAILED'} "
              f"({part['seconds']:.0f} s)", file=sys.stderr, flush=True)
    print(args.out / "gpu_check.json")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
