"""Your own data as a dataset: a folder of images, an ``.npz`` file, or images and labels
registered from Python; their classes, splits, statistics and caches.

A dataset value (what ``--dataset`` and ``TrainingSettings.dataset`` take) names your own data
when it is

* a path: it holds a path separator, ends in ``.npz``, or names an existing folder or file and
  is not the name of a built-in dataset (``mnist`` is MNIST even where a folder ``mnist``
  exists; ``./mnist`` is the folder);
* ``PATH@N``: the same data with every image resized to N x N pixels (``--resize N``);
* a name given to :func:`register_dataset` in this process.

Everything a model needs is computed from the training split (:class:`~capslab.data.registry.
DatasetInfo`: image size, channels, classes, per-channel mean and standard deviation of the
pixels in [0, 1]). Data without a test split (a folder without ``test/``, an .npz file without
``x_test``) has one held out: :data:`HELD_OUT` of each class, stratified, seed
:data:`HELD_OUT_SEED`, so training and every later evaluation see the same split.

Decoding a folder is the slow part: its pixels are kept in memory for the process and in the
user cache (``<cache_root>/decoded/custom-*.npy``), both keyed by the folder, the size and
every image's path, size and modification time.
"""

from __future__ import annotations

import hashlib
import os
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from capslab.data import locations
from capslab.data.arrays import Split, dataset_items, pair, read_npz
from capslab.data.dataset import ImageDataset, read_decoded, stratified_subset, write_decoded
from capslab.data.folders import decode_images, scan_folder
from capslab.data.images import to_rgb
from capslab.data.registry import DatasetInfo, canonical_name
from capslab.data.transforms import resize_bilinear
from capslab.errors import (
    ConfigError,
    CustomDataError,
    DatasetNotFoundError,
    UnknownDatasetError,
)

#: the share of each class held out as the test split of data that has none
HELD_OUT = 0.2
#: the seed of that split (fixed: a later evaluation must find the same test images)
HELD_OUT_SEED = 0
#: the splits of your own data
SPLITS = ("train", "test")


# ---------------------------------------------------------------- what a value names
@dataclass(frozen=True)
class Source:
    """Your own data a dataset value names: an absolute ``path`` (``None`` for data registered
    under ``name``) and the ``size`` its images are resized to (``None``: as they are)."""

    name: str
    path: Path | None = None
    size: int | None = None

    @property
    def value(self) -> str:
        """The canonical dataset value: the absolute path (with ``@N``), or the registered name."""
        if self.path is None:
            return self.name
        return str(self.path) + (f"@{self.size}" if self.size else "")


def parse(value: str) -> Source | None:
    """The custom data ``value`` names, or ``None`` when it names none (a built-in dataset's
    name, or nothing).

    Raises:
        ConfigError: ``PATH@N`` with ``N`` < 1.
    """
    text = str(value).strip()
    if text in _registered:
        return Source(text)
    base, size = _split_size(text)
    if not _names_a_path(base):
        return None
    return Source(text, Path(os.path.abspath(os.path.expanduser(base))), size)


def is_registered(value: str) -> bool:
    """Does ``value`` name data registered from Python (:func:`register_dataset`), which only
    this process sees?"""
    return str(value).strip() in _registered


def is_custom(value: str) -> bool:
    """Does ``value`` name your own data (a path or a registered name), not a built-in dataset?"""
    return parse(value) is not None


def canonical(value: str) -> str:
    """``value`` with a path made absolute (``shapes@32`` -> ``/home/me/shapes@32``), so that a
    run's settings name its data wherever they are read; other values as they are."""
    source = parse(value)
    return value if source is None else source.value


def _split_size(text: str) -> tuple[str, int | None]:
    head, sep, tail = text.rpartition("@")
    if not (sep and head and tail.isdigit()) or Path(text).expanduser().exists():
        return text, None
    if int(tail) < 1:
        raise ConfigError(f"dataset {text!r}: the image size after @ must be a positive number")
    return head, int(tail)


def _names_a_path(text: str) -> bool:
    if not text:
        return False
    if "/" in text or os.sep in text or (os.altsep and os.altsep in text) \
            or text.lower().endswith(".npz") or text.startswith("~"):
        return True
    try:
        canonical_name(text)
        return False  # a built-in dataset's name wins over a folder of that name
    except UnknownDatasetError:
        return Path(text).exists()


# ---------------------------------------------------------------- a dataset of your own
@dataclass(frozen=True)
class CustomDataset:
    """Both splits of your own data and where they came from (``origin``: ``path``,
    ``format``, ``resize``, ``test_split``, ``train_images``, ``test_images``; what a
    checkpoint records beside the :class:`DatasetInfo`)."""

    train: ImageDataset
    test: ImageDataset
    origin: dict[str, Any] = field(default_factory=dict)

    @property
    def info(self) -> DatasetInfo:
        return self.train.info

    def split(self, split: str) -> ImageDataset:
        if split not in SPLITS:
            raise UnknownDatasetError(f"dataset {self.info.name!r} has no split {split!r}; "
                                      f"splits: {', '.join(SPLITS)}")
        return self.train if split == "train" else self.test


_registered: dict[str, CustomDataset] = {}
_memory: dict[tuple, tuple[tuple, CustomDataset]] = {}
_lock = threading.Lock()


def load_custom(value: str, cache: bool = True) -> CustomDataset:
    """Your own data named by ``value`` (see the module's docstring), both splits.

    ``cache``: keep the result in memory for the process, and a folder's decoded pixels in the
    user cache (see the module's docstring); a changed image is decoded again.

    Raises:
        DatasetNotFoundError: the path does not exist.
        CustomDataError: the data cannot be a dataset (the message says why, naming the file).
        UnknownDatasetError: ``value`` names no data of your own.
    """
    source = parse(value)
    if source is None:
        raise UnknownDatasetError(f"{value!r} is neither a folder of images nor an .npz file")
    if source.path is None:
        return _registered[source.name]
    path = source.path
    if not path.exists():
        raise DatasetNotFoundError(
            f"dataset {path} does not exist: give a folder of images (one subfolder per class) "
            "or an .npz file"
        )
    if path.is_dir():
        return _load_folder(source, cache)
    if path.suffix.lower() == ".npz":
        return _load_npz(source, cache)
    raise CustomDataError(f"{path} is neither a folder of images (one subfolder per class) nor "
                          "an .npz file")


def _cached(key: tuple, fingerprint: tuple, load) -> CustomDataset:
    with _lock:
        hit = _memory.get(key)
    if hit is not None and hit[0] == fingerprint:
        return hit[1]
    data = load()
    with _lock:
        _memory[key] = (fingerprint, data)
    return data


def _load_folder(source: Source, cache: bool) -> CustomDataset:
    root = source.path
    layout = scan_folder(root)
    fingerprint = layout.fingerprint()

    def load() -> CustomDataset:
        disk = _pixel_cache_path(str(root), source.size, fingerprint)
        images = _read_pixels(disk, len(fingerprint)) if cache else None
        if images is None:
            images = decode_images(layout.files(), source.size, root)
            if cache:
                write_decoded(disk, images=images)
        n = len(layout.train.files)
        train = (images[:n], np.asarray(layout.train.labels, dtype=np.int64))
        test = None if layout.test is None else (
            images[n:], np.asarray(layout.test.labels, dtype=np.int64))
        origin = {"path": str(root), "format": "folder", "resize": source.size,
                  "test_split": None if layout.test is None else f"the {layout.test.folder.name}/ folder"}
        return assemble(source.value, train, test, layout.classes, origin, str(root))

    return _cached((str(root), source.size), fingerprint, load) if cache else load()


def _load_npz(source: Source, cache: bool) -> CustomDataset:
    path = source.path
    st = path.stat()

    def load() -> CustomDataset:
        arrays = read_npz(path, source.size)
        origin = {"path": str(path), "format": "npz", "resize": source.size,
                  "test_split": None if arrays.test is None else "its test arrays"}
        return assemble(source.value, arrays.train, arrays.test, arrays.classes, origin, str(path))

    fingerprint = (st.st_size, st.st_mtime_ns)
    return _cached((str(path), source.size), fingerprint, load) if cache else load()


def clear_custom_cache() -> None:
    """Forget the custom data kept in memory (not the registered datasets)."""
    with _lock:
        _memory.clear()


def _pixel_cache_path(root: str, size: int | None, fingerprint: tuple) -> Path:
    digest = hashlib.sha1(repr((root, size, fingerprint)).encode(),
                          usedforsecurity=False).hexdigest()[:20]
    return locations.cache_root() / "decoded" / f"custom-{digest}.npz"


def _read_pixels(path: Path, count: int) -> np.ndarray | None:
    """The pixels kept by :func:`~capslab.data.dataset.write_decoded`, or ``None`` (absent,
    unreadable, not ``count`` uint8 images)."""
    images = (read_decoded(path) or {}).get("images")
    ok = images is not None and images.dtype == np.uint8 and images.ndim == 4 and len(images) == count
    return images if ok else None


# ---------------------------------------------------------------- splits, classes, statistics
def assemble(name: str, train: Split, test: Split | None, classes, origin: dict[str, Any],
             where: str) -> CustomDataset:
    """Both splits of your own data from their pixels and labels, with the computed info.

    Args:
        name: the dataset value (the info's name).
        train, test: (uint8 ``[N, C, H, W]``, int64 ``[N]``); ``test=None`` holds one out.
        classes: the class names, or ``None`` (the numbers ``0..K-1``, K from the labels).
        origin: what :attr:`CustomDataset.origin` records; ``where``: how errors name the data.
    """
    x, y = train
    if test is not None:
        x, test = _same_pixels(x, test, where)
    names = class_names(y, None if test is None else test[1], classes, where)
    if x.shape[2] != x.shape[3]:
        raise CustomDataError(
            f"the images of {where} are {x.shape[2]}x{x.shape[3]} pixels (height x width): "
            f"CapsLab's models take square images; bring them to one size with --resize N "
            f"(or --dataset {where}@N)"
        )
    if test is None:
        (x, y), test = hold_out_test(x, y, names, where)
        origin = {**origin, "test_split": f"{HELD_OUT:.0%} of each class held out (stratified, "
                                          f"seed {HELD_OUT_SEED})"}
    mean, std = channel_stats(x)
    info = DatasetInfo(name, len(names), x.shape[1], x.shape[2], mean, std, names)
    sources = (origin["path"],) if origin.get("path") else ()
    origin = {**origin, "train_images": len(y), "test_images": len(test[1])}
    return CustomDataset(_image_dataset(x, y, info, "train", sources),
                         _image_dataset(*test, info, "test", sources), origin)


def _image_dataset(images: np.ndarray, labels: np.ndarray, info: DatasetInfo, split: str,
                   sources: tuple[str, ...]) -> ImageDataset:
    return ImageDataset(torch.from_numpy(np.require(images, np.uint8, ["C", "W"])),
                        torch.from_numpy(np.require(labels, np.int64, ["C", "W"])),
                        info, split, sources)


def _same_pixels(x: np.ndarray, test: Split, where: str) -> tuple[np.ndarray, Split]:
    """The training and test images with one channel count (RGB when either is) and one size."""
    xt, yt = test
    if x.shape[1] != xt.shape[1]:
        x, xt = to_rgb(x), to_rgb(xt)
    if x.shape[2:] != xt.shape[2:]:
        raise CustomDataError(
            f"the test images of {where} are {xt.shape[2]}x{xt.shape[3]} pixels, its training "
            f"images {x.shape[2]}x{x.shape[3]}; bring them to one size with --resize N"
        )
    return x, (xt, yt)


def class_names(train_labels: np.ndarray, test_labels: np.ndarray | None, classes,
                where: str, require_all: bool = True) -> tuple[str, ...]:
    """The class names of labelled data, its labels checked against them.

    ``classes`` given: K = ``len(classes)``; else K = the largest training label + 1 and the
    names are ``"0"`` .. ``"K-1"``. With ``require_all`` every class must have a training image.

    Raises:
        CustomDataError: a label of either split outside ``0..K-1``, a class without a
            training image, fewer than two classes, or a class name given twice.
    """
    if classes is not None:
        names = tuple(str(c) for c in classes)
        if len(set(names)) != len(names):
            twice = next(n for n in names if names.count(n) > 1)
            raise CustomDataError(f"the classes of {where} name {twice!r} twice")
        source = f"{len(names)} classes"
    else:
        names = tuple(str(i) for i in range(int(train_labels.max()) + 1 if len(train_labels) else 0))
        source = "the training labels"
    k = len(names)
    for labels, which in ((train_labels, "training"), (test_labels, "test")):
        if labels is None:
            continue
        over = np.flatnonzero(labels >= k)
        if over.size:
            i = int(over[0])
            raise CustomDataError(f"the {which} labels of {where} hold label {labels[i]} at index "
                                  f"{i}, outside 0..{k - 1} ({source})")
    if require_all:
        counts = np.bincount(train_labels, minlength=k)
        empty = np.flatnonzero(counts == 0)
        if empty.size:
            c = int(empty[0])
            label = "" if names[c] == str(c) else f" (label {c})"
            raise CustomDataError(f"class {names[c]}{label} of {where} has no training image")
    if k < 2:
        raise CustomDataError(f"{where} has {k} class{'es' if k != 1 else ''}: a classifier needs "
                              "two classes or more")
    return names


def hold_out_test(images: np.ndarray, labels: np.ndarray, classes: tuple[str, ...],
                  where: str) -> tuple[Split, Split]:
    """(the rest, a test split): :data:`HELD_OUT` of the images of each class, stratified,
    seed :data:`HELD_OUT_SEED` (:func:`~capslab.data.dataset.stratified_subset`).

    Raises:
        CustomDataError: a class with a single image (it cannot be in both splits).
    """
    counts = np.bincount(labels, minlength=len(classes))
    single = np.flatnonzero(counts < 2)
    if single.size:
        raise CustomDataError(
            f"class {classes[int(single[0])]} of {where} has a single image: holding out a test "
            "split needs two or more per class (or give the test images: a test/ folder, or "
            "x_test and y_test)"
        )
    n = max(1, round(HELD_OUT * len(labels)))
    test_idx = stratified_subset(torch.from_numpy(labels), n, HELD_OUT_SEED).numpy()
    keep = np.ones(len(labels), dtype=bool)
    keep[test_idx] = False
    return (images[keep], labels[keep]), (images[test_idx], labels[test_idx])


def channel_stats(images: np.ndarray, chunk: int = 4096) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Per-channel mean and standard deviation of the pixels in [0, 1] (the population
    deviation, at least 1/255 so that normalising never divides by zero).

    Shape:
        ``images``: uint8 ``[N, C, H, W]``; returns two C-tuples.
    """
    total = np.zeros(images.shape[1])
    squares = np.zeros(images.shape[1])
    for start in range(0, len(images), chunk):
        x = images[start:start + chunk].astype(np.float64) / 255.0
        total += x.sum(axis=(0, 2, 3))
        squares += (x * x).sum(axis=(0, 2, 3))
    count = images.shape[0] * images.shape[2] * images.shape[3]
    mean = total / count
    std = np.sqrt(np.maximum(squares / count - mean * mean, 0.0))
    return tuple(float(m) for m in mean), tuple(max(float(s), 1 / 255) for s in std)


# ---------------------------------------------------------------- from Python
def samples(data, what: str, size: int | None = None) -> Split:
    """Images and labels of ``data``: an :class:`ImageDataset`, a pair ``(images, labels)`` of
    tensors or arrays, or a map-style dataset (items ``(image, label)``).

    Shape:
        returns (uint8 ``[N, C, H, W]``, int64 ``[N]``).
    """
    if isinstance(data, ImageDataset):
        images = data.images.numpy()
        return (images if size is None else resize_bilinear(images, size)), data.labels.numpy()
    if isinstance(data, tuple | list) and len(data) == 2:
        return pair(data[0], data[1], f"the images of {what}", f"the labels of {what}", size)
    if hasattr(data, "__getitem__") and hasattr(data, "__len__"):
        return dataset_items(data, what, size)
    raise CustomDataError(f"{what} is {type(data).__name__}: give an ImageDataset, a pair "
                          "(images, labels) or a map-style dataset of (image, label) items")


def _given_classes(data, classes):
    if classes is not None:
        return classes
    if isinstance(data, ImageDataset):
        return data.info.classes or None
    return getattr(data, "classes", None) or None  # torchvision datasets name their classes


def from_tensors(images, labels, *, classes=None, name: str = "tensors",
                 size: int | None = None) -> ImageDataset:
    """An :class:`ImageDataset` of images and labels in memory, with its info computed from
    them (shape, classes, statistics).

    Args:
        images: a tensor or array ``[N, H, W]``, ``[N, C, H, W]`` or ``[N, H, W, C]`` (1 or 3
            channels), uint8 0..255 or floats in [0, 1].
        labels: ``[N]`` class numbers ``0..K-1``.
        classes: the K class names (default: the numbers, K from the labels).
        size: resize every image to ``size`` x ``size``.

    Raises:
        CustomDataError: bad shapes or pixel values, labels out of range (naming the index).
    """
    x, y = pair(images, labels, f"the images of {name}", f"the labels of {name}", size)
    return _standalone(name, x, y, classes)


def from_torch_dataset(dataset, *, classes=None, name: str | None = None,
                       size: int | None = None) -> ImageDataset:
    """An :class:`ImageDataset` of a map-style dataset (``len`` and ``dataset[i]`` ->
    ``(image, label)``: a torchvision dataset, a ``TensorDataset``, your own), read item by
    item, with its info computed. Images: Pillow images, tensors (``ToTensor``'s [0, 1] floats)
    or arrays; ``classes`` default to the dataset's ``classes`` attribute."""
    name = name or type(dataset).__name__
    x, y = dataset_items(dataset, name, size)
    return _standalone(name, x, y, _given_classes(dataset, classes))


def _standalone(name: str, x: np.ndarray, y: np.ndarray, classes) -> ImageDataset:
    names = class_names(y, None, classes, name, require_all=False)
    if x.shape[2] != x.shape[3]:
        raise CustomDataError(f"the images of {name} are {x.shape[2]}x{x.shape[3]} pixels: "
                              "CapsLab's models take square images; give size=N")
    mean, std = channel_stats(x)
    info = DatasetInfo(name, len(names), x.shape[1], x.shape[2], mean, std, names)
    return _image_dataset(x, y, info, "train", ())


def register_dataset(name: str, train, test=None, *, classes=None,
                     size: int | None = None) -> DatasetInfo:
    """Make data in memory a dataset named ``name`` for this process: ``dataset=name`` then
    works wherever a dataset is named (``TrainConfig``, the search, explain, ...).

    Args:
        train, test: an :class:`ImageDataset`, a pair ``(images, labels)`` (see
            :func:`from_tensors`) or a map-style dataset (see :func:`from_torch_dataset`);
            ``test=None`` holds :data:`HELD_OUT` of ``train`` out as the test split.
        classes: the class names (default: ``train``'s, else the numbers).
        size: resize every image to ``size`` x ``size``.

    Returns:
        The computed :class:`DatasetInfo` (recorded in every checkpoint of a run on it).

    Worker processes (``nproc`` > 1, a search's workers) do not see it: save it as an .npz
    file with :func:`save_npz` and name the file instead.

    Raises:
        ConfigError: a name that is a built-in dataset's or looks like a path.
        CustomDataError: data that cannot be a dataset.
    """
    if not isinstance(name, str) or not name.strip() or any(
            c in name for c in ("/", os.sep, "@")) or name.lower().endswith(".npz"):
        raise ConfigError(f"dataset name {name!r} must be a plain name (no path separator, no @, "
                          "not ending in .npz)")
    try:
        canonical_name(name)
    except UnknownDatasetError:
        pass
    else:
        raise ConfigError(f"{name!r} is a built-in dataset; register yours under another name")
    data = _from_python(name, train, test, classes, size)
    with _lock:
        _registered[name] = data
    return data.info


def _from_python(name: str, train, test, classes, size: int | None) -> CustomDataset:
    train_split = samples(train, f"the training data of {name}", size)
    test_split = None if test is None else samples(test, f"the test data of {name}", size)
    origin = {"path": None, "format": "registered", "resize": size,
              "test_split": None if test is None else "given"}
    return assemble(name, train_split, test_split, _given_classes(train, classes), origin, name)


def unregister_dataset(name: str) -> None:
    """Forget a dataset of :func:`register_dataset` (no error when there is none)."""
    with _lock:
        _registered.pop(name, None)


def save_npz(path: str | os.PathLike, train, test=None, *, classes=None,
             size: int | None = None) -> Path:
    """Write data in memory (the forms :func:`register_dataset` takes) as an .npz file that
    ``--dataset PATH`` reads in any process: ``x_train``, ``y_train`` (uint8 ``[N, C, H, W]``,
    int64), ``x_test``, ``y_test`` when ``test`` is given, ``classes`` when known."""
    path = Path(path)
    x, y = samples(train, f"the training data for {path}", size)
    arrays: dict[str, np.ndarray] = {"x_train": x, "y_train": y}
    if test is not None:
        arrays["x_test"], arrays["y_test"] = samples(test, f"the test data for {path}", size)
    names = _given_classes(train, classes)
    if names is not None:
        arrays["classes"] = np.asarray([str(c) for c in names])
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as f:
        np.savez(f, **arrays)
    return path


def describe(data: CustomDataset) -> str:
    """One line about your own data: classes, image shape, split sizes, the test split."""
    info, origin = data.info, data.origin
    shown = ", ".join(info.classes[:6]) + (", ..." if len(info.classes) > 6 else "")
    resized = f" (resized to {origin['resize']}x{origin['resize']})" if origin.get("resize") else ""
    return (f"{info.name}: {info.num_classes} classes ({shown}), images "
            f"{info.channels}x{info.image_size}x{info.image_size}{resized}; "
            f"{origin['train_images']} training and {origin['test_images']} test images "
            f"(test split: {origin['test_split']})")

