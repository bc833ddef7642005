"""``nascaps``: NASCaps (Marchisio et al. 2020), Table 3 and the partial-training study.

* Table 3: energy, latency and memory of the two published baselines (CapsNet and DeepCaps
  genotypes) on the CapsAcc accelerator, from :func:`capslab.hw.estimate`; the same at every
  scale (no training involved).
* Table 2 (MNIST): random networks of the search space are trained, and the Pearson
  correlation between the accuracy after n epochs and the final accuracy is computed
  (:func:`capslab.nas.pcc.run_pcc_study`, resumable network by network).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from capslab import train as trainer  # trainer.train is looked up at each call
from capslab.data.sources import require_files
from capslab.genotype import CAPSNET_GENOTYPE, DEEPCAPS_GENOTYPE
from capslab.hw import CAPSACC, estimate
from capslab.nas.pcc import PCCConfig, run_pcc_study
from capslab.repro.common import (
    Context,
    Experiment,
    Outcome,
    Plan,
    describe_training,
    drop_checkpoints,
    split_size,
)
from capslab.repro.rows import Row, differences, within
from capslab.results import write_json
from capslab.train.config import TrainingSettings
from capslab.train.estimate import measure_rates

NAME = "nascaps"
#: NASCaps Table 3: model -> quantity -> (value, half a unit of its last printed digit)
TABLE3 = {
    "CapsNet": {"energy_mJ": (88.80, 0.005), "latency_ms": (1.823, 0.0005),
                "memory_KiB": (8572.6, 0.05)},
    "DeepCaps": {"energy_mJ": (36.30, 0.005), "latency_ms": (4.287, 0.0005),
                 "memory_KiB": (9051.8, 0.05)},
}
UNITS = {"energy_mJ": ("energy", "mJ"), "latency_ms": ("latency", "ms"),
         "memory_KiB": ("memory", "KiB")}
#: NASCaps Table 2, MNIST: PCC of the accuracy after n epochs with the final accuracy
PAPER_PCC = {1: 0.8407, 3: 0.9998, 5: 0.9999, 10: 1.0, 15: 1.0}
PCC_SOURCE = "NASCaps Table 2 (MNIST, 66 random networks); reference.md 3"
#: smaller networks of the same families, so that every network trains in seconds or minutes
CPU_SPACE = {"resizes": [1], "channels": [1, 16], "capsules": [2, 16],
             "conv_channel_exponents": [2, 5], "cell_types": 8}
SMOKE_SPACE = {"resizes": [1], "kernels": [3], "strides": [2], "first_kernel": 3,
               "channels": [1, 4], "capsules": [2, 4], "conv_channel_exponents": [2, 3],
               "conv_layers": [1, 2], "caps_layers": [2, 3], "families": ["sabour"]}


@dataclass(frozen=True)
class Scale:
    networks: int
    epochs: int  # of the full training; the last one is "final"
    subset: int | None
    test_subset: int | None
    batch_size: int
    space: dict[str, Any] = field(default_factory=dict)
    time_limit: float | None = None  # seconds per network; a slower one counts as failed


SCALES = {
    "smoke": Scale(3, 2, 32, 32, 16, SMOKE_SPACE),
    # batch 32: 600 images at batch 128 would be 5 optimiser steps an epoch
    "cpu": Scale(8, 4, 600, 300, 32, CPU_SPACE, time_limit=150.0),
    # Table 2 runs to 20 epochs; the paper does not say how long "full training" was
    "paper": Scale(66, 20, None, None, 128),
}


def pcc_config(ctx: Context):
    s = SCALES[ctx.scale]
    return PCCConfig(
        training=TrainingSettings(model="genotype", dataset="mnist", data_dir=ctx.data_dir,
                                  epochs=s.epochs, batch_size=s.batch_size, subset=s.subset,
                                  test_subset=s.test_subset, seed=0, device=ctx.device),
        networks=s.networks, out=str(ctx.folder(NAME, "pcc-mnist")), space=dict(s.space),
    )


def plan(ctx: Context) -> Plan:
    return Plan(other=[("partial-training correlation", _estimate_pcc)])


def _estimate_pcc(ctx: Context, sample: int = 3) -> float:
    """Seconds of the PCC study from the measured rates of its first ``sample`` networks."""
    config = pcc_config(ctx)
    t = config.training
    train = split_size(t.dataset, "train", t.subset)
    test = split_size(t.dataset, "test", t.test_subset)
    per_network = []
    for genotype in config.genotypes()[:sample]:
        rates, infer = measure_rates([t.batch_size], "genotype", {"genotype": genotype.exchange()},
                                     t.eval_batch_size, ctx.device, steps=1, warmup=1)
        per_network.append(t.epochs * (train / rates[t.batch_size] + test / infer))
    seconds = sum(per_network) / len(per_network) * config.networks
    limit = SCALES[ctx.scale].time_limit
    return min(seconds, config.networks * limit) if limit else seconds


def _hardware(ctx: Context) -> tuple[dict[str, Any], str]:
    payload = {"accelerator": CAPSACC.to_dict()}
    for name, genotype in (("CapsNet", CAPSNET_GENOTYPE), ("DeepCaps", DEEPCAPS_GENOTYPE)):
        payload[name] = {"genotype": genotype.exchange(),
                         **estimate(genotype, CAPSACC).to_dict(layers=False)}
    path = write_json(ctx.folder(NAME, "hw.json"), "repro-hw", payload)
    return payload, ctx.rel(path)


def _train_fn(time_limit: float | None):
    """:func:`capslab.train.train` with a time limit per network; checkpoints are deleted once
    a network is done (its ``summary.json`` or ``failed.json`` records it)."""

    def run(config, **kwargs):
        if time_limit is not None:
            config = config.replace(time_limit=time_limit)
        try:
            return trainer.train(config, **kwargs)
        finally:
            drop_checkpoints(Path(config.out))

    return run


def execute(ctx: Context, plan: Plan) -> Outcome:
    rows: list[Row] = []
    hw, hw_path = _hardware(ctx)
    for model, quantities in TABLE3.items():
        for key, (value, tolerance) in quantities.items():
            what, unit = UNITS[key]
            rows.append(within(Row(
                experiment=NAME, claim=f"{model} genotype on CapsAcc: {what}", paper=value,
                source="NASCaps Table 3; reference.md 3", measured=hw[model][key], unit=unit,
                settings="CapsAcc: 16x16 PEs, 3 ns clock, 8-bit weights, 25-bit accumulators; "
                         "the published genotype",
                seeds=[], measured_by=[hw_path], key=f"{model}.{key}"), tolerance))

    config = pcc_config(ctx)
    s, paper = SCALES[ctx.scale], SCALES["paper"]
    require_files("mnist", ctx.data_dir, download=config.training.download)
    task = ctx.tracker.task(f"{NAME}: random networks", total=config.networks)
    result = run_pcc_study(config, _train_fn(s.time_limit),
                           on_network=lambda i, status: ctx.tracker.update(task, completed=i + 1))
    ctx.tracker.finish(task)
    by_epoch = {r["epoch"]: r for r in result["rows"]}
    note = differences(_knobs(s), _knobs(paper))
    example = config.train_config(config.genotypes()[0], ctx.folder(NAME, "pcc-mnist", "net_000"))
    settings = (f"{describe_training(example)}; {config.networks} random networks of the search "
                f"space" + (f" restricted to {s.space}" if s.space else "")
                + (f"; {s.time_limit:g} s limit per network" if s.time_limit else ""))
    for n, value in PAPER_PCC.items():
        if n >= s.epochs:
            continue
        pcc = by_epoch.get(n, {}).get("pcc")
        defined = pcc is not None and math.isfinite(pcc)
        rows.append(within(Row(
            experiment=NAME, claim=f"Pearson correlation of the accuracy after {n} epoch(s) with "
                                   f"the final accuracy (MNIST)",
            paper=value, source=PCC_SOURCE, measured=pcc if defined else None, unit="pcc",
            settings=settings, seeds=[config.training.seed], scale_note=note,
            measured_by=[ctx.rel(ctx.folder(NAME, "pcc-mnist", "pcc.json"))],
            key=f"rows[epoch={n}].pcc",
            note=f"{result['complete']} of {result['networks']} networks completed; final = "
                 f"epoch {s.epochs}" + ("" if defined else "; undefined (constant accuracies)")),
            0.05))
    not_run = [f"PCC after {n} epochs: {v}" for n, v in PAPER_PCC.items() if n >= s.epochs]
    not_run.append("CIFAR-10 correlations (0.2969/0.4259/0.7279/0.9334 at 1/3/5/10 epochs): the "
                   "paper does not say how long the full training was")
    return Outcome([r.to_dict() for r in rows], not_run,
                   files={"hardware": hw_path, "pcc": ctx.rel(ctx.folder(NAME, "pcc-mnist", "pcc.md"))})


def _knobs(s: Scale) -> dict[str, Any]:
    return {"networks": s.networks, "training images": split_size("mnist", "train", s.subset),
            "test images": split_size("mnist", "test", s.test_subset),
            "final epoch": s.epochs, "batch": s.batch_size,
            "search space": "restricted" if s.space else "the paper's"}


EXPERIMENT = Experiment(
    NAME, "NASCaps: Table 3 hardware figures and the partial-training correlation",
    "CapsAcc energy, latency and memory of the CapsNet and DeepCaps genotypes; Pearson "
    "correlation between partial and final accuracy of random networks of the search space.",
    plan, execute,
)
