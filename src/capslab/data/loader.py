"""``BatchLoader``: shuffled, optionally augmented mini-batches straight from in-memory tensors."""

from __future__ import annotations

import math

import torch
from torch import Tensor

from capslab.data.transforms import flip, flip_mask, shift, shift_offsets

_MIX = 0x9E3779B97F4A7C15  # golden-ratio constant for mixing (seed, epoch, stream)


def epoch_seed(seed: int, epoch: int, stream: int = 0) -> int:
    """A 63-bit seed that is a pure function of ``(seed, epoch, stream)``."""
    x = (int(seed) * _MIX + int(epoch) * 0xBF58476D1CE4E5B9 + int(stream) * 0x94D049BB133111EB)
    x &= (1 << 64) - 1
    x ^= x >> 31
    x = (x * 0xD6E8FEB86677A2B1) & ((1 << 64) - 1)
    x ^= x >> 29
    return x & ((1 << 63) - 1)


class BatchLoader:
    """Iterates ``(images float [B, C, H, W] in [0, 1], labels int64 [B])``.

    - ``shuffle``: a new order each epoch; ``augment``: random shift by up to ``max_shift``
      pixels (pad and crop), plus a left-right flip when ``hflip`` (off by default).
    - The order and the augmentation of epoch ``e`` depend only on ``(seed, e)``:
      ``set_epoch(e)`` before iterating reproduces epoch ``e`` exactly (for resumed runs).
      Each ``iter()`` uses the current epoch and then advances it by one, so a plain loop over
      epochs also sees a new order each time.
    - ``batch_size`` may be changed between epochs (batch-size schedules); ``len()`` follows.
    - ``device``: the whole dataset is moved there once and batches are cut there.
    - ``rank`` of ``world_size`` (data-parallel training): ``batch_size`` stays the global
      batch, and each batch yielded is this rank's share of it, its images ``rank``,
      ``rank + world_size``, ... (:class:`~torch.utils.data.DistributedSampler`'s split of the
      epoch's order), with the augmentation they get in a one-process run. The ranks' shares of
      an epoch hold every image exactly once; ``len()`` counts the global batches, the same on
      every rank. A share of the epoch's last batch may be smaller than the others, or empty.
    """

    def __init__(self, dataset, batch_size: int, shuffle: bool = True, augment: bool = False,
                 seed: int = 0, drop_last: bool = False, *, max_shift: int = 2,
                 hflip: bool = False, device: str | torch.device | None = None,
                 rank: int = 0, world_size: int = 1):
        if int(batch_size) < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        if not 0 <= int(rank) < int(world_size):
            raise ValueError(f"rank must be in 0..world_size - 1, got rank {rank} of {world_size}")
        images, labels = dataset.images, dataset.labels
        if device is not None:
            images, labels = images.to(device), labels.to(device)
        self.dataset = dataset
        self.images: Tensor = images
        self.labels: Tensor = labels
        self.batch_size = int(batch_size)
        self.shuffle = bool(shuffle)
        self.augment = bool(augment)
        self.seed = int(seed)
        self.drop_last = bool(drop_last)
        self.max_shift = int(max_shift)
        self.hflip = bool(hflip)
        self.rank = int(rank)
        self.world_size = int(world_size)
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        """The next iteration yields epoch ``epoch``'s batches (order and augmentation)."""
        self.epoch = int(epoch)

    def __len__(self) -> int:
        n = self.num_samples
        return n // self.batch_size if self.drop_last else math.ceil(n / self.batch_size)

    @property
    def num_samples(self) -> int:
        return int(self.labels.shape[0])

    def order(self, epoch: int) -> Tensor:
        """The sample order of ``epoch`` (on the CPU)."""
        n = self.num_samples
        if not self.shuffle:
            return torch.arange(n)
        gen = torch.Generator().manual_seed(epoch_seed(self.seed, epoch, 0))
        return torch.randperm(n, generator=gen)

    def __iter__(self):
        epoch = self.epoch
        self.epoch += 1
        order = self.order(epoch).to(self.images.device)
        # with drop_last, len() leaves out the partial last batch
        batches = order.split(self.batch_size)[: len(self)]
        plan = self._augmentation_plan(epoch, [len(idx) for idx in batches]) if self.augment else None
        share = slice(self.rank, None, self.world_size)  # the whole batch in one process
        start = 0
        for idx in batches:
            end = start + len(idx)
            x = self.images[idx[share]]
            if plan is not None:
                offsets, flips = plan
                if self.max_shift > 0 and x.numel():
                    x = shift(x, offsets[:, start:end][:, share], self.max_shift)
                if flips is not None and x.numel():
                    x = flip(x, flips[start:end][share])
            start = end
            yield x / 255.0, self.labels[idx[share]]  # one kernel: uint8 -> float32 in [0, 1]

    def _augmentation_plan(self, epoch: int, sizes: list[int]) -> tuple[Tensor, Tensor | None]:
        """The epoch's shift offsets ``[2, N]`` and flips ``[N]``, drawn batch by batch on the
        CPU in the order :func:`augment_batch` draws them (so the images are the same as a
        batch-at-a-time draw), then copied to the device in one transfer each."""
        gen = torch.Generator().manual_seed(epoch_seed(self.seed, epoch, 1))
        offsets, flips = [], []
        for b in sizes:
            offsets.append(shift_offsets(b, self.max_shift, gen) if self.max_shift > 0
                           else torch.zeros(2, b, dtype=torch.long))
            if self.hflip:
                flips.append(flip_mask(b, 0.5, gen))
        dev = self.images.device
        return (torch.cat(offsets, dim=1).to(dev),
                torch.cat(flips).to(dev) if self.hflip else None)
