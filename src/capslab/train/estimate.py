"""How long a whole training run takes on this machine, before it starts.

A schedule fixes the batch size of every epoch (:mod:`capslab.train.policies`), so a run's wall
clock follows from two measurements on the machine: training images/s at each of the
schedule's batch sizes and evaluation images/s at the evaluation batch size
(:func:`capslab.bench.measure_variant`, the same step ``capslab bench`` times). Per epoch:

    train_seconds = train_size / rate(batch_size),   eval_seconds = test_size / eval_rate

Checkpoint writes, plots and data loading are not counted: they are a few seconds per run.
FasTrCaps measures a policy by "training time", the epochs to the best accuracy times the
seconds per epoch; with epochs of different batch sizes that is the ``elapsed_seconds`` of the
best epoch here.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from capslab.bench import Variant, measure_variant
from capslab.device import cpu_name, resolve_device
from capslab.models import create_model
from capslab.optim import create_optimizer
from capslab.train.policies import Schedule


def estimate_epochs(schedule: Schedule, train_rates: Mapping[int, float],
                    eval_rate: float | None = None, test_size: int = 0) -> list[dict[str, Any]]:
    """Seconds per epoch of ``schedule`` from measured rates (a pure function).

    Args:
        schedule: the run's learning-rate and batch-size schedule.
        train_rates: training images/s by batch size; every batch size of the schedule.
        eval_rate: evaluation images/s (``None``: evaluation not counted).
        test_size: images evaluated after every epoch.
    Returns:
        one dict per epoch: ``epoch`` (1-based), ``batch_size``, ``steps``, ``train_seconds``,
        ``eval_seconds`` and ``elapsed_seconds`` (everything up to the end of that epoch).
    """
    missing = sorted({schedule.batch_size(e) for e in range(schedule.epochs)} - set(train_rates))
    if missing:
        raise ValueError(f"no measured training rate for batch size(s) {missing}")
    rows, elapsed = [], 0.0
    for e in range(schedule.epochs):
        b = schedule.batch_size(e)
        train = schedule.train_size / train_rates[b]
        evaluation = test_size / eval_rate if eval_rate else 0.0
        elapsed += train + evaluation
        rows.append({"epoch": e + 1, "batch_size": b, "steps": schedule.steps_in_epoch(e),
                     "train_seconds": train, "eval_seconds": evaluation,
                     "elapsed_seconds": elapsed})
    return rows


def measure_rates(
    batch_sizes: list[int],
    model: str = "capsnet",
    model_options: Mapping[str, Any] | None = None,
    eval_batch_size: int = 256,
    device: str = "cpu",
    optimizer: str = "adam",
    steps: int = 3,
    warmup: int = 1,
) -> tuple[dict[int, float], float]:
    """Training images/s at each batch size and evaluation images/s, measured on ``device``
    with the model and optimiser that ``capslab train`` would build."""
    net = create_model(model, **dict(model_options or {}))
    variant = Variant(model, lambda: net,  # built once: its image shape is needed first
                      optimizer=lambda params: create_optimizer(optimizer, params, 1e-3))
    shape = tuple(net.image_shape)
    r = measure_variant(variant, resolve_device(device), steps, warmup, shape,
                        batch_sizes=tuple(sorted(set(batch_sizes))),
                        infer_batch_sizes=(eval_batch_size,), peak_memory=False)
    train = {int(b): rate for b, rate in r.train_images_per_s.items()}
    return train, r.infer_images_per_s[str(eval_batch_size)]


def estimate_run(schedule: Schedule, model: str = "capsnet",
                 model_options: Mapping[str, Any] | None = None, test_size: int = 0,
                 eval_batch_size: int = 256, device: str = "cpu", optimizer: str = "adam",
                 steps: int = 3, warmup: int = 1) -> dict[str, Any]:
    """Measure the rates that ``schedule`` needs, then estimate every epoch.

    Returns ``{"policy", "model", "device", "cpu", "train_size", "test_size",
    "train_images_per_s" (by batch size), "eval_images_per_s", "epochs": [...],
    "total_seconds"}``.
    """
    sizes = [schedule.batch_size(e) for e in range(schedule.epochs)]
    train, evaluation = measure_rates(sizes, model, model_options, eval_batch_size, device,
                                      optimizer, steps, warmup)
    epochs = estimate_epochs(schedule, train, evaluation, test_size)
    return {
        "policy": schedule.policy, "model": model, "device": device, "cpu": cpu_name(),
        "train_size": schedule.train_size, "test_size": test_size,
        "train_images_per_s": {str(b): r for b, r in sorted(train.items())},
        "eval_images_per_s": evaluation, "epochs": epochs,
        "total_seconds": epochs[-1]["elapsed_seconds"],
    }
