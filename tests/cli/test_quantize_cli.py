"""`capslab eval --weight-bits/--activation-bits/--routing-bits` and `capslab study quantize`
on a tiny CapsNet trained for one epoch on 500 MNIST images: the numbers printed are those of
the Python API, the study writes its table, JSON and plot, bad bit widths are one line."""

from __future__ import annotations

import csv
import json

import pytest
import torch
from helpers import fit_and_score, mnist_subsets
from typer.testing import CliRunner

from capslab.cli.main import app
from capslab.data import BatchLoader, dataset_info, load_dataset, stratified_subset
from capslab.evaluation import evaluate
from capslab.quantize import QuantizationSettings, evaluate_quantized, quantize_model
from capslab.train.config import TrainConfig
from capslab.train.loop import RunState, build_model, save_epoch
from capslab.train.policies import build_schedule

runner = CliRunner()
LEARNING_CAPSNET = {"conv_channels": 8, "primary_types": 4, "primary_dim": 4, "class_dim": 6}


@pytest.fixture(scope="module")
def trained(mnist_root, tmp_path_factory):
    """A tiny capsnet trained for one epoch, saved by the training loop's ``save_epoch``."""
    out = tmp_path_factory.mktemp("run")
    config = TrainConfig(model="capsnet", model_options=LEARNING_CAPSNET, dataset="mnist",
                         epochs=1, batch_size=32, seed=0, out=str(out))
    torch.manual_seed(0)
    net = build_model(config, dataset_info("mnist"))
    train, test = mnist_subsets(500, 100)
    acc = fit_and_score(net, lambda e: BatchLoader(train, 32, shuffle=True, seed=e), test,
                        epochs=1, lr=1e-2)
    state = RunState()
    state.add({"epoch": 1, "test_accuracy": acc, "test_loss": 0.0})
    schedule = build_schedule(config.policy, config.epochs, 500, config.batch_size, config.lr)
    save_epoch(out, config, net, torch.optim.Adam(net.parameters()), schedule, state, is_best=True)
    return out / "best.pt", net.eval()


def first_test_images(n: int):
    test = load_dataset("mnist", "test")
    return BatchLoader(test.subset(stratified_subset(test.labels, n, 0)), 256, shuffle=False)


def invoke_ok(*args: str) -> str:
    res = runner.invoke(app, list(args))
    assert res.exit_code == 0, res.output
    return res.stdout


def test_eval_reports_the_quantized_accuracy_beside_the_float_one(trained):
    path, net = trained
    out = json.loads(invoke_ok("eval", "--checkpoint", str(path), "--test-subset", "100",
                               "--device", "cpu", "--weight-bits", "3", "--routing-bits", "4",
                               "--json"))
    loader = first_test_images(100)
    assert out["test_accuracy"] == evaluate(net, loader)["test_accuracy"]  # float, as before
    settings = QuantizationSettings(weight_bits=3, routing_bits=4)
    expected = evaluate(quantize_model(net, settings), loader)
    q = out["quantized"]
    assert (q["weight_bits"], q["activation_bits"], q["routing_bits"]) == (3, None, 4)
    assert q["groups"] == ["conv", "primary", "capsule", "decoder"]
    assert q["test_accuracy"] == expected["test_accuracy"]
    assert q["test_loss"] == pytest.approx(expected["test_loss"], rel=1e-6)
    assert q["test_loss"] != pytest.approx(out["test_loss"], rel=1e-4)  # it is quantized
    assert q["accuracy_drop"] == pytest.approx(out["test_accuracy"] - q["test_accuracy"])
    assert q["tensors"] == 6 and q["parameters"] == sum(
        p.numel() for n, p in net.named_parameters() if n.endswith("weight"))

    text = invoke_ok("eval", "--checkpoint", str(path), "--test-subset", "100", "--device", "cpu",
                     "--weight-bits", "8", "--activation-bits", "8", "--quantize-groups", "capsule")
    assert "mnist test accuracy" in text
    assert "quantized, 8-bit weights, 8-bit activations (capsule), per-image activation scales:" in text
    acc = evaluate_quantized(net, loader, weight_bits=8, activation_bits=8, groups=("capsule",))
    assert f"{100 * acc['test_accuracy']:.2f}%" in text.split("quantized")[1]


@pytest.mark.parametrize("flags, message", [
    (["--weight-bits", "1"], "weight_bits must be an integer from 2 to 16, got 1"),
    (["--activation-bits", "17"], "activation_bits must be an integer from 2 to 16, got 17"),
    (["--weight-bits", "8", "--quantize-groups", "capsules"], "groups[0] must be one of"),
    (["--quantize-groups", "capsule"], "--quantize-groups needs --weight-bits"),
])
def test_eval_refuses_bad_quantization_in_one_line(trained, flags, message):
    path, _ = trained
    res = runner.invoke(app, ["eval", "--checkpoint", str(path), "--device", "cpu", *flags])
    assert res.exit_code == 2 and message in res.output, res.output
    assert len(res.output.strip().splitlines()) == 1 and "Traceback" not in res.output


def test_study_quantize_writes_table_json_and_plot(trained, tmp_path):
    path, net = trained
    out = tmp_path / "study"
    result = json.loads(invoke_ok("study", "quantize", "--checkpoint", str(path), "--bits", "2,8",
                                  "--groups", "capsule,routing,all", "--test-subset", "60",
                                  "--device", "cpu", "--out", str(out), "--json"))
    assert result["bits"] == [8, 2] and result["images"] == 60 and result["skipped"] == {}
    assert [(r["line"], r["bits"]) for r in result["rows"]] == [
        ("capsule", 8), ("capsule", 2), ("routing", 8), ("routing", 2), ("all", 8), ("all", 2)]
    loader = first_test_images(60)
    assert result["float"]["test_accuracy"] == evaluate(net, loader)["test_accuracy"]
    row = result["rows"][1]
    assert (row["weight_bits"], row["routing_bits"], row["groups"]) == (2, None, "capsule")
    assert row["test_accuracy"] == evaluate_quantized(net, loader, weight_bits=2,
                                                      groups=("capsule",))["test_accuracy"]
    routing = result["rows"][3]
    assert (routing["weight_bits"], routing["routing_bits"], routing["tensors"]) == (None, 2, 0)
    everything = result["rows"][5]
    assert (everything["weight_bits"], everything["routing_bits"], everything["tensors"]) == (2, 2, 6)

    for name in ("quantize.csv", "quantize.md", "quantize.json", "quantize.png"):
        assert (out / name).stat().st_size > 0, name
    saved = json.loads((out / "quantize.json").read_text())
    assert saved["format"] == "capslab-quantize-study" and saved["rows"] == result["rows"]
    assert saved["float"] == result["float"] and saved["model"] == "capsnet"
    with open(out / "quantize.csv") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 6 and float(rows[1]["test_accuracy"]) == row["test_accuracy"]
    md = (out / "quantize.md").read_text()
    assert "| line | float | 8 bits | 2 bits |" in md
    assert f"| capsule | {100 * result['float']['test_accuracy']:.2f} | " in md


def test_study_quantize_skips_lines_the_network_lacks_and_refuses_bad_bits(trained, tmp_path):
    path, _ = trained
    res = runner.invoke(app, ["study", "quantize", "--checkpoint", str(path), "--bits", "1,8",
                              "--out", str(tmp_path / "x")])
    assert res.exit_code == 2 and "bits must be an integer from 2 to 16, got 1" in res.output
    assert len(res.output.strip().splitlines()) == 1 and not (tmp_path / "x").exists()
    res = runner.invoke(app, ["study", "quantize", "--checkpoint", str(path), "--groups", "skip"])
    assert res.exit_code == 2 and "lines[0] must be one of" in res.output


def test_study_on_a_network_without_a_decoder_skips_that_line(tmp_path, mnist_root):
    out = tmp_path / "run"
    config = TrainConfig(model="capsnet", model_options={**LEARNING_CAPSNET, "decoder": False},
                         dataset="mnist", epochs=1, out=str(out))
    net = build_model(config, dataset_info("mnist"))
    state = RunState()
    state.add({"epoch": 1, "test_accuracy": 0.1, "test_loss": 1.0})
    schedule = build_schedule(config.policy, 1, 64, config.batch_size, config.lr)
    save_epoch(out, config, net, torch.optim.Adam(net.parameters()), schedule, state, is_best=True)
    text = invoke_ok("study", "quantize", "--checkpoint", str(out / "best.pt"), "--bits", "4",
                     "--groups", "decoder,capsule", "--test-subset", "20", "--device", "cpu",
                     "--out", str(tmp_path / "study"), "--quiet")
    assert "decoder: skipped (CapsNet has no decoder weights)" in text
    saved = json.loads((tmp_path / "study" / "quantize.json").read_text())
    assert [r["line"] for r in saved["rows"]] == ["capsule"]


def test_the_bit_width_search_steps_on_a_made_up_accuracy():
    from capslab.studies.bitwidths import search_bit_widths

    # accuracy 0.9 minus 0.01 per bit below 6 in layer "a", below 3 in "b"; routing free to 4
    def accuracy(s):
        widths = s.layer_bits
        loss = 0.01 * max(0, 6 - widths["a"]) + 0.01 * max(0, 3 - widths["b"])
        loss += 0.05 * (s.routing_bits is not None and s.routing_bits < 4)
        return 0.9 - loss

    found, steps = search_bit_widths(accuracy, ["a", "b"], 0.9, 0.015, max_bits=8)
    # uniform: 6 bits cost nothing, 5 bits cost 0.01 (kept), 4 bits 0.02 (not)
    assert found.layer_bits == {"a": 5, "b": 3}  # then b (last) down to 3, a stays (4 is over)
    assert found.routing_bits == 4
    assert all(s["kept"] == (s["accuracy"] >= 0.9 - 0.015) for s in steps)
    assert accuracy(found) >= 0.9 - 0.015


def test_bitwidths_command_writes_its_files(trained, tmp_path):
    checkpoint, net = trained
    out = tmp_path / "bits"
    result = runner.invoke(app, ["study", "bitwidths", "--checkpoint", str(checkpoint),
                                 "--tolerance", "1", "--val-size", "200", "--test-subset", "100",
                                 "--max-bits", "8", "--out", str(out), "--json"])
    assert result.exit_code == 0, result.output
    r = json.loads(result.stdout)
    assert {w["bits"] for w in r["widths"].values()} <= set(range(2, 9))
    assert r["validation"]["quantized"] >= r["validation"]["float"] - 0.01
    mem = r["weight_memory_bytes"]
    assert mem["found"] <= mem["8-bit"] < mem["float32"]
    assert "decoder" not in " ".join(r["widths"])  # the decoder does not score classes
    hw = r["capsacc_memory"]  # the hardware model at the widths found, tensor by tensor
    assert [p["tensor"] for p in hw["layers"]] == list(r["widths"])
    assert [p["bits"] for p in hw["layers"]] == [w["bits"] for w in r["widths"].values()]
    assert hw["found_bytes"] < hw["uniform_bytes"] or max(p["bits"] for p in hw["layers"]) >= 8
    assert "CapsAcc weight memory" in (out / "bitwidths.md").read_text()
    for name in ("bitwidths.json", "bitwidths.md", "bitwidths.png"):
        assert (out / name).exists()
    bad = runner.invoke(app, ["study", "bitwidths", "--checkpoint", str(checkpoint),
                              "--min-bits", "9", "--max-bits", "8", "--out", str(tmp_path / "x")])
    assert bad.exit_code == 2 and "min_bits <= max_bits" in bad.output


def test_the_search_scores_on_the_split_training_held_out(mnist_root):
    from capslab.studies.bitwidths import validation_split
    from capslab.train.loop import hold_out

    train = load_dataset("mnist", "train").stratified(600, 0)
    val, source = validation_split(train, {"val_size": 50, "seed": 3}, 200)
    assert source == "held out in training"
    assert torch.equal(val.labels, hold_out(train, 50, 3)[1].labels) and len(val) == 50
    val, source = validation_split(train, {"val_size": None, "seed": 3}, 200)
    assert len(val) == 200 and source.startswith("training images")


def test_eval_in_the_accelerator_mode(trained):
    checkpoint, net = trained
    base = ["eval", "--checkpoint", str(checkpoint), "--test-subset", "100", "--weight-bits", "8"]
    r = json.loads(invoke_ok(*base, "--activation-bits", "8", "--routing-bits", "8",
                             "--calibrate", "64", "--power-of-two", "--json"))
    q = r["quantized"]
    assert "calibrated activation scales" in q["description"] and "power-of-two" in q["description"]
    assert abs(q["test_accuracy"] - r["test_accuracy"]) <= 0.03
    bad = runner.invoke(app, [*base, "--calibrate", "64"])
    assert bad.exit_code == 2 and "give --activation-bits too" in bad.output


def test_a_calibration_set_of_another_shape_is_refused(trained):
    from capslab.errors import ConfigError
    from capslab.quantize import calibrate

    _, net = trained
    with pytest.raises(ConfigError, match=r"calibration images of shape \(4, 1, 32, 32\)"):
        calibrate(net, [torch.rand(4, 1, 32, 32)], weight_bits=8, activation_bits=8)
    with pytest.raises(ConfigError, match="the calibration set was empty"):
        calibrate(net, [], weight_bits=8, activation_bits=8)
