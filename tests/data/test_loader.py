"""``BatchLoader``: batch counts, every sample once per epoch, (seed, epoch) determinism,
pixel range and augmentation, order without shuffling, batch-size changes and devices.

The datasets are small and random, in memory; their labels are ``arange(N)``, so the labels of a
batch say which samples it holds.
"""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from capslab.data import BatchLoader, ImageDataset
from capslab.data.loader import epoch_seed
from capslab.data.testing import make_image_dataset

N = 50


def ided(n: int = N, name: str = "mnist", seed: int = 0) -> ImageDataset:
    """``n`` random images whose labels are their indices."""
    return make_image_dataset(n, name, seed, labels=torch.arange(n))


def one_epoch(loader: BatchLoader) -> tuple[list[torch.Tensor], torch.Tensor]:
    """``(image batches, all labels in the order seen)`` of the loader's next epoch."""
    batches = list(loader)
    return [x for x, _ in batches], torch.cat([y for _, y in batches])


def shifts(image: torch.Tensor, max_shift: int = 2) -> list[torch.Tensor]:
    """Every translation of ``image`` [C, H, W] by up to ``max_shift`` pixels, zero-filled."""
    p = max_shift
    padded = F.pad(image, (p, p, p, p))
    h, w = image.shape[-2:]
    return [padded[:, r : r + h, c : c + w] for r in range(2 * p + 1) for c in range(2 * p + 1)]


# ---------------------------------------------------------------- counts

@pytest.mark.parametrize(("n", "batch_size"), [(50, 16), (48, 16), (50, 1), (7, 64), (64, 64)])
def test_len_is_the_number_of_batches(n, batch_size):
    ds = ided(n)
    loader = BatchLoader(ds, batch_size, shuffle=True, seed=3)
    assert len(loader) == math.ceil(n / batch_size)
    sizes = [len(y) for _, y in loader]
    assert len(sizes) == len(loader) and sum(sizes) == n
    assert all(s == batch_size for s in sizes[:-1]) and 1 <= sizes[-1] <= batch_size
    dropping = BatchLoader(ds, batch_size, drop_last=True)
    assert len(dropping) == n // batch_size
    assert [len(y) for _, y in dropping] == [batch_size] * (n // batch_size)


def test_batch_size_must_be_positive():
    with pytest.raises(ValueError, match="batch_size"):
        BatchLoader(ided(), 0)


# ---------------------------------------------------------------- order

def test_an_epoch_yields_every_sample_exactly_once():
    loader = BatchLoader(ided(), 16, shuffle=True, seed=0)
    for _ in range(3):
        _, seen = one_epoch(loader)
        assert sorted(seen.tolist()) == list(range(N))
        assert not torch.equal(seen, torch.arange(N))  # shuffled, not in file order


def test_images_stay_with_their_labels():
    ds = ided()
    for images, labels in BatchLoader(ds, 16, shuffle=True, seed=1):
        assert torch.equal(images, ds.images[labels].float() / 255)


def test_an_epoch_is_a_function_of_seed_and_epoch():
    ds = ided()
    a = BatchLoader(ds, 16, shuffle=True, augment=True, seed=7)
    b = BatchLoader(ds, 16, shuffle=True, augment=True, seed=7)
    a.set_epoch(4)
    b.set_epoch(4)
    (xa, ya), (xb, yb) = one_epoch(a), one_epoch(b)
    assert torch.equal(ya, yb)
    assert all(torch.equal(p, q) for p, q in zip(xa, xb, strict=True))  # augmentation too
    a.set_epoch(4)  # the same loader replays an epoch (resumed runs)
    assert torch.equal(one_epoch(a)[1], ya)
    a.set_epoch(5)
    assert not torch.equal(one_epoch(a)[1], ya)  # another epoch, another order
    other_seed = BatchLoader(ds, 16, shuffle=True, augment=True, seed=8)
    other_seed.set_epoch(4)
    assert not torch.equal(one_epoch(other_seed)[1], ya)
    assert torch.equal(a.order(4), ya)  # order() tells the order beforehand


def test_iterating_advances_the_epoch():
    loader = BatchLoader(ided(30), 30, seed=5)
    first, second = next(iter(loader))[1], next(iter(loader))[1]
    assert loader.epoch == 2 and not torch.equal(first, second)
    loader.set_epoch(0)
    assert torch.equal(next(iter(loader))[1], first)


def test_epoch_seed_is_pure_and_spreads():
    assert epoch_seed(0, 1) == epoch_seed(0, 1)
    seeds = {epoch_seed(s, e, k) for s in range(4) for e in range(4) for k in range(2)}
    assert len(seeds) == 32 and all(0 <= v < 2**63 for v in seeds)


def test_without_shuffle_the_order_is_kept():
    ds = ided()
    loader = BatchLoader(ds, 16, shuffle=False, seed=9)
    for epoch in range(2):
        images, labels = one_epoch(loader)
        assert torch.equal(labels, torch.arange(N)), epoch
        assert torch.equal(torch.cat(images), ds.images.float() / 255)


# ---------------------------------------------------------------- pixels

@pytest.mark.parametrize("name", ["mnist", "cifar10"])
@pytest.mark.parametrize("augment", [False, True])
def test_images_are_float_in_unit_range(name, augment):
    ds = ided(name=name)
    c, h, w = ds.info.shape
    for images, labels in BatchLoader(ds, 16, augment=augment, seed=2):
        assert images.dtype == torch.float32 and labels.dtype == torch.int64
        assert images.shape == (len(labels), c, h, w) and images.ndim == 4
        assert images.min() >= 0 and images.max() <= 1


def test_no_augmentation_returns_the_exact_pixels():
    ds = ided(name="cifar10")
    images, labels = one_epoch(BatchLoader(ds, 16, shuffle=True, augment=False, seed=4))
    assert torch.equal(torch.cat(images), ds.images[labels].float() / 255)


def test_augmentation_shifts_each_image_by_at_most_two_pixels():
    ds = ided()
    images, labels = one_epoch(BatchLoader(ds, 16, shuffle=True, augment=True, seed=4))
    x = torch.cat(images)
    original = ds.images[labels].float() / 255
    assert x.shape == original.shape and x.min() >= 0 and x.max() <= 1
    assert not torch.equal(x, original)  # pixels changed
    moved = 0
    for out, src in zip(x, original, strict=True):
        candidates = shifts(src)
        assert any(torch.equal(out, cand) for cand in candidates)  # a translation of its source
        moved += not torch.equal(out, src)
    assert moved > N // 2  # 24 of the 25 offsets move the image


def test_hflip_flips_some_images():
    ds = ided(name="cifar10")
    loader = BatchLoader(ds, 16, shuffle=False, augment=True, max_shift=0, hflip=True, seed=1)
    x = torch.cat(one_epoch(loader)[0])
    flipped = [torch.equal(x[i], ds.images[i].flip(-1).float() / 255) for i in range(N)]
    kept = [torch.equal(x[i], ds.images[i].float() / 255) for i in range(N)]
    assert all(f or k for f, k in zip(flipped, kept, strict=True)) and 5 < sum(flipped) < N - 5


# ---------------------------------------------------------------- schedules and devices

def test_batch_size_may_change_between_epochs():
    loader = BatchLoader(ided(), 16, seed=0)
    assert len(loader) == 4
    loader.batch_size = 25  # batch-size schedules change it between epochs
    assert len(loader) == 2 and [len(y) for _, y in loader] == [25, 25]
    assert loader.num_samples == N


def test_device_copy_gives_the_same_batches():
    ds = ided()
    devices = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
    for dev in devices:
        moved = BatchLoader(ds, 16, augment=True, seed=2, device=dev)
        on_cpu = BatchLoader(ds, 16, augment=True, seed=2)
        moved.set_epoch(1)
        on_cpu.set_epoch(1)
        for (a, la), (b, lb) in zip(moved, on_cpu, strict=True):
            assert a.device.type == dev and torch.equal(a.cpu(), b) and torch.equal(la.cpu(), lb)
