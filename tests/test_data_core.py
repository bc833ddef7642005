"""Core data API: IDX reading, load_dataset, stratified_subset, transforms, BatchLoader."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from capslab.data import (
    BatchLoader,
    ImageDataset,
    dataset_info,
    list_datasets,
    load_dataset,
    random_shift,
    stratified_subset,
)
from capslab.data.testing import write_idx_split

pytestmark = pytest.mark.usefixtures("isolated_data")  # see conftest.py


def test_registry_info():
    assert list_datasets() == ["mnist", "fashion-mnist", "cifar10", "cifar100", "svhn"]
    info = dataset_info("mnist")
    assert (info.num_classes, info.channels, info.image_size) == (10, 1, 28)
    assert info.mean == (0.1307,) and info.std == (0.3081,)
    assert dataset_info("cifar10").std == (0.2470, 0.2435, 0.2616)
    assert dataset_info("CIFAR100").num_classes == 100
    assert dataset_info("fashion_mnist").name == "fashion-mnist"
    assert info.model_options()["in_channels"] == 1


def test_load_small_idx_roundtrip(tmp_path):
    images, labels, md5s = write_idx_split(tmp_path / "mnist", "train", 50)
    ds = load_dataset("mnist", "train", root=tmp_path, checksums=md5s)
    assert isinstance(ds, ImageDataset)
    assert ds.images.dtype == torch.uint8 and ds.images.shape == (50, 1, 28, 28)
    assert ds.labels.dtype == torch.int64
    assert torch.equal(ds.images[:, 0], torch.from_numpy(images))
    assert torch.equal(ds.labels, torch.from_numpy(labels.astype(np.int64)))
    # second load comes from the in-memory cache
    again = load_dataset("mnist", "train", root=tmp_path, checksums=md5s)
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


def test_batch_loader_counts_and_epochs():
    info = dataset_info("mnist")
    imgs = torch.randint(0, 256, (1000, 1, 28, 28), dtype=torch.uint8)
    ds = ImageDataset(imgs, torch.arange(1000) % 10, info)
    loader = BatchLoader(ds, 128, shuffle=True, augment=True, seed=7)
    assert len(loader) == 8
    batches = list(loader)
    assert len(batches) == 8 and batches[-1][0].shape == (1000 - 7 * 128, 1, 28, 28)
    x, y = batches[0]
    assert x.dtype == torch.float32 and 0 <= x.min() and x.max() <= 1
    assert y.dtype == torch.int64
    assert len(BatchLoader(ds, 128, drop_last=True)) == 7
    assert sum(len(b[1]) for b in BatchLoader(ds, 128, drop_last=True)) == 7 * 128
    # epochs are a pure function of (seed, epoch)
    loader.set_epoch(3)
    e3 = list(loader)
    fresh = BatchLoader(ds, 128, shuffle=True, augment=True, seed=7)
    fresh.set_epoch(3)
    e3b = list(fresh)
    assert all(torch.equal(a[0], b[0]) and torch.equal(a[1], b[1]) for a, b in zip(e3, e3b, strict=True))
    assert not torch.equal(e3[0][1], batches[0][1])  # another epoch, another order
    # no shuffle, no augmentation: the data in order
    plain = list(BatchLoader(ds, 100, shuffle=False))
    assert torch.equal(torch.cat([b[0] for b in plain]), imgs.float() / 255)


def test_hflip_and_batch_size_change_and_device():
    info = dataset_info("cifar10")
    imgs = torch.randint(0, 256, (50, 3, 32, 32), dtype=torch.uint8)
    ds = ImageDataset(imgs, torch.arange(50) % 10, info)
    loader = BatchLoader(ds, 16, shuffle=False, augment=True, max_shift=0, hflip=True, seed=1)
    x = torch.cat([b[0] for b in loader])
    flipped = [torch.equal(x[i], imgs[i].flip(-1).float() / 255) for i in range(50)]
    kept = [torch.equal(x[i], imgs[i].float() / 255) for i in range(50)]
    assert all(f or k for f, k in zip(flipped, kept, strict=True)) and 5 < sum(flipped) < 45
    loader.batch_size = 25  # batch-size schedules change it between epochs
    assert len(loader) == 2 and [len(b[1]) for b in loader] == [25, 25]
    devices = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
    for dev in devices:
        moved = BatchLoader(ds, 16, augment=True, seed=2, device=dev)
        moved.set_epoch(1)
        on_cpu = BatchLoader(ds, 16, augment=True, seed=2)
        on_cpu.set_epoch(1)
        for (a, la), (b, lb) in zip(moved, on_cpu, strict=True):
            assert a.device.type == dev and torch.equal(a.cpu(), b) and torch.equal(la.cpu(), lb)


def test_iteration_advances_epoch():
    ds = ImageDataset(torch.zeros(30, 1, 28, 28, dtype=torch.uint8), torch.arange(30) % 10,
                      dataset_info("mnist"))
    loader = BatchLoader(ds, 30, seed=5)
    first, second = next(iter(loader))[1], next(iter(loader))[1]
    assert loader.epoch == 2 and not torch.equal(first, second)
    loader.set_epoch(0)
    assert torch.equal(next(iter(loader))[1], first)
