"""``capslab datasets``: table, JSON, --verify, --download (a comma list; from a local HTTP
server), errors."""

from __future__ import annotations

import dataclasses
import json
import socket

import pytest
from helpers import datasets_app
from typer.testing import CliRunner

from capslab.data import checksums, default_data_dir, list_datasets
from capslab.data.registry import get_spec
from capslab.data.testing import FileServer, write_fake_mnist

runner = CliRunner()
pytestmark = pytest.mark.usefixtures("isolated_data")  # see conftest.py


@pytest.fixture(autouse=True)
def _offline(monkeypatch):
    """Nothing here reaches the network unless a test serves files itself."""
    monkeypatch.setenv("CAPSLAB_OFFLINE", "1")




APP = datasets_app()


def run(*args: str):
    return runner.invoke(APP, ["datasets", *args])


def test_table_lists_every_dataset(tmp_path):
    r = run("--data-dir", str(tmp_path))
    assert r.exit_code == 0, r.output
    for name in ("mnist", "fashion-mnist", "cifar10", "cifar100", "svhn", "cifar-10-python.tar.gz",
                 "train_32x32.mat", "where found", "verified"):
        assert name in r.stdout
    assert str(tmp_path) in r.stdout and "[data_dir]" in r.stdout
    assert "Missing: " in r.stdout and "--download NAME" in r.stdout


def test_json_and_verify_flag_a_bad_file(tmp_path):
    write_fake_mnist(tmp_path / "mnist", 10, 10)  # present, but not the official bytes
    r = run("mnist", "--data-dir", str(tmp_path), "--json")
    assert r.exit_code == 0, r.output
    d = json.loads(r.stdout)
    assert (d["format"], d["version"]) == ("capslab-datasets", 1)
    rows = {row["file"]: row for row in d["files"]}
    assert set(rows) == {f for f in get_spec("mnist").files}
    assert all(row["present"] and row["verified"] is None for row in rows.values())
    assert all(row["origin"] == "data_dir" for row in rows.values())
    assert d["datasets"]["mnist"]["num_classes"] == 10
    assert d["search_dirs"]["mnist"][0] == {"path": str(tmp_path), "origin": "data_dir"}
    r = run("mnist", "--data-dir", str(tmp_path), "--json", "--verify")
    assert r.exit_code == 1
    rows = json.loads(r.stdout)["files"]
    assert all(row["verified"] is False and "checksum mismatch" in row["check"] for row in rows)
    r = run("mnist", "--data-dir", str(tmp_path), "--verify")
    assert r.exit_code == 1 and "FAILED" in r.stdout and "checksum mismatch" in r.stderr


def test_unknown_dataset_is_one_error_line():
    r = run("imagenet")
    assert r.exit_code == 2 and r.stdout == ""
    assert r.stderr.startswith("error: unknown dataset") and r.stderr.count("\n") == 1


@pytest.fixture
def downloads(monkeypatch):
    """``downloads.download`` replaced by a recorder of the dataset names it is asked for."""
    asked: list[str] = []
    monkeypatch.setattr("capslab.data.downloads.download", lambda name, data_dir=None, **kw: asked.append(name))
    return asked


def test_download_takes_one_comma_list(downloads):
    r = run("mnist", "--download", "mnist, fashion_mnist,MNIST")
    assert r.exit_code == 0, r.output
    assert downloads == ["mnist", "fashion-mnist"]  # canonical names, each once
    downloads.clear()
    assert run("mnist", "--download", "all").exit_code == 0
    assert downloads == list_datasets()


def test_download_of_an_unknown_name_fails_before_any_download(downloads):
    r = run("--download", "mnist,imagenet")
    assert r.exit_code == 2 and "unknown dataset" in r.stderr and downloads == []


def test_json_download_keeps_stdout_json(downloads):
    r = run("mnist", "--download", "mnist", "--json")
    assert r.exit_code == 0, r.output
    assert json.loads(r.stdout)["format"] == "capslab-datasets"
    assert downloads == ["mnist"]


def test_download_from_a_local_server(tmp_path, monkeypatch):
    served = tmp_path / "served"
    write_fake_mnist(served, 8, 8)
    spec = get_spec("mnist")
    # pin the generated files as if they were the published ones (registry override)
    from capslab.data import registry

    files = {n: dataclasses.replace(f, md5=checksums.md5_file(served / n), raw_md5=None, size=None)
             for n, f in spec.files.items()}
    monkeypatch.setitem(registry.DATASETS, "mnist", dataclasses.replace(spec, files=files))
    monkeypatch.delenv("CAPSLAB_OFFLINE")
    with FileServer({n: (served / n).read_bytes() for n in files}) as server:
        monkeypatch.setenv("CAPSLAB_MIRRORS", server.base("ok"))
        r = run("mnist", "--download", "mnist", "--verify")
        assert r.exit_code == 0, r.output
        dest = default_data_dir() / "mnist"
        assert sorted(p.name for p in dest.iterdir()) == sorted(files)
        assert sorted(req[1] for req in server.requests) == sorted(files)
        assert "FAILED" not in r.output and "ok" in r.stdout
        note = next(line for line in r.stdout.splitlines() if line.startswith("downloaded"))
        assert "downloaded mnist train-images-idx3-ubyte.gz" in note and "md5 verified" in note
        # present now: nothing fetched again, no note; --json keeps stdout JSON
        r = run("mnist", "--download", "mnist", "--json")
        assert r.exit_code == 0 and len(server.requests) == len(files)
        assert json.loads(r.stdout)["format"] == "capslab-datasets" and "downloaded" not in r.output


def test_download_offline_is_one_error_line(tmp_path, monkeypatch):
    r = run("--download", "svhn")  # CAPSLAB_OFFLINE=1
    assert r.exit_code == 2 and r.stderr.count("\n") == 1
    assert r.stderr.startswith("error: ") and "CAPSLAB_OFFLINE is set" in r.stderr
    with socket.socket() as s:  # a local port nobody listens on: connection refused
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    monkeypatch.delenv("CAPSLAB_OFFLINE")
    monkeypatch.setenv("CAPSLAB_MIRRORS", f"http://127.0.0.1:{port}")
    r = run("--download", "svhn", "--data-dir", str(tmp_path))
    assert r.exit_code == 2 and r.stderr.count("\n") == 1
    assert r.stderr.startswith("error: could not download train_32x32.mat")
    assert "refused" in r.stderr and "(data_dir)" in r.stderr
    assert list((tmp_path / "svhn").iterdir()) == []
