"""Readers of the datasets' OFFICIAL file formats. Each returns ``(images uint8 [N,C,H,W],
labels int64 [N])`` as numpy arrays, or raises a :class:`DatasetFormatError` naming the file.

- IDX (MNIST, Fashion-MNIST): big-endian header, magic 2051 (images, ``[N, rows, cols]``) or
  2049 (labels, ``[N]``), gzip'd or not (detected from the gzip magic bytes).
- CIFAR-10/100 "python version": pickled dicts with ``data`` ``[N, 3072]`` (R, G, B planes of
  32x32, row-major) and ``labels`` (CIFAR-10) or ``fine_labels`` (CIFAR-100); read straight
  from the ``.tar.gz`` or from the extracted folder.
- SVHN cropped digits (``*_32x32.mat``): ``X`` ``[32, 32, 3, N]``, ``y`` ``[N, 1]`` with 10
  standing for the digit 0.
- smallNORB: NORB's binary matrices (little-endian header: magic, ndim, ``max(3, ndim)``
  dimensions, then the data), gzip'd or not: ``dat`` uint8 ``[N, 2, 96, 96]`` (stereo pairs),
  ``cat`` int32 ``[N]`` (labels 0-4), ``info`` int32 ``[N, 4]``.
- affNIST (``*.mat.zip`` holding one MATLAB v5 ``*.mat``, or that ``.mat``): struct
  ``affNISTdata`` with ``image`` ``[1600, N]`` (column n: image n, 40x40, row by row) and
  ``label_int`` ``[1, N]``.
"""

from __future__ import annotations

import gzip
import io
import os
import pickle
import struct
import tarfile
import zipfile
import zlib
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from capslab.errors import DatasetFormatError

IDX_IMAGES_MAGIC = 2051
IDX_LABELS_MAGIC = 2049
_GZIP_MAGIC = b"\x1f\x8b"


def _fmt(path, what: str) -> DatasetFormatError:
    return DatasetFormatError(f"{path}: {what}")


def read_bytes(path: str | os.PathLike) -> bytes:
    """The content of ``path``, decompressed if it is gzip'd."""
    data = Path(path).read_bytes()
    if data[:2] == _GZIP_MAGIC:
        try:
            data = gzip.decompress(data)
        except (EOFError, OSError, zlib.error) as e:
            raise _fmt(path, f"corrupt or truncated gzip data ({e})") from e
    return data


def parse_idx(data: bytes, path="<bytes>", expect_magic: int | None = None) -> np.ndarray:
    """Decode an IDX file of unsigned bytes (type 0x08) into an array of its declared shape."""
    if len(data) < 4:
        raise _fmt(path, f"truncated IDX file: {len(data)} bytes, no header")
    (magic,) = struct.unpack(">I", data[:4])
    if expect_magic is not None and magic != expect_magic:
        kind = {IDX_IMAGES_MAGIC: "images", IDX_LABELS_MAGIC: "labels"}.get(expect_magic, "")
        raise _fmt(
            path,
            f"wrong magic number {magic} (0x{magic:08x}); an IDX {kind} file starts with "
            f"{expect_magic} (0x{expect_magic:08x})",
        )
    if magic >> 16 != 0 or (magic >> 8) & 0xFF != 0x08:
        raise _fmt(path, f"wrong magic number {magic} (0x{magic:08x}): not an IDX file of bytes")
    ndim = magic & 0xFF
    if ndim < 1 or len(data) < 4 + 4 * ndim:
        raise _fmt(path, f"truncated IDX header ({len(data)} bytes, {ndim} dimensions)")
    dims = struct.unpack(f">{ndim}I", data[4 : 4 + 4 * ndim])
    count = int(np.prod(dims, dtype=np.int64))
    body = len(data) - 4 - 4 * ndim
    if body < count:
        raise _fmt(path, f"truncated: header declares shape {list(dims)} ({count} bytes), "
                         f"only {body} bytes of data")
    if body > count:
        raise _fmt(path, f"{body - count} bytes of trailing data after shape {list(dims)}")
    return np.frombuffer(data, dtype=np.uint8, count=count, offset=4 + 4 * ndim).reshape(dims)


def read_idx_images(path: str | os.PathLike) -> np.ndarray:
    """IDX images -> uint8 ``[N, 1, H, W]`` (magic 2051 declares 3 dimensions, [N, rows, cols])."""
    return parse_idx(read_bytes(path), path, IDX_IMAGES_MAGIC)[:, None, :, :]


def read_idx_labels(path: str | os.PathLike) -> np.ndarray:
    """IDX labels -> int64 ``[N]`` (magic 2049 declares 1 dimension)."""
    return parse_idx(read_bytes(path), path, IDX_LABELS_MAGIC).astype(np.int64)


def read_idx_pair(images_path, labels_path, num_classes: int | None = None):
    images = read_idx_images(images_path)
    labels = read_idx_labels(labels_path)
    check_pair(images, labels, f"{images_path} / {labels_path}", num_classes)
    return images, labels


def check_pair(images: np.ndarray, labels: np.ndarray, where, num_classes: int | None = None):
    if len(images) != len(labels):
        raise _fmt(where, f"image/label count mismatch: {len(images)} images, {len(labels)} labels")
    if num_classes is not None and len(labels):
        lo, hi = int(labels.min()), int(labels.max())
        if lo < 0 or hi >= num_classes:
            raise _fmt(where, f"labels out of range [0, {num_classes - 1}]: min {lo}, max {hi}")


# ---------------------------------------------------------------- CIFAR python pickles

class _ArrayUnpickler(pickle.Unpickler):
    """Unpickles only what CIFAR batches contain (dicts, lists, str/bytes, numpy arrays), so a
    tampered file cannot run code."""

    _ALLOWED = {
        ("numpy.core.multiarray", "_reconstruct"),
        ("numpy._core.multiarray", "_reconstruct"),
        ("numpy.core.multiarray", "scalar"),
        ("numpy._core.multiarray", "scalar"),
        ("numpy.core.numeric", "_frombuffer"),
        ("numpy._core.numeric", "_frombuffer"),
        ("numpy", "ndarray"),
        ("numpy", "dtype"),
        ("_codecs", "encode"),
        ("copy_reg", "_reconstructor"),
        ("copyreg", "_reconstructor"),
        ("__builtin__", "object"),
        ("builtins", "object"),
    }

    def find_class(self, module, name):
        if (module, name) not in self._ALLOWED:
            raise pickle.UnpicklingError(f"unexpected object {module}.{name} in a CIFAR batch")
        return super().find_class(module, name)


def parse_cifar_batch(data: bytes, where, label_key: str) -> tuple[np.ndarray, np.ndarray]:
    """One pickled CIFAR batch -> (uint8 ``[N, 3, 32, 32]``, int64 ``[N]``)."""
    try:
        batch = _ArrayUnpickler(io.BytesIO(data), encoding="latin1").load()
    except Exception as e:  # truncated pickles raise EOFError, UnpicklingError, ValueError, ...
        raise _fmt(where, f"not a readable CIFAR pickle batch ({type(e).__name__}: {e})") from e
    if not isinstance(batch, dict):
        raise _fmt(where, f"a CIFAR batch is a dict, got {type(batch).__name__}")
    batch = {k.decode("latin1") if isinstance(k, bytes) else k: v for k, v in batch.items()}
    if "data" not in batch or label_key not in batch:
        raise _fmt(where, f"a CIFAR batch needs keys 'data' and {label_key!r}; "
                          f"found {sorted(batch)}")
    images = np.asarray(batch["data"])
    labels = np.asarray(batch[label_key], dtype=np.int64).reshape(-1)
    if images.dtype != np.uint8 or images.ndim != 2 or images.shape[1] != 3 * 32 * 32:
        raise _fmt(where,
                   f"'data' must be uint8 [N, 3072], got {images.dtype} {list(images.shape)}")
    check_pair(images, labels, where)
    return images.reshape(-1, 3, 32, 32), labels


def read_cifar(path: str | os.PathLike, members: tuple[str, ...], label_key: str,
               num_classes: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Read and concatenate CIFAR batches from a ``.tar.gz`` (``members`` are paths inside it)
    or from an extracted folder (``members`` are relative to ``path``'s parent or to ``path``)."""
    path = Path(path)
    chunks = [parse_cifar_batch(data, where, label_key)
              for where, data in _cifar_payloads(path, members)]
    images, labels = (np.concatenate(arrays) for arrays in zip(*chunks, strict=True))
    check_pair(images, labels, path, num_classes)
    return images, labels


def _cifar_payloads(path: Path, members: tuple[str, ...]) -> Iterator[tuple[str | Path, bytes]]:
    """``(where, pickled bytes)`` of each member in order, from the folder or the tarball."""
    if path.is_dir():
        for member in members:
            candidates = [path.parent / member, path / Path(member).name]
            file = next((c for c in candidates if c.is_file()), None)
            if file is None:
                raise _fmt(path, f"missing batch file {Path(member).name}")
            yield file, file.read_bytes()
        return
    try:
        # one sequential pass: the official archive does not store the batches in order,
        # and seeking backwards in a gzip stream means decompressing it again
        wanted, payloads = set(members), {}
        with tarfile.open(path, "r:*") as tar:
            for info in tar:
                if info.name in wanted and info.isfile():
                    payloads[info.name] = tar.extractfile(info).read()
                    if len(payloads) == len(wanted):
                        break
    except (tarfile.TarError, EOFError, OSError, zlib.error) as e:
        raise _fmt(path, f"corrupt or truncated tar.gz archive ({e})") from e
    for member in members:
        if member not in payloads:
            raise _fmt(path, f"the archive has no member {member}")
        yield f"{path}:{member}", payloads[member]


# ---------------------------------------------------------------- SVHN .mat

def read_svhn(path: str | os.PathLike) -> tuple[np.ndarray, np.ndarray]:
    """SVHN ``*_32x32.mat`` -> (uint8 ``[N, 3, 32, 32]``, int64 ``[N]`` with digit 0 as 0)."""
    import scipy.io

    try:
        mat = scipy.io.loadmat(str(path), variable_names=["X", "y"])
    except Exception as e:  # scipy raises ValueError/TypeError/OSError on bad files
        raise _fmt(path, f"not a readable SVHN .mat file ({type(e).__name__}: {e})") from e
    if "X" not in mat or "y" not in mat:
        raise _fmt(path, "an SVHN .mat file needs variables 'X' and 'y'")
    x, y = mat["X"], np.asarray(mat["y"]).reshape(-1)
    if x.ndim != 4 or x.shape[:3] != (32, 32, 3):
        raise _fmt(path, f"'X' must be [32, 32, 3, N], got {list(x.shape)}")
    if x.dtype != np.uint8:
        raise _fmt(path, f"'X' must be uint8, got {x.dtype}")
    labels = y.astype(np.int64)
    labels[labels == 10] = 0
    images = np.ascontiguousarray(x.transpose(3, 2, 0, 1))  # [N, C, H, W]
    check_pair(images, labels, path, 10)
    return images, labels


# ---------------------------------------------------------------- NORB binary matrices

#: magic number of each NORB binary-matrix type -> its little-endian numpy dtype
NORB_DTYPES = {
    0x1E3D4C51: np.dtype("<f4"),  # single-precision matrix
    0x1E3D4C53: np.dtype("<f8"),  # double-precision matrix
    0x1E3D4C54: np.dtype("<i4"),  # integer matrix (smallNORB's cat and info)
    0x1E3D4C55: np.dtype("u1"),  # byte matrix (smallNORB's dat)
    0x1E3D4C56: np.dtype("<i2"),  # short matrix
}
NORB_BYTE_MAGIC = 0x1E3D4C55
NORB_INT_MAGIC = 0x1E3D4C54
#: side of a smallNORB image as published
SMALLNORB_SIZE = 96


def parse_norb_matrix(data: bytes, path="<bytes>", expect_magic: int | None = None) -> np.ndarray:
    """Decode a NORB binary matrix into an array of its declared shape and type.

    Layout (little-endian): int32 magic (the type, :data:`NORB_DTYPES`), int32 ``ndim``, then
    ``max(3, ndim)`` int32 dimensions (only the first ``ndim`` count), then the data.
    """
    if len(data) < 8:
        raise _fmt(path, f"truncated NORB matrix: {len(data)} bytes, no header")
    magic, ndim = struct.unpack("<II", data[:8])
    if magic not in NORB_DTYPES:
        raise _fmt(path, f"wrong magic number 0x{magic:08x}: not a NORB binary matrix")
    if expect_magic is not None and magic != expect_magic:
        raise _fmt(path, f"wrong magic number 0x{magic:08x}; a NORB {NORB_DTYPES[expect_magic]} "
                         f"matrix starts with 0x{expect_magic:08x}")
    if not 1 <= ndim <= 16:
        raise _fmt(path, f"NORB matrix header declares {ndim} dimensions")
    header = 8 + 4 * max(3, ndim)
    if len(data) < header:
        raise _fmt(path, f"truncated NORB header ({len(data)} bytes, {ndim} dimensions)")
    dims = struct.unpack(f"<{ndim}i", data[8 : 8 + 4 * ndim])
    if min(dims) < 0:
        raise _fmt(path, f"NORB matrix header declares a negative dimension: {list(dims)}")
    dtype = NORB_DTYPES[magic]
    count = int(np.prod(dims, dtype=np.int64))
    body, need = len(data) - header, count * dtype.itemsize
    if body < need:
        raise _fmt(path, f"truncated: header declares shape {list(dims)} ({need} bytes), "
                         f"only {body} bytes of data")
    if body > need:
        raise _fmt(path, f"{body - need} bytes of trailing data after shape {list(dims)}")
    return np.frombuffer(data, dtype=dtype, count=count, offset=header).reshape(dims)


def read_norb_matrix(path: str | os.PathLike, expect_magic: int | None = None) -> np.ndarray:
    """The NORB binary matrix in ``path`` (gzip'd or not); see :func:`parse_norb_matrix`."""
    return parse_norb_matrix(read_bytes(path), path, expect_magic)


def read_smallnorb(dat_path, cat_path, info_path, num_classes: int | None = 5,
                   ) -> tuple[np.ndarray, np.ndarray]:
    """smallNORB's ``dat``, ``cat`` and ``info`` files of one split -> (uint8 ``[N, 2, 96, 96]``
    (the two cameras' images as channels), int64 ``[N]``). ``info`` (instance, elevation,
    azimuth, lighting of each pair) is checked for its shape, not returned."""
    images = read_norb_matrix(dat_path, NORB_BYTE_MAGIC)
    if images.ndim != 4 or images.shape[1:] != (2, SMALLNORB_SIZE, SMALLNORB_SIZE):
        raise _fmt(dat_path, f"smallNORB images must be [N, 2, {SMALLNORB_SIZE}, "
                             f"{SMALLNORB_SIZE}] (stereo pairs), got {list(images.shape)}")
    labels = read_norb_matrix(cat_path, NORB_INT_MAGIC)
    if labels.ndim != 1:
        raise _fmt(cat_path, f"smallNORB labels must be [N], got {list(labels.shape)}")
    info = read_norb_matrix(info_path, NORB_INT_MAGIC)
    if info.ndim != 2 or info.shape != (len(images), 4):
        raise _fmt(info_path, f"smallNORB info must be [{len(images)}, 4] (one row per pair), "
                              f"got {list(info.shape)}")
    labels = labels.astype(np.int64)
    check_pair(images, labels, f"{dat_path} / {cat_path}", num_classes)
    return images, labels


# ---------------------------------------------------------------- affNIST .mat (in a .zip)

AFFNIST_SIZE = 40
_ZIP_MAGIC = b"PK\x03\x04"


def _affnist_source(path: Path, member: str) -> io.BytesIO | str:
    """What ``scipy.io.loadmat`` reads: ``member`` of the zip ``path`` (in memory), or the
    extracted ``.mat`` itself."""
    with open(path, "rb") as f:
        zipped = f.read(4) == _ZIP_MAGIC
    if not zipped:
        return str(path)
    try:
        with zipfile.ZipFile(path) as archive:
            names = archive.namelist()
            if member not in names:
                raise _fmt(path, f"the archive has no member {member} (it holds "
                                 f"{', '.join(names[:5]) or 'nothing'})")
            return io.BytesIO(archive.read(member))
    except (zipfile.BadZipFile, EOFError, OSError, zlib.error) as e:
        raise _fmt(path, f"corrupt or truncated zip archive ({e})") from e


def read_affnist(path: str | os.PathLike, member: str,
                 num_classes: int | None = 10) -> tuple[np.ndarray, np.ndarray]:
    """affNIST ``*.mat.zip`` (its ``member``, e.g. ``test.mat``) or the extracted ``.mat`` ->
    (uint8 ``[N, 1, 40, 40]``, int64 ``[N]``).

    The struct ``affNISTdata`` holds ``image`` ``[1600, N]``: column ``n`` is image ``n``, its
    40 rows one after the other (MATLAB shows it upright as ``reshape(image(:, n), 40, 40)'``),
    and ``label_int`` ``[1, N]``, the digits.
    """
    import scipy.io

    path = Path(path)
    source = _affnist_source(path, member)
    try:
        mat = scipy.io.loadmat(source, variable_names=["affNISTdata"])
    except Exception as e:  # scipy raises ValueError/TypeError/OSError/NotImplementedError
        raise _fmt(path, f"not a readable affNIST .mat file ({type(e).__name__}: {e})") from e
    struct_ = mat.get("affNISTdata")
    fields = () if struct_ is None or struct_.dtype.names is None else struct_.dtype.names
    if "image" not in fields or "label_int" not in fields:
        raise _fmt(path, "an affNIST .mat file needs a struct affNISTdata with fields 'image' "
                         f"and 'label_int'; found {sorted(mat) if struct_ is None else fields}")
    image = np.asarray(struct_["image"].flat[0])
    labels = np.asarray(struct_["label_int"].flat[0]).reshape(-1)
    if image.ndim != 2 or image.shape[0] != AFFNIST_SIZE * AFFNIST_SIZE:
        raise _fmt(path, f"'image' must be [{AFFNIST_SIZE * AFFNIST_SIZE}, N], "
                         f"got {list(image.shape)}")
    images = _as_uint8(image, path).T.reshape(-1, 1, AFFNIST_SIZE, AFFNIST_SIZE)
    if not np.issubdtype(labels.dtype, np.number) or not np.all(labels == np.round(labels)):
        raise _fmt(path, f"'label_int' must hold whole numbers, got {labels.dtype}")
    labels = labels.astype(np.int64)
    check_pair(images, labels, path, num_classes)
    return np.ascontiguousarray(images), labels


def _as_uint8(pixels: np.ndarray, path) -> np.ndarray:
    """``pixels`` as uint8: as stored, or whole numbers 0-255 in another numeric type."""
    if pixels.dtype == np.uint8:
        return pixels
    if (np.issubdtype(pixels.dtype, np.number) and pixels.size
            and pixels.min() >= 0 and pixels.max() <= 255 and np.all(pixels == np.round(pixels))):
        return pixels.astype(np.uint8)
    raise _fmt(path, f"'image' must be uint8 pixels (0-255), got {pixels.dtype}")
