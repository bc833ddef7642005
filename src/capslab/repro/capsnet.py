"""``capsnet``: the baseline CapsNet of Sabour et al. (2017) on MNIST and Fashion-MNIST.

Rows: MNIST test accuracy against the paper's 99.75 % and against FasTrCaps' baseline (99.37 %,
fixed learning rate, 30 epochs, mean of 5 runs); on the full training set, the accuracy after 2
epochs against what public reimplementations reach (about 99.0 %, issue #14); the parameter
count (about 8.2 M); Fashion-MNIST against FasTrCaps' baseline (90.99 %).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from capslab.repro.common import (
    Context,
    Experiment,
    Outcome,
    Plan,
    PlannedRun,
    describe_training,
    split_size,
    train_runs,
)
from capslab.repro.rows import Row, differences, mean, within
from capslab.train.config import TrainConfig

NAME = "capsnet"
#: a tiny CapsNet for the smoke scale (72 primary capsules of 8-D, 4-D classes, no decoder)
TINY = {"conv_channels": 4, "primary_types": 2, "class_dim": 4, "decoder": False}


@dataclass(frozen=True)
class Scale:
    """The runs of one scale: per dataset ``(subset, test_subset, epochs)``, runs per dataset."""

    mnist: tuple[int | None, int | None, int]
    fashion: tuple[int | None, int | None, int]
    runs: int
    batch_size: int = 128
    model_options: dict[str, Any] = field(default_factory=dict)


SCALES = {
    "smoke": Scale(mnist=(32, 32, 1), fashion=(32, 32, 1), runs=1, batch_size=16,
                   model_options=TINY),
    # the full MNIST training set for 2 epochs (about 10 min an epoch on 2 cores)
    "cpu": Scale(mnist=(None, None, 2), fashion=(6000, None, 2), runs=1),
    # FasTrCaps' protocol for the baseline: 30 epochs, mean of 5 runs
    "paper": Scale(mnist=(None, None, 30), fashion=(None, None, 30), runs=5),
}
DATASETS = {"mnist": "mnist", "fashion": "fashion-mnist"}


def _config(ctx: Context, scale: Scale, key: str, seed: int) -> TrainConfig:
    subset, test_subset, epochs = getattr(scale, key)
    dataset = DATASETS[key]
    return TrainConfig(
        model="capsnet", model_options=dict(scale.model_options), dataset=dataset,
        data_dir=ctx.data_dir, epochs=epochs, batch_size=scale.batch_size, subset=subset,
        test_subset=test_subset, seed=seed, device=ctx.device,
        out=str(ctx.folder(NAME, dataset, f"seed{seed}")), resume=True, plots=False,
    )


def plan(ctx: Context) -> Plan:
    scale = SCALES[ctx.scale]
    runs = []
    for key in DATASETS:
        for seed in range(scale.runs):
            cfg = _config(ctx, scale, key, seed)
            keep = ("best.pt",) if key == "mnist" and ctx.scale != "smoke" else ()
            runs.append(PlannedRun(f"{cfg.dataset} seed {seed}", cfg, keep))
    return Plan(runs)


def _knobs(scale: Scale, key: str) -> dict[str, Any]:
    subset, test_subset, epochs = getattr(scale, key)
    dataset = DATASETS[key]
    return {"training images": split_size(dataset, "train", subset),
            "test images": split_size(dataset, "test", test_subset),
            "epochs": epochs, "runs": scale.runs,
            "model": "tiny" if scale.model_options else "full"}


def execute(ctx: Context, plan: Plan) -> Outcome:
    summaries = train_runs(ctx, plan.runs, NAME)
    scale, paper = SCALES[ctx.scale], SCALES["paper"]
    by_dataset: dict[str, list[tuple[PlannedRun, dict]]] = {}
    for run, summary in zip(plan.runs, summaries, strict=True):
        by_dataset.setdefault(run.config.dataset, []).append((run, summary))
    rows: list[Row] = []
    for key, dataset in DATASETS.items():
        pairs = by_dataset[dataset]
        cfg = pairs[0][0].config
        common = dict(
            experiment=NAME, settings=describe_training(cfg),
            seeds=[r.config.seed for r, _ in pairs],
            scale_note=differences(_knobs(scale, key), _knobs(paper, key)),
            measured_by=[ctx.rel(Path(r.config.out) / "summary.json") for r, _ in pairs],
        )
        best = mean([s["best_test_accuracy"] for _, s in pairs])
        best_key = "best_test_accuracy, mean over runs"
        if key == "mnist":
            rows.append(within(Row(
                claim="CapsNet MNIST test accuracy", paper=0.9975,
                source="Sabour et al. 2017, with shift augmentation; reference.md 1",
                measured=best, unit="accuracy", key=best_key, **common), 0.002))
            rows.append(within(Row(
                claim="CapsNet MNIST test accuracy, FasTrCaps' baseline (fixed lr, 30 epochs)",
                paper=0.9937, source="FasTrCaps Sec. V-C, mean of 5 runs; reference.md 2",
                measured=best, unit="accuracy", key=best_key, **common), 0.002))
            full = cfg.subset is None or cfg.subset >= split_size(dataset, "train", None)
            if full and cfg.epochs >= 2:
                rows.append(within(Row(
                    claim="CapsNet MNIST test accuracy after 2 epochs on all 60,000 images",
                    paper=0.990, source="issue #14: public reimplementations reach about 99.0 % "
                    "after 2-3 epochs (not a paper's number)",
                    measured=mean([s["history"][1]["test_accuracy"] for _, s in pairs]),
                    unit="accuracy", key="history[1].test_accuracy (epoch 2), mean over runs",
                    **common), 0.003))
            rows.append(within(Row(
                claim="CapsNet parameters (encoder and decoder)", paper=8.2e6,
                source="Sabour et al. 2017 (about 8.2 M); reference.md 1",
                measured=float(pairs[0][1]["parameters"]), unit="parameters", key="parameters",
                **common), 0.05e6))
        else:
            rows.append(within(Row(
                claim="CapsNet Fashion-MNIST test accuracy, FasTrCaps' baseline (fixed lr)",
                paper=0.9099, source="FasTrCaps Table I, mean of 5 runs; reference.md 2",
                measured=best, unit="accuracy", key=best_key, **common), 0.003))
    return Outcome([r.to_dict() for r in rows])


EXPERIMENT = Experiment(
    NAME, "the baseline CapsNet (Sabour et al. 2017)",
    "CapsNet with 3 routing iterations, margin and reconstruction loss, Adam 1e-3 (fixed), "
    "trained on MNIST and Fashion-MNIST.",
    plan, execute,
)
