"""The training loop: data -> model -> losses -> optimiser/schedule -> metrics, checkpoints, plots.

``train(config)`` is what ``capslab train``, the FasTrCaps study and the architecture search all
call. A run in ``config.out`` holds ``metrics.jsonl`` (one line per epoch), ``summary.json``,
``last.pt`` / ``best.pt`` and PNG plots; ``resume=True`` continues from ``last.pt`` and reaches
the same result as an uninterrupted run with the same seed.
"""

from __future__ import annotations

import json
import random
import time
from collections.abc import Callable, Iterable
from contextlib import nullcontext
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from capslab.data import BatchLoader, ImageDataset, load_dataset, stratified_subset
from capslab.io import atomic_write_json, atomic_write_text
from capslab.losses import capsule_loss
from capslab.models import create_model
from capslab.train.checkpoint import (
    CheckpointError,
    check_compatible,
    load_checkpoint,
    rng_state,
    save_checkpoint,
    set_rng_state,
)
from capslab.train.config import TrainConfig
from capslab.train.policies import make_schedule


class NonFiniteLossError(RuntimeError):
    """The loss became NaN or infinite; the last good checkpoint is kept."""


class TrainingTimeout(RuntimeError):
    """The run exceeded ``config.time_limit``."""


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def _jsonable(obj: Any) -> Any:
    return json.loads(json.dumps(obj, default=str))


def prepare_data(config: TrainConfig) -> tuple[ImageDataset, ImageDataset]:
    """Load train/test splits and take the configured stratified subsets."""
    train_set = load_dataset(config.dataset, "train", root=config.data_dir, download=config.download)
    test_set = load_dataset(config.dataset, "test", root=config.data_dir, download=config.download)
    if config.subset is not None and config.subset < len(train_set):
        train_set = train_set.subset(stratified_subset(train_set.labels, config.subset, config.seed))
    if config.test_subset is not None and config.test_subset < len(test_set):
        test_set = test_set.subset(stratified_subset(test_set.labels, config.test_subset, config.seed))
    return train_set, test_set


def build_model(config: TrainConfig, info: Any) -> nn.Module:
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


def build_optimizer(config: TrainConfig, params: Iterable[nn.Parameter], lr: float, total_steps: int):
    if config.optimizer == "adam":
        return torch.optim.Adam(params, lr=lr, weight_decay=config.weight_decay)
    if config.optimizer == "sgd":
        return torch.optim.SGD(params, lr=lr, momentum=0.9, weight_decay=config.weight_decay)
    from pytorch_optimizer import Ranger21

    # Ranger21 plans its warm-up and warm-down over the total number of optimiser steps
    # (epochs x batches per epoch), not the batch size.
    return Ranger21(params, num_iterations=total_steps, lr=lr, weight_decay=config.weight_decay)


def _autocast(device: torch.device, precision: str):
    if precision == "bf16":
        return torch.autocast(device_type=device.type, dtype=torch.bfloat16)
    return nullcontext()


@torch.no_grad()
def evaluate(
    model: nn.Module,
    loader: Iterable,
    device: torch.device | str = "cpu",
    reconstruction_weight: float = 0.0005,
    precision: str = "fp32",
) -> dict[str, float]:
    """Test loss and accuracy; the decoder reads the longest capsule (no target)."""
    device = torch.device(device)
    model.eval()
    total_loss, correct, seen = 0.0, 0, 0
    for images, labels in loader:
        images, labels = images.to(device), labels.to(device)
        with _autocast(device, precision):
            out = model(images)
        loss, _, _ = capsule_loss(
            out.lengths.float(),
            labels,
            None if out.reconstruction is None else out.reconstruction.float(),
            images,
            reconstruction_weight,
        )
        total_loss += loss.item() * labels.shape[0]
        correct += (out.lengths.argmax(dim=1) == labels).sum().item()
        seen += labels.shape[0]
    return {"test_loss": total_loss / max(seen, 1), "test_accuracy": correct / max(seen, 1)}


def _progress(enabled: bool):
    if not enabled:
        return None
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    return Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("loss {task.fields[loss]:.4f}"),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        transient=False,
    )


def train(
    config: TrainConfig,
    progress: bool = True,
    on_epoch: Callable[[dict[str, Any]], None] | None = None,
) -> dict[str, Any]:
    """Train ``config``; returns the summary (also written to ``out/summary.json``)."""
    started = time.perf_counter()
    device = resolve_device(config.device)
    seed_everything(config.seed)
    train_set, test_set = prepare_data(config)
    model = build_model(config, train_set.info).to(device)
    schedule = make_schedule(
        config.policy, config.epochs, len(train_set), config.batch_size, config.lr,
        config.policy_options,
    )
    optimizer = build_optimizer(config, model.parameters(), schedule.lr(0, 0), schedule.total_steps)
    out = Path(config.out) if config.out else None
    identity = _jsonable(config.identity())
    history: list[dict[str, Any]] = []
    start_epoch, best_acc, best_epoch, global_step = 0, -1.0, 0, 0

    if out is not None:
        out.mkdir(parents=True, exist_ok=True)
        last = out / "last.pt"
        if config.resume and last.exists():
            ckpt = load_checkpoint(last, map_location=device)
            check_compatible(ckpt, identity, last)
            try:
                model.load_state_dict(ckpt["model"])
            except RuntimeError as exc:
                raise CheckpointError(f"checkpoint {last} does not fit model {config.model!r}: {exc}") from exc
            optimizer.load_state_dict(ckpt["optimizer"])
            set_rng_state(ckpt["rng"])
            history = list(ckpt["history"])
            start_epoch = ckpt["epoch"]
            best_acc, best_epoch = ckpt["best_accuracy"], ckpt["best_epoch"]
            global_step = ckpt["global_step"]
        elif not config.resume and last.exists():
            raise CheckpointError(
                f"{out} already holds a run (last.pt); pass --resume to continue it or choose another --out"
            )
        atomic_write_json(out / "config.json", config.to_dict())

    writer = None
    if config.tensorboard and out is not None:
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError as exc:
            raise ImportError(
                "--tensorboard needs the tensorboard package: pip install 'capslab[tensorboard]'"
            ) from exc

        writer = SummaryWriter(log_dir=str(out / "tensorboard"))

    parameters = count_parameters(model)
    # checkpoints always hold the plain module's state dict; only the calls go through compile
    forward = torch.compile(model) if config.compile else model
    progress_bar = _progress(progress)
    ctx = progress_bar if progress_bar is not None else nullcontext()
    with ctx:
        for epoch in range(start_epoch, config.epochs):
            batch_size = schedule.batch_size(epoch)
            loader = BatchLoader(train_set, batch_size, shuffle=True, augment=config.augment, seed=config.seed)
            loader.set_epoch(epoch)
            task = None
            if progress_bar is not None:
                task = progress_bar.add_task(f"epoch {epoch + 1}/{config.epochs}", total=len(loader), loss=0.0)
            model.train()
            epoch_start = time.perf_counter()
            loss_sum, correct, seen = 0.0, 0, 0
            lr = schedule.lr(epoch, 0)
            for step, (images, labels) in enumerate(loader):
                lr = schedule.lr(epoch, step)
                for group in optimizer.param_groups:
                    group["lr"] = lr
                images, labels = images.to(device), labels.to(device)
                with _autocast(device, config.precision):
                    output = forward(images, labels)
                loss, margin, recon = capsule_loss(
                    output.lengths.float(), labels,
                    None if output.reconstruction is None else output.reconstruction.float(),
                    images, config.reconstruction_weight,
                )
                if not torch.isfinite(loss):
                    kept = f"; last good checkpoint: {out / 'last.pt'}" if out is not None and (out / "last.pt").exists() else ""
                    raise NonFiniteLossError(
                        f"loss became {loss.item()} at epoch {epoch + 1}, step {step + 1} "
                        f"(margin {margin.item()}, reconstruction {recon.item()}){kept}. "
                        "Try a lower learning rate."
                    )
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                n = labels.shape[0]
                loss_sum += loss.item() * n
                correct += (output.lengths.detach().argmax(dim=1) == labels).sum().item()
                seen += n
                if writer is not None:
                    writer.add_scalar("step/lr", lr, global_step)
                    writer.add_scalar("step/batch_size", batch_size, global_step)
                    writer.add_scalar("step/loss", loss.item(), global_step)
                global_step += 1
                if task is not None:
                    progress_bar.update(task, advance=1, loss=loss_sum / seen)
                if config.time_limit is not None and time.perf_counter() - started > config.time_limit:
                    raise TrainingTimeout(f"run exceeded its time limit of {config.time_limit:g} s")
            epoch_seconds = time.perf_counter() - epoch_start
            test = evaluate(forward, _eval_loader(test_set, config), device, config.reconstruction_weight, config.precision)
            record = {
                "epoch": epoch + 1,
                "train_loss": loss_sum / max(seen, 1),
                "train_accuracy": correct / max(seen, 1),
                **test,
                "lr": lr,
                "batch_size": batch_size,
                "epoch_seconds": epoch_seconds,
                "images_per_second": seen / epoch_seconds if epoch_seconds > 0 else float("nan"),
                "steps": global_step,
            }
            history.append(record)
            is_best = record["test_accuracy"] > best_acc
            if is_best:
                best_acc, best_epoch = record["test_accuracy"], epoch + 1
            if progress_bar is not None:
                progress_bar.console.print(
                    f"epoch {epoch + 1}: test accuracy {100 * record['test_accuracy']:.2f}% "
                    f"(best {100 * best_acc:.2f}% @ {best_epoch}), lr {lr:.2e}, batch {batch_size}, "
                    f"{record['images_per_second']:.0f} img/s"
                )
            if writer is not None:
                for key in ("train_loss", "test_loss", "test_accuracy", "lr", "batch_size"):
                    writer.add_scalar(f"epoch/{key}", record[key], epoch + 1)
            if out is not None:
                atomic_write_text(out / "metrics.jsonl", "".join(json.dumps(h) + "\n" for h in history))
                if config.checkpoints:
                    payload = {
                        "model_name": config.model,
                        "model_options": _jsonable(getattr(model, "model_options", config.model_options)),
                        "identity": identity,
                        "config": config.to_dict(),
                        "model": model.state_dict(),
                        "optimizer": optimizer.state_dict(),
                        "schedule": _jsonable(schedule.to_dict()),
                        "rng": rng_state(),
                        "history": history,
                        "epoch": epoch + 1,
                        "global_step": global_step,
                        "best_accuracy": best_acc,
                        "best_epoch": best_epoch,
                    }
                    save_checkpoint(out / "last.pt", **payload)
                    if is_best:
                        save_checkpoint(out / "best.pt", **payload)
            if on_epoch is not None:
                on_epoch(record)

    if writer is not None:
        writer.close()
    summary = {
        "best_test_accuracy": best_acc,
        "best_epoch": best_epoch,
        "final_test_accuracy": history[-1]["test_accuracy"] if history else None,
        "total_seconds": sum(h["epoch_seconds"] for h in history),
        "wall_seconds": time.perf_counter() - started,
        "parameters": parameters,
        "model": config.model,
        "dataset": config.dataset,
        "train_size": len(train_set),
        "test_size": len(test_set),
        "config": config.to_dict(),
        "history": history,
    }
    if out is not None:
        if config.plots and history:
            from capslab.train.plots import plot_history, plot_reconstructions

            plot_history(history, out / "curves.png")
            if getattr(model, "decoder", None) is not None:
                sample = test_set.subset(torch.arange(min(8, len(test_set))))
                images, _ = next(iter(BatchLoader(sample, len(sample), shuffle=False)))
                images = images.to(device)
                model.eval()
                with torch.no_grad():
                    recon = model(images).reconstruction
                plot_reconstructions(images, recon, out / "reconstructions.png")
        atomic_write_json(out / "summary.json", summary)
    return summary


def _eval_loader(test_set: ImageDataset, config: TrainConfig) -> BatchLoader:
    return BatchLoader(test_set, config.eval_batch_size, shuffle=False, augment=False, seed=config.seed)


def load_model(path: str | Path, map_location: str | torch.device = "cpu") -> tuple[nn.Module, dict[str, Any]]:
    """Rebuild the model stored in a checkpoint; returns ``(model, checkpoint)``."""
    ckpt = load_checkpoint(path, map_location=map_location)
    model = create_model(ckpt["model_name"], **ckpt["model_options"])
    try:
        model.load_state_dict(ckpt["model"])
    except RuntimeError as exc:
        raise CheckpointError(f"checkpoint {path} does not match model {ckpt['model_name']!r}: {exc}") from exc
    return model, ckpt


__all__ = [
    "NonFiniteLossError", "TrainingTimeout", "build_model", "evaluate", "load_model", "prepare_data",
    "resolve_device", "train",
]
