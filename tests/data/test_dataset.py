"""Core data API: IDX reading, load_dataset, stratified_subset, transforms (the batch loader:
test_loader.py)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from capslab.data import (
    ImageDataset,
    dataset_info,
    list_datasets,
    load_dataset,
    random_shift,
    stratified_subset,
)
from capslab.data.testing import write_idx_split
from capslab.errors import CapsLabError

pytestmark = pytest.mark.usefixtures("isolated_data")  # see conftest.py


def test_registry_info():
    assert list_datasets() == ["mnist", "fashion-mnist", "cifar10", "cifar100", "svhn",
                              "smallnorb", "affnist"]
    info = dataset_info("mnist")
    assert (info.num_classes, info.channels, info.image_size) == (10, 1, 28)
    assert info.mean == (0.1307,) and info.std == (0.3081,)
    assert dataset_info("cifar10").std == (0.2470, 0.2435, 0.2616)
    assert dataset_info("CIFAR100").num_classes == 100
    assert dataset_info("fashion_mnist").name == "fashion-mnist"
    assert info.model_options()["in_channels"] == 1


def test_load_small_idx_roundtrip(tmp_path):
    images, labels, md5s = write_idx_split(tmp_path / "mnist", "train", 50)
    ds = load_dataset("mnist", "train", data_dir=tmp_path, checksums=md5s)
    assert isinstance(ds, ImageDataset)
    assert ds.images.dtype == torch.uint8 and ds.images.shape == (50, 1, 28, 28)
    assert ds.labels.dtype == torch.int64
    assert torch.equal(ds.images[:, 0], torch.from_numpy(images))
    assert torch.equal(ds.labels, torch.from_numpy(labels.astype(np.int64)))
    # second load comes from the in-memory cache
    again = load_dataset("mnist", "train", data_dir=tmp_path, checksums=md5s)
    assert again.images.data_ptr() == ds.images.data_ptr()


def test_stratified_subset_proportions_and_determinism():
    labels = torch.tensor([0] * 500 + [1] * 300 + [2] * 200)
    idx = stratified_subset(labels, 100, seed=3)
    assert len(idx) == 100 and len(set(idx.tolist())) == 100
    assert torch.bincount(labels[idx]).tolist() == [50, 30, 20]
    assert torch.equal(idx, stratified_subset(labels, 100, seed=3))
    assert not torch.equal(idx, stratified_subset(labels, 100, seed=4))
    odd = stratified_subset(labels, 7, seed=0)
    assert len(odd) == 7
    assert torch.equal(stratified_subset(labels, 5000, 0), torch.arange(1000))
    with pytest.raises(ValueError):
        stratified_subset(labels, 0, 0)


def test_subset_of_dataset():
    info = dataset_info("mnist")
    ds = ImageDataset(torch.zeros(20, 1, 28, 28, dtype=torch.uint8), torch.arange(20) % 10, info)
    sub = ds.subset(stratified_subset(ds.labels, 10, 0))
    assert len(sub) == 10 and torch.bincount(sub.labels).tolist() == [1] * 10


def test_dataset_of_wrong_shapes_is_a_caller_error():
    info = dataset_info("mnist")
    with pytest.raises(ValueError, match=r"images must be \[N,C,H,W\] and labels \[N\]") as e:
        ImageDataset(torch.zeros(20, 28, 28, dtype=torch.uint8), torch.arange(20) % 10, info)
    assert not isinstance(e.value, CapsLabError)  # no file is damaged: a bug, not a user error
    with pytest.raises(ValueError, match="got"):
        ImageDataset(torch.zeros(20, 1, 28, 28, dtype=torch.uint8), torch.arange(19) % 10, info)


def test_random_shift_shape_bounds_determinism():
    x = torch.zeros(64, 1, 28, 28, dtype=torch.uint8)
    x[:, :, 14, 14] = 255  # one bright pixel: where it lands tells the shift
    g1 = torch.Generator().manual_seed(0)
    y = random_shift(x, 2, g1)
    assert y.shape == x.shape and y.dtype == x.dtype
    pos = torch.nonzero(y[:, 0] == 255)
    assert len(pos) == 64  # the pixel is never cropped away
    assert (pos[:, 1] - 14).abs().max() <= 2 and (pos[:, 2] - 14).abs().max() <= 2
    assert len({(r, c) for r, c in pos[:, 1:].tolist()}) > 5  # offsets vary per sample
    y2 = random_shift(x, 2, torch.Generator().manual_seed(0))
    assert torch.equal(y, y2)
    xf = x.float() / 255
    yf = random_shift(xf, 2, torch.Generator().manual_seed(0))
    assert torch.equal((yf * 255).round().to(torch.uint8), y)


def test_stratified_is_the_seeded_stratified_subset_or_the_whole_set():
    info = dataset_info("mnist")
    images = torch.arange(40, dtype=torch.uint8).view(40, 1, 1, 1).expand(40, 1, 28, 28).clone()
    ds = ImageDataset(images, torch.arange(40) % 10, info)
    assert ds.stratified(None) is ds and ds.stratified(40) is ds and ds.stratified(99, 3) is ds
    part = ds.stratified(20, seed=3)
    idx = stratified_subset(ds.labels, 20, 3)
    assert torch.equal(part.labels, ds.labels[idx]) and torch.equal(part.images, ds.images[idx])
    assert torch.bincount(part.labels).tolist() == [2] * 10
