"""The training loop, as its phases: data, model and optimiser, resume, step, evaluate,
checkpoint and log.

``train(config)`` is what ``capslab train``, the studies and the architecture search all call.
A run in ``config.out`` holds ``config.json``, ``metrics.jsonl`` (one line per epoch),
``summary.json``, ``last.pt`` / ``best.pt`` and PNG plots; ``resume=True`` continues from
``last.pt`` and reaches the same result as an uninterrupted run with the same seed. Progress,
TensorBoard, the time budget and the callers' own hooks are :mod:`~capslab.train.callbacks`.
With ``nproc`` > 1, or under ``torchrun``, every process runs these phases as one rank of a
data-parallel group (:mod:`~capslab.train.distributed`): each trains on its share of every
batch, and rank 0 alone evaluates, writes the files and calls the callbacks.
"""

from __future__ import annotations

import dataclasses
import json
import random
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from capslab.allocator import keep_freed_memory_for
from capslab.checkpoint import (
    check_compatible,
    load_checkpoint,
    rng_state,
    save_checkpoint,
    set_rng_state,
)
from capslab.data import (
    BatchLoader,
    DatasetInfo,
    ImageDataset,
    check_reachable,
    dataset_info,
    dataset_origin,
    load_dataset,
    require_files,
    stratified_subset,
)
from capslab.device import autocast, check_precision, configure_backends, resolve_device
from capslab.errors import CheckpointError, ConfigError, NonFiniteLossError
from capslab.evaluation import evaluate
from capslab.io import atomic_write_text
from capslab.losses import capsule_loss
from capslab.models import CapsuleOutput, create_model
from capslab.optim import create_optimizer
from capslab.quantize import (
    QuantizationAwareTraining,
    QuantizationSettings,
    calibrate,
    evaluate_quantized,
)
from capslab.results import SUMMARY_FILE, versioned, write_json
from capslab.train.callbacks import (
    Callback,
    ProgressDisplay,
    StepInfo,
    TensorBoardLogger,
    TimeBudget,
    held_out_split,
)
from capslab.train.config import TrainConfig, check_batch_shares
from capslab.train.distributed import (
    SINGLE,
    Ranks,
    check_picklable,
    check_process_count,
    data_parallel,
    global_batch,
    launched_ranks,
    process_group,
    rank_device,
    shared_loss,
    spawn,
)
from capslab.train.plots import plot_history, plot_reconstructions
from capslab.train.policies import Schedule, build_schedule

METRICS_FILE = "metrics.jsonl"
#: training images the accelerator mode calibrates its activation scales on (eval_accelerator)
CALIBRATION_IMAGES = 256
#: off the CPU, how many steps run between two checks that the loss is finite (a host sync)
FINITE_CHECK_EVERY = 25
#: the training augmentation's largest shift in pixels, each way (without ``pad_to``)
DEFAULT_SHIFT = 2


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


# --------------------------------------------------------------------------- phase: data
def hold_out(train_set: ImageDataset, val_size: int, seed: int) -> tuple[ImageDataset, ImageDataset]:
    """Split ``train_set`` into (the rest, a validation split of ``val_size`` images).

    The validation images are :func:`~capslab.data.stratified_subset` of the labels (class
    proportions kept, deterministic in ``seed``); the rest keeps its order. The two are disjoint.
    """
    if val_size >= len(train_set):
        raise ConfigError(f"val_size {val_size} leaves no training image: the training split "
                          f"has {len(train_set)}")
    val_idx = stratified_subset(train_set.labels, val_size, seed)
    keep = torch.ones(len(train_set), dtype=torch.bool)
    keep[val_idx] = False
    rest = train_set.subset(torch.nonzero(keep, as_tuple=True)[0])
    return rest, dataclasses.replace(train_set.subset(val_idx), split="val")


def prepare_data(config: TrainConfig) -> tuple[ImageDataset, ImageDataset]:
    """The training split and the split each epoch is evaluated on, with the configured
    stratified subsets.

    Without ``val_size`` that is the test split (``test_subset`` of it). With ``val_size``
    the validation split is held out of the whole training split first (:func:`hold_out`),
    ``subset`` is then drawn from the rest, and the test split is not read at all. With
    ``pad_to`` both are centred on their canvas (the training images then move on it by
    :func:`augmentation_shift`).
    """
    train_set = load_dataset(config.dataset, "train", data_dir=config.data_dir, download=config.download)
    if config.val_size is not None:
        train_set, eval_set = hold_out(train_set, config.val_size, config.seed)
    else:
        eval_set = load_dataset(config.dataset, "test", data_dir=config.data_dir, download=config.download)
        eval_set = eval_set.stratified(config.test_subset, config.seed)
    train_set = train_set.stratified(config.subset, config.seed)
    if config.pad_to is not None:
        train_set, eval_set = train_set.padded(config.pad_to), eval_set.padded(config.pad_to)
    return train_set, eval_set


def augmentation_shift(config: TrainConfig) -> int:
    """The largest shift (pixels, each way) of the training augmentation: 2, or with
    ``pad_to`` half the margin around the centred image, so that each epoch places every image
    at random anywhere on its canvas (all of it for an even margin; 40 - 28: 6 each way)."""
    if config.pad_to is None:
        return DEFAULT_SHIFT
    return (config.pad_to - dataset_info(config.dataset).image_size) // 2


def evaluated_split(config: TrainConfig) -> str:
    """``"val"`` or ``"test"``: the split a run of ``config`` is evaluated and selected on."""
    return "test" if config.val_size is None else "val"


# --------------------------------------------------------------------------- phase: model and optimiser
def build_model(config: TrainConfig, info: DatasetInfo) -> nn.Module:
    """The model of ``config`` with the dataset's shape, classes and statistics as defaults."""
    options = {
        "in_channels": info.channels,
        "image_size": info.image_size,
        "num_classes": info.num_classes,
        "mean": list(info.mean),
        "std": list(info.std),
        **config.model_options,
    }
    return create_model(config.model, **options)


# --------------------------------------------------------------------------- phase: resume
@dataclass
class RunState:
    """What a checkpoint restores: epochs done, optimiser steps, the best epoch, the history."""

    epoch: int = 0
    global_step: int = 0
    best_accuracy: float = -1.0
    best_epoch: int = 0
    history: list[dict[str, Any]] = field(default_factory=list)

    def add(self, record: dict[str, Any]) -> bool:
        """Append an epoch's record; ``True`` when it is the best so far (by its validation
        accuracy when it has one, else its test accuracy; an epoch not evaluated is never)."""
        self.history.append(record)
        self.epoch = record["epoch"]
        accuracy = record.get(f"{held_out_split(record)}_accuracy")
        if accuracy is not None and accuracy > self.best_accuracy:
            self.best_accuracy, self.best_epoch = accuracy, record["epoch"]
            return True
        return False


def open_run_folder(config: TrainConfig) -> Path | None:
    """Create ``config.out``; refuse a folder that holds a run unless resuming."""
    if config.out is None:
        return None
    out = Path(config.out)
    out.mkdir(parents=True, exist_ok=True)
    if not config.resume and (out / "last.pt").exists():
        raise CheckpointError(
            f"{out} already holds a run (last.pt); resume it or choose another output folder"
        )
    return out


def rank_run_folder(config: TrainConfig, ranks: Ranks) -> Path | None:
    """``config.out`` as :func:`open_run_folder` opens it on rank 0; the other ranks only read
    it (a resumed run's ``last.pt``), before rank 0 can write anything."""
    if ranks.main:
        return open_run_folder(config)
    return None if config.out is None else Path(config.out)


def resume_state(config: TrainConfig, out: Path | None, model: nn.Module, optimizer) -> RunState:
    """The state in ``out/last.pt`` loaded into ``model`` and ``optimizer`` when resuming,
    else a fresh state."""
    if out is None or not config.resume or not (out / "last.pt").exists():
        return RunState()
    last = out / "last.pt"
    # read on the CPU: load_state_dict copies the weights and optimiser state to the model's
    # device, and the random-number states must stay CPU byte tensors
    ckpt = load_checkpoint(last, map_location="cpu")
    check_compatible(ckpt, config, last)
    try:
        model.load_state_dict(ckpt["model"])
    except RuntimeError as exc:
        raise CheckpointError(f"checkpoint {last} does not fit model {config.model!r}: {exc}") from exc
    optimizer.load_state_dict(ckpt["optimizer"])
    set_rng_state(ckpt["rng"])
    return RunState(ckpt["epoch"], ckpt["global_step"], ckpt["best_accuracy"], ckpt["best_epoch"],
                    list(ckpt["history"]))


def check_same_start(state: RunState, ranks: Ranks, out: Path | None) -> None:
    """Refuse a rank that starts from another epoch than rank 0: one that found no checkpoint
    to resume, or another one, in a run folder that the machines of a group do not share."""
    start = ranks.from_main(state.epoch)
    if state.epoch != start:
        raise CheckpointError(
            f"rank {ranks.rank} would start at epoch {state.epoch + 1} and rank 0 at epoch "
            f"{start + 1}: they read different checkpoints in {out}; to resume on several "
            "machines, the output folder must be one that they share"
        )


# --------------------------------------------------------------------------- phase: step
def train_epoch(
    config: TrainConfig, epoch: int, model: nn.Module, forward: nn.Module, optimizer,
    schedule: Schedule, train_set: ImageDataset, state: RunState, device: torch.device,
    callbacks: Sequence[Callback], out: Path | None, ranks: Ranks = SINGLE,
    qat: QuantizationAwareTraining | None = None,
) -> dict[str, Any]:
    """One epoch of optimiser steps; returns the epoch's training metrics. With ``qat`` each
    step's forward and backward passes see the quantized network (straight through).

    The loss and the correct count are summed on the device: the host waits for the device
    only to check that the loss is finite (every step on the CPU, where that costs nothing,
    every ``FINITE_CHECK_EVERY`` steps elsewhere) and once at the end of the epoch.

    In a data-parallel group each rank steps on its share of every global batch; the losses
    that are checked, reported and summed are the global batch's (the same on every rank, so
    all ranks stop together on a non-finite one), and the epoch's counts are summed over the
    ranks at its end.
    """
    batch_size = schedule.batch_size(epoch)
    # no page faults for large tensors (capslab.allocator)
    keep_freed_memory_for(device, batch_size // ranks.world_size)
    # the whole split sits on the device, so every batch is ready before its step
    loader = BatchLoader(train_set, batch_size, shuffle=True, augment=config.augment,
                         seed=config.seed, device=device, rank=ranks.rank,
                         world_size=ranks.world_size, max_shift=augmentation_shift(config),
                         hflip=config.hflip)
    loader.set_epoch(epoch)
    model.train()
    check_every = 1 if device.type == "cpu" else FINITE_CHECK_EVERY
    started = time.perf_counter()
    loss_sum = torch.zeros((), device=device)
    correct = torch.zeros((), dtype=torch.long, device=device)
    seen = 0
    lr = schedule.lr(epoch, 0)
    steps = len(loader)
    for step, (images, labels) in enumerate(loader):
        lr = schedule.lr(epoch, step)
        n, whole = labels.shape[0], global_batch(len(train_set), batch_size, step)
        if n == 0:  # this rank's share of a last batch smaller than the group: it weighs nothing
            images, labels = _stand_in(loader)
        if qat is not None:
            qat.step()
        try:
            loss, output, (margin, recon) = step_loss(config, forward, images, labels)
            loss, batch_loss = shared_loss(loss, n / whole, ranks)
            # the one host synchronisation of a step, and only every check_every steps off the CPU
            if (step % check_every == 0 or step == steps - 1) and not torch.isfinite(batch_loss):
                _raise_non_finite(batch_loss, margin, recon, epoch, step, out)
            optimizer_step(optimizer, loss, lr, None if qat is None else qat.restore)
        finally:
            if qat is not None and qat.masters:
                qat.restore()
        loss_sum += batch_loss * whole
        if n:
            correct += (output.lengths.detach().argmax(dim=1) == labels).sum()
        seen += n
        info = StepInfo(epoch, step, state.global_step, steps, lr, batch_size, batch_loss)
        state.global_step += 1
        for cb in callbacks:
            cb.on_step_end(info)
    if not torch.isfinite(loss_sum):  # a non-finite loss between two checks
        _raise_non_finite(loss_sum, margin, recon, epoch, steps - 1, out)
    correct, seen = ranks.sum(torch.stack([correct, torch.tensor(seen, device=device)])).tolist()
    seconds = time.perf_counter() - started
    return {
        "epoch": epoch + 1,
        "train_loss": loss_sum.item() / max(seen, 1),
        "train_accuracy": correct / max(seen, 1),
        "lr": lr,
        "batch_size": batch_size,
        "epoch_seconds": seconds,
        "images_per_second": seen / seconds if seconds > 0 else float("nan"),
    }


def _stand_in(loader: BatchLoader) -> tuple[Tensor, Tensor]:
    """One image of ``loader``'s split for a rank whose share of a batch is empty: its step
    must still run (DDP reduces every rank's gradients), with a loss weighted 0.

    Shapes:
        returns ``([1, C, H, W]`` in [0, 1], ``[1]`` labels).
    """
    return loader.images[:1] / 255.0, loader.labels[:1]


def step_loss(config: TrainConfig, forward: nn.Module, images: Tensor, labels: Tensor,
              ) -> tuple[Tensor, CapsuleOutput, tuple[Tensor, Tensor]]:
    """The forward pass and loss of one training step, with no host synchronisation (the
    tests run it on PyTorch's ``meta`` device, where any read of a value fails).

    Args:
        images: ``[B, C, H, W]`` in [0, 1] on the training device; labels: ``[B]``.

    Returns:
        ``(loss, output, (margin, reconstruction))``: 0-d losses on the device.
    """
    with autocast(labels.device, config.precision):
        output = forward(images, labels)
    loss, margin, recon = capsule_loss(
        output.lengths.float(), labels,
        None if output.reconstruction is None else output.reconstruction.float(),
        images, config.reconstruction_weight,
    )
    return loss, output, (margin, recon)


def optimizer_step(optimizer, loss: Tensor, lr: float,
                   before_step: Callable[[], None] | None = None) -> None:
    """Backward pass and one optimiser step at learning rate ``lr`` (no host synchronisation);
    ``before_step`` runs between the two (quantization-aware training restores the float
    weights there)."""
    for group in optimizer.param_groups:
        group["lr"] = lr
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    if before_step is not None:
        before_step()
    optimizer.step()


def _raise_non_finite(loss, margin, recon, epoch: int, step: int, out: Path | None):
    last = None if out is None else out / "last.pt"
    kept = f"; last good checkpoint: {last}" if last is not None and last.exists() else ""
    raise NonFiniteLossError(
        f"loss became {loss.item()} at epoch {epoch + 1}, step {step + 1} "
        f"(margin {margin.item()}, reconstruction {recon.item()}){kept}. "
        "Try a lower learning rate."
    )


# --------------------------------------------------------------------------- phase: evaluate
def quantized_eval_bits(config: TrainConfig) -> int | None:
    """The bits of the quantized accuracy of every epoch: ``eval_weight_bits``, else a
    quantization-aware run's ``qat_bits`` (evaluated in the accelerator mode)."""
    return config.eval_weight_bits if config.eval_weight_bits is not None else config.qat_bits


def calibration_batches(config: TrainConfig, train_set: ImageDataset) -> list[Tensor] | None:
    """In the accelerator mode (``eval_accelerator``, or a quantization-aware run):
    :data:`CALIBRATION_IMAGES` training images (stratified, the run's seed, no augmentation),
    the calibration set of the accelerator mode."""
    if not (config.eval_accelerator or config.qat_bits):
        return None
    sample = train_set.stratified(min(CALIBRATION_IMAGES, len(train_set)), config.seed)
    return [x for x, _ in BatchLoader(sample, 64, shuffle=False, augment=False)]


def evaluate_epoch(config: TrainConfig, model: nn.Module, forward: nn.Module, loader: BatchLoader,
                   device: torch.device, split: str,
                   calibration: list[Tensor] | None = None) -> dict[str, float]:
    """The epoch's figures on the held-out ``split`` (``<split>_loss``, ``<split>_accuracy``,
    with ``eval_weight_bits`` also ``<split>_quantized_accuracy``: weights only, or with
    ``calibration`` images the accelerator mode, the activation scales calibrated on them and
    the routing quantized too). ``forward`` is ``model`` or its compiled form, never the
    data-parallel wrapper: rank 0 evaluates alone."""
    metrics = evaluate(forward, loader, device, config.reconstruction_weight, config.precision)
    # evaluate() names its figures test_*; on a validation split they are val_*
    record = {k.replace("test_", f"{split}_", 1): v for k, v in metrics.items()}
    bits = quantized_eval_bits(config)
    if bits is not None:
        settings = QuantizationSettings(weight_bits=bits)
        if calibration is not None:
            settings = calibrate(model, calibration, weight_bits=bits, activation_bits=bits,
                                 routing_bits=bits, device=device)
        record[f"{split}_quantized_accuracy"] = evaluate_quantized(
            model, loader, settings, device=device,
            reconstruction_weight=config.reconstruction_weight)["test_accuracy"]
    return record


# --------------------------------------------------------------------------- phase: checkpoint and log
def save_epoch(
    out: Path, config: TrainConfig, model: nn.Module, optimizer, schedule: Schedule,
    state: RunState, is_best: bool,
) -> None:
    """``metrics.jsonl`` (the whole history, rewritten atomically) and the checkpoints. A
    checkpoint records the dataset's info (for your own data: computed from it) and, for your
    own data, where it came from, so that the network loads without the data."""
    atomic_write_text(out / METRICS_FILE,
                      "".join(json.dumps(versioned("metrics", h)) + "\n" for h in state.history))
    if not config.checkpoints:
        return
    info = dataset_info(config.dataset)
    if config.pad_to is not None:  # the network's input: the images on their canvas
        info = info.padded(config.pad_to)
    payload = {
        "model_name": config.model,
        "model_options": _jsonable(getattr(model, "model_options", config.model_options)),
        "identity": config.identity(),
        "config": config.to_dict(),
        "model": model.state_dict(),
        "optimizer": optimizer.state_dict(),
        "schedule": _jsonable(schedule.to_dict()),
        "rng": rng_state(),
        "history": state.history,
        "epoch": state.epoch,
        "global_step": state.global_step,
        "best_accuracy": state.best_accuracy,
        "best_epoch": state.best_epoch,
        "classes": list(info.classes),
        "dataset_info": info.to_dict(),
        "dataset_origin": dataset_origin(config.dataset),
    }
    save_checkpoint(out / "last.pt", **payload)
    if is_best:
        save_checkpoint(out / "best.pt", **payload)


def _jsonable(obj: Any) -> Any:
    return json.loads(json.dumps(obj, default=str))


def finish_run(out: Path, config: TrainConfig, model: nn.Module, eval_set: ImageDataset,
               summary: dict[str, Any], device: torch.device) -> None:
    """Plots (curves, reconstructions) and ``summary.json``."""
    history = summary["history"]
    if config.plots and history:
        plot_history(history, out / "curves.png")
        if getattr(model, "decoder", None) is not None:
            sample = eval_set.subset(torch.arange(min(8, len(eval_set))))
            images, _ = next(iter(BatchLoader(sample, len(sample), shuffle=False)))
            images = images.to(device)
            model.eval()
            with torch.no_grad():
                recon = model(images).reconstruction
            plot_reconstructions(images, recon, out / "reconstructions.png")
    write_json(out / SUMMARY_FILE, "summary", summary)


# --------------------------------------------------------------------------- the loop
def default_callbacks(config: TrainConfig, out: Path | None, progress: bool, started: float) -> list[Callback]:
    callbacks: list[Callback] = []
    if progress:
        callbacks.append(ProgressDisplay())
    if config.tensorboard and out is not None:
        callbacks.append(TensorBoardLogger(out / "tensorboard"))
    if config.time_limit is not None:
        callbacks.append(TimeBudget(config.time_limit, started))
    return callbacks


def train(
    config: TrainConfig,
    progress: bool = True,
    callbacks: Sequence[Callback] = (),
) -> dict[str, Any]:
    """Train ``config``; returns the summary (also written to ``out/summary.json``).

    ``callbacks`` are called after each step and epoch besides the ones the config asks for
    (progress display, TensorBoard, time budget).

    With ``config.nproc`` > 1 the run trains in that many new processes, each calling this
    function as one rank (:func:`~capslab.train.distributed.spawn`); under ``torchrun`` this
    process is one rank already. The progress display and the callbacks run on rank 0 only,
    in its process (so they must pickle, and their state does not come back here); every rank
    returns the summary.
    """
    ranks = launched_ranks()
    if ranks is None and config.nproc > 1:
        return spawn_ranks(config, progress, callbacks)
    ranks = ranks or SINGLE
    check_process_count(config.nproc, ranks)
    check_batch_shares(config, ranks.world_size)
    if config.nproc != ranks.world_size:  # torchrun's group: the run's files say how it ran
        config = config.replace(nproc=ranks.world_size)
    device = rank_device(resolve_device(config.device), ranks)
    with process_group(ranks, device):
        return run(config, ranks, device, progress and ranks.main,
                   callbacks if ranks.main else ())


def spawn_ranks(config: TrainConfig, progress: bool, callbacks: Sequence[Callback]) -> dict[str, Any]:
    """Train ``config`` in ``config.nproc`` new processes; the checks that need no worker (what
    travels to them, the dataset's files, the GPUs, the run folder) are made here first, once."""
    args = (config, progress, tuple(callbacks))
    check_picklable(args)
    splits = ("train",) if config.val_size is not None else ("train", "test")
    check_reachable(config.dataset, f"the {config.nproc} training processes (nproc)")
    require_files(config.dataset, config.data_dir, splits, download=config.download)
    last = config.nproc - 1
    rank_device(resolve_device(config.device), Ranks(last, config.nproc, last))
    open_run_folder(config)
    return spawn(train, config.nproc, *args)


def compiled(module: nn.Module, config: TrainConfig) -> nn.Module:
    """``module`` through ``torch.compile`` when the config asks for it (same maths)."""
    return torch.compile(module) if config.compile else module


def run(
    config: TrainConfig, ranks: Ranks, device: torch.device, progress: bool,
    callbacks: Sequence[Callback],
) -> dict[str, Any]:
    """One rank's run (the only rank of a plain run) on ``device``: data, model and
    optimiser, resume, then per epoch the steps, rank 0's evaluation (shared with every rank)
    and rank 0's checkpoint and log."""
    started = time.perf_counter()
    check_precision(device, config.precision)
    configure_backends(device, config.deterministic)
    seed_everything(config.seed)
    train_set, eval_set = prepare_data(config)
    model = build_model(config, train_set.info).to(device)
    schedule = build_schedule(config.policy, config.epochs, len(train_set), config.batch_size,
                              config.lr, config.policy_options)
    optimizer = create_optimizer(config.optimizer, model.parameters(), schedule.lr(0, 0),
                                 config.weight_decay, schedule.total_steps)
    calibration = calibration_batches(config, train_set)
    qat = None if config.qat_bits is None else QuantizationAwareTraining(model, config.qat_bits)
    out = rank_run_folder(config, ranks)
    state = resume_state(config, out, model, optimizer)
    check_same_start(state, ranks, out)
    writes = out is not None and ranks.main
    if writes:
        write_json(out / "config.json", "config", config.to_dict())
    hooks = [*default_callbacks(config, out, progress, started), *callbacks] if ranks.main else []
    # checkpoints always hold the plain module's state dict; only the calls go through DDP and
    # compile, and the evaluation (rank 0 alone) never goes through DDP
    step_forward = compiled(data_parallel(model, device, ranks), config)
    eval_forward = compiled(model, config) if ranks.distributed else step_forward
    split = evaluated_split(config)
    eval_loader = BatchLoader(eval_set, config.eval_batch_size, shuffle=False, augment=False,
                              seed=config.seed, device=device) if ranks.main else None
    try:
        for cb in hooks:
            cb.on_train_start(config, state.epoch)
        last_epoch = config.stop_after or config.epochs
        for epoch in range(state.epoch, last_epoch):
            record = train_epoch(config, epoch, model, step_forward, optimizer, schedule,
                                 train_set, state, device, hooks, out, ranks, qat)
            if ranks.main and (not config.eval_final_only or epoch + 1 == last_epoch):
                record.update(evaluate_epoch(config, model, eval_forward, eval_loader, device, split,
                                             calibration))
            record = ranks.from_main(record)
            record["steps"] = state.global_step
            is_best = state.add(record)
            if writes:
                save_epoch(out, config, model, optimizer, schedule, state, is_best)
            for cb in hooks:
                cb.on_epoch_end(record)
    finally:
        for cb in hooks:
            cb.close()
    summary = summarize(config, state, model, train_set, eval_set, time.perf_counter() - started)
    if writes:
        finish_run(out, config, model, eval_set, summary, device)
    return summary


def summarize(config: TrainConfig, state: RunState, model: nn.Module, train_set: ImageDataset,
              eval_set: ImageDataset, wall_seconds: float) -> dict[str, Any]:
    """The run's summary (``summary.json``) from its state after the last epoch."""
    split = evaluated_split(config)
    history = state.history
    summary = {
        f"best_{split}_accuracy": state.best_accuracy,
        "best_epoch": state.best_epoch,
        f"final_{split}_accuracy": history[-1].get(f"{split}_accuracy") if history else None,
        "evaluated_on": split,
        "epochs_done": state.epoch,
        "total_seconds": sum(h["epoch_seconds"] for h in history),
        "wall_seconds": wall_seconds,
        "parameters": count_parameters(model),
        "model": config.model,
        "dataset": config.dataset,
        "train_size": len(train_set),
        f"{split}_size": len(eval_set),
        "identity": config.identity(),
        "config": config.to_dict(),
        "history": history,
    }
    if quantized_eval_bits(config) is not None:
        summary["quantized_weight_bits"] = quantized_eval_bits(config)
        summary[f"best_{split}_quantized_accuracy"] = max(
            (h[f"{split}_quantized_accuracy"] for h in history
             if f"{split}_quantized_accuracy" in h), default=None)
    return summary
