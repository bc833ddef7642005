"""Helpers shared by test modules (``from helpers import ...``; pytest puts tests/ on the path)."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable
from os import PathLike
from pathlib import Path

import torch
from torch import Tensor, nn

from capslab.data import BatchLoader, ImageDataset, dataset_info, load_dataset, stratified_subset
from capslab.errors import TrainingError
from capslab.losses import capsule_loss
from capslab.train import Callback, StepInfo


def mnist_subsets(train_size: int = 2000, test_size: int = 500,
                  data_dir: str | PathLike | None = None) -> tuple[ImageDataset, ImageDataset]:
    """Stratified, seed-0 subsets of the real MNIST training and test splits."""
    train = load_dataset("mnist", "train", data_dir=data_dir)
    test = load_dataset("mnist", "test", data_dir=data_dir)
    return (train.subset(stratified_subset(train.labels, train_size, seed=0)),
            test.subset(stratified_subset(test.labels, test_size, seed=0)))


def fit(model: nn.Module, batches: Callable[[int], Iterable[tuple[Tensor, Tensor]]],
        epochs: int = 2, lr: float = 3e-3, qat=None) -> None:
    """Train ``model`` with Adam on the capsule loss, epoch ``e`` on the batches of
    ``batches(e)``; with ``qat`` (a :class:`~capslab.quantize.QuantizationAwareTraining` of
    it) every step quantization-aware."""
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    model.train()
    for epoch in range(epochs):
        for images, labels in batches(epoch):
            if qat is not None:
                qat.step()
            out = model(images, labels)
            loss = capsule_loss(out.lengths, labels, out.reconstruction, images)[0]
            opt.zero_grad()
            loss.backward()
            if qat is not None:
                qat.restore()  # the float masters take the step
            opt.step()


def fit_and_score(model: nn.Module, batches: Callable[[int], Iterable[tuple[Tensor, Tensor]]],
                  test: ImageDataset, epochs: int = 2, lr: float = 3e-3) -> float:
    """:func:`fit`, then the accuracy on ``test``."""
    fit(model, batches, epochs, lr)
    model.eval()
    correct = 0
    with torch.no_grad():
        for images, labels in BatchLoader(test, batch_size=250, shuffle=False):
            correct += (model(images).lengths.argmax(1) == labels).sum().item()
    return correct / len(test)


# --- models for capslab.bench's worker processes: module-level, so that they pickle by name
BUILT_MARK = "CAPSLAB_TEST_BENCH_BUILT"


def tiny_capsnet() -> nn.Module:
    """A CapsNet small enough to time in a test."""
    from capslab.models import create_model

    return create_model("capsnet", conv_channels=8, primary_types=2, class_dim=4, decoder=False)


def tiny_capsnet_once_per_process() -> nn.Module:
    """:func:`tiny_capsnet`, refusing to be built twice in one process (marks the environment)."""
    import os

    if os.environ.get(BUILT_MARK):
        raise RuntimeError("a second row was built in the same process")
    os.environ[BUILT_MARK] = "1"
    return tiny_capsnet()


def broken_capsnet() -> nn.Module:
    raise ValueError("this factory is broken")


# --- callbacks for the processes of a data-parallel run: module-level, so that they pickle by name
class StepLosses(Callback):
    """Writes every step's loss (the global batch's) to ``path`` as a JSON list at the end of
    the run: what a callback in another process can hand back to a test."""

    def __init__(self, path: str | PathLike):
        self.path = str(path)
        self.losses: list[Tensor] = []

    def on_step_end(self, step: StepInfo) -> None:
        self.losses.append(step.loss)

    def close(self) -> None:
        Path(self.path).write_text(json.dumps([float(loss) for loss in self.losses]))


class StopAfterEpoch(Callback):
    """Stops a run with an ``error`` (a :class:`~capslab.errors.TrainingError`, or any
    exception type) once epoch ``epoch`` (1-based) is written: an interruption at a known
    point."""

    def __init__(self, epoch: int, error: type[BaseException] = TrainingError):
        self.epoch, self.error = epoch, error

    def on_epoch_end(self, record: dict) -> None:
        if record["epoch"] == self.epoch:
            raise self.error(f"stopped by the test after epoch {self.epoch}")


# --- datasets whose images can be told apart
def numbered_dataset(labels) -> ImageDataset:
    """A dataset whose image i holds the number i in its first two pixels."""
    n = len(labels)
    images = torch.zeros(n, 1, 28, 28, dtype=torch.uint8)
    images[:, 0, 0, 0] = torch.arange(n) % 256
    images[:, 0, 0, 1] = torch.arange(n) // 256
    return ImageDataset(images, torch.tensor(labels), dataset_info("mnist"), "train")


def image_numbers(images: Tensor) -> list[int]:
    """The numbers :func:`numbered_dataset` wrote into ``images`` (uint8, or floats in [0, 1]
    as a :class:`~capslab.data.BatchLoader` yields them)."""
    pixels = images if images.dtype == torch.uint8 else (images * 255).round()
    return (pixels[:, 0, 0, 0].long() + 256 * pixels[:, 0, 0, 1].long()).tolist()


# --- your own data: three classes of shapes a tiny network tells apart in a few epochs
SHAPE_CLASSES = ("box", "hbar", "vbar")  # sorted, as the folder reader orders the classes


def shape_images(per_class: int, size: int = 20, seed: int = 0):
    """``per_class`` noisy images of each of :data:`SHAPE_CLASSES` (an outlined box, a
    horizontal bar, a vertical bar, each shifted at random by up to 2 pixels).

    Shape:
        returns (uint8 numpy ``[3 * per_class, size, size]``, int64 labels ``[3 * per_class]``),
        the classes in turn.
    """
    import numpy as np

    rng = np.random.default_rng(seed)
    lo, hi, mid = 3, size - 3, size // 2
    images, labels = [], []
    for i in range(per_class * len(SHAPE_CLASSES)):
        c = i % len(SHAPE_CLASSES)
        img = rng.integers(0, 40, (size, size)).astype(np.uint8)
        dy, dx = rng.integers(-2, 3, 2)
        if c == 0:
            img[lo + dy:hi + dy, [lo + dx, hi - 1 + dx]] = 255
            img[[lo + dy, hi - 1 + dy], lo + dx:hi + dx] = 255
        elif c == 1:
            img[mid - 1 + dy:mid + 1 + dy, lo:hi] = 255
        else:
            img[lo:hi, mid - 1 + dx:mid + 1 + dx] = 255
        images.append(img)
        labels.append(c)
    return np.stack(images), np.asarray(labels, dtype=np.int64)


def write_shape_folder(root: str | PathLike, per_class: int = 10, size: int = 20, seed: int = 0,
                       test_per_class: int = 0) -> Path:
    """A folder of PNG images of :func:`shape_images` in one subfolder per class; with
    ``test_per_class`` in ``root/train/<class>`` and ``root/test/<class>``."""
    from PIL import Image

    root = Path(root)
    splits = [("", per_class, seed)] if not test_per_class else [
        ("train", per_class, seed), ("test", test_per_class, seed + 1)]
    for split, n, split_seed in splits:
        images, labels = shape_images(n, size, split_seed)
        for i, (image, label) in enumerate(zip(images, labels, strict=True)):
            folder = root / split / SHAPE_CLASSES[label]
            folder.mkdir(parents=True, exist_ok=True)
            Image.fromarray(image).save(folder / f"{i:04d}.png")
    return root


def datasets_app():
    """The ``datasets`` command as ``capslab.cli.main`` registers it (wrapped in
    ``report_errors``), without importing every other command module."""
    import typer

    from capslab.cli import datasets as datasets_cli
    from capslab.cli.output import report_errors

    app = typer.Typer(pretty_exceptions_enable=False)
    app.callback()(lambda: None)
    datasets_cli.register(app)
    for info in app.registered_commands:
        info.callback = report_errors(info.callback)
    return app
