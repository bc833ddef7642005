"""ONNX export: a trained capsule network as a file that runs without PyTorch.

The exported graph maps images ``[B, C, H, W]`` to the class-capsule lengths ``[B, classes]``
(output ``lengths``) and the class capsules ``[B, classes, D]`` (output ``capsules``), with
the batch size free. Routing is unrolled: its iterations are a fixed loop, traced once.

CapsLab's layers take other code paths on the CPU depending on the batch size (the GEMM form
of small PrimaryCaps batches, RBA routing from the poses from batch 8 on) and compute with
operators ONNX lacks (``expm1`` in Efficient-CapsNet's squash); while exporting
(``torch.onnx.is_in_onnx_export()``) they take their plain path, the same maths for every
batch. A momentum stack exports its inference path (the fixed-point state in int64), not the
reversible autograd function, so MoCapsNet exports for inference.

:func:`export_onnx` writes the file (atomically) and checks it with ``onnx.checker``;
:func:`compare_with_torch` runs it in onnxruntime beside PyTorch. ``onnx`` and
``onnxruntime`` are optional (``pip install capslab[export]``).
"""

from __future__ import annotations

import importlib
import io
import os
import time
import warnings
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from capslab.errors import ConfigError, MissingDependencyError
from capslab.io import atomic_write_bytes

#: the ONNX operator set written by default (onnxruntime 1.18+ runs it)
DEFAULT_OPSET = 17
#: what an exported network agrees with PyTorch to, in class-capsule length (float32 sums
#: in another order; measured up to 1e-6 for MoCapsNet's 16 routed layers)
LENGTH_TOLERANCE = 1e-5


def _require(name: str) -> Any:
    try:
        return importlib.import_module(name)
    except ImportError:
        raise MissingDependencyError(
            f"{name} is not installed; ONNX export needs it: pip install 'capslab[export]'"
        ) from None


class CapsuleOutputs(nn.Module):
    """``images [B, C, H, W] -> (lengths [B, classes], capsules [B, classes, D])``: the
    network's inference outputs as plain tensors (no decoder, no dataclass), what the exported
    graph returns."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, images: Tensor) -> tuple[Tensor, Tensor]:
        out = self.model(images)
        return out.lengths, out.caps


def export_onnx(model: nn.Module, path: str | os.PathLike, *, opset: int = DEFAULT_OPSET) -> Path:
    """Write ``model`` (a CapsLab capsule classifier) to ``path`` as ONNX, batch size free;
    returns the path. The model is exported in eval mode on the CPU (it is put back as it
    was)."""
    onnx = _require("onnx")
    if not hasattr(model, "image_shape"):
        raise ConfigError(f"{type(model).__name__} is not a CapsLab capsule network")
    was_training, device = model.training, next(model.parameters()).device
    wrapper = CapsuleOutputs(model.cpu().eval())
    example = torch.rand(2, *model.image_shape)
    buffer = io.BytesIO()
    unsupported = (torch.onnx.errors.UnsupportedOperatorError, torch.onnx.errors.SymbolicValueError)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the tracer's notes on Python-side shapes
            torch.onnx.export(
                wrapper, (example,), buffer, dynamo=False, opset_version=opset,
                input_names=["images"], output_names=["lengths", "capsules"],
                dynamic_axes={"images": {0: "batch"}, "lengths": {0: "batch"},
                              "capsules": {0: "batch"}},
            )
    except unsupported as exc:  # the network, not CapsLab: one line naming the operation
        raise ConfigError(f"{type(model).__name__} cannot be written as ONNX opset {opset}: "
                          f"{str(exc).strip().splitlines()[0]}") from None
    finally:
        model.train(was_training).to(device)
    data = buffer.getvalue()
    onnx.checker.check_model(onnx.load_from_string(data))
    atomic_write_bytes(path, data)
    return Path(path)


@dataclass(frozen=True)
class Agreement:
    """How an exported file and PyTorch agree on the same images."""

    images: int
    max_length_difference: float
    same_predictions: float  # fraction of images with the same predicted class

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def onnx_session(path: str | os.PathLike, threads: int | None = None):
    """An onnxruntime CPU session of ``path`` (``threads``: intra-op threads, default all)."""
    ort = _require("onnxruntime")
    options = ort.SessionOptions()
    if threads:
        options.intra_op_num_threads = threads
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def compare_with_torch(model: nn.Module, path: str | os.PathLike, images: Tensor,
                       batch_size: int = 64) -> Agreement:
    """Run ``images`` ``[N, C, H, W]`` through the exported file and through ``model``."""
    session = onnx_session(path)
    model = model.eval()
    worst, same = 0.0, 0
    for start in range(0, len(images), batch_size):
        x = images[start:start + batch_size].float().cpu()
        with torch.no_grad():
            ref = model(x).lengths.numpy()
        got = session.run(["lengths"], {"images": x.numpy()})[0]
        worst = max(worst, float(np.abs(ref - got).max()))
        same += int((ref.argmax(1) == got.argmax(1)).sum())
    return Agreement(len(images), worst, same / max(len(images), 1))


def images_per_second(run, images: np.ndarray, seconds: float = 2.0) -> float:
    """Images/s of ``run(images)`` repeated for about ``seconds`` after one warm-up call."""
    run(images)
    done, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds or done == 0:
        run(images)
        done += len(images)
    return done / (time.perf_counter() - start)
