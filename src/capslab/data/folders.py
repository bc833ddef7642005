"""A folder of images in one subfolder per class: its layout, and its pixels decoded.

Two layouts (the class names are the subfolder names, sorted, as torchvision's
``ImageFolder`` has them; images may sit in deeper folders inside a class folder)::

    ROOT/<class>/<image>                        one split: custom.py holds a test split out
    ROOT/train/<class>/<image>                  training and test splits as given; the test
    ROOT/test/<class>/<image>                   folder may also be val/, valid/, validation/

Images are the files ending in :data:`~capslab.data.images.IMAGE_SUFFIXES`; other files
(a README, a labels file) and hidden ones are skipped. A test class that has no training
folder, an empty class folder or a single class is refused, naming the folder.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from capslab.data.images import IMAGE_SUFFIXES, is_image_file, read_image, to_rgb
from capslab.data.transforms import resize_bilinear
from capslab.errors import CustomDataError

#: the names a test split's folder may have beside ``train/`` (the first one present is used)
TEST_FOLDERS = ("test", "val", "valid", "validation")


@dataclass(frozen=True)
class FolderSplit:
    """The image files of one split and their class numbers (indices into the classes)."""

    folder: Path
    files: tuple[Path, ...]
    labels: tuple[int, ...]


@dataclass(frozen=True)
class FolderLayout:
    """What :func:`scan_folder` found: the classes, the training split and the test split
    (``None`` when the folder has none)."""

    root: Path
    classes: tuple[str, ...]
    train: FolderSplit
    test: FolderSplit | None

    def files(self) -> tuple[Path, ...]:
        return self.train.files + (self.test.files if self.test else ())

    def fingerprint(self) -> tuple:
        """Every image's path, size and modification time: equal fingerprints, equal pixels."""
        return tuple((str(p.relative_to(self.root)), st.st_size, st.st_mtime_ns)
                     for p in self.files() for st in (p.stat(),))


def scan_folder(root: Path) -> FolderLayout:
    """The layout of the image folder ``root`` (no image is decoded).

    Raises:
        CustomDataError: no class folder, a single class, an empty class folder, a test class
            without a training folder, or a test folder without a training one.
    """
    train_root = root / "train"
    test_root = next((root / n for n in TEST_FOLDERS if (root / n).is_dir()), None)
    if not train_root.is_dir():
        if test_root is not None:
            raise CustomDataError(f"{root} has a {test_root.name}/ folder but no train/ folder "
                                  f"beside it (put the training images in {root}/train/<class>/)")
        train_root = root
    classes = _class_folders(train_root)
    if not classes:
        raise CustomDataError(
            f"{root} holds no class folders: put the images of each class in a subfolder named "
            f"after it ({root}/<class>/<image>), or in {root}/train/<class>/ and {root}/test/<class>/"
        )
    if len(classes) < 2:
        raise CustomDataError(f"{train_root} has a single class folder ({classes[0]}): a "
                              "classifier needs two classes or more")
    train = _split(train_root, classes, classes)
    if train_root is root:
        return FolderLayout(root, tuple(classes), train, None)
    test_classes = _class_folders(test_root)
    stray = [c for c in test_classes if c not in classes]
    if stray:
        raise CustomDataError(f"{test_root / stray[0]} is a class that the training folder "
                              f"{train_root} does not have")
    return FolderLayout(root, tuple(classes), train, _split(test_root, test_classes, classes))


def _class_folders(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))


def _split(folder: Path, present: list[str], classes: list[str]) -> FolderSplit:
    files: list[Path] = []
    labels: list[int] = []
    for name in present:
        found = _images_under(folder / name)
        if not found:
            raise CustomDataError(f"class folder {folder / name} holds no image (files ending "
                                  f"{', '.join(IMAGE_SUFFIXES)})")
        files += found
        labels += [classes.index(name)] * len(found)
    return FolderSplit(folder, tuple(files), tuple(labels))


def _images_under(folder: Path) -> list[Path]:
    """The image files in ``folder`` and its non-hidden subfolders, in a stable order."""
    out = []
    for dirpath, dirnames, filenames in os.walk(folder):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        out += [Path(dirpath, f) for f in sorted(filenames) if is_image_file(Path(f))]
    return out


def decode_images(files: tuple[Path, ...], size: int | None, root: Path) -> np.ndarray:
    """The pixels of ``files``, one size and one channel count.

    Grey and colour images may mix (all become RGB when any is). Without ``size`` every image
    must have the size of the first one, and be square; with it, each is resized to ``size``
    x ``size`` (:func:`~capslab.data.transforms.resize_bilinear`).

    Shape:
        returns ``[len(files), C, H, W]`` uint8.

    Raises:
        CustomDataError: an unreadable image, or sizes that differ or are not square without
            ``size`` (naming the files).
    """
    images, first = [], None
    for path in files:
        image = read_image(path)
        if size is not None:
            image = resize_bilinear(image[None], size)[0]
        elif first is None:
            first = (path, image.shape[1:])
            if image.shape[1] != image.shape[2]:
                raise CustomDataError(
                    f"{path} is {_hw(image.shape[1:])} pixels (height x width): CapsLab's models "
                    f"take square images; bring them to one size with --resize N (or --dataset "
                    f"{root}@N)"
                )
        elif image.shape[1:] != first[1]:
            raise CustomDataError(
                f"images of different sizes: {first[0]} is {_hw(first[1])}, {path} is "
                f"{_hw(image.shape[1:])}; bring them to one size with --resize N (or --dataset "
                f"{root}@N)"
            )
        images.append(image)
    if any(image.shape[0] == 3 for image in images):
        images = [to_rgb(image) for image in images]
    return np.stack(images)


def _hw(shape) -> str:
    return f"{shape[0]}x{shape[1]}"
