"""Inference images/s of an exported network in onnxruntime against PyTorch, on this CPU.

    .venv/bin/python benchmarks/onnx_inference.py [--models capsnet,efficient-capsnet] [--seconds 3]

Each model (untrained weights: speed does not depend on them) is exported with
``capslab.export.export_onnx`` and timed at batch 1 and 128: PyTorch in eval mode without
gradients (CapsLab's CPU fast paths on), onnxruntime's CPU provider with as many threads as
PyTorch. Writes ``benchmarks/results/onnx_inference.json``; docs/benchmarks.md quotes it.
"""

import argparse
import json
import tempfile
from pathlib import Path

import torch

from capslab.device import cpu_name
from capslab.export import export_onnx, images_per_second, onnx_session
from capslab.io import atomic_write_text
from capslab.models import create_model

parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
parser.add_argument("--models", default="capsnet,efficient-capsnet")
parser.add_argument("--seconds", type=float, default=3.0)
args = parser.parse_args()

rows = []
with tempfile.TemporaryDirectory() as tmp:
    for name in args.models.split(","):
        torch.manual_seed(0)
        model = create_model(name).eval()
        path = export_onnx(model, Path(tmp) / f"{name}.onnx")
        session = onnx_session(path, threads=torch.get_num_threads())
        for batch in (1, 128):
            images = torch.rand(batch, *model.image_shape)

            def run_torch(x, model=model):
                with torch.no_grad():
                    return model(x)

            torch_rate = images_per_second(run_torch, images, args.seconds)
            ort_rate = images_per_second(
                lambda x, s=session: s.run(["lengths"], {"images": x}), images.numpy(),
                args.seconds)
            rows.append({"model": name, "batch": batch, "torch_images_per_s": torch_rate,
                         "onnxruntime_images_per_s": ort_rate, "ratio": ort_rate / torch_rate})
            print(f"{name:18s} batch {batch:3d}: PyTorch {torch_rate:8.1f}  onnxruntime "
                  f"{ort_rate:8.1f} img/s  ({ort_rate / torch_rate:.2f}x)", flush=True)

out = Path(__file__).parent / "results" / "onnx_inference.json"
atomic_write_text(out, json.dumps({"cpu": cpu_name(), "threads": torch.get_num_threads(),
                                   "rows": rows}, indent=2) + "\n")
print(f"written {out}")
