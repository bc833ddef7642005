"""Readers of the datasets' OFFICIAL file formats. Each returns ``(images uint8 [N,C,H,W],
labels int64 [N])`` as numpy arrays, or raises a :class:`DatasetFormatError` naming the file.

- IDX (MNIST, Fashion-MNIST): big-endian header, magic 2051 (images, ``[N, rows, cols]``) or
  2049 (labels, ``[N]``), gzip'd or not (detected from the gzip magic bytes).
- CIFAR-10/100 "python version": pickled dicts with ``data`` ``[N, 3072]`` (R, G, B planes of
  32x32, row-major) and ``labels`` (CIFAR-10) or ``fine_labels`` (CIFAR-100); read straight
  from the ``.tar.gz`` or from the extracted folder.
- SVHN cropped digits (``*_32x32.mat``): ``X`` ``[32, 32, 3, N]``, ``y`` ``[N, 1]`` with 10
  standing for the digit 0.
"""

from __future__ import annotations

import gzip
import io
import os
import pickle
import struct
import tarfile
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
