"""Shared fixtures. Tests run on the CPU with few threads and small data subsets."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

torch.set_num_threads(min(2, torch.get_num_threads()))

# CI has no internet and no test may leave 127.0.0.1: datasets are never downloaded (a missing
# one is DatasetNotFoundError, as before). Set at import so collection-time checks and worker
# processes see it; tests/data/test_download.py unsets it and serves files from 127.0.0.1.
os.environ["CAPSLAB_OFFLINE"] = "1"

_DEFAULT_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "datasets"


def data_root() -> Path | None:
    """The folder holding the MNIST/Fashion-MNIST originals, or None."""
    root = Path(os.environ.get("CAPSLAB_DATA", _DEFAULT_DATA))
    return root if (root / "mnist" / "train-images-idx3-ubyte.gz").exists() else None


@pytest.fixture(scope="session")
def mnist_root() -> Path:
    root = data_root()
    if root is None:
        pytest.skip("MNIST originals not found: set CAPSLAB_DATA to the datasets folder")
    os.environ.setdefault("CAPSLAB_DATA", str(root))
    return root


@pytest.fixture
def isolated_data(tmp_path, monkeypatch):
    """No test touches the user's cache or sees the real data folders by accident: a fresh
    ``XDG_CACHE_HOME``, no ``CAPSLAB_DATA`` and an empty in-memory dataset cache."""
    from capslab.data import clear_cache

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg-cache"))
    monkeypatch.delenv("CAPSLAB_DATA", raising=False)
    clear_cache()
    yield
    clear_cache()
