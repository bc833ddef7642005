"""Downloads against a real HTTP server on 127.0.0.1 (``capslab.data.testing.FileServer``):
resume with Range, mirrors in order, checksum refusal, time-out, automatic download in
``load_dataset`` / ``require_files``, and ``CAPSLAB_OFFLINE``. Nothing reaches beyond 127.0.0.1:
every test points ``CAPSLAB_MIRRORS`` at the local server (or at a closed local port)."""

from __future__ import annotations

import socket
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from capslab.data import (
    clear_cache,
    default_data_dir,
    downloads,
    load_dataset,
    locations,
    sources,
)
from capslab.data.registry import FileSpec, get_spec
from capslab.data.testing import FileServer, make_idx_split, write_fake_mnist
from capslab.errors import ChecksumError, DatasetNotFoundError, DownloadError

pytestmark = pytest.mark.usefixtures("isolated_data")  # see conftest.py

IMAGES = "train-images-idx3-ubyte.gz"
DROP_AT = 20_000


class Served:
    """The local server with tiny MNIST-format files, and a setter of ``CAPSLAB_MIRRORS``."""

    def __init__(self, server: FileServer, md5s: dict[str, str], monkeypatch):
        self.server, self.md5s, self._mp = server, md5s, monkeypatch

    def mirrors(self, *behaviours: str) -> None:
        self._mp.setenv("CAPSLAB_MIRRORS", " ".join(self.server.base(b) for b in behaviours))

    def spec(self, name: str = IMAGES) -> FileSpec:
        return FileSpec(name, self.md5s[name], urls=(), dataset="mnist")

    @property
    def requests(self) -> list[tuple[str, str, str | None]]:
        return self.server.requests


@pytest.fixture
def served(tmp_path, monkeypatch):
    """Online (``CAPSLAB_OFFLINE`` unset) with the mirrors on the local server, ``ok`` first."""
    folder = tmp_path / "served"
    md5s = write_fake_mnist(folder, n_train=64, n_test=32)
    files = {name: (folder / name).read_bytes() for name in md5s}
    assert len(files[IMAGES]) > 2 * DROP_AT  # random pixels do not compress
    monkeypatch.delenv("CAPSLAB_OFFLINE", raising=False)
    with FileServer(files, drop_after=DROP_AT) as server:
        s = Served(server, md5s, monkeypatch)
        s.mirrors("ok")
        yield s


def _listing(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir()) if folder.exists() else []


def test_dropped_connection_is_resumed_with_a_range_request(served, tmp_path):
    served.mirrors("drop")
    progress = []
    path = downloads.download_file(served.spec(), tmp_path / "d", timeout=5,
                                 progress=lambda done, total: progress.append((done, total)))
    data = served.server.files[IMAGES]
    assert path.read_bytes() == data
    assert served.requests == [("drop", IMAGES, None), ("drop", IMAGES, f"bytes={DROP_AT}-")]
    assert (DROP_AT, len(data)) in progress and progress[-1] == (len(data), len(data))
    assert _listing(tmp_path / "d") == [IMAGES]  # no .part, no lock file left


def test_part_left_by_an_interrupted_run_is_continued(served, tmp_path):
    dest = tmp_path / "d"
    dest.mkdir()
    data = served.server.files[IMAGES]
    (dest / (IMAGES + ".part")).write_bytes(data[:12_345])
    progress = []
    path = downloads.download_file(served.spec(), dest, progress=lambda d, t: progress.append(d))
    assert served.requests == [("ok", IMAGES, "bytes=12345-")]
    assert progress[0] == 12_345  # counted from the bytes already there
    assert path.read_bytes() == data and _listing(dest) == [IMAGES]


def test_server_that_ignores_range_restarts_from_zero(served, tmp_path):
    dest = tmp_path / "d"
    dest.mkdir()
    (dest / (IMAGES + ".part")).write_bytes(b"junk from elsewhere" * 100)  # would corrupt if kept
    served.mirrors("norange")
    path = downloads.download_file(served.spec(), dest)
    assert served.requests == [("norange", IMAGES, "bytes=1900-")]
    assert path.read_bytes() == served.server.files[IMAGES]


def test_wrong_checksum_is_refused_and_nothing_is_left(served, tmp_path):
    served.mirrors("wrong")
    dest = tmp_path / "data" / "mnist"
    with pytest.raises(ChecksumError, match=f"{IMAGES} rejected, wrong checksum") as e:
        downloads.download_file(served.spec(), dest)
    assert served.requests[0][0] == "wrong" and "nothing was saved" in str(e.value)
    assert _listing(dest) == []  # neither the file nor its .part nor the lock
    assert locations.locate_file("mnist", IMAGES, tmp_path / "data") is None
    # a wrong mirror is followed by the next one
    served.mirrors("wrong", "ok")
    path = downloads.download_file(served.spec(), dest)
    assert path.read_bytes() == served.server.files[IMAGES]
    assert [r[0] for r in served.requests] == ["wrong", "wrong", "ok"]


def test_failing_mirrors_are_tried_in_order(served, tmp_path):
    dest = tmp_path / "d"
    served.mirrors("404", "500", "ok")
    path = downloads.download_file(served.spec(), dest)
    assert path.read_bytes() == served.server.files[IMAGES]
    assert [r[0] for r in served.requests] == ["404", "500", "ok"]
    served.mirrors("404", "500")
    with pytest.raises(DownloadError) as e:
        downloads.download_file(served.spec("t10k-labels-idx1-ubyte.gz"), dest)
    msg = str(e.value)
    assert "HTTP 404" in msg and "HTTP 500" in msg and served.server.base("500") in msg
    assert "(data_dir)" in msg and "CAPSLAB_DATA" in msg
    assert _listing(dest) == [IMAGES]


def test_hanging_server_times_out_and_the_next_mirror_is_used(served, tmp_path):
    served.mirrors("hang")
    start = time.perf_counter()
    with pytest.raises(DownloadError, match="timed out") as e:
        downloads.download_file(served.spec(), tmp_path, timeout=0.5)
    assert time.perf_counter() - start < 5
    assert "0.5 s" in str(e.value) and served.server.base("hang") in str(e.value)
    served.mirrors("hang", "ok")
    assert downloads.download_file(served.spec(), tmp_path, timeout=0.5).is_file()


def test_load_dataset_downloads_missing_files_by_default(served, capsys):
    ds = load_dataset("mnist", "test", checksums=served.md5s)
    images, labels = make_idx_split(32, seed=1)  # what write_fake_mnist wrote for the test split
    assert np.array_equal(ds.images[:, 0].numpy(), images)
    assert np.array_equal(ds.labels.numpy(), labels)
    dest = default_data_dir() / "mnist"
    assert _listing(dest) == ["t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"]
    assert sorted(r[1] for r in served.requests) == _listing(dest)  # only the test split
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("capslab: downloaded mnist t10k-images")
    assert "md5 verified" in err and str(dest) in err
    n = len(served.requests)
    clear_cache()
    assert len(load_dataset("mnist", "test", checksums=served.md5s)) == 32
    assert len(served.requests) == n and capsys.readouterr().err == ""  # found, not fetched again


def test_require_files_downloads_into_the_data_folder_before_a_run(served, tmp_path, capsys):
    data = tmp_path / "data"
    with pytest.raises(DatasetNotFoundError, match="download=True"):
        sources.require_files("mnist", data, download=False)
    assert served.requests == []
    sources.require_files("mnist", data, download=True, checksums=served.md5s)
    assert _listing(data / "mnist") == sorted(served.md5s)
    assert capsys.readouterr().err.count("capslab: downloaded mnist") == 1  # one line for all
    # a caller's own feedback: progress per file, the note through its callback
    notes, files = [], set()
    with downloads.download_feedback(report=notes.append, progress=lambda f, d, t: files.add(f)):
        sources.require_files("mnist", tmp_path / "other", ("test",), download=True,
                              checksums=served.md5s)
    assert files == {"t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"}
    assert len(notes) == 1 and str(tmp_path / "other" / "mnist") in notes[0]


def test_offline_env_never_touches_the_network(served, monkeypatch, tmp_path):
    monkeypatch.setenv("CAPSLAB_OFFLINE", "1")
    with pytest.raises(DatasetNotFoundError) as e:
        load_dataset("mnist", "train", data_dir=tmp_path / "data", checksums=served.md5s)
    msg = str(e.value)
    assert "not found" in msg and "CAPSLAB_OFFLINE is set" in msg
    assert "(data_dir)" in msg and "CAPSLAB_DATA=DIR" in msg and str(tmp_path / "data") in msg
    with pytest.raises(DownloadError, match="CAPSLAB_OFFLINE is set"):
        downloads.download("mnist", tmp_path / "data", checksums=served.md5s)
    with pytest.raises(DownloadError, match="CAPSLAB_OFFLINE"):
        downloads.download_file(served.spec(), tmp_path / "data")
    assert served.requests == [] and not (tmp_path / "data").exists()


def test_unreachable_server_gives_the_not_found_message(monkeypatch, tmp_path):
    with socket.socket() as s:  # a local port nobody listens on: connection refused
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    monkeypatch.delenv("CAPSLAB_OFFLINE", raising=False)
    monkeypatch.setenv("CAPSLAB_MIRRORS", f"http://127.0.0.1:{port}")
    with pytest.raises(DatasetNotFoundError) as e:
        load_dataset("mnist", "test", data_dir=tmp_path / "data")
    msg = str(e.value)
    assert "t10k-images-idx3-ubyte.gz" in msg and "not found" in msg and "refused" in msg
    assert f"Downloading them into {tmp_path / 'data' / 'mnist'} failed" in msg
    assert "CAPSLAB_DATA=DIR" in msg and "(data_dir)" in msg
    assert "--" not in msg.replace(str(tmp_path), "")  # library terms, no command-line flags
    assert _listing(tmp_path / "data" / "mnist") == []


def test_two_processes_or_threads_download_a_file_once(served, tmp_path):
    dest = tmp_path / "d"
    results = []
    threads = [threading.Thread(target=lambda: results.append(
        downloads.download_file(served.spec(), dest))) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(10)
    assert results == [dest / IMAGES] * 2 and len(served.requests) == 1
    assert (dest / IMAGES).read_bytes() == served.server.files[IMAGES]


def test_mirror_urls(monkeypatch):
    spec = get_spec("mnist").files[IMAGES]
    monkeypatch.delenv("CAPSLAB_MIRRORS", raising=False)
    assert downloads.file_urls(spec) == spec.urls
    assert spec.urls[0] == "https://ossci-datasets.s3.amazonaws.com/mnist/" + IMAGES
    monkeypatch.setenv("CAPSLAB_MIRRORS", "http://a/x/ , file:///srv/{file}?d={dataset}")
    assert downloads.file_urls(spec) == (f"http://a/x/mnist/{IMAGES}", f"file:///srv/{IMAGES}?d=mnist")
