"""ONNX export: every family of CapsLab network runs in onnxruntime with PyTorch's results."""

from __future__ import annotations

import json

import numpy as np
import onnx
import pytest
import torch
from typer.testing import CliRunner

from capslab.cli.main import app
from capslab.export import LENGTH_TOLERANCE, compare_with_torch, export_onnx, onnx_session
from capslab.genotype import DEEPCAPS_GENOTYPE, LayerKind
from capslab.models import create_model
from tests.test_newer_genes import efficient

TINY = {"conv_channels": 16, "primary_types": 4}
NETWORKS = {
    "capsnet": ("capsnet", TINY),
    "efficient-capsnet": ("efficient-capsnet", {}),
    "deepcaps": ("deepcaps", {}),
    "mocapsnet": ("mocapsnet", {**TINY, "num_blocks": 2}),
    "rescapsnet": ("rescapsnet", {**TINY, "num_blocks": 1, "routing": "sda"}),
    "genotype-deepcaps": ("genotype", {"genotype": DEEPCAPS_GENOTYPE.to_nascaps(),
                                       "image_size": 28}),
    "genotype-newer-genes": ("genotype", {"genotype": efficient(LayerKind.MOMENTUM, 2).to_dict()}),
}


@pytest.mark.parametrize("name", list(NETWORKS))
def test_the_exported_network_computes_what_pytorch_does(name, tmp_path):
    model_name, options = NETWORKS[name]
    torch.manual_seed(0)
    model = create_model(model_name, **options).eval()
    path = export_onnx(model, tmp_path / f"{name}.onnx")
    onnx.checker.check_model(onnx.load(str(path)))
    # batch sizes on both sides of every batch-dependent CPU path (GEMM PrimaryCaps up to a
    # few images, RBA from the poses from 8): the file has one graph for all
    images = torch.rand(19, *model.image_shape)
    for batch in (1, 7, 19):
        agreement = compare_with_torch(model, path, images[:batch], batch_size=batch)
        assert agreement.same_predictions == 1.0
        assert agreement.max_length_difference < LENGTH_TOLERANCE
    capsules = onnx_session(path).run(["capsules"], {"images": images[:3].numpy()})[0]
    with torch.no_grad():
        expected = model(images[:3]).caps.numpy()
    np.testing.assert_allclose(capsules, expected, atol=LENGTH_TOLERANCE)


def test_export_leaves_the_model_as_it_was(tmp_path):
    model = create_model("capsnet", **TINY).train()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    export_onnx(model, tmp_path / "m.onnx")
    assert model.training
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


@pytest.fixture(scope="module")
def checkpoint(mnist_root, tmp_path_factory):
    """A tiny CapsNet trained one epoch on 200 MNIST images by ``capslab.train``."""
    from capslab.train import TrainConfig, train

    out = tmp_path_factory.mktemp("run")
    train(TrainConfig(model="capsnet", model_options=TINY, dataset="mnist", subset=200,
                      test_subset=100, epochs=1, batch_size=32, out=str(out), plots=False,
                      seed=0), progress=False)
    return out / "last.pt"


def test_export_command(checkpoint, tmp_path):
    out = tmp_path / "capsnet.onnx"
    result = CliRunner().invoke(app, ["export", str(checkpoint), "--out",
                                      str(out), "--check", "64", "--json"])
    assert result.exit_code == 0, result.output
    r = json.loads(result.output)
    assert out.exists() and r["bytes"] == out.stat().st_size
    assert r["same_predictions"] == 1.0 and r["max_length_difference"] < LENGTH_TOLERANCE
    assert r["checked_on"] == "64 mnist test images"
    missing = CliRunner().invoke(app, ["export", str(tmp_path / "nope.pt"), "--out", str(out)])
    assert missing.exit_code == 2 and "Traceback" not in missing.output


def test_an_operation_onnx_cannot_express_is_one_line(tmp_path):
    from types import SimpleNamespace

    from capslab.errors import ConfigError

    class Unexportable(torch.nn.Module):
        image_shape = (1, 4, 4)

        def __init__(self):
            super().__init__()
            self.scale = torch.nn.Parameter(torch.ones(()))

        def forward(self, x):
            v = torch.expm1(x.flatten(1)[:, :10] * self.scale)  # no ONNX operator for expm1
            return SimpleNamespace(lengths=v, caps=v[..., None])

    with pytest.raises(ConfigError, match="Unexportable cannot be written as ONNX opset 17: .*expm1"):
        export_onnx(Unexportable(), tmp_path / "x.onnx")
    assert not (tmp_path / "x.onnx").exists()


@pytest.mark.parametrize("power_of_two", [False, True])
def test_the_qdq_form_computes_what_the_quantized_network_does(tmp_path, power_of_two):
    from capslab.errors import ConfigError
    from capslab.quantize import QuantizationSettings, calibrate, quantize_model

    torch.manual_seed(0)
    model = create_model("capsnet", **TINY).eval()
    calibration = torch.rand(32, *model.image_shape)
    settings = calibrate(model, [calibration], weight_bits=8, activation_bits=6, routing_bits=8,
                         groups=("conv", "primary", "capsule"), power_of_two=power_of_two)
    path = export_onnx(model, tmp_path / "q.onnx", quantization=settings)
    graph = onnx.load(str(path)).graph
    kinds = [n.op_type for n in graph.node]
    assert kinds.count("QuantizeLinear") >= 6 and kinds.count("DequantizeLinear") >= 6
    reference = quantize_model(model, settings)
    agreement = compare_with_torch(reference, path, torch.rand(19, *model.image_shape), 19)
    assert agreement.same_predictions == 1.0
    assert agreement.max_length_difference < 1e-4
    # the model itself is left float
    with torch.no_grad():
        x = torch.rand(2, *model.image_shape)
        assert not torch.equal(model(x).lengths, reference(x).lengths)
    with pytest.raises(ConfigError, match="stores 8 bits at most"):
        export_onnx(model, tmp_path / "w.onnx", quantization=settings.replace(weight_bits=12))
    with pytest.raises(ConfigError, match="cannot be written as QDQ: calibrate"):
        export_onnx(model, tmp_path / "d.onnx",
                    quantization=QuantizationSettings(weight_bits=8, activation_bits=8))


def test_export_command_quantized(checkpoint, tmp_path):
    out = tmp_path / "q.onnx"
    result = CliRunner().invoke(app, ["export", str(checkpoint), "--out",
                                      str(out), "--quantized", "--bits", "8", "--calibrate", "64",
                                      "--check", "64", "--json"])
    assert result.exit_code == 0, result.output
    r = json.loads(result.output)
    assert "calibrated activation scales" in r["quantization"]
    assert r["same_predictions"] == 1.0 and r["max_length_difference"] < r["tolerance"]
    kinds = [n.op_type for n in onnx.load(str(out)).graph.node]
    assert "QuantizeLinear" in kinds
