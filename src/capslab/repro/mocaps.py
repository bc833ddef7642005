"""``mocaps``: ResCapsNet against MoCapsNet over depth (Gugglberger et al., Momentum Capsule
Networks): test accuracy, activation and peak memory per added block, time per training step.

Both readings of the residual block are measured: CapsLab's (``shortcut="block"``: one shortcut
around each block's two capsule layers, one velocity through the stack) and the authors' code
(``shortcut="layer"``: a shortcut around each layer, the velocity reset in every block; with SDA
routing also ``sda_bias=True``). Memory and time come from :mod:`capslab.memory` (one training
step on random images, per model and depth, slopes fitted by least squares); accuracy from
training runs with the paper's optimiser (Adam 1e-3, exponential decay 0.96 per epoch).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from capslab import memory as memory_study  # run_memory_study is looked up at each call
from capslab.memory import REPORT_KIND, MemoryConfig, write_report
from capslab.memory import plan as points
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
from capslab.repro.rows import Row, differences, judged, mean, relative, within
from capslab.results import read_json
from capslab.train.config import TrainConfig
from capslab.train.estimate import measure_rates

NAME = "mocaps"
MODELS = ("rescapsnet", "mocapsnet")
#: Memory that grows by less than this per added block (1 KiB) does not grow with depth: the
#: ratio of the slopes is then reported as unbounded, not as a division by rounding noise.
FLAT_MIB_PER_BLOCK = 1 / 1024
SHORTCUT = {"capslab": "block", "authors": "layer"}
MiB = 2**20
#: MNIST test accuracy by model and depth (MoCapsNet paper, Table 1, mean of 3 runs)
TABLE1 = {
    "rescapsnet": {1: 0.9941, 2: 0.9928, 3: 0.9930, 4: 0.9938, 5: 0.9930, 6: 0.9935, 7: 0.9936,
                   8: 0.9934},
    "mocapsnet": {1: 0.9942, 2: 0.9925, 3: 0.9931, 4: 0.9942, 5: 0.9927, 6: 0.9938, 7: 0.9954,
                  8: 0.9937},
}
#: paper-scale CIFAR runs: (dataset, model, blocks, routing, variant) -> (accuracy, source)
CIFAR = {
    ("cifar10", "mocapsnet", 1, "rba", "capslab"): (0.7218, "MoCapsNet Table 2 (1 block, RBA)"),
    ("cifar10", "mocapsnet", 5, "sda", "authors"): (0.7546, "MoCapsNet Table 2 (5 blocks, SDA)"),
    ("cifar100", "mocapsnet", 8, "rba", "capslab"): (0.4348, "MoCapsNet Table 2 (8 blocks)"),
    ("cifar100", "rescapsnet", 8, "rba", "capslab"): (
        0.01, "MoCapsNet Sec. 4.2: ResCapsNet does not learn CIFAR-100 (chance, about 1 %)"),
}
TINY = {"conv_channels": 4, "primary_types": 2, "block_capsules": 8, "block_dim": 4,
        "class_dim": 4, "decoder": False}
MEMORY_SOURCE = "MoCapsNet Sec. 4.2 and Table 4 (GPU memory, MNIST, batch 128)"


@dataclass(frozen=True)
class Scale:
    memory_depths: tuple[int, ...]
    memory_batch: int
    memory_steps: int
    memory_warmup: int
    depths: tuple[int, ...]  # MNIST accuracy, both models, CapsLab's reading
    authors: tuple[tuple[str, int], ...]  # MNIST accuracy runs of the authors' reading
    subset: int | None
    test_subset: int | None
    epochs: int
    runs: int
    batch_size: int = 128
    cifar: bool = False
    model_options: dict[str, Any] = field(default_factory=dict)


SCALES = {
    "smoke": Scale((1, 2), 2, 1, 0, (1,), (("mocapsnet", 1),), 32, 32, 1, 1, batch_size=16,
                   model_options=TINY),
    # batch 32: 1,500 images at batch 128 would be 12 optimiser steps an epoch
    "cpu": Scale((1, 4, 8), 128, 2, 1, (1, 7), (("mocapsnet", 7),), 1500, 1000, 2, 1,
                 batch_size=32),
    "paper": Scale(tuple(range(1, 9)), 128, 3, 1, tuple(range(1, 9)),
                   (("rescapsnet", 7), ("mocapsnet", 7)), None, None, 30, 3, cifar=True),
}


def _run_config(ctx: Context, dataset: str, model: str, blocks: int, routing: str, variant: str,
                seed: int) -> TrainConfig:
    s = SCALES[ctx.scale]
    options = {**s.model_options, "num_blocks": blocks, "routing": routing,
               "shortcut": SHORTCUT[variant]}
    if routing == "sda" and variant == "authors":
        options["sda_bias"] = True
    epochs = s.epochs if dataset == "mnist" else 60  # the paper: 60 epochs on CIFAR
    folder = ctx.folder(NAME, dataset, f"{model}-{blocks}b-{routing}-{variant}", f"seed{seed}")
    return TrainConfig(
        model=model, model_options=options, dataset=dataset, data_dir=ctx.data_dir,
        epochs=epochs, batch_size=s.batch_size, subset=s.subset if dataset == "mnist" else None,
        test_subset=s.test_subset if dataset == "mnist" else None,
        policy="exp-decay", policy_options={"rate": 0.96, "decay_every": "epoch"}, lr=1e-3,
        seed=seed, device=ctx.device, out=str(folder), resume=True, plots=False,
    )


def accuracy_keys(scale_name: str) -> list[tuple[str, str, int, str, str]]:
    """(dataset, model, blocks, routing, variant) of every accuracy configuration."""
    s = SCALES[scale_name]
    keys = [("mnist", m, d, "rba", "capslab") for d in s.depths for m in MODELS]
    keys += [("mnist", m, d, "rba", "authors") for m, d in s.authors]
    if s.cifar:
        keys += list(CIFAR)
    return keys


def memory_config(ctx: Context, variant: str):
    s = SCALES[ctx.scale]
    return MemoryConfig(
        models=MODELS, blocks=s.memory_depths, batch_size=s.memory_batch, routing="rba",
        model_options={**s.model_options, "shortcut": SHORTCUT[variant]},
        steps=s.memory_steps, warmup=s.memory_warmup, device=ctx.device, seed=0,
    )


def plan(ctx: Context) -> Plan:
    s = SCALES[ctx.scale]
    runs, keys = [], []
    for key in accuracy_keys(ctx.scale):
        dataset, model, blocks, routing, variant = key
        for seed in range(s.runs):
            cfg = _run_config(ctx, dataset, model, blocks, routing, variant, seed)
            runs.append(PlannedRun(f"{dataset} {model} {blocks} blocks {variant} seed {seed}", cfg))
            keys.append(key)
    other = [(f"memory vs depth ({v})", lambda c, v=v: _estimate_memory(c, v)) for v in SHORTCUT]
    return Plan(runs, other, state={"keys": keys})


def _estimate_memory(ctx: Context, variant: str) -> float:
    """Seconds of the memory study: every point costs about ``warmup + steps + 3`` training
    steps and ``warmup + steps`` inference batches, at the deepest model's measured rates."""
    config = memory_config(ctx, variant)
    deepest = max(config.blocks)
    seconds = 0.0
    for model in MODELS:
        options = {**config.model_options, "num_blocks": deepest, "routing": config.routing}
        train, infer = measure_rates([config.batch_size], model, options, config.batch_size,
                                     ctx.device, steps=1, warmup=1)
        n = sum(1 for name, _ in points(config) if name == model)
        per_point = ((config.warmup + config.steps + 3) * config.batch_size / train[config.batch_size]
                     + (config.warmup + config.steps) * config.batch_size / infer)
        seconds += n * per_point
    return seconds


def _memory(ctx: Context, variant: str) -> tuple[dict[str, Any], Path]:
    """The memory study of ``variant``: reused when ``memory.json`` holds these settings."""
    config = memory_config(ctx, variant)
    folder = ctx.folder(NAME, f"memory-{variant}")
    path = folder / "memory.json"
    previous = read_json(path, REPORT_KIND)
    if previous is not None and previous["config"] == config.to_dict():
        return previous, path
    task = ctx.tracker.task(f"{NAME}: memory vs depth ({variant})", total=len(points(config)))
    report = memory_study.run_memory_study(config, on_point=lambda _m: ctx.tracker.update(task, advance=1))
    ctx.tracker.finish(task)
    write_report(report, folder, plot=ctx.scale != "smoke")
    return read_json(path, REPORT_KIND), path


def execute(ctx: Context, plan: Plan) -> Outcome:
    rows: list[Row] = []
    for variant in SHORTCUT:
        data, path = _memory(ctx, variant)
        rows += _memory_rows(ctx, variant, data, ctx.rel(path))
    summaries = train_runs(ctx, plan.runs, NAME)
    groups: dict[tuple, list[tuple[PlannedRun, dict]]] = {}
    for key, run, summary in zip(plan.state["keys"], plan.runs, summaries, strict=True):
        groups.setdefault(key, []).append((run, summary))
    s, paper = SCALES[ctx.scale], SCALES["paper"]
    for (dataset, model, blocks, routing, variant), pairs in groups.items():
        if dataset == "mnist":
            value, source = TABLE1[model][blocks], "MoCapsNet Table 1, mean of 3 runs"
            note = differences(_accuracy_knobs(s), _accuracy_knobs(paper))
        else:
            value, source = CIFAR[(dataset, model, blocks, routing, variant)]
            note = ""
        extra = " + SDA bias" if routing == "sda" and variant == "authors" else ""
        rows.append(within(Row(
            experiment=NAME, variant=variant,
            claim=f"{model}, {blocks} block(s), {routing.upper()}{extra}: {dataset} test accuracy",
            paper=value, source=source, measured=mean([x["best_test_accuracy"] for _, x in pairs]),
            unit="accuracy", settings=describe_training(pairs[0][0].config),
            seeds=[r.config.seed for r, _ in pairs], scale_note=note,
            measured_by=[ctx.rel(Path(r.config.out) / "summary.json") for r, _ in pairs],
            key="best_test_accuracy, mean over runs"), 0.0025))
    not_run = []
    if not s.cifar:
        not_run += [f"{m}, {b} block(s), {r.upper()} ({v}): {d} accuracy {100 * p:.2f} % ({src})"
                    for (d, m, b, r, v), (p, src) in CIFAR.items()]
    missing = [d for d in paper.depths if d not in s.depths]
    if missing:
        not_run.append("MNIST accuracy at depths " + ", ".join(map(str, missing))
                       + " (MoCapsNet Table 1)")
    return Outcome([r.to_dict() for r in rows], not_run)


def _accuracy_knobs(s: Scale) -> dict[str, Any]:
    return {"training images": split_size("mnist", "train", s.subset),
            "test images": split_size("mnist", "test", s.test_subset), "epochs": s.epochs,
            "runs": s.runs, "batch": s.batch_size, "model": "tiny" if s.model_options else "full"}


def _memory_knobs(s: Scale, device: str) -> dict[str, Any]:
    return {"batch": s.memory_batch, "depths": ",".join(map(str, s.memory_depths)),
            "model": "tiny" if s.model_options else "full", "memory measured on": device}


def _memory_rows(ctx: Context, variant: str, data: dict[str, Any], path: str) -> list[Row]:
    cfg = data["config"]
    fits = data["fits"]
    s, paper = SCALES[ctx.scale], SCALES["paper"]
    measured_on = "GPU" if data["device"].startswith("cuda") else "CPU"
    note = differences(_memory_knobs(s, measured_on), _memory_knobs(paper, "GPU"))
    reading = ("one shortcut around each block's pair of layers" if variant == "capslab"
               else "a shortcut around each layer, velocity reset in every block")
    settings = (f"one training step (forward, margin + reconstruction loss, backward, Adam) on "
                f"random {'x'.join(map(str, cfg['dataset_shape']))} images, batch "
                f"{cfg['batch_size']}, depths {cfg['blocks']}, routing {cfg['routing']}, "
                f"{reading}, device {data['device']}, median of {cfg['steps']} steps; "
                f"memory: {data['method']}")
    common = dict(experiment=NAME, variant=variant, settings=settings, seeds=[cfg["seed"]],
                  scale_note=note, measured_by=[path])
    rows = []
    for metric, what in (("activation_bytes", "activation memory saved for backward"),
                         ("peak_bytes", "peak memory of a training step")):
        slope = {m: fits[m][metric]["slope"] / MiB for m in MODELS}
        for model, paper_value in (("rescapsnet", 185.0), ("mocapsnet", 4.0)):
            rows.append(relative(Row(
                claim=f"{model}: {what} per added block", paper=paper_value, source=MEMORY_SOURCE,
                measured=slope[model], unit="MiB/block",
                key=f"fits.{model}.{metric}.slope / 2**20", **common), 0.5))
        # a fitted slope of a few bytes per block is rounding noise of a flat line
        flat = slope["mocapsnet"] < FLAT_MIB_PER_BLOCK
        ratio = None if flat else slope["rescapsnet"] / slope["mocapsnet"]
        rows.append(judged(Row(
            claim=f"ResCapsNet / MoCapsNet slope of {what}", paper=48.0,
            source="MoCapsNet Sec. 4.2 (174.2 / 3.643 on CIFAR-10, '48 times less steep')",
            measured=ratio, unit="ratio",
            key=f"fits.rescapsnet.{metric}.slope / fits.mocapsnet.{metric}.slope", **common,
            note="MoCapsNet's memory does not grow with depth here, so the ratio is unbounded"
            if flat else ""),
            flat or ratio >= 24, "CapsLab's ratio >= 24 (half the paper's 48)"))
    t_res = fits["rescapsnet"]["train_seconds"]["slope"]
    t_mo = fits["mocapsnet"]["train_seconds"]["slope"]
    rows.append(within(Row(
        claim="MoCapsNet / ResCapsNet added training time per block", paper=1.8,
        source="reference.md 4 ('training time about 1.8x per block', MoCapsNet Fig. 3b, 4b)",
        measured=t_mo / t_res if t_res > 0 else None, unit="ratio",
        key="fits.mocapsnet.train_seconds.slope / fits.rescapsnet.train_seconds.slope",
        **common), 0.5))
    return rows


EXPERIMENT = Experiment(
    NAME, "ResCapsNet against MoCapsNet over depth (Momentum Capsule Networks)",
    "Memory and time of a training step against the number of blocks, for both readings of the "
    "residual block; MNIST test accuracy of both networks at several depths.",
    plan, execute,
)
