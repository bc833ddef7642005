"""Training: configuration, the loop and its callbacks, learning-rate/batch-size policies,
checkpoints, plots. See :mod:`capslab.train.loop` for the phases of a run."""

from capslab.device import resolve_device
from capslab.evaluation import evaluate
from capslab.train.callbacks import Callback, LambdaCallback, StepInfo
from capslab.train.config import TrainConfig, TrainingSettings
from capslab.train.loop import train

__all__ = [
    "Callback", "LambdaCallback", "StepInfo", "TrainConfig", "TrainingSettings", "evaluate",
    "resolve_device", "train",
]
