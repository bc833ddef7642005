"""affNIST: the official ``.mat.zip`` layout written by ``capslab.data.testing``, read back
upright; the extracted ``.mat``; errors; and the warning for files no checksum is pinned for."""

from __future__ import annotations

import zipfile

import numpy as np
import pytest
import scipy.io

from capslab.data import dataset_info, get_spec, load_dataset
from capslab.data.checksums import UNPINNED, verify_file
from capslab.data.readers import read_affnist
from capslab.data.testing import affnist_struct, md5, write_affnist
from capslab.errors import ChecksumError, DatasetFormatError

pytestmark = pytest.mark.usefixtures("isolated_data")  # see conftest.py


def asymmetric_images(n: int = 3) -> np.ndarray:
    """Images no flip, rotation or transposition maps onto themselves: a bar along the top
    row from the left, a shorter one down the left column, one bright pixel near the bottom
    right, and the image's number at (5, 20)."""
    images = np.zeros((n, 40, 40), np.uint8)
    images[:, 0, :12] = 255
    images[:, :5, 0] = 128
    images[:, 37, 30] = 200
    images[:, 5, 20] = np.arange(n) + 1
    return images


def test_registry_entry():
    info = dataset_info("affnist")
    assert (info.num_classes, info.channels, info.image_size) == (10, 1, 40)
    assert info.mean == pytest.approx((0.1307 * 784 / 1600,), abs=1e-4)  # MNIST on 40x40
    spec = get_spec("affnist")
    assert spec.splits["test"].size == 320000 and spec.splits["train"].size == 60000
    assert spec.files["test.mat.zip"].urls == (
        "https://www.cs.toronto.edu/~tijmen/affNIST/32x/transformed/test.mat.zip",)
    assert spec.files["training_and_validation.mat.zip"].urls[0].endswith(
        "/32x/just_centered/training_and_validation.mat.zip")
    assert not any(f.pinned for f in spec.files.values())  # no checksum known for certain


def test_official_layout_is_column_per_image_row_by_row():
    images = asymmetric_images(2)
    s = affnist_struct(images, [7, 1])
    assert s["image"].shape == (1600, 2) and s["label_int"].shape == (1, 2)
    # MATLAB's view of column 0 as 40x40 (column-major reshape), transposed, is the image
    assert np.array_equal(s["image"][:, 0].reshape(40, 40, order="F").T, images[0])
    assert s["image"][11, 0] == 255 and s["image"][12, 0] == 0  # the top row first


def test_images_come_back_upright_from_the_zip(tmp_path):
    images = asymmetric_images(3)
    checksum = write_affnist(tmp_path / "affnist" / "test.mat.zip", images, [3, 0, 9])
    with zipfile.ZipFile(tmp_path / "affnist" / "test.mat.zip") as z:
        assert z.namelist() == ["test.mat"]
    ds = load_dataset("affnist", "test", data_dir=tmp_path, checksums={"test.mat.zip": checksum})
    assert ds.images.shape == (3, 1, 40, 40)
    assert np.array_equal(ds.images[:, 0].numpy(), images)
    assert ds.labels.tolist() == [3, 0, 9]


def test_extracted_mat_and_the_training_split(tmp_path):
    images = asymmetric_images(4)
    write_affnist(tmp_path / "test.mat", images, [1, 2, 3, 4])  # unzipped, as many keep it
    write_affnist(tmp_path / "training_and_validation.mat.zip", images[::-1], [4, 3, 2, 1])
    test = load_dataset("affnist", "test", data_dir=tmp_path, verify=False)
    train = load_dataset("affnist", "train", data_dir=tmp_path, verify=False)
    assert np.array_equal(test.images[:, 0].numpy(), images) and test.labels.tolist() == [1, 2, 3, 4]
    assert np.array_equal(train.images[:, 0].numpy(), images[::-1])


def test_unpinned_file_is_used_with_one_warning(tmp_path, capsys):
    path = tmp_path / "test.mat.zip"
    write_affnist(path, asymmetric_images(2), [5, 6])
    assert len(load_dataset("affnist", "test", data_dir=tmp_path)) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith(f"capslab: warning: {path} is used unverified")
    assert "no md5 of test.mat.zip is known" in err and "checksums=" in err
    assert verify_file(path, get_spec("affnist").files["test.mat.zip"]) == UNPINNED
    assert capsys.readouterr().err == ""  # once per file and process
    # a checksum given by the caller is checked
    with pytest.raises(ChecksumError, match="test.mat.zip"):
        verify_file(path, get_spec("affnist").files["test.mat.zip"], md5(b"other"))


def test_errors_name_the_file(tmp_path):
    path = tmp_path / "test.mat.zip"
    write_affnist(path, asymmetric_images(2), [5, 6], member="other.mat")
    with pytest.raises(DatasetFormatError, match=r"test.mat.zip: the archive has no member test.mat "
                                                 r"\(it holds other.mat\)"):
        read_affnist(path, "test.mat")
    write_affnist(path, asymmetric_images(2), [5, 6])
    path.write_bytes(path.read_bytes()[:200])
    with pytest.raises(DatasetFormatError, match="test.mat.zip: corrupt or truncated zip archive"):
        read_affnist(path, "test.mat")
    mat = tmp_path / "test.mat"
    mat.write_bytes(b"MATLAB 5.0 but nothing after")
    with pytest.raises(DatasetFormatError, match="test.mat: not a readable affNIST .mat file"):
        read_affnist(mat, "test.mat")
    scipy.io.savemat(mat, {"X": np.zeros((3, 3))})
    with pytest.raises(DatasetFormatError, match="needs a struct affNISTdata"):
        read_affnist(mat, "test.mat")
    scipy.io.savemat(mat, {"affNISTdata": {"image": np.zeros((784, 2), np.uint8),
                                           "label_int": np.zeros((1, 2), np.uint8)}})
    with pytest.raises(DatasetFormatError, match=r"'image' must be \[1600, N\], got \[784, 2\]"):
        read_affnist(mat, "test.mat")
    scipy.io.savemat(mat, {"affNISTdata": {**affnist_struct(asymmetric_images(2), [1, 2]),
                                           "label_int": np.array([[1, 12]], np.uint8)}})
    with pytest.raises(DatasetFormatError, match=r"labels out of range \[0, 9\]: min 1, max 12"):
        read_affnist(mat, "test.mat")
    pixels = affnist_struct(asymmetric_images(2), [1, 2])
    scipy.io.savemat(mat, {"affNISTdata": {**pixels, "image": pixels["image"] / 255.0}})
    with pytest.raises(DatasetFormatError, match="'image' must be uint8 pixels"):
        read_affnist(mat, "test.mat")
    scipy.io.savemat(mat, {"affNISTdata": {**pixels, "image": pixels["image"].astype(np.float64)}})
    assert np.array_equal(read_affnist(mat, "test.mat")[0][:, 0], asymmetric_images(2))
