"""What quantization-aware training recovers over post-training quantization, at 4 bits and
below, on a small CapsNet (the test suite's: 8 stem channels, 4 primary types of 4-D).

    .venv/bin/python benchmarks/qat_recovery.py

The network is trained one epoch in float on 1,000 MNIST images, then fine-tuned one more epoch
twice from the same weights and the same batch order: in float, and quantization-aware at N
bits (weights and layer inputs; routing float). Both are then quantized post training to N-bit
weights and inputs (conv, primary, capsule groups, per-image input scales) and scored on 200
test images. Writes ``benchmarks/results/qat_recovery.json``; docs/quantization.md quotes it.
"""

import copy
import json
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from helpers import fit, fit_and_score, mnist_subsets  # noqa: E402

from capslab.data import BatchLoader  # noqa: E402
from capslab.device import cpu_name  # noqa: E402
from capslab.evaluation import evaluate  # noqa: E402
from capslab.io import atomic_write_text  # noqa: E402
from capslab.models import create_model  # noqa: E402
from capslab.quantize import (  # noqa: E402
    QuantizationAwareTraining,
    QuantizationSettings,
    evaluate_quantized,
)

torch.manual_seed(0)
train, test = mnist_subsets(1000, 200)
net = create_model("capsnet", conv_channels=8, primary_types=4, primary_dim=4, class_dim=6)
fit_and_score(net, lambda e: BatchLoader(train, 32, shuffle=True, seed=e), test, epochs=1, lr=1e-2)
loader = BatchLoader(test, 100, shuffle=False)
rows = []
for bits in (4, 3, 2):
    row = {"bits": bits}
    for aware in (False, True):
        torch.manual_seed(1)
        model = copy.deepcopy(net)
        qat = QuantizationAwareTraining(model, bits, routing_bits=0) if aware else None
        fit(model, lambda e: BatchLoader(train, 32, shuffle=True, seed=5), epochs=1, lr=1e-3,
            qat=qat)
        if qat:
            qat.close()
        settings = QuantizationSettings(weight_bits=bits, activation_bits=bits,
                                        groups=("conv", "primary", "capsule"))
        name = "qat" if aware else "ptq"
        row[f"{name}_quantized_accuracy"] = evaluate_quantized(model, loader, settings)["test_accuracy"]
        row[f"{name}_float_accuracy"] = evaluate(model, loader)["test_accuracy"]
    rows.append(row)
    print(row, flush=True)
out = Path(__file__).parent / "results" / "qat_recovery.json"
atomic_write_text(out, json.dumps({"cpu": cpu_name(), "rows": rows}, indent=2) + "\n")
print(f"written {out}")
