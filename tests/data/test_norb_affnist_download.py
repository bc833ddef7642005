"""smallNORB and affNIST through the download machinery, against the local HTTP server of
``capslab.data.testing``: an interrupted download that resumes, automatic download, the pinned
smallNORB checksums, affNIST's unpinned files, and ``capslab datasets`` listing and fetching
them. Nothing leaves 127.0.0.1."""

from __future__ import annotations

import json

import numpy as np
import pytest
from helpers import datasets_app
from typer.testing import CliRunner

from capslab.data import default_data_dir, downloads, load_dataset
from capslab.data.testing import FileServer, smallnorb_names, write_affnist, write_smallnorb
from capslab.errors import ChecksumError

pytestmark = pytest.mark.usefixtures("isolated_data")  # see conftest.py

DROP_AT = 20_000


@pytest.fixture
def online(monkeypatch):
    """Downloads allowed; ``mirrors(server, behaviour)`` points CAPSLAB_MIRRORS at the server."""
    monkeypatch.delenv("CAPSLAB_OFFLINE", raising=False)
    return lambda server, behaviour: monkeypatch.setenv("CAPSLAB_MIRRORS", server.base(behaviour))


def served_files(folder) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in folder.iterdir()}


def test_interrupted_smallnorb_download_resumes(tmp_path, online):
    images, labels, md5s = write_smallnorb(tmp_path / "served", "test", n=6)
    files = served_files(tmp_path / "served")
    dat = smallnorb_names("test")[0]
    assert len(files[dat]) > 2 * DROP_AT
    with FileServer(files, drop_after=DROP_AT) as server:
        online(server, "drop")  # each file's first connection closes after DROP_AT bytes
        paths = downloads.download("smallnorb", tmp_path / "data", splits=["test"], checksums=md5s)
        assert [p.name for p in paths] == list(smallnorb_names("test"))
        assert ("drop", dat, f"bytes={DROP_AT}-") in server.requests  # continued, not restarted
        assert sum(r[1] == dat for r in server.requests) == 2
    assert sorted(p.name for p in (tmp_path / "data" / "smallnorb").iterdir()) == sorted(md5s)
    ds = load_dataset("smallnorb", "test", data_dir=tmp_path / "data", checksums=md5s)
    assert ds.images.shape == (6, 2, 48, 48) and ds.labels.tolist() == labels.tolist()


def test_pinned_smallnorb_checksums_refuse_a_mirror_with_other_files(tmp_path, online):
    write_smallnorb(tmp_path / "served", "test", n=2)
    with FileServer(served_files(tmp_path / "served")) as server:
        online(server, "ok")
        with pytest.raises(ChecksumError, match="testing-dat.mat.gz rejected, wrong checksum"):
            downloads.download("smallnorb", tmp_path / "data", splits=["test"])
    assert list((tmp_path / "data" / "smallnorb").iterdir()) == []  # nothing kept


def test_affnist_part_of_an_interrupted_run_is_continued_by_load_dataset(tmp_path, online, capsys):
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (20, 40, 40), dtype=np.uint8)
    write_affnist(tmp_path / "served" / "test.mat.zip", images, np.arange(20) % 10)
    data = (tmp_path / "served" / "test.mat.zip").read_bytes()
    dest = default_data_dir() / "affnist"
    dest.mkdir(parents=True)
    (dest / "test.mat.zip.part").write_bytes(data[:10_000])  # left by a killed run
    with FileServer({"test.mat.zip": data}) as server:
        online(server, "ok")
        ds = load_dataset("affnist", "test")
        assert server.requests == [("ok", "test.mat.zip", "bytes=10000-")]
    assert (dest / "test.mat.zip").read_bytes() == data
    assert sorted(p.name for p in dest.iterdir()) == ["test.mat.zip"]
    assert np.array_equal(ds.images[:, 0].numpy(), images)
    err = capsys.readouterr().err.splitlines()
    assert err[0].startswith("capslab: downloaded affnist test.mat.zip")
    assert "NOT verified: no md5 is pinned for test.mat.zip" in err[0]
    assert err[1].startswith("capslab: warning:") and "used unverified" in err[1]




def test_capslab_datasets_lists_and_downloads_them(tmp_path, online):
    runner, app = CliRunner(), datasets_app()
    write_affnist(tmp_path / "served" / "test.mat.zip", np.zeros((3, 40, 40), np.uint8), [1, 2, 3])
    write_affnist(tmp_path / "served" / "training_and_validation.mat.zip",
                  np.zeros((2, 40, 40), np.uint8), [4, 5])
    with FileServer(served_files(tmp_path / "served")) as server:
        online(server, "ok")
        r = runner.invoke(app, ["datasets", "affnist", "--download", "affnist"])
        assert r.exit_code == 0, r.output
        note = next(line for line in r.stdout.splitlines() if line.startswith("downloaded"))
        assert "downloaded affnist" in note and "NOT verified: no md5 is pinned" in note
        assert "no md5 pinned" in r.stdout and "--verify" not in r.stdout
    r = runner.invoke(app, ["datasets", "affnist", "smallnorb", "--verify", "--json"])
    assert r.exit_code == 0, r.output  # an unpinned file is not a failed check
    rows = {row["file"]: row for row in json.loads(r.stdout)["files"]}
    assert rows["test.mat.zip"]["present"] and rows["test.mat.zip"]["verified"] is None
    assert rows["test.mat.zip"]["check"] == "not pinned" and rows["test.mat.zip"]["md5"] is None
    assert rows["test.mat.zip"]["splits"] == ["test"]
    norb = [row for row in rows.values() if row["dataset"] == "smallnorb"]
    assert len(norb) == 6 and not any(row["present"] for row in norb)
    assert all(len(row["md5"]) == 32 for row in norb)
    assert json.loads(r.stdout)["datasets"]["smallnorb"]["image_size"] == 48
