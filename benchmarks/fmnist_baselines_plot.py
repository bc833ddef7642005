"""CapsNet and DeepCaps trained here on Fashion-MNIST, against their published accuracies and
the campaign's finalists (docs/nas.md, "Fashion-MNIST at full scale").

Reads the run folders ``benchmarks/fmnist_baselines.sh`` trains (their ``metrics.jsonl``: the
test accuracy after every epoch) and the committed final tables of the campaign, and writes
``fmnist_baselines.json`` (per network: epochs done of those planned, the last epoch's test
accuracy, hours, images/s, the published accuracy and the CapsAcc figures) and
``fmnist_baselines.png`` (test accuracy by epoch; the published accuracies, the goal and the
campaign's best networks as lines and points).

    .venv/bin/python benchmarks/fmnist_baselines_plot.py runs/fmnist-baselines/capsnet \
        runs/fmnist-baselines/deepcaps --out benchmarks/results
"""

from __future__ import annotations

import argparse
import csv
import json
from pathlib import Path

from fmnist_campaign_plot import GOAL, PUBLISHED

from capslab.genotype import CAPSNET_GENOTYPE, DEEPCAPS_GENOTYPE
from capslab.hw import estimate
from capslab.io import atomic_write_json
from capslab.results import pyplot, save_figure

NAMES = {"capsnet": ("CapsNet", CAPSNET_GENOTYPE), "deepcaps": ("DeepCaps", DEEPCAPS_GENOTYPE)}
#: the campaign's 30-epoch final tables (committed): space -> file
FINAL_TABLES = {"efficient preset": "fmnist_campaign_final.csv",
                "paper's space": "fmnist_campaign_paper_final.csv"}


def baseline(run: Path) -> dict:
    """The figures of one training run folder of a registered model."""
    config = json.loads((run / "config.json").read_text())
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    name, genotype = NAMES[config["model"]]
    hw = estimate(genotype)
    seconds = sum(r["epoch_seconds"] for r in records)
    return {
        "name": name, "run": str(run), "epochs_planned": config["epochs"],
        "epochs_done": len(records),
        "test_accuracy": records[-1]["test_accuracy"],  # the last epoch's, none chosen
        "test_accuracy_by_epoch": [r["test_accuracy"] for r in records],
        "train_hours": seconds / 3600,
        "images_per_second": sum(r["images_per_second"] for r in records) / len(records),
        "published_accuracy": PUBLISHED[name][0], "published_source": PUBLISHED[name][1],
        "energy_mJ": hw.energy_mJ, "latency_ms": hw.latency_ms, "memory_KiB": hw.memory_KiB,
    }


def best_finalists(results: Path) -> list[dict]:
    """The most accurate 30-epoch finalist of each search space."""
    best = []
    for space, file in FINAL_TABLES.items():
        with open(results / file, newline="") as f:
            rows = [r for r in csv.DictReader(f) if r["status"] == "ok" and r["accuracy"]]
        top = max(rows, key=lambda r: float(r["accuracy"]))
        best.append({"space": space, "name": top["name"], "accuracy": float(top["accuracy"]),
                     "epochs": int(top["epochs"]), "energy_mJ": float(top["energy_mJ"])})
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", type=Path, nargs="+", metavar="RUN",
                        help="run folders of benchmarks/fmnist_baselines.sh")
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results"))
    args = parser.parse_args()
    baselines = [baseline(run) for run in args.runs]
    finalists = best_finalists(Path(__file__).parent / "results")
    args.out.mkdir(parents=True, exist_ok=True)
    atomic_write_json(args.out / "fmnist_baselines.json",
                      {"baselines": baselines, "best_finalists": finalists, "goal": GOAL})

    plt = pyplot()
    fig, ax = plt.subplots(figsize=(7, 4.2))
    for b, color in zip(baselines, ("tab:blue", "tab:gray"), strict=False):
        epochs = range(1, b["epochs_done"] + 1)
        ax.plot(epochs, [100 * a for a in b["test_accuracy_by_epoch"]], marker="o", color=color,
                label=f"{b['name']} trained here ({b['epochs_done']} of {b['epochs_planned']} "
                      f"epochs, {b['train_hours']:.1f} h, {b['energy_mJ']:.1f} mJ)")
        ax.axhline(100 * b["published_accuracy"], color=color, linestyle="--", linewidth=1,
                   label=f"{b['name']} published: {100 * b['published_accuracy']:.2f} %")
    for f, marker in zip(finalists, ("*", "X"), strict=False):
        ax.scatter([f["epochs"]], [100 * f["accuracy"]], marker=marker, s=110, color="tab:red",
                   zorder=3, label=f"{f['space']}: {f['name']} {100 * f['accuracy']:.2f} % "
                                   f"({f['energy_mJ']:.2f} mJ)")
    ax.axhline(100 * GOAL["accuracy"], color="tab:green", linestyle=":", linewidth=1,
               label=f"goal: {100 * GOAL['accuracy']:.2f} % within {GOAL['energy_mJ']} mJ")
    ax.set_xlabel("epoch (all 60,000 training images; test read after each)")
    ax.set_ylabel("Fashion-MNIST test accuracy [%]")
    ax.set_xlim(0, max(b["epochs_planned"] for b in baselines) + 1)
    ax.legend(fontsize=6.5, loc="lower right")
    ax.set_title("CapsNet and DeepCaps on Fashion-MNIST, 2 CPU cores, the finalists' recipe",
                 fontsize=9)
    fig.tight_layout()
    save_figure(fig, args.out / "fmnist_baselines.png")
    print(json.dumps([{k: b[k] for k in ("name", "epochs_done", "test_accuracy", "train_hours")}
                      for b in baselines], indent=1))


if __name__ == "__main__":
    main()
