"""Training: configuration, loop, learning-rate/batch-size policies, checkpoints, plots.

The loop is imported lazily so that ``capslab.train.policies`` stays light (``capslab schedule``
needs no dataset code).
"""

from __future__ import annotations

from importlib import import_module
from typing import Any

from capslab.train.config import ConfigError, TrainConfig

_LAZY = {
    name: "capslab.train.trainer"
    for name in (
        "NonFiniteLossError", "TrainingTimeout", "build_model", "evaluate", "load_model",
        "prepare_data", "resolve_device", "train",
    )
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'capslab.train' has no attribute {name!r}")


__all__ = ["ConfigError", "TrainConfig", *_LAZY]
