"""Resident memory of a long search process, candidate after candidate.

    .venv/bin/python benchmarks/search_memory.py [--generations 4] [--population 10]

Runs the same small search (MNIST, ``--space preset=efficient``, every candidate trained
in the search's own process: 300 images, 1 epoch, batch 64) three times, each in a fresh
process, and records the process's resident memory (VmRSS) after every candidate:

* ``release``: CapsLab now: malloc keeps freed memory while a candidate trains (the fast
  setting of ``capslab.allocator``) and gives it back after each candidate;
* ``keep``: the setting never undone (CapsLab before: the process keeps the peak of every
  candidate so far);
* ``system``: ``CAPSLAB_MALLOC=system``, malloc as glibc sets it.

Writes ``benchmarks/results/search_memory.json`` and ``search_memory.png``; docs/nas.md quotes
them.
"""

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

CHILD = r"""
import json, sys
import capslab.allocator as allocator
import capslab.nas.evaluate as evaluate
from capslab.nas.config import SearchConfig
from capslab.nas.search import run_search

mode, out, generations, population = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
if mode == "keep":
    evaluate.release_freed_memory = lambda: False  # the behaviour before: never released

def rss_mib():
    with open("/proc/self/status") as f:
        return int(next(l for l in f if l.startswith("VmRSS:")).split()[1]) / 1024

trace = []
def progress(event, data):
    if event == "evaluated":
        trace.append(rss_mib())

config = SearchConfig(training={"model": "genotype", "dataset": "mnist", "subset": 300,
                                "test_subset": 100, "epochs": 1, "batch_size": 64},
                      space={"preset": "efficient"}, generations=generations,
                      population=population, offspring=population, seed=0)
run_search(config, out, workers=1, progress=progress)
print(json.dumps({"rss_mib": trace}))
"""

parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
parser.add_argument("--generations", type=int, default=4)
parser.add_argument("--population", type=int, default=10)
args = parser.parse_args()

results = {}
for mode in ("release", "keep", "system"):
    env = dict(os.environ)
    if mode == "system":
        env["CAPSLAB_MALLOC"] = "system"
    with tempfile.TemporaryDirectory() as tmp:
        done = subprocess.run([sys.executable, "-c", CHILD, mode, str(Path(tmp) / "run"),
                               str(args.generations), str(args.population)],
                              env=env, capture_output=True, text=True, check=True)
    trace = json.loads(done.stdout.strip().splitlines()[-1])["rss_mib"]
    results[mode] = {"candidates": len(trace), "final_mib": trace[-1], "peak_mib": max(trace),
                     "rss_mib": trace}
    print(f"{mode:8s} {len(trace)} candidates: final {trace[-1]:.0f} MiB, "
          f"peak {max(trace):.0f} MiB", flush=True)

from capslab.device import cpu_name  # noqa: E402
from capslab.io import atomic_write_text  # noqa: E402

folder = Path(__file__).parent / "results"
atomic_write_text(folder / "search_memory.json",
                  json.dumps({"cpu": cpu_name(), "generations": args.generations,
                              "population": args.population, "modes": results}, indent=2) + "\n")
import matplotlib  # noqa: E402

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

fig, ax = plt.subplots(figsize=(6, 3.5))
for mode, r in results.items():
    ax.plot(range(1, len(r["rss_mib"]) + 1), r["rss_mib"], label=mode)
ax.set_xlabel("candidates trained")
ax.set_ylabel("search process RSS [MiB]")
ax.legend()
fig.tight_layout()
fig.savefig(folder / "search_memory.png", dpi=120)
print(f"written {folder / 'search_memory.json'} and search_memory.png")
