"""Every dataset a dataset value can name: a built-in one (the registry's files) or your own (a
folder of images, an ``.npz`` file, data registered from Python: :mod:`~capslab.data.custom`).

The functions of :mod:`capslab.data` that take a dataset value are these, so every command and
API that names a dataset takes your own data too. A built-in dataset's info is free; your own
data's is computed from its training split (decoded once, then cached).
"""

from __future__ import annotations

import os
from typing import Any

from capslab.data import custom, dataset, registry, sources
from capslab.data.registry import DatasetInfo
from capslab.errors import ConfigError, UnknownDatasetError

# load_dataset options of the built-in datasets that mean nothing for your own data
_FILE_OPTIONS = ("verify", "checksums", "timeout")


def is_custom(name: str) -> bool:
    """Does ``name`` stand for your own data (see :mod:`~capslab.data.custom`)?"""
    return custom.is_custom(name)


def canonical_dataset(name: str) -> str:
    """``name`` as settings record it: the path of your own data made absolute (``@N`` kept),
    a built-in dataset's name as given."""
    return custom.canonical(name)


def dataset_info(name: str) -> DatasetInfo:
    """Shapes, classes and normalisation statistics of dataset ``name``: a built-in one's
    from the registry (no file read), your own data's computed from its training split.

    Raises:
        UnknownDatasetError: a name that is neither a built-in dataset nor your own data.
        DatasetNotFoundError, CustomDataError: your own data is missing or unusable.
    """
    if custom.is_custom(name):
        return custom.load_custom(name).info
    return _registry(name, registry.dataset_info)


def _registry(name: str, function, *args, **kwargs):
    try:
        return function(name, *args, **kwargs)
    except UnknownDatasetError as exc:
        base, sep, tail = str(name).strip().rpartition("@")
        if sep and tail.isdigit() and not custom.is_custom(base):
            try:
                info = registry.dataset_info(base)
            except UnknownDatasetError:
                pass
            else:
                raise ConfigError(
                    f"{name!r}: resizing (@N, --resize) applies to your own data; {info.name}'s "
                    f"images are {info.image_size}x{info.image_size}"
                ) from None
        if "has no split" in str(exc):
            raise
        raise UnknownDatasetError(f"{exc}; or your own data: a folder of images (one subfolder "
                                  "per class) or an .npz file (see docs/data.md)") from None


def load_dataset(name: str, split: str = "train", data_dir: str | os.PathLike | None = None,
                 download: bool = True, **options: Any) -> dataset.ImageDataset:
    """Split ``split`` of dataset ``name``, uint8 images ``[N, C, H, W]`` and int64 labels.

    A built-in dataset: :func:`capslab.data.dataset.load_dataset` (``data_dir``, ``download``
    and ``options``: where its files are found, downloads, md5 checks, caches). Your own data:
    its ``train`` or ``test`` split (:func:`capslab.data.custom.load_custom`); ``data_dir``
    and ``download`` do not apply, ``cache=False`` reads it again.
    """
    if not custom.is_custom(name):
        return _registry(name, dataset.load_dataset, split, data_dir, download, **options)
    cache = options.pop("cache", True)
    unknown = [k for k, v in options.items() if v is not None and k not in _FILE_OPTIONS]
    if unknown:
        raise ConfigError(f"{', '.join(unknown)} does not apply to your own data ({name})")
    return custom.load_custom(name, cache=cache).split(split)


def split_size(name: str, split: str) -> int:
    """The number of images in split ``split`` of dataset ``name`` (a built-in one's from the
    registry; your own data's once it is read)."""
    if custom.is_custom(name):
        return len(custom.load_custom(name).split(split))
    return _registry(name, registry.split_spec, split).size


def require_files(name: str, data_dir=None, splits: tuple[str, ...] = ("train", "test"),
                  download: bool = False, **options: Any) -> None:
    """Make sure the data of ``splits`` is there before a run writes anything: a built-in
    dataset's files (:func:`capslab.data.sources.require_files`: found or downloaded), your
    own data read and checked."""
    if custom.is_custom(name):
        data = custom.load_custom(name)
        for split in splits:
            data.split(split)
        return
    _registry(name, sources.require_files, data_dir, splits, download, **options)


def check_reachable(name: str, where: str) -> None:
    """Refuse data registered from Python (:func:`~capslab.data.custom.register_dataset`) where
    other processes (``where``: "the ranks of nproc > 1") would have to read it.

    Raises:
        ConfigError: ``name`` is registered in this process only.
    """
    if custom.is_registered(name):
        raise ConfigError(
            f"dataset {name!r} was registered from Python in this process; {where} do not see "
            "it: write it to a file with capslab.data.save_npz and name the .npz file instead"
        )


def dataset_origin(name: str) -> dict[str, Any] | None:
    """Where your own data came from and how its test split was made
    (:attr:`~capslab.data.custom.CustomDataset.origin`); ``None`` for a built-in dataset."""
    return custom.load_custom(name).origin if custom.is_custom(name) else None


def describe_dataset(name: str) -> str | None:
    """One line about your own data (classes, shape, splits), ``None`` for a built-in one."""
    return custom.describe(custom.load_custom(name)) if custom.is_custom(name) else None


def clear_cache() -> None:
    """Forget every dataset kept in memory (the built-in ones and your own; not the datasets
    registered from Python)."""
    dataset.clear_cache()
    custom.clear_custom_cache()
