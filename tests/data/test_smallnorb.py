"""smallNORB: NORB's binary matrices on small official-format files (``capslab.data.testing``),
their errors, and the presentation (both cameras, 96 -> 48 by area averaging)."""

from __future__ import annotations

import gzip
import struct

import numpy as np
import pytest
import torch

from capslab.data import dataset_info, get_spec, load_dataset
from capslab.data.readers import (
    NORB_BYTE_MAGIC,
    NORB_INT_MAGIC,
    parse_norb_matrix,
    read_norb_matrix,
    read_smallnorb,
)
from capslab.data.testing import norb_matrix_bytes, smallnorb_names, write_smallnorb
from capslab.data.transforms import resize_area
from capslab.errors import ChecksumError, DatasetFormatError

pytestmark = pytest.mark.usefixtures("isolated_data")  # see conftest.py


def area_halved(images: np.ndarray) -> np.ndarray:
    """The 2x2 block means of ``images`` [N, C, 96, 96], rounded half to even: what 96 -> 48
    area averaging must give, computed independently of torch."""
    n, c, h, w = images.shape
    blocks = images.reshape(n, c, h // 2, 2, w // 2, 2).astype(np.float64)
    return np.round(blocks.mean(axis=(3, 5))).astype(np.uint8)


def test_registry_entry():
    info = dataset_info("smallnorb")
    assert (info.num_classes, info.channels, info.image_size) == (5, 2, 48)
    assert info.classes == ("animal", "human", "airplane", "truck", "car")
    spec = get_spec("norb")  # an alias
    assert {s: sp.size for s, sp in spec.splits.items()} == {"train": 24300, "test": 24300}
    assert spec.splits["test"].files[0] == "smallnorb-5x01235x9x18x6x2x96x96-testing-dat.mat.gz"
    for f in spec.files.values():  # pinned: the .gz and the decompressed .mat
        assert len(f.md5) == 32 and len(f.raw_md5) == 32 and f.pinned
        assert f.urls == ("https://cs.nyu.edu/~ylclab/data/norb-v1.0-small/" + f.name,)


@pytest.mark.parametrize("arr,magic", [
    (np.arange(24, dtype=np.uint8).reshape(2, 3, 4), NORB_BYTE_MAGIC),
    (np.array([4, 0, 3], dtype=np.int32), NORB_INT_MAGIC),  # ndim 1: still 3 dims in the header
    (np.arange(8, dtype=np.int32).reshape(2, 4), NORB_INT_MAGIC),
    (np.arange(32, dtype=np.uint8).reshape(2, 2, 2, 4), NORB_BYTE_MAGIC),
])
def test_norb_matrix_roundtrip(arr, magic):
    data = norb_matrix_bytes(arr, magic)
    assert len(data) == 8 + 4 * max(3, arr.ndim) + arr.nbytes
    out = parse_norb_matrix(data, "m", magic)
    assert out.shape == arr.shape and np.array_equal(out, arr)


def test_norb_matrix_header_is_little_endian():
    data = norb_matrix_bytes(np.array([7], dtype=np.int32), NORB_INT_MAGIC)
    assert data[:4] == bytes([0x54, 0x4C, 0x3D, 0x1E]) and data[4:8] == b"\x01\0\0\0"


@pytest.mark.parametrize("mutate,message", [
    (lambda d: d[:6], "no header"),
    (lambda d: d[:14], "truncated NORB header"),
    (lambda d: d[:-1], "truncated: header declares shape [2, 3, 4] (24 bytes), only 23"),
    (lambda d: d + b"xx", "2 bytes of trailing data"),
    (lambda d: struct.pack("<I", 0x1E3D4C54) + d[4:], "wrong magic number 0x1e3d4c54"),
    (lambda d: struct.pack("<I", 0x12345678) + d[4:], "not a NORB binary matrix"),
    (lambda d: d[:4] + struct.pack("<I", 99) + d[8:], "declares 99 dimensions"),
    (lambda d: d[:8] + struct.pack("<i", -2) + d[12:], "negative dimension"),
])
def test_norb_matrix_errors_name_the_file(mutate, message):
    good = norb_matrix_bytes(np.zeros((2, 3, 4), np.uint8), NORB_BYTE_MAGIC)
    with pytest.raises(DatasetFormatError, match="dat.mat") as e:
        parse_norb_matrix(mutate(good), "/data/x-dat.mat", NORB_BYTE_MAGIC)
    assert message in str(e.value)


def test_load_presents_both_cameras_at_48_by_area_averaging(tmp_path):
    images, labels, md5s = write_smallnorb(tmp_path / "smallnorb", "test", n=7, seed=1)
    ds = load_dataset("smallnorb", "test", data_dir=tmp_path, checksums=md5s)
    assert ds.images.shape == (7, 2, 48, 48) and ds.images.dtype == torch.uint8
    assert torch.equal(ds.labels, torch.from_numpy(labels))
    assert np.array_equal(ds.images.numpy(), area_halved(images))
    # the right camera is the second channel, not mixed into the first
    assert np.array_equal(ds.images[:, 1].numpy(), area_halved(images[:, 1:])[:, 0])


def test_resize_area_is_exact_and_chunk_independent():
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (5, 2, 96, 96), dtype=np.uint8)
    images[0, 0, :2, :2] = [[0, 1], [0, 1]]  # mean 0.5: rounds half to even, to 0
    images[0, 0, :2, 2:4] = [[1, 2], [1, 2]]  # mean 1.5: to 2
    whole = resize_area(images, 48)
    assert whole[0, 0, 0, 0] == 0 and whole[0, 0, 0, 1] == 2
    assert np.array_equal(whole.numpy(), area_halved(images))
    assert torch.equal(resize_area(images, 48, chunk=2), whole)
    assert torch.equal(resize_area(torch.from_numpy(images), 48), whole)  # a tensor too


def test_gunzipped_files_are_read(tmp_path):
    images, _, _ = write_smallnorb(tmp_path, "train", n=3, gzipped=False)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(n[:-3] for n in smallnorb_names("train"))
    ds = load_dataset("smallnorb", "train", data_dir=tmp_path, verify=False)
    assert np.array_equal(ds.images.numpy(), area_halved(images))


def test_pinned_checksums_refuse_other_files(tmp_path):
    write_smallnorb(tmp_path, "test", n=2)
    with pytest.raises(ChecksumError, match="testing-dat.mat.gz") as e:
        load_dataset("smallnorb", "test", data_dir=tmp_path)
    assert "expected e4ad715691ed5a3a5f138751a4ceb071 or decompressed md5" in str(e.value)


def _rewrite(path, payload: bytes) -> None:
    path.write_bytes(gzip.compress(payload, mtime=0))


def test_split_errors_name_the_file(tmp_path):
    dat, cat, info = (tmp_path / n for n in smallnorb_names("test"))
    write_smallnorb(tmp_path, "test", n=4)
    _rewrite(dat, norb_matrix_bytes(np.zeros((4, 1, 96, 96), np.uint8), NORB_BYTE_MAGIC))
    with pytest.raises(DatasetFormatError, match=r"testing-dat.mat.gz: smallNORB images must be "
                                                 r"\[N, 2, 96, 96\] \(stereo pairs\), got \[4, 1, 96, 96\]"):
        read_smallnorb(dat, cat, info)
    write_smallnorb(tmp_path, "test", n=4)
    _rewrite(cat, norb_matrix_bytes(np.array([0, 1, 2, 9], np.int32), NORB_INT_MAGIC))
    with pytest.raises(DatasetFormatError, match=r"labels out of range \[0, 4\]: min 0, max 9"):
        read_smallnorb(dat, cat, info)
    _rewrite(cat, norb_matrix_bytes(np.array([0, 1, 2], np.int32), NORB_INT_MAGIC))
    with pytest.raises(DatasetFormatError, match="image/label count mismatch: 4 images, 3 labels"):
        read_smallnorb(dat, cat, info)
    write_smallnorb(tmp_path, "test", n=4)
    _rewrite(info, norb_matrix_bytes(np.zeros((3, 4), np.int32), NORB_INT_MAGIC))
    with pytest.raises(DatasetFormatError, match=r"testing-info.mat.gz: smallNORB info must be \[4, 4\]"):
        read_smallnorb(dat, cat, info)
    write_smallnorb(tmp_path, "test", n=4)
    cat.write_bytes(cat.read_bytes()[:-5])  # a truncated gzip stream
    with pytest.raises(DatasetFormatError, match="testing-cat.mat.gz: corrupt or truncated gzip"):
        read_smallnorb(dat, cat, info)
    # through load_dataset: the same one-line error, with the hint to replace the file
    with pytest.raises(DatasetFormatError) as e:
        load_dataset("smallnorb", "test", data_dir=tmp_path, verify=False)
    assert "testing-cat.mat.gz" in str(e.value) and "download the dataset again" in str(e.value)


def test_read_norb_matrix_reads_gzip_and_plain(tmp_path):
    arr = np.arange(6, dtype=np.int32)
    (tmp_path / "a.mat").write_bytes(norb_matrix_bytes(arr, NORB_INT_MAGIC))
    _rewrite(tmp_path / "a.mat.gz", norb_matrix_bytes(arr, NORB_INT_MAGIC))
    for name in ("a.mat", "a.mat.gz"):
        assert np.array_equal(read_norb_matrix(tmp_path / name, NORB_INT_MAGIC), arr)
