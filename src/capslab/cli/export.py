"""``capslab export``: a trained network (a checkpoint) as an ONNX file, checked against
PyTorch in onnxruntime."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from capslab.cli import options as opt
from capslab.cli.output import console, emit


def export(
    checkpoint: Annotated[Path, typer.Argument(help="A last.pt or best.pt written by `capslab train`.")],
    out: Annotated[Path, typer.Option("--out", "-o", help="The ONNX file to write.")],
    opset: Annotated[int, typer.Option(min=13, help="ONNX operator set.")] = 17,
    check: Annotated[int, typer.Option(min=0, help="Compare with PyTorch on N test images of the checkpoint's dataset (0: none).")] = 256,
    quantized: Annotated[bool, typer.Option(help="The accelerator mode as QDQ: weights, layer inputs and routing on their --bits grids, activation scales calibrated on --calibrate training images.")] = False,
    bits: Annotated[int, typer.Option(min=2, max=8, help="With --quantized: bits of weights, activations and routing (ONNX stores 8 at most).")] = 8,
    calibrate: Annotated[int, typer.Option(min=1, help="With --quantized: training images the activation scales are calibrated on.")] = 256,
    power_of_two: Annotated[bool, typer.Option(help="With --quantized: power-of-two scales.")] = False,
    data_dir: opt.DataDir = None,
    as_json: opt.JsonFlag = False,
) -> None:
    """Export a trained network to ONNX (routing unrolled, batch size free; with --quantized
    the accelerator mode as QDQ pairs) and check it in onnxruntime against PyTorch: the same
    predictions, the class-capsule lengths within 1e-5 (1e-3 quantized)."""
    # imported on use, so that the CLI starts without them
    from capslab.errors import ConfigError
    from capslab.export import (
        LENGTH_TOLERANCE,
        QDQ_LENGTH_TOLERANCE,
        compare_with_torch,
        export_onnx,
    )
    from capslab.models.pretrained import load_model, model_split
    from capslab.quantize import calibrate as calibrated
    from capslab.quantize import quantize_model

    model = load_model(checkpoint)
    dataset = model.pretrained_cfg.get("dataset")
    settings, reference, tolerance = None, model, LENGTH_TOLERANCE
    if quantized:
        if not dataset:
            raise ConfigError(f"{checkpoint} records no dataset to calibrate --quantized on")
        images = _images(model_split(model, dataset, "train", checkpoint, data_dir).stratified(calibrate, 0))
        settings = calibrated(model, [images], weight_bits=bits, activation_bits=bits,
                              routing_bits=bits, groups=("conv", "primary", "capsule"),
                              power_of_two=power_of_two)
        # a value on a rounding boundary may take the neighbouring level in another runtime
        reference, tolerance = quantize_model(model, settings), QDQ_LENGTH_TOLERANCE
    path = export_onnx(model, out, opset=opset, quantization=settings)
    result = {"checkpoint": str(checkpoint), "onnx": str(path), "bytes": path.stat().st_size,
              "opset": opset, "model": getattr(model, "model_name", type(model).__name__),
              "quantization": "float" if settings is None else settings.describe()}
    if check and dataset:
        test = model_split(model, dataset, "test", checkpoint, data_dir).stratified(check, 0)
        agreement = compare_with_torch(reference, path, _images(test))
        result |= {"checked_on": f"{len(test)} {dataset} test images", **agreement.to_dict(),
                   "tolerance": tolerance}

    def render(r: dict) -> None:
        table = Table(title=f"{r['model']} -> {r['onnx']}", show_header=False)
        table.add_row("size", f"{r['bytes'] / 1024:,.0f} KiB (opset {r['opset']})")
        table.add_row("numbers", r["quantization"])
        if "checked_on" in r:
            table.add_row("checked on", r["checked_on"])
            table.add_row("same predictions", f"{100 * r['same_predictions']:.2f} %")
            table.add_row("largest length difference",
                          f"{r['max_length_difference']:.2e} (tolerance {r['tolerance']:.0e})")
        console.print(table)

    emit(result, as_json, render)


def _images(dataset):
    """The dataset's images as the network reads them, one tensor ``[N, C, H, W]``."""
    import torch

    from capslab.data import BatchLoader

    return torch.cat([x for x, _ in BatchLoader(dataset, 256, shuffle=False)]).float()


def register(app: typer.Typer) -> None:
    app.command("export")(export)
