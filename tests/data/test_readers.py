"""Readers of the official formats on small generated files, and their errors."""

from __future__ import annotations

import gzip
import pickle
import tarfile

import numpy as np
import pytest
import torch

from capslab.data import clear_cache, load_dataset
from capslab.data.readers import parse_idx, read_cifar, read_idx_images, read_svhn
from capslab.data.testing import (
    idx_bytes,
    make_idx_split,
    md5,
    write_cifar10,
    write_cifar100,
    write_fake_mnist,
    write_idx_split,
    write_svhn,
)
from capslab.errors import ChecksumError, DatasetError, DatasetFormatError

pytestmark = pytest.mark.usefixtures("isolated_data")  # see conftest.py


# ---------------------------------------------------------------- IDX

def test_idx_roundtrip_train_and_test(tmp_path):
    md5s = write_fake_mnist(tmp_path / "mnist", n_train=40, n_test=20)
    train = load_dataset("mnist", "train", data_dir=tmp_path, checksums=md5s)
    test = load_dataset("mnist", "test", data_dir=tmp_path, checksums=md5s)
    images, labels = make_idx_split(40, 0)
    assert torch.equal(train.images[:, 0], torch.from_numpy(images))
    assert torch.equal(train.labels, torch.from_numpy(labels).long())
    assert test.images.shape == (20, 1, 28, 28) and test.split == "test"
    # fashion-mnist reads the same format
    fashion = load_dataset("fashion-mnist", "train", data_dir=tmp_path / "mnist", checksums=md5s)
    assert torch.equal(fashion.images, train.images) and fashion.info.name == "fashion-mnist"


def test_idx_gunzipped_files_are_read(tmp_path):
    images, labels = make_idx_split(10, 5)
    (tmp_path / "train-images-idx3-ubyte").write_bytes(idx_bytes(images, 2051))
    (tmp_path / "train-labels-idx1-ubyte").write_bytes(idx_bytes(labels, 2049))
    ds = load_dataset("mnist", "train", data_dir=tmp_path, verify=False)
    assert torch.equal(ds.images[:, 0], torch.from_numpy(images))


def test_idx_wrong_magic(tmp_path):
    write_idx_split(tmp_path, "train", 10, images_magic=2049)
    with pytest.raises(DatasetFormatError) as e:
        load_dataset("mnist", "train", data_dir=tmp_path, verify=False)
    msg = str(e.value)
    assert "train-images-idx3-ubyte.gz" in msg and "magic" in msg and "2051" in msg
    assert isinstance(e.value, DatasetError)


def test_idx_labels_wrong_magic(tmp_path):
    write_idx_split(tmp_path, "train", 10, labels_magic=2051)
    with pytest.raises(DatasetFormatError, match="train-labels-idx1-ubyte.gz.*magic"):
        load_dataset("mnist", "train", data_dir=tmp_path, verify=False)


def test_idx_truncated_body(tmp_path):
    images, _ = make_idx_split(10)
    data = idx_bytes(images, 2051)[:-100]
    path = tmp_path / "train-images-idx3-ubyte.gz"
    path.write_bytes(gzip.compress(data))
    with pytest.raises(DatasetFormatError, match="train-images-idx3-ubyte.gz.*truncated"):
        read_idx_images(path)


def test_idx_truncated_gzip_stream(tmp_path):
    write_idx_split(tmp_path, "train", 10)
    path = tmp_path / "train-images-idx3-ubyte.gz"
    path.write_bytes(path.read_bytes()[:-200])
    with pytest.raises(DatasetFormatError, match="train-images-idx3-ubyte.gz.*truncated") as err:
        load_dataset("mnist", "train", data_dir=tmp_path, verify=False)
    # the message also says what to do about it, in library terms (no command-line flags)
    msg = str(err.value)
    assert "was not used" in msg and "CAPSLAB_DATA" in msg and "download" in msg
    assert "--" not in msg.replace(str(tmp_path), "")


def test_idx_truncated_header():
    with pytest.raises(DatasetFormatError, match="x.idx.*truncated"):
        parse_idx(b"\x00\x00\x08\x03\x00\x00", "x.idx", 2051)


def test_idx_count_mismatch(tmp_path):
    write_idx_split(tmp_path, "train", 10, labels_n=9)
    with pytest.raises(DatasetFormatError) as e:
        load_dataset("mnist", "train", data_dir=tmp_path, verify=False)
    assert "count mismatch" in str(e.value) and "10 images, 9 labels" in str(e.value)
    assert "train-images-idx3-ubyte.gz" in str(e.value)


def test_idx_labels_out_of_range(tmp_path):
    images, labels = make_idx_split(10)
    labels[3] = 42
    (tmp_path / "train-images-idx3-ubyte.gz").write_bytes(gzip.compress(idx_bytes(images, 2051)))
    (tmp_path / "train-labels-idx1-ubyte.gz").write_bytes(gzip.compress(idx_bytes(labels, 2049)))
    with pytest.raises(DatasetFormatError, match="labels out of range"):
        load_dataset("mnist", "train", data_dir=tmp_path, verify=False)


def test_wrong_image_size_refused(tmp_path):
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (4, 32, 32), dtype=np.uint8)
    labels = np.zeros(4, dtype=np.uint8)
    (tmp_path / "train-images-idx3-ubyte.gz").write_bytes(gzip.compress(idx_bytes(images, 2051)))
    (tmp_path / "train-labels-idx1-ubyte.gz").write_bytes(gzip.compress(idx_bytes(labels, 2049)))
    with pytest.raises(DatasetFormatError, match="expects"):
        load_dataset("mnist", "train", data_dir=tmp_path, verify=False)


def test_bad_checksum_names_file(tmp_path):
    md5s = write_fake_mnist(tmp_path, 10, 10)
    wrong = dict(md5s, **{"train-labels-idx1-ubyte.gz": "0" * 32})
    with pytest.raises(ChecksumError) as e:
        load_dataset("mnist", "train", data_dir=tmp_path, checksums=wrong)
    assert "train-labels-idx1-ubyte.gz" in str(e.value) and "0" * 32 in str(e.value)
    # the published checksums reject generated files: never trains on garbage
    with pytest.raises(ChecksumError, match="f68b3c2dcbeaaa9fbdd348bbdeb94873"):
        load_dataset("mnist", "train", data_dir=tmp_path)


# ---------------------------------------------------------------- CIFAR

def test_cifar10_tarball_roundtrip(tmp_path):
    path, tar_md5, (x, y), (tx, ty) = write_cifar10(tmp_path / "cifar10")
    sums = {"cifar-10-python.tar.gz": tar_md5}
    train = load_dataset("cifar10", "train", data_dir=tmp_path, checksums=sums)
    test = load_dataset("cifar10", "test", data_dir=tmp_path, checksums=sums)
    assert train.images.shape == (30, 3, 32, 32) and train.images.dtype == torch.uint8
    assert torch.equal(train.images, torch.from_numpy(x))
    assert torch.equal(train.labels, torch.from_numpy(y))
    assert torch.equal(test.images, torch.from_numpy(tx)) and torch.equal(test.labels, torch.from_numpy(ty))
    # channel planes: the first 1024 bytes of a row are red, row-major 32x32
    raw = x.reshape(30, 3072)
    assert torch.equal(train.images[0, 0].flatten(), torch.from_numpy(raw[0, :1024]))
    assert torch.equal(train.images[0, 2, 1], torch.from_numpy(raw[0, 2048 + 32 : 2048 + 64]))


def test_cifar10_extracted_folder(tmp_path):
    path, _, (x, y), (tx, ty) = write_cifar10(tmp_path / "archive")
    with tarfile.open(path) as tar:
        tar.extractall(tmp_path / "data", filter="data")
    member_md5s = {}
    for f in (tmp_path / "data" / "cifar-10-batches-py").iterdir():
        member_md5s[f"cifar-10-batches-py/{f.name}"] = md5(f.read_bytes())
    train = load_dataset("cifar10", "train", data_dir=tmp_path / "data", checksums=member_md5s)
    assert torch.equal(train.images, torch.from_numpy(x))
    # the pinned md5s of the official batches reject the generated ones
    clear_cache()
    with pytest.raises(ChecksumError, match="data_batch_1"):
        load_dataset("cifar10", "train", data_dir=tmp_path / "data")


def test_cifar100_uses_fine_labels(tmp_path):
    path, tar_md5, (x, y), (tx, ty) = write_cifar100(tmp_path)
    sums = {"cifar-100-python.tar.gz": tar_md5}
    train = load_dataset("cifar100", "train", data_dir=tmp_path, checksums=sums)
    test = load_dataset("cifar100", "test", data_dir=tmp_path, checksums=sums)
    assert torch.equal(train.images, torch.from_numpy(x))
    assert torch.equal(train.labels, torch.from_numpy(y))
    assert torch.equal(test.labels, torch.from_numpy(ty))
    assert train.info.num_classes == 100


def test_cifar_truncated_archive(tmp_path):
    path, _, _, _ = write_cifar10(tmp_path)
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    with pytest.raises(DatasetFormatError, match="cifar-10-python.tar.gz"):
        load_dataset("cifar10", "train", data_dir=tmp_path, verify=False)


def test_cifar_missing_member_and_bad_batch(tmp_path):
    path = tmp_path / "cifar-10-python.tar.gz"
    with tarfile.open(path, "w:gz") as tar:
        import io

        payload = pickle.dumps({"data": np.zeros((2, 100), np.uint8), "labels": [0, 1]}, protocol=2)
        info = tarfile.TarInfo("cifar-10-batches-py/test_batch")
        info.size = len(payload)
        tar.addfile(info, io.BytesIO(payload))
    with pytest.raises(DatasetFormatError, match="no member cifar-10-batches-py/data_batch_1"):
        read_cifar(path, ("cifar-10-batches-py/data_batch_1",), "labels")
    with pytest.raises(DatasetFormatError, match=r"uint8 \[N, 3072\]"):
        read_cifar(path, ("cifar-10-batches-py/test_batch",), "labels")


def test_cifar_pickle_cannot_run_code(tmp_path):
    class Evil:
        def __reduce__(self):
            return (print, ("pwned",))

    folder = tmp_path / "cifar-10-batches-py"
    folder.mkdir()
    (folder / "test_batch").write_bytes(pickle.dumps({"data": Evil(), "labels": []}))
    with pytest.raises(DatasetFormatError, match="unexpected object builtins.print"):
        read_cifar(folder, ("cifar-10-batches-py/test_batch",), "labels")


# ---------------------------------------------------------------- SVHN

def test_svhn_mat_roundtrip(tmp_path):
    file_md5, x, y = write_svhn(tmp_path / "svhn" / "train_32x32.mat", n=12)
    ds = load_dataset("svhn", "train", data_dir=tmp_path, checksums={"train_32x32.mat": file_md5})
    assert ds.images.shape == (12, 3, 32, 32) and ds.images.dtype == torch.uint8
    # images[i, c, h, w] == X[h, w, c, i]
    assert torch.equal(ds.images, torch.from_numpy(x).permute(3, 2, 0, 1))
    expected = torch.from_numpy(y.astype(np.int64))
    expected[expected == 10] = 0
    assert torch.equal(ds.labels, expected)
    assert 0 in ds.labels.tolist() and 10 not in ds.labels.tolist()


def test_svhn_bad_files(tmp_path):
    import scipy.io

    bad = tmp_path / "test_32x32.mat"
    scipy.io.savemat(str(bad), {"X": np.zeros((28, 28, 3, 2), np.uint8), "y": np.ones((2, 1))})
    with pytest.raises(DatasetFormatError, match=r"test_32x32.mat.*\[32, 32, 3, N\]"):
        read_svhn(bad)
    scipy.io.savemat(str(bad), {"X": np.zeros((32, 32, 3, 3), np.uint8), "y": np.ones((2, 1))})
    with pytest.raises(DatasetFormatError, match="count mismatch"):
        read_svhn(bad)
    bad.write_bytes(b"not a mat file at all")
    with pytest.raises(DatasetFormatError, match="test_32x32.mat"):
        read_svhn(bad)
