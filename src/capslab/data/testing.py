"""Writers of SMALL files in the datasets' official formats, for tests (here and in other
modules' tests that need a tiny dataset on disk without the real files),
:func:`make_image_dataset`, a small random dataset in memory, and :class:`FileServer`, a local
HTTP server that serves such files (and misbehaves on request) for download tests.

Example::

    md5s = write_fake_mnist(tmp_path / "mnist", n_train=64, n_test=32)
    train = load_dataset("mnist", "train", data_dir=tmp_path, checksums=md5s)
"""

from __future__ import annotations

import gzip
import hashlib
import http.server
import io
import pickle
import re
import struct
import tarfile
import threading
from pathlib import Path

import numpy as np

from capslab.data.dataset import ImageDataset
from capslab.data.readers import NORB_BYTE_MAGIC, NORB_DTYPES, NORB_INT_MAGIC
from capslab.data.registry import dataset_info, split_spec


def md5(data: bytes) -> str:
    return hashlib.md5(data).hexdigest()


def idx_bytes(arr: np.ndarray, magic: int) -> bytes:
    return struct.pack(f">I{arr.ndim}I", magic, *arr.shape) + arr.astype(np.uint8).tobytes()


def make_idx_split(n: int, seed: int = 0, size: int = 28):
    rng = np.random.default_rng(seed)
    images = rng.integers(0, 256, (n, size, size), dtype=np.uint8)
    labels = (np.arange(n) % 10).astype(np.uint8)
    rng.shuffle(labels)
    return images, labels


def write_idx_split(folder: Path, prefix: str, n: int, seed: int = 0, labels_n: int | None = None,
                    images_magic: int = 2051, labels_magic: int = 2049):
    """Write ``<prefix>-images-idx3-ubyte.gz`` and ``<prefix>-labels-idx1-ubyte.gz``.

    Returns ``(images [n,28,28], labels [n], {file name: md5})``."""
    images, labels = make_idx_split(n, seed)
    if labels_n is not None:
        labels = labels[:labels_n]
    folder.mkdir(parents=True, exist_ok=True)
    md5s = {}
    for name, data in (
        (f"{prefix}-images-idx3-ubyte.gz", gzip.compress(idx_bytes(images, images_magic), mtime=0)),
        (f"{prefix}-labels-idx1-ubyte.gz", gzip.compress(idx_bytes(labels, labels_magic), mtime=0)),
    ):
        (folder / name).write_bytes(data)
        md5s[name] = md5(data)
    return images, labels, md5s


def cifar_batch(n: int, seed: int, label_key: str, num_classes: int, bytes_keys: bool = False):
    rng = np.random.default_rng(seed)
    data = rng.integers(0, 256, (n, 3072), dtype=np.uint8)
    labels = [int(v) for v in rng.integers(0, num_classes, n)]
    batch = {"batch_label": f"batch {seed}", "data": data, label_key: labels,
             "filenames": [f"img_{seed}_{i}.png" for i in range(n)]}
    if label_key == "fine_labels":
        batch["coarse_labels"] = [v // 5 for v in labels]
    if bytes_keys:  # what Python 2's cPickle wrote: byte-string keys
        batch = {k.encode(): v for k, v in batch.items()}
    return batch, data.reshape(n, 3, 32, 32), np.array(labels, dtype=np.int64)


def _add(tar: tarfile.TarFile, name: str, obj) -> None:
    """Add ``obj`` pickled as CIFAR's batches are (protocol 2) as member ``name``."""
    payload = pickle.dumps(obj, protocol=2)
    info = tarfile.TarInfo(name)
    info.size = len(payload)
    tar.addfile(info, io.BytesIO(payload))


def write_cifar10(folder: Path, per_batch: int = 6, test_n: int = 5):
    """A small ``cifar-10-python.tar.gz``; returns (path, md5, train (x, y), test (x, y))."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "cifar-10-python.tar.gz"
    train = []  # (x, y) of each batch
    with tarfile.open(path, "w:gz") as tar:
        for i in range(1, 6):
            batch, *xy = cifar_batch(per_batch, i, "labels", 10, bytes_keys=(i % 2 == 0))
            _add(tar, f"cifar-10-batches-py/data_batch_{i}", batch)
            train.append(xy)
        batch, tx, ty = cifar_batch(test_n, 99, "labels", 10)
        _add(tar, "cifar-10-batches-py/test_batch", batch)
        meta = {"label_names": list(dataset_info("cifar10").classes),
                "num_cases_per_batch": per_batch}
        _add(tar, "cifar-10-batches-py/batches.meta", meta)
    train_xy = tuple(np.concatenate(a) for a in zip(*train, strict=True))
    return path, md5(path.read_bytes()), train_xy, (tx, ty)


def write_cifar100(folder: Path, train_n: int = 12, test_n: int = 7):
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "cifar-100-python.tar.gz"
    with tarfile.open(path, "w:gz") as tar:
        batch, x, y = cifar_batch(train_n, 1, "fine_labels", 100)
        _add(tar, "cifar-100-python/train", batch)
        tbatch, tx, ty = cifar_batch(test_n, 2, "fine_labels", 100, bytes_keys=True)
        _add(tar, "cifar-100-python/test", tbatch)
        _add(tar, "cifar-100-python/meta", {"fine_label_names": []})
    return path, md5(path.read_bytes()), (x, y), (tx, ty)


def write_svhn(path: Path, n: int = 9, seed: int = 0):
    """A small SVHN ``*_32x32.mat``; returns (md5, X [32,32,3,n], y [n] as stored, 10 = digit 0)."""
    import scipy.io

    rng = np.random.default_rng(seed)
    x = rng.integers(0, 256, (32, 32, 3, n), dtype=np.uint8)
    y = (np.arange(n) % 10 + 1).astype(np.uint8).reshape(n, 1)  # 1..10, as SVHN stores digits
    path.parent.mkdir(parents=True, exist_ok=True)
    scipy.io.savemat(str(path), {"X": x, "y": y})
    return md5(path.read_bytes()), x, y.reshape(-1)


def norb_matrix_bytes(arr: np.ndarray, magic: int) -> bytes:
    """``arr`` as a NORB binary matrix: little-endian magic, ndim, ``max(3, ndim)`` dimensions
    (1 for the unused ones), then the data in the type ``magic`` names."""
    dims = list(arr.shape) + [1] * max(0, 3 - arr.ndim)
    header = struct.pack(f"<II{len(dims)}i", magic, arr.ndim, *dims)
    return header + np.ascontiguousarray(arr, dtype=NORB_DTYPES[magic]).tobytes()


def smallnorb_names(split: str) -> tuple[str, ...]:
    """The registry's ``dat``, ``cat`` and ``info`` file names of smallNORB split ``split``."""
    return split_spec("smallnorb", split).files


def write_smallnorb(folder: Path, split: str = "test", n: int = 10, seed: int = 0,
                    gzipped: bool = True):
    """A small smallNORB split (``n`` stereo pairs of random 96x96 images, labels ``i % 5``)
    under the official names (gunzipped, ``.mat``, when ``gzipped`` is false).

    Returns ``(images uint8 [n, 2, 96, 96], labels [n], {registry file name: md5})``; the md5s
    are of the files written (pass them as ``checksums=``).
    """
    rng = np.random.default_rng(seed)
    images = rng.integers(0, 256, (n, 2, 96, 96), dtype=np.uint8)
    labels = (np.arange(n) % 5).astype(np.int32)
    info = np.stack([np.arange(n) % 10, np.arange(n) % 9, 2 * (np.arange(n) % 18),
                     np.arange(n) % 6], axis=1).astype(np.int32)
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    md5s = {}
    payloads = (norb_matrix_bytes(images, NORB_BYTE_MAGIC), norb_matrix_bytes(labels, NORB_INT_MAGIC),
                norb_matrix_bytes(info, NORB_INT_MAGIC))
    for name, payload in zip(smallnorb_names(split), payloads, strict=True):
        data = gzip.compress(payload, mtime=0) if gzipped else payload
        (folder / (name if gzipped else name[:-3])).write_bytes(data)
        md5s[name] = md5(data)
    return images, labels.astype(np.int64), md5s


def affnist_struct(images: np.ndarray, labels) -> dict:
    """The ``affNISTdata`` struct of the official files for ``images`` uint8 ``[N, 40, 40]``:
    ``image`` ``[1600, N]`` (column n = image n row by row), ``label_int`` ``[1, N]`` and
    ``label_one_of_n`` ``[10, N]``."""
    labels = np.asarray(labels, dtype=np.uint8).reshape(-1)
    images = np.asarray(images, dtype=np.uint8)
    one_hot = np.zeros((10, len(labels)), dtype=np.uint8)
    one_hot[labels, np.arange(len(labels))] = 1
    return {"image": np.ascontiguousarray(images.reshape(len(images), -1).T),
            "label_int": labels.reshape(1, -1), "label_one_of_n": one_hot}


def write_affnist(path: Path, images: np.ndarray, labels, member: str | None = None) -> str:
    """An affNIST file as published: ``path`` a ``.mat.zip`` holding ``member`` (default: the
    zip's name less ``.zip``, e.g. ``test.mat``), or a plain ``.mat`` when ``path`` does not
    end in ``.zip``. ``images``: uint8 ``[N, 40, 40]``, upright. Returns the file's md5."""
    import zipfile

    import scipy.io

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    content = io.BytesIO()
    scipy.io.savemat(content, {"affNISTdata": affnist_struct(images, labels)})
    if path.suffix == ".zip":
        with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as archive:
            info = zipfile.ZipInfo(member or path.name[:-4], date_time=(2013, 1, 1, 0, 0, 0))
            archive.writestr(info, content.getvalue(), zipfile.ZIP_DEFLATED)
    else:
        path.write_bytes(content.getvalue())
    return md5(path.read_bytes())


def write_fake_mnist(folder: Path, n_train: int = 64, n_test: int = 32, seed: int = 0) -> dict[str, str]:
    """Random MNIST-format train and test splits in ``folder``; returns ``{file: md5}`` to pass
    as ``load_dataset(..., checksums=...)`` (works for ``fashion-mnist`` too)."""
    return {**write_idx_split(Path(folder), "train", n_train, seed)[2],
            **write_idx_split(Path(folder), "t10k", n_test, seed + 1)[2]}


def make_image_dataset(n: int = 40, name: str = "mnist", seed: int = 0, labels=None):
    """An in-memory :class:`~capslab.data.ImageDataset` of ``n`` random uint8 images shaped
    like dataset ``name``'s (no file involved). ``labels``: default ``i % num_classes``; tests
    of the loader pass ``torch.arange(n)`` so that every label names its sample."""
    import torch

    info = dataset_info(name)
    gen = torch.Generator().manual_seed(int(seed))
    images = torch.randint(0, 256, (n, *info.shape), dtype=torch.uint8, generator=gen)
    if labels is None:
        labels = torch.arange(n) % info.num_classes
    return ImageDataset(images, torch.as_tensor(labels, dtype=torch.long), info, "synthetic")


class FileServer:
    """An HTTP server on 127.0.0.1 (in a thread) serving ``files`` (``{file name: bytes}``).

    The first segment of the URL path chooses how it behaves, so each mirror of a test is one
    behaviour; the last segment is the file name (``/ok/mnist/t10k-labels-idx1-ubyte.gz``):

    - ``ok``: the file, honouring ``Range: bytes=N-`` (206, or 416 past the end);
    - ``norange``: ignores ``Range`` (200 and the whole file);
    - ``drop``: the first request of each file announces the whole length, sends
      ``drop_after`` bytes and closes the connection; later requests behave as ``ok``;
    - ``wrong``: the same length with one byte changed;
    - ``404``, ``500``: that HTTP error;
    - ``hang``: accepts the connection and sends nothing until the server stops.

    ``requests`` records ``(behaviour, file name, Range header or None)`` of every request.
    Use it as a context manager; :meth:`base` gives a mirror URL for ``$CAPSLAB_MIRRORS``.
    """

    def __init__(self, files: dict[str, bytes], drop_after: int = 1000):
        self.files = dict(files)
        self.drop_after = drop_after
        self.requests: list[tuple[str, str, str | None]] = []
        self._stopping = threading.Event()
        self._server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, args=(0.05,),
                                        daemon=True)

    @property
    def port(self) -> int:
        return self._server.server_address[1]

    def base(self, behaviour: str) -> str:
        return f"http://127.0.0.1:{self.port}/{behaviour}"

    def __enter__(self) -> FileServer:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stopping.set()
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(5)

    def _handler(self):
        server = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def log_message(self, *args):  # quiet test output
                pass

            def do_GET(self):
                parts = [p for p in self.path.split("/") if p]
                behaviour, name = parts[0], parts[-1]
                range_header = self.headers.get("Range")
                first = not any(r[:2] == (behaviour, name) for r in server.requests)
                server.requests.append((behaviour, name, range_header))
                if behaviour == "hang":
                    server._stopping.wait(30)
                    return
                if behaviour in ("404", "500") or name not in server.files:
                    code = 500 if behaviour == "500" else 404
                    self.send_error(code)
                    return
                data = server.files[name]
                if behaviour == "wrong":
                    mid = len(data) // 2
                    data = data[:mid] + bytes([data[mid] ^ 0xFF]) + data[mid + 1:]
                m = re.fullmatch(r"bytes=(\d+)-", range_header or "")
                if behaviour in ("ok", "drop") and m and not (behaviour == "drop" and first):
                    start = int(m.group(1))
                    if start >= len(data):
                        self.send_response(416)
                        self.send_header("Content-Range", f"bytes */{len(data)}")
                        self.send_header("Content-Length", "0")
                        self.end_headers()
                        return
                    self.send_response(206)
                    self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
                    body = data[start:]
                else:
                    self.send_response(200)
                    body = data
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                if behaviour == "drop" and first:
                    body = body[:server.drop_after]
                self.wfile.write(body)
                self.wfile.flush()
                self.close_connection = True

        return Handler
