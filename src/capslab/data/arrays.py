"""Your own data as arrays: an ``.npz`` file, a pair of tensors or arrays, a map-style
``torch.utils.data.Dataset``; each becomes uint8 images ``[N, C, H, W]`` and int64 labels
``[N]`` (the class checks, across splits, are :mod:`~capslab.data.custom`'s).

The arrays an ``.npz`` file may hold (:data:`NPZ_FORMS`)::

    x_train, y_train [, x_test, y_test] [, classes]     as Keras' load_data() gives them
    images, labels [, classes]                          one split: a test split is held out

Images in any layout :func:`~capslab.data.images.to_nchw` reads (``[N, H, W]``,
``[N, H, W, C]``, ``[N, C, H, W]``; uint8 0..255 or floats in [0, 1]); labels class numbers
``0..K-1``; ``classes`` the K class names (strings), else the names are the numbers.
"""

from __future__ import annotations

import zipfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from capslab.data.images import item_to_chw, to_nchw, to_rgb
from capslab.data.transforms import resize_bilinear
from capslab.errors import CustomDataError

#: the forms of an .npz file: (train images, train labels, test images, test labels)
NPZ_FORMS = (("x_train", "y_train", "x_test", "y_test"), ("images", "labels", None, None))

Split = tuple[np.ndarray, np.ndarray]


@dataclass(frozen=True)
class ArraySplits:
    """Images and labels of the training split and of the test split (``None``: none given),
    and the class names when given."""

    train: Split
    test: Split | None
    classes: tuple[str, ...] | None = None


def read_npz(path: Path, size: int | None = None) -> ArraySplits:
    """The splits of an ``.npz`` file (see the module's docstring), resized to ``size`` when
    given.

    Raises:
        CustomDataError: not an .npz file, none of :data:`NPZ_FORMS`, a test image array
            without labels, or an array that holds no images or labels (naming it).
    """
    try:
        with np.load(path, allow_pickle=False) as z:
            arrays = {k: z[k] for k in z.files}
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as exc:
        reason = " ".join(str(exc).split()) or type(exc).__name__
        raise CustomDataError(f"cannot read {path} as an .npz file of arrays: {reason}") from None
    form = next((f for f in NPZ_FORMS if f[0] in arrays and f[1] in arrays), None)
    if form is None:
        raise CustomDataError(
            f"{path} holds the arrays {sorted(arrays) or 'none'}; expected x_train and y_train "
            "(and x_test, y_test, classes if there are), or images and labels (and classes)"
        )
    x_train, y_train, x_test, y_test = form
    train = pair(arrays[x_train], arrays[y_train], f"{x_train} of {path}", f"{y_train} of {path}",
                 size)
    test = None
    if x_test is not None and (x_test in arrays or y_test in arrays):
        missing = y_test if x_test in arrays else x_test
        if missing not in arrays:
            raise CustomDataError(f"{path} holds {x_test if missing == y_test else y_test} but "
                                  f"not {missing}: give both test arrays or neither")
        test = pair(arrays[x_test], arrays[y_test], f"{x_test} of {path}", f"{y_test} of {path}",
                    size)
    classes = None
    if "classes" in arrays:
        classes = tuple(str(c) for c in np.asarray(arrays["classes"]).reshape(-1))
    return ArraySplits(train, test, classes)


def pair(images, labels, what: str, labels_what: str | None = None,
         size: int | None = None) -> Split:
    """Images and labels given as arrays or tensors, checked and converted.

    Shape:
        ``images`` as :func:`~capslab.data.images.to_nchw` reads them, ``labels`` ``[N]``;
        returns (uint8 ``[N, C, H, W]``, int64 ``[N]``).
    """
    x = to_nchw(images, what)
    if size is not None:
        x = resize_bilinear(x, size)
    y = as_labels(labels, labels_what or f"the labels of {what}")
    if len(x) != len(y):
        raise CustomDataError(f"{what} holds {len(x)} images but {labels_what or 'its labels'} "
                              f"{len(y)} labels")
    return x, y


def as_labels(labels, what: str) -> np.ndarray:
    """Class numbers as int64 ``[N]`` (integers, or floats that are whole numbers; ``[N, 1]``
    is flattened).

    Raises:
        CustomDataError: another shape or dtype, or a negative label (naming its index).
    """
    array = labels.detach().cpu().numpy() if isinstance(labels, torch.Tensor) else np.asarray(labels)
    if array.ndim == 2 and array.shape[1] == 1:
        array = array[:, 0]
    if array.ndim != 1:
        raise CustomDataError(f"{what} has shape {list(array.shape)}: labels must be one class "
                              "number per image, [N]")
    if array.dtype.kind == "f" and np.isfinite(array).all() and (array == np.round(array)).all():
        array = array.astype(np.int64)
    if array.dtype.kind not in "iu":
        raise CustomDataError(f"{what} holds {array.dtype} values: labels must be class numbers "
                              "0..K-1")
    array = array.astype(np.int64)
    negative = np.flatnonzero(array < 0)
    if negative.size:
        i = int(negative[0])
        raise CustomDataError(f"{what} holds label {array[i]} at index {i}: labels must be class "
                              "numbers 0..K-1")
    return array


def dataset_items(dataset, what: str, size: int | None = None) -> Split:
    """The images and labels of a map-style dataset (``len(dataset)`` and ``dataset[i]`` ->
    ``(image, label)``: a torchvision dataset, a ``TensorDataset``, ...), read item by item.

    Images may be Pillow images, tensors (``ToTensor``'s floats in [0, 1]) or arrays
    (:func:`~capslab.data.images.item_to_chw`); without ``size`` they must be of one size.

    Shape:
        returns (uint8 ``[N, C, H, W]``, int64 ``[N]``).
    """
    images: list[np.ndarray] = []
    labels: list = []
    for i in range(len(dataset)):
        item = dataset[i]
        if not isinstance(item, Sequence) or len(item) < 2:
            raise CustomDataError(f"item {i} of {what} is not an (image, label) pair")
        image = item_to_chw(item[0], f"image {i} of {what}")
        if size is not None:
            image = resize_bilinear(image[None], size)[0]
        elif images and image.shape[1:] != images[0].shape[1:]:
            raise CustomDataError(
                f"images of different sizes in {what}: item 0 is {_hw(images[0])}, item {i} is "
                f"{_hw(image)}; bring them to one size with size=N"
            )
        images.append(image)
        labels.append(_label(item[1], f"the label of item {i} of {what}"))
    if not images:
        raise CustomDataError(f"{what} holds no image")
    if any(image.shape[0] == 3 for image in images):
        images = [to_rgb(image) for image in images]
    return np.stack(images), as_labels(np.asarray(labels), f"the labels of {what}")


def _label(value, what: str) -> int:
    """One item's label as a class number (an int, a whole float, a one-element tensor)."""
    try:
        number = value.item() if isinstance(value, torch.Tensor | np.ndarray) else value
        if isinstance(number, bool) or float(number) != int(number):
            raise ValueError
        return int(number)
    except (TypeError, ValueError, RuntimeError, OverflowError):
        raise CustomDataError(f"{what} is {value!r}: labels must be class numbers 0..K-1") from None


def _hw(image: np.ndarray) -> str:
    return f"{image.shape[1]}x{image.shape[2]}"
