"""Helpers shared by test modules (``from helpers import ...``; pytest puts tests/ on the path)."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from os import PathLike

import torch
from torch import Tensor, nn

from capslab.data import BatchLoader, ImageDataset, load_dataset, stratified_subset
from capslab.losses import capsule_loss


def mnist_subsets(train_size: int = 2000, test_size: int = 500,
                  data_dir: str | PathLike | None = None) -> tuple[ImageDataset, ImageDataset]:
    """Stratified, seed-0 subsets of the real MNIST training and test splits."""
    train = load_dataset("mnist", "train", data_dir=data_dir)
    test = load_dataset("mnist", "test", data_dir=data_dir)
    return (train.subset(stratified_subset(train.labels, train_size, seed=0)),
            test.subset(stratified_subset(test.labels, test_size, seed=0)))


def fit_and_score(model: nn.Module, batches: Callable[[int], Iterable[tuple[Tensor, Tensor]]],
                  test: ImageDataset, epochs: int = 2, lr: float = 3e-3) -> float:
    """Train ``model`` with Adam on the capsule loss, epoch ``e`` on the batches of
    ``batches(e)``, then return its accuracy on ``test``."""
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    model.train()
    for epoch in range(epochs):
        for images, labels in batches(epoch):
            out = model(images, labels)
            loss = capsule_loss(out.lengths, labels, out.reconstruction, images)[0]
            opt.zero_grad()
            loss.backward()
            opt.step()
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
