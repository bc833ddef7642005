"""``capslab datasets``: table, JSON, --verify, --download (mocked), errors."""

from __future__ import annotations

import io
import json
import urllib.error

import pytest
from typer.testing import CliRunner

from capslab.cli.main import app
from capslab.data import default_data_dir, sources
from capslab.data.registry import get_spec
from capslab.data.testing import write_fake_mnist

runner = CliRunner()
pytestmark = pytest.mark.usefixtures("isolated_data")  # see conftest.py


@pytest.fixture(autouse=True)
def _wide_terminal(monkeypatch):
    monkeypatch.setenv("COLUMNS", "200")


def run(*args: str):
    return runner.invoke(app, ["datasets", *args])


def test_table_lists_every_dataset(tmp_path):
    r = run("--data-dir", str(tmp_path))
    assert r.exit_code == 0, r.output
    for name in ("mnist", "fashion-mnist", "cifar10", "cifar100", "svhn", "cifar-10-python.tar.gz",
                 "train_32x32.mat", "where found", "verified"):
        assert name in r.output
    assert str(tmp_path) in r.output and "--data-dir" in r.output


def test_json_and_verify_flag_a_bad_file(tmp_path):
    write_fake_mnist(tmp_path / "mnist", 10, 10)  # present, but not the official bytes
    r = run("mnist", "--data-dir", str(tmp_path), "--json")
    assert r.exit_code == 0, r.output
    d = json.loads(r.output)
    rows = {row["file"]: row for row in d["files"]}
    assert set(rows) == {f for f in get_spec("mnist").files}
    assert all(row["present"] and row["verified"] is None for row in rows.values())
    assert d["datasets"]["mnist"]["num_classes"] == 10
    assert d["search_dirs"]["mnist"][0] == {"path": str(tmp_path), "origin": "--data-dir"}
    r = run("mnist", "--data-dir", str(tmp_path), "--json", "--verify")
    assert r.exit_code == 1
    rows = json.loads(r.output)["files"]
    assert all(row["verified"] is False and "checksum mismatch" in row["check"] for row in rows)
    r = run("mnist", "--data-dir", str(tmp_path), "--verify")
    assert r.exit_code == 1 and "FAILED" in r.output


def test_unknown_dataset_is_an_error():
    r = run("imagenet")
    assert r.exit_code == 2 and "unknown dataset" in r.output


def test_download_mocked(tmp_path, monkeypatch):
    served = tmp_path / "served"
    write_fake_mnist(served, 8, 8)
    spec = get_spec("mnist")
    # pin the generated files as if they were the published ones (registry override)
    import dataclasses

    from capslab.data import registry

    files = {n: dataclasses.replace(f, md5=sources.md5_file(served / n), raw_md5=None)
             for n, f in spec.files.items()}
    monkeypatch.setitem(registry.DATASETS, "mnist", dataclasses.replace(spec, files=files))
    table = {f.urls[0]: (served / n).read_bytes() for n, f in files.items()}

    class Resp(io.BytesIO):
        headers: dict = {}

        def __enter__(self):
            return self

        def __exit__(self, *a):
            pass

    def urlopen(url, timeout=None):
        if url not in table:
            raise urllib.error.URLError("offline")
        return Resp(table[url])

    monkeypatch.setattr(sources.urllib.request, "urlopen", urlopen)
    r = run("mnist", "--download", "mnist", "--verify")
    assert r.exit_code == 0, r.output
    assert sorted(p.name for p in (default_data_dir() / "mnist").iterdir()) == sorted(files)
    assert "FAILED" not in r.output and "ok" in r.output
    table.clear()  # offline now
    r = run("--download", "svhn")
    assert r.exit_code == 2 and "could not download" in r.output
