"""Checkpoints: plain state dicts and metadata (no pickled objects), written atomically."""

from __future__ import annotations

import io
import json
import pickle
import random
from pathlib import Path
from typing import Any

import numpy as np
import torch

from capslab.errors import CheckpointError
from capslab.io import atomic_write_bytes
from capslab.settings import Settings

FORMAT = "capslab-checkpoint"
VERSION = 1


def rng_state() -> dict[str, Any]:
    """Every random-number state a run draws from. CUDA's is saved only where CUDA is in use
    already: asking for it would start a CUDA context in a CPU-only run."""
    state = {
        "torch": torch.get_rng_state(),
        "python": json.dumps(random.getstate()),
        "numpy": json.dumps(np.random.get_state(legacy=True), default=_np_default),
    }
    if torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _np_default(o: Any) -> Any:
    if isinstance(o, np.ndarray):
        return o.tolist()
    if isinstance(o, np.integer):
        return int(o)
    raise TypeError(type(o))


def set_rng_state(state: dict[str, Any]) -> None:
    """Restore :func:`rng_state`'s states. PyTorch takes generator states only as CPU byte
    tensors, wherever the checkpoint was mapped to, so they are moved back first."""
    torch.set_rng_state(_cpu_bytes(state["torch"]))
    py = json.loads(state["python"])
    random.setstate((py[0], tuple(py[1]), py[2]))
    kind, keys, pos, has_gauss, gauss = json.loads(state["numpy"])
    np.random.set_state((kind, np.array(keys, dtype=np.uint32), pos, has_gauss, gauss))
    if "cuda" in state and torch.cuda.is_available():
        saved = [_cpu_bytes(s) for s in state["cuda"]]
        # a machine with fewer GPUs than the one that saved restores the GPUs it has
        for index, s in enumerate(saved[: torch.cuda.device_count()]):
            torch.cuda.set_rng_state(s, index)


def _cpu_bytes(t: torch.Tensor) -> torch.Tensor:
    return t.to(device="cpu", dtype=torch.uint8)


def save_checkpoint(path: str | Path, **payload: Any) -> None:
    """Write ``payload`` (state dicts, config, history, rng) with a format marker."""
    buf = io.BytesIO()
    torch.save({"format": FORMAT, "version": VERSION, **payload}, buf)
    atomic_write_bytes(path, buf.getvalue())


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Read a CapsLab checkpoint; errors name the file and the problem."""
    path = Path(path)
    if path.is_dir():
        raise CheckpointError(
            f"checkpoint {path} is a folder, not a file (a run folder holds last.pt and best.pt)"
        )
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} does not exist")
    try:
        ckpt = torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError:
        # a pickle of arbitrary objects: PyTorch's advice to load it unsafely is not ours to give
        raise CheckpointError(
            f"{path} is not a CapsLab checkpoint (not a tensor file, or one holding pickled objects)"
        ) from None
    except Exception:  # truncated or corrupt zip, empty file, bytes of another format
        raise CheckpointError(_unreadable(path)) from None
    if not isinstance(ckpt, dict) or ckpt.get("format") != FORMAT:
        bare = isinstance(ckpt, dict) and ckpt and all(isinstance(v, torch.Tensor) for v in ckpt.values())
        what = " (bare weights, without the model's name and options)" if bare else ""
        raise CheckpointError(f"{path} is not a CapsLab checkpoint{what}")
    if ckpt.get("version", 0) > VERSION:
        raise CheckpointError(f"{path} was written by a newer CapsLab (format {ckpt['version']})")
    return ckpt


def _unreadable(path: Path) -> str:
    """Why ``torch.load`` failed, told from the file's first bytes."""
    with open(path, "rb") as f:
        head = f.read(4)
    if not head:
        return f"checkpoint {path} is empty"
    if head == b"PK\x03\x04":  # the zip archive torch.save writes
        return f"checkpoint {path} cannot be read (a damaged or truncated PyTorch file)"
    return f"{path} is not a CapsLab checkpoint (not a PyTorch file)"


def check_compatible(ckpt: dict[str, Any], config: Settings, path: str | Path) -> None:
    """Refuse to continue from a checkpoint of another model or configuration than ``config``'s
    (a checkpoint written before a field existed matches that field's default)."""
    saved = ckpt.get("identity", {})
    diff = config.identity_difference(saved)
    if diff:
        identity = config.identity()
        lines = ", ".join(f"{k}: checkpoint {saved.get(k)!r} vs now {identity.get(k)!r}" for k in diff)
        raise CheckpointError(
            f"checkpoint {path} belongs to another model or config ({lines}); "
            "use another output folder or the same settings"
        )
