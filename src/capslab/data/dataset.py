"""``load_dataset``: find, verify, decode and cache a dataset split as uint8 tensors."""

from __future__ import annotations

import hashlib
import os
import threading
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from capslab.data import readers, sources
from capslab.data.registry import DatasetInfo, get_spec, split_spec
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
    if remainder > 0:
        frac = exact - alloc.double()
        # stable sort by descending fraction: ties keep class order
        order = torch.sort(-frac, stable=True).indices
        alloc[order[:remainder]] += 1
    gen = torch.Generator().manual_seed(int(seed))
    picked = []
    for c, k in zip(classes.tolist(), alloc.tolist(), strict=True):
        if k == 0:
            continue
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
    return sources.cache_root() / "decoded" / f"{key[0]}-{key[1]}-{digest}.npz"


def _read_decoded(path: Path):
    try:
        with np.load(path, allow_pickle=False) as z:
            return z["images"], z["labels"]
    except (OSError, ValueError, KeyError):
        return None


def _write_decoded(path: Path, images: np.ndarray, labels: np.ndarray) -> None:
    import tempfile

    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        try:
            with os.fdopen(fd, "wb") as f:
                np.savez(f, images=images, labels=labels)
            os.replace(tmp, path)
        finally:
            Path(tmp).unlink(missing_ok=True)
    except OSError:
        pass  # read-only cache folder: decode again next time


def _decode(spec, split, found: list[sources.Located]) -> tuple[np.ndarray, np.ndarray]:
    n_classes = spec.info.num_classes
    if split.reader == "idx":
        images_path, labels_path = (loc.path for loc in found)
        return readers.read_idx_pair(images_path, labels_path, n_classes)
    if split.reader in ("cifar10", "cifar100"):
        label_key = "labels" if split.reader == "cifar10" else "fine_labels"
        return readers.read_cifar(found[0].path, split.members, label_key, n_classes)
    if split.reader == "svhn":
        return readers.read_svhn(found[0].path)
    raise ValueError(f"unknown reader {split.reader!r}")


def _verify(spec, split, found, checksums, force):
    for loc in found:
        if loc.variant == "extracted":
            for member in split.members:
                expected = (checksums or {}).get(member) or spec.member_md5.get(member)
                if expected:
                    sources.verify_member(loc.path / Path(member).name, expected, force)
        else:
            fspec = spec.files[loc.spec_file]
            sources.verify_file(loc.path, fspec, (checksums or {}).get(loc.spec_file), force,
                                what=f"{spec.name}/{split_name(spec, split)}")


def split_name(spec, split) -> str:
    return next((k for k, v in spec.splits.items() if v is split), "?")


def load_dataset(name: str, split: str = "train", root: str | os.PathLike | None = None,
                 download: bool = False, *, verify: bool | None = None,
                 checksums: dict[str, str] | None = None, cache: bool = True) -> ImageDataset:
    """Load split ``split`` of dataset ``name`` from its official files.

    ``root``: a folder searched first (then ``$CAPSLAB_DATA``, the user cache and known system
    copies; see :mod:`capslab.data.sources`). ``download``: fetch missing files from the
    official URLs. ``verify``: ``None`` checks md5s once and remembers the result per file
    (size+mtime), ``True`` recomputes them, ``False`` skips them. ``checksums``: md5s that
    override the published ones, by registry file name (or CIFAR member path). ``cache``: keep
    the decoded tensors in memory for the process, and a decoded copy in the user cache.
    """
    spec = get_spec(name)
    sspec = split_spec(spec.name, split)
    found, missing = sources.locate_split(spec.name, sspec, root)
    if missing and download:
        sources.download(spec.name, root, splits=[split], checksums=checksums)
        found, missing = sources.locate_split(spec.name, sspec, root)
    if missing:
        raise sources.not_found_error(spec.name, split, missing, root)
    if verify is not False:
        _verify(spec, sspec, found, checksums, force=bool(verify))
    key = (spec.name, split) + tuple(_file_ident(loc.path) for loc in found)
    arrays = None
    if cache:
        with _memory_lock:
            hit = _memory_cache.get(key)
        if hit is not None:
            images, labels = hit
            return ImageDataset(images, labels, spec.info, split, tuple(str(loc.path) for loc in found))
        disk = _decoded_cache_path(key)
        if disk.is_file():
            arrays = _read_decoded(disk)
            if arrays is not None and (arrays[0].shape[1:] != spec.info.shape
                                       or len(arrays[0]) != len(arrays[1])):
                arrays = None
    from_disk_cache = arrays is not None
    if arrays is None:
        arrays = _decode(spec, sspec, found)
    images_np, labels_np = arrays
    if images_np.shape[1:] != spec.info.shape:
        raise DatasetFormatError(
            f"{found[0].path}: images have shape {list(images_np.shape[1:])}, "
            f"{spec.name} expects {list(spec.info.shape)}"
        )
    if not images_np.flags.writeable:  # frombuffer views are read-only: own the memory
        images_np = np.array(images_np)
    if not labels_np.flags.writeable:
        labels_np = np.array(labels_np)
    images = torch.from_numpy(np.ascontiguousarray(images_np))
    labels = torch.from_numpy(np.ascontiguousarray(labels_np, dtype=np.int64))
    if cache:
        if not from_disk_cache and sspec.reader != "idx":  # IDX decodes as fast as it loads
            _write_decoded(_decoded_cache_path(key), images.numpy(), labels.numpy())
        with _memory_lock:
            _memory_cache[key] = (images, labels)
    return ImageDataset(images, labels, spec.info, split, tuple(str(loc.path) for loc in found))
