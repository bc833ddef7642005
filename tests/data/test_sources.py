"""Where files are found, checksum verification and its cache, real MNIST (downloads:
test_download.py)."""

from __future__ import annotations

import gzip
import hashlib
import os
import shutil
from pathlib import Path

import pytest
import torch

from capslab.data import (
    checksums,
    clear_cache,
    default_data_dir,
    load_dataset,
    search_dirs,
)
from capslab.data.registry import FileSpec, get_spec
from capslab.data.testing import write_fake_mnist
from capslab.errors import CapsLabError, ChecksumError, DatasetNotFoundError

REAL_DATA = os.environ.get("CAPSLAB_DATA") or str(
    Path(__file__).resolve().parents[2].parent / "shared" / "datasets"
)


pytestmark = pytest.mark.usefixtures("isolated_data")  # see conftest.py


@pytest.fixture(autouse=True)
def _offline(monkeypatch):
    """No test here downloads (``load_dataset`` would by default)."""
    monkeypatch.setenv("CAPSLAB_OFFLINE", "1")


def test_search_order(tmp_path, monkeypatch):
    explicit, env = tmp_path / "explicit", tmp_path / "env"
    monkeypatch.setenv("CAPSLAB_DATA", str(env))
    dirs = search_dirs("fashion-mnist", explicit)
    assert [d.path for d in dirs] == [
        explicit, env, tmp_path / "xdg-cache" / "capslab" / "datasets",
        Path("/usr/share/datasets/fashion-mnist"),
    ]
    assert [d.origin for d in dirs] == ["data_dir", "CAPSLAB_DATA", "cache", "system"]
    assert default_data_dir() == tmp_path / "xdg-cache" / "capslab" / "datasets"


def test_explicit_root_wins_over_env_and_env_over_cache(tmp_path, monkeypatch):
    md5_explicit = write_fake_mnist(tmp_path / "explicit" / "mnist", 10, 10, seed=1)
    md5_env = write_fake_mnist(tmp_path / "env", 12, 10, seed=2)  # flat layout: <root>/<file>
    md5_cache = write_fake_mnist(default_data_dir() / "mnist", 14, 10, seed=3)
    monkeypatch.setenv("CAPSLAB_DATA", str(tmp_path / "env"))
    ds = load_dataset("mnist", "train", data_dir=tmp_path / "explicit", checksums=md5_explicit)
    assert len(ds) == 10 and str(tmp_path / "explicit" / "mnist") in ds.sources[0]
    assert len(load_dataset("mnist", "train", checksums=md5_env)) == 12
    monkeypatch.delenv("CAPSLAB_DATA")
    assert len(load_dataset("mnist", "train", checksums=md5_cache)) == 14


def test_torchvision_layout_is_accepted(tmp_path):
    md5s = write_fake_mnist(tmp_path / "MNIST" / "raw", 10, 10)
    assert len(load_dataset("mnist", "test", data_dir=tmp_path, checksums=md5s)) == 10


def test_missing_file_message(tmp_path, monkeypatch):
    monkeypatch.setenv("CAPSLAB_DATA", str(tmp_path / "env"))
    with pytest.raises(DatasetNotFoundError) as e:
        load_dataset("mnist", "test", data_dir=tmp_path / "nowhere", download=False)
    msg = str(e.value)
    for part in ("'mnist'", "t10k-images-idx3-ubyte.gz", str(tmp_path / "nowhere"),
                 str(tmp_path / "env"), str(default_data_dir()), "[data_dir]", "[CAPSLAB_DATA]",
                 "give a data folder (data_dir", "set CAPSLAB_DATA=DIR", "download=True",
                 str(tmp_path / "nowhere" / "mnist")):
        assert part in msg, part
    assert "--" not in msg.replace(str(tmp_path), "")  # library terms, no command-line flags
    assert isinstance(e.value, FileNotFoundError) and isinstance(e.value, CapsLabError)


def test_unknown_dataset_and_split():
    from capslab.errors import UnknownDatasetError

    with pytest.raises(UnknownDatasetError, match="known datasets: mnist"):
        load_dataset("imagenet", "train")
    with pytest.raises(UnknownDatasetError, match="splits: train, test"):
        load_dataset("mnist", "validation")


def test_verification_is_cached_and_forced(tmp_path, monkeypatch):
    md5s = write_fake_mnist(tmp_path, 10, 10)
    calls = []
    real_md5_file = checksums.md5_file
    monkeypatch.setattr(checksums, "md5_file", lambda p, *a: calls.append(Path(p).name) or real_md5_file(p))
    load_dataset("mnist", "train", data_dir=tmp_path, checksums=md5s)
    assert sorted(calls) == ["train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"]
    stamp = tmp_path / "xdg-cache" / "capslab" / "verified.json"
    assert stamp.is_file()
    calls.clear()
    clear_cache()
    load_dataset("mnist", "train", data_dir=tmp_path, checksums=md5s)
    assert calls == []  # remembered by size + mtime
    load_dataset("mnist", "train", data_dir=tmp_path, checksums=md5s, verify=True)
    assert len(calls) == 2  # forced
    calls.clear()
    # a changed file is verified again (and rejected)
    labels = tmp_path / "train-labels-idx1-ubyte.gz"
    labels.write_bytes(labels.read_bytes() + b"\x00")
    with pytest.raises(ChecksumError, match="train-labels-idx1-ubyte.gz"):
        load_dataset("mnist", "train", data_dir=tmp_path, checksums=md5s)
    assert calls == ["train-labels-idx1-ubyte.gz"]


def test_read_only_cache_still_verifies(tmp_path, monkeypatch):
    md5s = write_fake_mnist(tmp_path / "data", 10, 10)
    blocked = tmp_path / "blocked"
    blocked.write_text("a file, so no folder can be made under it")
    monkeypatch.setenv("XDG_CACHE_HOME", str(blocked))
    assert len(load_dataset("mnist", "train", data_dir=tmp_path / "data", checksums=md5s)) == 10


def test_rewritten_gzip_header_verified_by_decompressed_md5(tmp_path):
    content = b"\x00\x00\x08\x01\x00\x00\x00\x03\x01\x02\x03"
    published = gzip.compress(content, mtime=123)
    rewritten = gzip.compress(content, mtime=0, compresslevel=1)
    assert published != rewritten
    spec = FileSpec("t.gz", hashlib.md5(published).hexdigest(), (),
                    raw_md5=hashlib.md5(content).hexdigest())
    (tmp_path / "a.gz").write_bytes(published)
    (tmp_path / "b.gz").write_bytes(rewritten)
    (tmp_path / "c").write_bytes(content)  # kept gunzipped
    assert checksums.verify_file(tmp_path / "a.gz", spec) == "md5"
    assert checksums.verify_file(tmp_path / "b.gz", spec) == "decompressed md5"
    assert checksums.verify_file(tmp_path / "c", spec) == "decompressed md5"
    (tmp_path / "d.gz").write_bytes(gzip.compress(content + b"!"))
    with pytest.raises(ChecksumError, match="d.gz"):
        checksums.verify_file(tmp_path / "d.gz", spec)


# ---------------------------------------------------------------- the real MNIST

def _real(name: str) -> Path:
    root = Path(REAL_DATA)
    if not (root / name / "train-images-idx3-ubyte.gz").is_file():
        pytest.skip(f"real {name} not found: set CAPSLAB_DATA to the datasets folder")
    return root


def test_real_mnist(monkeypatch):
    root = _real("mnist")
    monkeypatch.setenv("CAPSLAB_DATA", str(root))
    train = load_dataset("mnist", "train", verify=True)
    test = load_dataset("mnist", "test", verify=True)
    assert train.images.shape == (60000, 1, 28, 28) and test.images.shape == (10000, 1, 28, 28)
    assert torch.bincount(train.labels).tolist() == [5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949]
    assert torch.bincount(test.labels).tolist() == [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]
    mean = train.images.float().mean().item() / 255
    assert abs(mean - train.info.mean[0]) < 1e-3
    spec = get_spec("mnist")
    for name, fspec in spec.files.items():
        assert checksums.verify_file(root / "mnist" / name, fspec) == "md5"
    # the in-memory cache makes the second load immediate
    import time

    start = time.perf_counter()
    load_dataset("mnist", "train")
    assert time.perf_counter() - start < 0.5


def test_real_fashion_mnist_with_rewritten_gzip_headers(tmp_path):
    """Debian's copies have other gzip headers: accepted by the decompressed md5."""
    root = _real("fashion-mnist")
    for name in ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"):
        with gzip.open(root / "fashion-mnist" / name) as f:
            (tmp_path / name).write_bytes(gzip.compress(f.read(), compresslevel=1, mtime=0))
    ds = load_dataset("fashion-mnist", "test", data_dir=tmp_path)
    assert len(ds) == 10000 and torch.bincount(ds.labels).tolist() == [1000] * 10
    shutil.rmtree(tmp_path)
