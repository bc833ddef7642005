"""``load_dataset``: find, verify, decode and cache a dataset split as uint8 tensors."""

from __future__ import annotations

import hashlib
import os
import tempfile
import threading
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from capslab.data import locations, readers, sources
from capslab.data.checksums import verify_file, verify_member
from capslab.data.registry import DatasetInfo, get_spec, split_spec
from capslab.data.transforms import center_pad, resize_area
from capslab.errors import DatasetFormatError


@dataclass
class ImageDataset:
    """A split in memory: ``images`` uint8 ``[N, C, H, W]``, ``labels`` int64 ``[N]``."""

    images: Tensor
    labels: Tensor
    info: DatasetInfo
    split: str = ""
    sources: tuple[str, ...] = field(default=(), repr=False)

    def __post_init__(self):
        if self.images.ndim != 4 or self.labels.ndim != 1 or len(self.images) != len(self.labels):
            # tensors handed in by code, not read from a file: a caller's bug, not a damaged file
            raise ValueError(
                f"{self.info.name}/{self.split}: images must be [N,C,H,W] and labels [N]; got "
                f"{list(self.images.shape)} and {list(self.labels.shape)}"
            )

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    def __getitem__(self, i):
        return self.images[i], self.labels[i]

    @property
    def name(self) -> str:
        return self.info.name

    def subset(self, indices) -> ImageDataset:
        """A new dataset with the samples at ``indices`` (e.g. from :func:`stratified_subset`)."""
        idx = torch.as_tensor(indices, dtype=torch.long)
        return ImageDataset(self.images[idx], self.labels[idx], self.info, self.split, self.sources)

    def stratified(self, n: int | None, seed: int = 0) -> ImageDataset:
        """``n`` images keeping the class proportions (:func:`stratified_subset`, seeded); the
        dataset itself when ``n`` is None or not smaller than it."""
        if n is None or n >= len(self):
            return self
        return self.subset(stratified_subset(self.labels, n, seed))

    def padded(self, size: int) -> ImageDataset:
        """Every image centred on a black ``size`` x ``size`` canvas (:func:`center_pad`), with
        the info of the padded images (:meth:`DatasetInfo.padded`); the dataset itself when
        its images already have that size."""
        if self.info.image_size == size:
            return self
        return ImageDataset(center_pad(self.images, size), self.labels, self.info.padded(size),
                            self.split, self.sources)


def stratified_subset(labels, n: int, seed: int = 0) -> Tensor:
    """``n`` indices into ``labels`` keeping the class proportions, deterministic in ``seed``.

    Each class gets ``floor(n * count_c / N)`` samples; the remaining ones go to the classes
    with the largest fractional parts (ties to the lower class). Within a class the samples are
    drawn at random (seeded). The indices come back sorted. ``n >= N`` returns every index.
    """
    labels = torch.as_tensor(labels).reshape(-1).long()
    total = int(labels.numel())
    n = int(n)
    if n <= 0:
        raise ValueError(f"subset size must be positive, got {n}")
    if n >= total:
        return torch.arange(total, dtype=torch.long)
    classes, counts = torch.unique(labels, return_counts=True)
    exact = counts.double() * n / total
    alloc = exact.floor().long()
    remainder = n - int(alloc.sum())
    # stable sort by descending fraction: ties keep class order
    order = torch.sort(alloc.double() - exact, stable=True).indices
    alloc[order[:remainder]] += 1
    gen = torch.Generator().manual_seed(int(seed))
    picked = []
    for c, k in zip(classes.tolist(), alloc.tolist(), strict=True):
        if k == 0:
            continue  # no draw: the generator's state stays as it was for the next class
        members = torch.nonzero(labels == c, as_tuple=True)[0]
        perm = torch.randperm(len(members), generator=gen)[:k]
        picked.append(members[perm])
    return torch.sort(torch.cat(picked)).values


# ---------------------------------------------------------------- loading

_memory_cache: dict[tuple, tuple[Tensor, Tensor]] = {}
_memory_lock = threading.Lock()


def clear_cache() -> None:
    """Forget the decoded datasets kept in memory (the next load decodes again)."""
    with _memory_lock:
        _memory_cache.clear()


def _file_ident(path: Path) -> tuple:
    if path.is_dir():
        return (str(path.resolve()),) + tuple(
            (p.name, p.stat().st_size, p.stat().st_mtime_ns) for p in sorted(path.iterdir())
            if p.is_file()
        )
    st = path.stat()
    return (str(path.resolve()), st.st_size, st.st_mtime_ns)


def _decoded_cache_path(key: tuple) -> Path:
    digest = hashlib.sha1(repr(key).encode(), usedforsecurity=False).hexdigest()[:16]
    return locations.cache_root() / "decoded" / f"{key[0]}-{key[1]}-{digest}.npz"


def read_decoded(path: Path) -> dict[str, np.ndarray] | None:
    """The arrays :func:`write_decoded` kept at ``path``, by name, or ``None`` (absent or
    unreadable); the caller checks they are what it expects."""
    try:
        with np.load(path, allow_pickle=False) as z:
            return {name: z[name] for name in z.files}
    except (OSError, ValueError):
        return None


def write_decoded(path: Path, **arrays: np.ndarray) -> None:
    """Keep decoded ``arrays`` at ``path`` (an ``.npz`` written atomically) so the next process
    need not decode again; nothing when the cache folder is read-only."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        try:
            with os.fdopen(fd, "wb") as f:
                np.savez(f, **arrays)
            os.replace(tmp, path)
        finally:
            Path(tmp).unlink(missing_ok=True)
    except OSError:
        pass  # read-only cache folder: decode again next time


def _read_split(path: Path, shape: tuple[int, int, int]):
    """A split's ``(images, labels)`` from the decoded cache, or ``None`` (absent, unreadable or
    not of the dataset's shape)."""
    arrays = read_decoded(path)
    if arrays is None or not {"images", "labels"} <= arrays.keys():
        return None
    images, labels = arrays["images"], arrays["labels"]
    return (images, labels) if images.shape[1:] == shape and len(images) == len(labels) else None


def _decode(spec, split, found: list[locations.Located]) -> tuple[np.ndarray, np.ndarray]:
    n_classes = spec.info.num_classes
    if split.reader == "idx":
        images_path, labels_path = (loc.path for loc in found)
        return readers.read_idx_pair(images_path, labels_path, n_classes)
    if split.reader in ("cifar10", "cifar100"):
        label_key = "labels" if split.reader == "cifar10" else "fine_labels"
        return readers.read_cifar(found[0].path, split.members, label_key, n_classes)
    if split.reader == "svhn":
        return readers.read_svhn(found[0].path)
    if split.reader == "smallnorb":  # 96x96 stereo pairs, presented at the registered size
        images, labels = readers.read_smallnorb(*(loc.path for loc in found), n_classes)
        return resize_area(images, spec.info.image_size).numpy(), labels
    if split.reader == "affnist":
        return readers.read_affnist(found[0].path, split.members[0], n_classes)
    raise ValueError(f"unknown reader {split.reader!r}")


def _verify(spec, split: str, found: list[locations.Located], checksums: dict[str, str],
            force: bool) -> None:
    for loc in found:
        if loc.variant == "extracted":
            for member in spec.splits[split].members:
                expected = checksums.get(member) or spec.member_md5.get(member)
                if expected:
                    verify_member(loc.path / Path(member).name, expected, force)
        else:
            verify_file(loc.path, spec.files[loc.spec_file], checksums.get(loc.spec_file), force,
                        what=f"{spec.name}/{split}")


def load_dataset(name: str, split: str = "train", data_dir: str | os.PathLike | None = None,
                 download: bool = True, *, verify: bool | None = None,
                 checksums: dict[str, str] | None = None, cache: bool = True) -> ImageDataset:
    """Load split ``split`` of dataset ``name`` from its official files.

    ``data_dir``: a folder searched first (then ``$CAPSLAB_DATA``, the user cache and known system
    copies; see :mod:`capslab.data.locations`). ``download``: fetch missing files from the
    official URLs (or ``$CAPSLAB_MIRRORS``) into ``<data_dir or the user cache>/<name>``, with
    a one-line note; never when ``$CAPSLAB_OFFLINE`` is set (then, as with ``download=False``, a
    missing file raises :class:`~capslab.errors.DatasetNotFoundError`). ``verify``: ``None``
    checks md5s once and remembers the result per file (size+mtime), ``True`` recomputes them,
    ``False`` skips them. ``checksums``: md5s that override the published ones, by registry file
    name (or CIFAR member path). ``cache``: keep the decoded tensors in memory for the process,
    and a decoded copy in the user cache.
    """
    spec = get_spec(name)
    sspec = split_spec(spec.name, split)
    sources.require_files(spec.name, data_dir, (split,), download=download, checksums=checksums)
    found, missing = locations.locate_split(spec.name, sspec, data_dir)
    if missing:  # only if a file vanished since: require_files found or downloaded it
        raise sources.not_found_error(spec.name, split, missing, data_dir)
    if verify is not False:
        _verify(spec, split, found, checksums or {}, force=bool(verify))
    paths = tuple(str(loc.path) for loc in found)
    key = (spec.name, split) + tuple(_file_ident(loc.path) for loc in found)
    if cache:
        with _memory_lock:
            hit = _memory_cache.get(key)
        if hit is not None:
            return ImageDataset(*hit, spec.info, split, paths)
    arrays = _read_split(_decoded_cache_path(key), spec.info.shape) if cache else None
    from_disk_cache = arrays is not None
    images_np, labels_np = arrays if from_disk_cache else _decode(spec, sspec, found)
    if images_np.shape[1:] != spec.info.shape:
        raise DatasetFormatError(
            f"{found[0].path}: images have shape {list(images_np.shape[1:])}, "
            f"{spec.name} expects {list(spec.info.shape)}"
        )
    # "W": frombuffer views are read-only, so those are copied to own the memory
    images = torch.from_numpy(np.require(images_np, requirements=["C", "W"]))
    labels = torch.from_numpy(np.require(labels_np, np.int64, ["C", "W"]))
    if cache:
        if not from_disk_cache and sspec.reader != "idx":  # IDX decodes as fast as it loads
            write_decoded(_decoded_cache_path(key), images=images.numpy(), labels=labels.numpy())
        with _memory_lock:
            _memory_cache[key] = (images, labels)
    return ImageDataset(images, labels, spec.info, split, paths)
