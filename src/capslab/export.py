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

The **quantized (QDQ) form** (``quantization=``, settings of the accelerator mode from
:func:`capslab.quantize.calibrate`): every quantized weight, every quantized layer's input and
the coupling coefficients pass through ONNX ``QuantizeLinear``/``DequantizeLinear`` pairs at
the grids CapsLab computes with (int8 for weights and inputs, clipped first to the symmetric
``±qmax`` range; uint8 on ``[0, 1]`` for the couplings), so a runtime that fuses QDQ runs it
in integers. ONNX stores 8 bits at most: wider settings are refused, and the per-image mode,
whose scales are not constants, cannot be written (calibrate first).
"""

from __future__ import annotations

import contextlib
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
#: the same for the QDQ form against :func:`capslab.quantize.quantize_model`: a value that
#: lies on a rounding boundary can take the neighbouring grid level in another runtime's float
#: arithmetic (measured up to 3e-4 on a trained CapsNet at 8 bits, the predictions the same)
QDQ_LENGTH_TOLERANCE = 1e-3


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


def export_onnx(model: nn.Module, path: str | os.PathLike, *, opset: int = DEFAULT_OPSET,
                quantization: Any = None) -> Path:
    """Write ``model`` (a CapsLab capsule classifier) to ``path`` as ONNX, batch size free;
    returns the path. The model is exported in eval mode on the CPU (it is put back as it
    was). With ``quantization`` (:class:`~capslab.quantize.QuantizationSettings`, calibrated)
    the graph holds QDQ pairs at its grids (see the module docstring)."""
    onnx = _require("onnx")
    if not hasattr(model, "image_shape"):
        raise ConfigError(f"{type(model).__name__} is not a CapsLab capsule network")
    was_training, device = model.training, next(model.parameters()).device
    wrapper = CapsuleOutputs(model.cpu().eval())
    example = torch.rand(2, *model.image_shape)
    buffer = io.BytesIO()
    unsupported = (torch.onnx.errors.UnsupportedOperatorError, torch.onnx.errors.SymbolicValueError)
    qdq = qdq_form(model, quantization) if quantization is not None else contextlib.nullcontext()
    try:
        with warnings.catch_warnings(), qdq:
            warnings.simplefilter("ignore")  # the tracer's notes on Python-side shapes
            torch.onnx.export(
                wrapper, (example,), buffer, dynamo=False, opset_version=opset,
                input_names=["images"], output_names=["lengths", "capsules"],
                dynamic_axes={"images": {0: "batch"}, "lengths": {0: "batch"},
                              "capsules": {0: "batch"}},
                do_constant_folding=quantization is None,  # keep the weights' QDQ pairs
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


def _qdq_signed(x: Tensor, scale: float, qmax: int) -> Tensor:
    """``x`` on the symmetric grid of step ``scale``, written as an int8 QDQ pair (ONNX allows
    only the whole int8 range, so the symmetric ``±qmax`` clip comes first)."""
    return torch.fake_quantize_per_tensor_affine(
        torch.clamp(x, -qmax * scale, qmax * scale), scale, 0, -128, 127)


class _QDQWeight(nn.Module):
    """Parametrization: a weight on its grid, as a QDQ pair of the exported graph."""

    def __init__(self, scale: float, qmax: int):
        super().__init__()
        self.scale, self.qmax = scale, qmax

    def forward(self, w: Tensor) -> Tensor:
        return _qdq_signed(w, self.scale, self.qmax)


@contextlib.contextmanager
def qdq_form(model: nn.Module, settings: Any):
    """Inside the block ``model`` computes with QDQ operators at ``settings``' grids (the
    numbers of :func:`capslab.quantize.quantize_model`); everything is removed on exit."""
    from torch.nn.utils import parametrize

    from capslab import quantize as q
    from capslab.routing import set_coupling_transform

    widths = q.weight_widths(model, settings)
    bits_used = [*widths.values(), settings.activation_bits, settings.routing_bits]
    if any(b is not None and b > 8 for b in bits_used):
        raise ConfigError("the QDQ form stores 8 bits at most (ONNX int8/uint8); "
                          f"these settings use {max(b for b in bits_used if b is not None)}")
    if settings.activation_bits is not None and settings.activation_ranges is None:
        raise ConfigError("per-image activation scales are not constants and cannot be written "
                          "as QDQ: calibrate the activation scales first (the accelerator mode)")
    modules, params = dict(model.named_modules()), dict(model.named_parameters())
    parametrized, handles = [], []
    previous = None
    try:
        for name, bits in widths.items():
            owner, attr = name.rsplit(".", 1)
            scale = q.weight_scale(params[name].detach(), bits, settings.power_of_two)
            parametrize.register_parametrization(modules[owner], attr,
                                                 _QDQWeight(float(scale), q.max_level(bits)))
            parametrized.append((modules[owner], attr))
        if settings.activation_bits is not None:
            qmax = q.max_level(settings.activation_bits)
            for site, module in q.activation_sites(model, list(widths)).items():
                amax = settings.activation_ranges[site]
                if amax:  # 0: never reached in calibration, kept float as in quantize_model
                    scale = q.activation_scale(amax, settings.activation_bits,
                                               settings.power_of_two)
                    handles.append(module.register_forward_pre_hook(
                        lambda m, args, s=scale: tuple(
                            _qdq_signed(a, s, qmax) if isinstance(a, Tensor) else a for a in args)))
        if settings.routing_bits is not None:
            top = q.unit_levels(settings.routing_bits, settings.power_of_two)
            previous = set_coupling_transform(lambda c: torch.fake_quantize_per_tensor_affine(
                torch.clamp(c, 0.0, 1.0), 1.0 / top, 0, 0, 255))
        yield model
    finally:
        if settings.routing_bits is not None:
            set_coupling_transform(previous)
        for h in handles:
            h.remove()
        for module, attr in parametrized:
            parametrize.remove_parametrizations(module, attr, leave_parametrized=False)


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
    """Run ``images`` ``[N, C, H, W]`` through the exported file and through ``model`` (for a
    QDQ file: through :func:`capslab.quantize.quantize_model` of it at the same settings)."""
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
