"""Add one front member trained by ``capslab train`` (not ``search finalize``) to the campaign's
committed results (docs/nas.md, "Fashion-MNIST at full scale").

``search finalize`` needs the search folder; when it is gone, a front member can still be
trained with the finalists' exact settings from its genotype in the committed front table
(``capslab train --genotype ...``; the run's identity is finalize's). This appends its row,
in finalize's ``final.csv`` layout, to the space's final table, and recomputes the figures of
``fmnist_campaign.json`` that depend on the final rows (``final``, ``proxy_agreement``,
``tested_front``, ``goal_met``) with :mod:`fmnist_campaign_plot`'s ``final_figures``. The plot
needs the search folders and is not redrawn.

    .venv/bin/python benchmarks/fmnist_campaign_add_final.py runs/fmnist-paper-nascaps11 \
        --member 11 --pareto benchmarks/results/fmnist_campaign_paper_pareto.csv \
        --final benchmarks/results/fmnist_campaign_paper_final.csv --space "paper's space"
"""

from __future__ import annotations

import argparse
import csv
import io
import json
from pathlib import Path

from fmnist_campaign_plot import final_figures

from capslab.io import atomic_write_json, atomic_write_text


def final_row(run: Path, front_row: dict, name: str) -> dict:
    """finalize's row of a finished ``capslab train`` run of a front member."""
    summary = json.loads((run / "summary.json").read_text())
    config = summary["config"]
    if not (config["eval_final_only"] and summary["epochs_done"] == config["epochs"]):
        raise SystemExit(f"{run}: not a finished run whose test split was read once")
    last = summary["history"][-1]
    return {
        "name": name, "accuracy": summary["final_test_accuracy"],
        "quantized_accuracy": last.get("test_quantized_accuracy"),
        "partial_accuracy": float(front_row["accuracy"]),
        "energy_mJ": float(front_row["energy_mJ"]), "latency_ms": float(front_row["latency_ms"]),
        "memory_KiB": float(front_row["memory_KiB"]), "parameters": summary["parameters"],
        "epochs": summary["epochs_done"], "seconds": summary["total_seconds"], "status": "ok",
        "description": front_row["description"], "genotype_nascaps": front_row["genotype_nascaps"],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run", type=Path, help="the capslab train run folder")
    parser.add_argument("--member", type=int, required=True, help="front number (1-based)")
    parser.add_argument("--pareto", type=Path, required=True, help="the space's committed front")
    parser.add_argument("--final", type=Path, required=True, help="the space's final table")
    parser.add_argument("--space", required=True, help="the space's name in the JSON")
    parser.add_argument("--json", type=Path, default=Path("benchmarks/results/fmnist_campaign.json"))
    args = parser.parse_args()
    with open(args.pareto, newline="") as f:
        front_row = list(csv.DictReader(f))[args.member - 1]
    name = f"NASCaps-{args.member}"
    row = final_row(args.run, front_row, name)

    with open(args.final, newline="") as f:
        reader = csv.DictReader(f)
        columns, rows = reader.fieldnames, [r for r in reader if r["name"] != name]
    rows.append({k: row[k] for k in columns})
    rows.sort(key=lambda r: int(r["name"].split("-")[1]))
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, columns, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    atomic_write_text(args.final, buffer.getvalue())

    summary = json.loads(args.json.read_text())
    final = [r for r in summary["final"] if not (r["space"] == args.space and r["name"] == name)]
    final.append({**row, "folder": args.run.name, "space": args.space, "training_epochs": row["epochs"]})
    summary.update(final=final, **final_figures(final))
    atomic_write_json(args.json, summary)
    print(json.dumps({"row": {k: row[k] for k in ("name", "accuracy", "quantized_accuracy",
                                                   "energy_mJ", "seconds")},
                      "proxy_agreement": summary["proxy_agreement"],
                      "tested_front": summary["tested_front"]}, indent=1))


if __name__ == "__main__":
    main()
