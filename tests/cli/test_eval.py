"""`capslab eval --checkpoint` and `capslab info --checkpoint`: the dataset recorded in the
checkpoint by default, --dataset to override it, --json, and one-line errors with exit code 2."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from capslab.cli.main import app
from capslab.data import BatchLoader, dataset_info, load_dataset, stratified_subset
from capslab.evaluation import evaluate
from capslab.train.config import TrainConfig
from capslab.train.loop import RunState, build_model, save_epoch
from capslab.train.policies import build_schedule

runner = CliRunner()
TINY_CAPSNET = {"conv_channels": 8, "primary_types": 2, "primary_dim": 4, "class_dim": 6}


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """A tiny capsnet saved after "epoch 2" by the training loop's own ``save_epoch``."""
    out = tmp_path_factory.mktemp("run")
    config = TrainConfig(model="capsnet", model_options=TINY_CAPSNET, dataset="mnist", epochs=3,
                         batch_size=32, seed=5, out=str(out))
    net = build_model(config, dataset_info("mnist"))
    state = RunState()
    for epoch, acc in ((1, 0.25), (2, 0.5)):
        state.add({"epoch": epoch, "test_accuracy": acc, "test_loss": 1.0 - acc})
    schedule = build_schedule(config.policy, config.epochs, 64, config.batch_size, config.lr)
    save_epoch(out, config, net, torch.optim.Adam(net.parameters()), schedule, state, is_best=True)
    return out / "best.pt", net.eval()


def invoke_ok(*args: str) -> str:
    res = runner.invoke(app, list(args))
    assert res.exit_code == 0, res.output
    return res.stdout


def expected_result(net, dataset: str, n: int) -> dict:
    test = load_dataset(dataset, "test")
    test = test.subset(stratified_subset(test.labels, n, 0))
    return evaluate(net, BatchLoader(test, 256, shuffle=False))


def test_eval_uses_the_recorded_dataset_and_the_saved_weights(mnist_root, run):
    path, net = run
    out = json.loads(invoke_ok("eval", "--checkpoint", str(path), "--test-subset", "40",
                               "--device", "cpu", "--json"))
    assert out["dataset"] == "mnist" and out["trained_on"] == "mnist" and out["images"] == 40
    assert out["model"] == "capsnet" and out["epoch"] == 2 and out["recorded_test_accuracy"] == 0.5
    expected = expected_result(net, "mnist", 40)
    assert out["test_accuracy"] == expected["test_accuracy"]
    assert out["test_loss"] == pytest.approx(expected["test_loss"], rel=1e-6)


def test_eval_on_another_dataset_of_the_same_shape(mnist_root, run):
    path, net = run
    if not (mnist_root / "fashion-mnist").exists():
        pytest.skip("Fashion-MNIST originals not found")
    out = json.loads(invoke_ok("eval", "--checkpoint", str(path), "--dataset", "fashion-mnist",
                               "--test-subset", "30", "--device", "cpu", "--json"))
    assert out["dataset"] == "fashion-mnist" and out["trained_on"] == "mnist"
    assert out["test_loss"] == pytest.approx(expected_result(net, "fashion-mnist", 30)["test_loss"], rel=1e-6)
    text = invoke_ok("eval", "--checkpoint", str(path), "--test-subset", "30", "--device", "cpu")
    assert "mnist test accuracy" in text and "30 images, epoch 2" in text


def test_eval_errors_are_one_line_with_exit_code_2(run, tmp_path):
    path, _ = run
    res = runner.invoke(app, ["eval", "--checkpoint", str(path), "--dataset", "cifar10"])
    assert res.exit_code == 2 and "(1, 28, 28) with 10 classes; cifar10 has (3, 32, 32)" in res.output
    for bad, message in ((tmp_path / "missing.pt", "does not exist"),
                         (tmp_path / "junk.pt", "not a CapsLab checkpoint")):
        if bad.name == "junk.pt":
            bad.write_bytes(b"junk")
        res = runner.invoke(app, ["eval", "--checkpoint", str(bad), "--json"])
        assert res.exit_code == 2 and message in res.output
        assert len(res.output.strip().splitlines()) == 1 and "Traceback" not in res.output


def test_info_describes_the_checkpoints_network_and_training(run):
    path, net = run
    out = json.loads(invoke_ok("info", "--checkpoint", str(path), "--json"))
    assert out["model"] == "capsnet" and out["dataset"] == "mnist" and out["input_shape"] == [1, 28, 28]
    assert out["parameters"] == sum(p.numel() for p in net.parameters())
    rows = {r["name"]: r for r in out["layers"]}
    assert rows["primary"]["output_shape"] == [2 * 36, 4] and rows["class_caps"]["output_shape"] == [10, 6]
    assert out["options"]["primary_types"] == 2
    ckpt = out["checkpoint"]
    assert (ckpt["epoch"], ckpt["test_accuracy"], ckpt["best_epoch"], ckpt["best_accuracy"]) == (2, 0.5, 2, 0.5)
    assert ckpt["settings"]["batch_size"] == 32 and ckpt["settings"]["seed"] == 5
    assert ckpt["path"] == str(path) and ckpt["classes"][:2] == ["0", "1"]
    text = invoke_ok("info", "--checkpoint", str(path))
    assert "epoch 2, test accuracy 50.00% (best 50.00% at epoch 2)" in text
    assert "batch_size=32" in text and "class_caps" in text


def test_info_checkpoint_refuses_model_flags_and_bad_files(run, tmp_path: Path):
    path, _ = run
    res = runner.invoke(app, ["info", "--checkpoint", str(path), "--model", "deepcaps", "--routing", "sda"])
    assert res.exit_code == 2 and "drop --model, --routing" in res.output
    res = runner.invoke(app, ["info", "--checkpoint", str(tmp_path / "none.pt")])
    assert res.exit_code == 2 and "does not exist" in res.output
