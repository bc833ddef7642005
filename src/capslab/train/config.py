"""Typed, validated training configuration.

:class:`TrainingSettings` holds what defines a training run's results (model, data, schedule,
optimiser, seed) and is embedded by the architecture search, the FasTrCaps study and the PCC
study. :class:`TrainConfig` adds where and how one run is carried out (output folder, resume,
logging, time limit).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal

from capslab.data import canonical_dataset, dataset_info, split_size
from capslab.device import check_device_name
from capslab.errors import ConfigError
from capslab.models import check_model_options
from capslab.quantize import check_bits
from capslab.settings import Settings
from capslab.train.policies import build_schedule
from capslab.train.policy_options import make_policy_options


@dataclass
class TrainingSettings(Settings):
    """How a network is trained. Validated on construction: the model and its options, the
    policy and its options, numbers and choices.

    ``lr=None`` takes the policy's default; ``subset``/``test_subset`` take a stratified, seeded
    sample of the training/test split; ``val_size`` holds out a stratified, seeded validation
    split of that many images from the training split (before ``subset`` is drawn from the
    rest), and the run is then evaluated and its best epoch chosen on it, never on the test
    split (``None``, the default: no validation split, evaluated on the test split);
    ``compile=True`` runs the forward passes through
    ``torch.compile`` (same maths). ``download`` (default ``True``): missing dataset files are
    downloaded from the official URLs (never when ``$CAPSLAB_OFFLINE`` is set; see docs/data.md).
    ``deterministic=True`` makes a CUDA run repeatable bit for bit (cuDNN's deterministic
    algorithms, no TF32; :func:`capslab.device.configure_backends`), at a cost in speed; CPU
    runs are repeatable either way. ``pad_to`` places every image on a black ``pad_to`` x
    ``pad_to`` canvas (the network's input size): at random in each training epoch (the
    augmentation's shift then spans the whole margin; ``augment=False`` keeps it centred),
    centred in the split evaluated, as Sabour et al. (2017) train on MNIST in 40x40 to test on
    affNIST. ``hflip`` adds a left-right flip of half the images to the augmentation: for
    classes that look the same mirrored (Fashion-MNIST's clothes, CIFAR's objects), never for
    digits or letters. ``device``, ``data_dir``, ``download``, ``eval_batch_size``,
    ``compile`` and ``deterministic`` do not change what is trained (only, on a GPU, its last
    bits) and are not part of :meth:`identity`.
    """

    model: str = "capsnet"
    model_options: dict[str, Any] = field(default_factory=dict)
    dataset: str = "mnist"
    data_dir: str | None = None
    download: bool = True
    epochs: int = 10
    batch_size: int = 128
    lr: float | None = None
    policy: str = "fixed"
    policy_options: dict[str, Any] = field(default_factory=dict)
    optimizer: Literal["adam", "ranger21", "sgd"] = "adam"
    weight_decay: float = 0.0
    reconstruction_weight: float = 0.0005
    augment: bool = True
    hflip: bool = False
    subset: int | None = None
    test_subset: int | None = None
    val_size: int | None = None
    eval_batch_size: int = 256
    seed: int = 0
    device: str = "auto"
    precision: Literal["fp32", "bf16"] = "fp32"
    compile: bool = False
    deterministic: bool = False
    qat_bits: int | None = None
    pad_to: int | None = None

    IDENTITY_EXCLUDE: ClassVar[tuple[str, ...]] = (
        "data_dir", "download", "eval_batch_size", "device", "compile", "deterministic",
    )
    WHAT: ClassVar[str] = "training setting"

    def validate(self) -> None:
        if self.qat_bits is not None:
            check_bits(self.qat_bits, "qat_bits")
        for name in ("epochs", "batch_size", "eval_batch_size"):
            _positive(name, getattr(self, name))
        for name in ("lr", "subset", "test_subset", "val_size"):
            if getattr(self, name) is not None:
                _positive(name, getattr(self, name))
        if self.hflip and not self.augment:
            raise ConfigError("hflip is part of the training augmentation: it needs augment")
        if self.reconstruction_weight < 0 or self.weight_decay < 0:
            raise ConfigError("reconstruction_weight and weight_decay must be >= 0")
        check_device_name(self.device)
        if self.optimizer == "ranger21" and self.policy != "fixed":
            raise ConfigError(
                "optimizer ranger21 plans its own warm-up and warm-down of the learning rate; "
                f"use policy 'fixed' with it (got {self.policy!r})"
            )
        # your own data's path made absolute, so that the run's files name it from anywhere
        self.dataset = canonical_dataset(self.dataset)
        info = dataset_info(self.dataset)  # an unknown dataset is refused here, before any file
        if self.pad_to is not None and self.pad_to <= info.image_size:
            raise ConfigError(
                f"pad_to {self.pad_to} must be larger than the {info.image_size}x"
                f"{info.image_size} images of {self.dataset} (the canvas they are placed on)"
            )
        if self.val_size is not None:
            available = split_size(self.dataset, "train")
            if self.val_size >= available:
                raise ConfigError(
                    f"val_size {self.val_size} leaves no training image: the {self.dataset} "
                    f"training split has {available}"
                )
        check_model_options(self.model, self.model_options)
        self.policy_options = typed_policy_options(self.policy, self.policy_options, self.lr)


def typed_policy_options(policy: str, options: dict[str, Any], lr: float | None = None) -> dict[str, Any]:
    """``options`` checked against ``policy`` and held as their declared types (``"8,64"`` and
    ``[8, 64]`` alike become ``(8, 64)``), so equal settings have one identity."""
    typed = make_policy_options(policy, options, lr)
    return {k: getattr(typed, k) for k in options}


@dataclass
class TrainConfig(TrainingSettings):
    """One training run: :class:`TrainingSettings` plus where its files go and how it runs.

    ``out=None`` writes nothing; ``resume=True`` continues from ``out/last.pt``;
    ``time_limit`` (seconds) stops a run that takes longer (used by the architecture search).
    ``stop_after`` ends the run after that many of its ``epochs`` (the schedule stays the one
    planned for ``epochs``; resuming with a larger value continues it exactly: the search's
    rungs). ``eval_weight_bits`` also evaluates every epoch with its weights quantized to that
    many bits (:mod:`capslab.quantize`): ``<split>_quantized_accuracy`` in each epoch's
    record, ``best_<split>_quantized_accuracy`` in the summary; with ``eval_accelerator``
    in the accelerator mode: weights, activations (static scales calibrated on
    :data:`~capslab.train.loop.CALIBRATION_IMAGES` training images) and routing at those bits.
    ``eval_final_only`` evaluates the held-out split once, after the run's last epoch
    (``stop_after``'s, else ``epochs``'s), not after every epoch: a test split read once, as a
    final figure must be (the other epochs' records hold the training figures only).
    ``qat_bits`` (a training setting) trains quantization-aware: weights, layer inputs and
    routing at that many bits in every step, straight through
    (:class:`~capslab.quantize.QuantizationAwareTraining`), the quantized accuracy of every
    epoch in the accelerator mode at those bits. ``nproc`` > 1 trains in that
    many processes, data-parallel (:mod:`capslab.train.distributed`): every batch size of the
    schedule is the global batch and must divide by ``nproc``; the maths is the one-process
    run's (up to rounding, and BatchNorm's statistics, which are per process), so ``nproc``
    is not part of :meth:`identity`, as ``device`` is not.
    """

    out: str | None = None
    resume: bool = False
    tensorboard: bool = False
    time_limit: float | None = None
    checkpoints: bool = True
    plots: bool = True
    stop_after: int | None = None
    eval_weight_bits: int | None = None
    eval_accelerator: bool = False
    eval_final_only: bool = False
    nproc: int = 1

    IDENTITY_EXCLUDE: ClassVar[tuple[str, ...]] = (
        *TrainingSettings.IDENTITY_EXCLUDE, "out", "resume", "tensorboard", "time_limit",
        "checkpoints", "plots", "stop_after", "eval_weight_bits", "eval_accelerator", "eval_final_only",
        "nproc",
    )

    @classmethod
    def of(cls, training: TrainingSettings, **run: Any) -> TrainConfig:
        """The run of ``training`` with the run fields ``run`` (out, resume, ...)."""
        return cls(**{name: getattr(training, name) for name in training.field_names()}, **run)

    def validate(self) -> None:
        super().validate()
        if self.time_limit is not None:
            _positive("time_limit", self.time_limit)
        if self.stop_after is not None:
            _positive("stop_after", self.stop_after)
            if self.stop_after > self.epochs:
                raise ConfigError(f"stop_after {self.stop_after} is beyond the run's {self.epochs} epochs")
        if self.eval_weight_bits is not None:
            check_bits(self.eval_weight_bits, "eval_weight_bits")
        if self.eval_accelerator and self.eval_weight_bits is None:
            raise ConfigError("eval_accelerator quantizes at eval_weight_bits: give those too")
        _positive("nproc", self.nproc)
        check_batch_shares(self, self.nproc)

    def batch_sizes(self) -> list[int]:
        """The global batch size of every epoch (the policy's batch-size schedule)."""
        schedule = build_schedule(self.policy, self.epochs, 1, self.batch_size, self.lr,
                                  self.policy_options)
        return [schedule.batch_size(epoch) for epoch in range(self.epochs)]


def check_batch_shares(config: TrainConfig, processes: int) -> None:
    """Refuse a run whose global batch (in any epoch) does not split evenly over ``processes``
    data-parallel processes."""
    if processes == 1:
        return
    for size in sorted(set(config.batch_sizes())):
        if size % processes:
            raise ConfigError(
                f"batch size {size} is not divisible by {processes} processes: each process "
                f"takes an equal share of every batch; choose a batch size that is a multiple "
                f"of {processes}"
            )


def _positive(name: str, value: float) -> None:
    if value <= 0:
        raise ConfigError(f"{name} must be a positive number, got {value!r}")
