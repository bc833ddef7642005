"""Pixels of your own data: one image file decoded, any array or item of images brought to
CapsLab's form (uint8, channels first, 1 or 3 channels). Resizing them is
:func:`capslab.data.transforms.resize_bilinear`.

The readers of your own data (:mod:`~capslab.data.folders`, :mod:`~capslab.data.arrays`) stand
on these; every error names what it read (a file, an array, an item) and says what was wrong.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from capslab.errors import CustomDataError, MissingDependencyError

#: file endings read as images (any case); other files in a class folder are skipped
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm",
                  ".pgm", ".pbm")

# Pillow modes that hold one channel; every other mode is read as RGB (alpha dropped)
_GRAY_MODES = {"1", "L", "LA", "La", "F"}


def is_image_file(path: Path) -> bool:
    """A file whose ending is one of :data:`IMAGE_SUFFIXES` and whose name is not hidden."""
    return path.suffix.lower() in IMAGE_SUFFIXES and not path.name.startswith(".")


def read_image(path: Path) -> np.ndarray:
    """The pixels of an image file, decoded with Pillow.

    Grey images (1-bit, 8-bit, 16-bit: scaled to 8; a palette of greys) give one channel, every
    other mode three (colour palettes, RGBA, CMYK, ...: converted to RGB, alpha dropped).

    Shape:
        returns ``[C, H, W]`` uint8, ``C`` 1 or 3.

    Raises:
        CustomDataError: the file cannot be decoded (the message names it).
    """
    try:
        from PIL import Image
    except ImportError:  # matplotlib depends on Pillow, so this is rare
        raise MissingDependencyError("reading image files needs Pillow: pip install pillow") from None
    try:
        with Image.open(path) as img:
            img.load()
            array = _mode_pixels(img)
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as exc:
        reason = " ".join(str(exc).split()) or type(exc).__name__
        raise CustomDataError(f"cannot read image {path}: {reason}") from None
    return np.ascontiguousarray(array.transpose(2, 0, 1))


def _mode_pixels(img) -> np.ndarray:
    """``[H, W, C]`` uint8 pixels of an opened Pillow image (see :func:`read_image`)."""
    if img.mode.startswith("I"):  # 16-bit grey ("I;16"; "I" holds it too): the high byte
        wide = np.asarray(img).astype(np.int64)
        wide = wide >> 8 if img.mode.startswith("I;16") or wide.max() > 255 else wide
        return np.clip(wide, 0, 255).astype(np.uint8)[:, :, None]
    if img.mode in _GRAY_MODES:
        return np.asarray(img.convert("L"), dtype=np.uint8)[:, :, None]
    rgb = np.asarray(img.convert("RGB"), dtype=np.uint8)
    if img.mode in ("P", "PA") and (rgb[..., :1] == rgb).all():  # a palette of greys
        return np.ascontiguousarray(rgb[..., :1])
    return rgb


def to_uint8(array: np.ndarray, what: str) -> np.ndarray:
    """Pixel values as uint8: uint8 as they are, other integers within 0..255, floats within
    [0, 1] (scaled by 255 and rounded).

    Raises:
        CustomDataError: values outside those ranges, NaN, or a dtype that holds no pixels.
    """
    if array.dtype == np.uint8:
        return array
    if array.size == 0:
        return array.astype(np.uint8)
    if array.dtype.kind in "iu":
        low, high = int(array.min()), int(array.max())
        if low < 0 or high > 255:
            raise CustomDataError(f"{what} holds integer pixels from {low} to {high}; integer "
                                  "pixels must be 0..255")
        return array.astype(np.uint8)
    if array.dtype.kind == "f":
        if not np.isfinite(array).all():
            raise CustomDataError(f"{what} holds NaN or infinite pixels")
        low, high = float(array.min()), float(array.max())
        if low < 0 or high > 1:
            raise CustomDataError(f"{what} holds float pixels from {low:g} to {high:g}; float "
                                  "pixels must be in [0, 1] (or give uint8 pixels 0..255)")
        return np.rint(array * 255.0).astype(np.uint8)
    raise CustomDataError(f"{what} holds {array.dtype} values, not pixels (uint8, integers "
                          "0..255 or floats in [0, 1])")


def to_nchw(array, what: str) -> np.ndarray:
    """A batch of images in any common layout as uint8 ``[N, C, H, W]``.

    Layouts: ``[N, H, W]`` (grey), ``[N, C, H, W]`` (channels first, as PyTorch) or ``[N, H,
    W, C]`` (channels last, as Keras and Pillow), ``C`` 1 or 3; a size-1 or size-3 second
    dimension means channels first.

    Args:
        array: a numpy array or a tensor (of any device).
        what: how errors name it (``"x_train of data.npz"``).

    Raises:
        CustomDataError: another shape, no image, or pixel values out of range (:func:`to_uint8`).
    """
    array = _numpy(array)
    if array.ndim == 3:
        array = array[:, None]
    elif array.ndim == 4 and array.shape[1] not in (1, 3) and array.shape[3] in (1, 3):
        array = array.transpose(0, 3, 1, 2)
    if array.ndim != 4 or array.shape[1] not in (1, 3):
        raise CustomDataError(
            f"{what} has shape {list(array.shape)}: images must be [N, H, W], [N, C, H, W] or "
            "[N, H, W, C] with 1 or 3 channels"
        )
    if array.shape[0] == 0:
        raise CustomDataError(f"{what} holds no image")
    return np.ascontiguousarray(to_uint8(array, what))


def item_to_chw(item, what: str) -> np.ndarray:
    """One image as a map-style dataset yields it (a Pillow image, a tensor ``[C, H, W]`` such
    as torchvision's ``ToTensor`` gives, an array ``[H, W]``, ``[H, W, C]`` or ``[C, H, W]``).

    Shape:
        returns ``[C, H, W]`` uint8, ``C`` 1 or 3.
    """
    if hasattr(item, "mode") and hasattr(item, "convert"):  # a Pillow image
        return np.ascontiguousarray(_mode_pixels(item).transpose(2, 0, 1))
    array = _numpy(item)
    if array.ndim == 2:
        array = array[None]
    elif array.ndim == 3 and array.shape[0] not in (1, 3) and array.shape[2] in (1, 3):
        array = array.transpose(2, 0, 1)
    if array.ndim != 3 or array.shape[0] not in (1, 3):
        raise CustomDataError(f"{what} has shape {list(array.shape)}: an image must be [H, W], "
                              "[C, H, W] or [H, W, C] with 1 or 3 channels")
    return np.ascontiguousarray(to_uint8(array, what))


def _numpy(array) -> np.ndarray:
    if isinstance(array, torch.Tensor):
        return array.detach().cpu().numpy()
    return np.asarray(array)


def to_rgb(image: np.ndarray) -> np.ndarray:
    """A ``[C, H, W]`` (or ``[N, C, H, W]``) image with three channels: grey repeated."""
    axis = image.ndim - 3
    return image if image.shape[axis] == 3 else np.repeat(image, 3, axis=axis)
