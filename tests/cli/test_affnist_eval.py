"""Sabour et al.'s affNIST test: ``capslab train --dataset mnist --pad-to 40`` (MNIST placed
at random on a 40x40 black canvas each epoch, centred for evaluation), then ``capslab eval
--dataset affnist`` on a small file in affNIST's official layout; and the one-line error for a
network whose input size is not the dataset's."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from capslab.cli.main import app
from capslab.data import BatchLoader, ImageDataset, dataset_info, load_dataset
from capslab.data.testing import write_affnist
from capslab.errors import ConfigError
from capslab.models.pretrained import load_model
from capslab.train import TrainConfig
from capslab.train.loop import RunState, augmentation_shift, build_model, prepare_data, save_epoch
from capslab.train.policies import build_schedule

runner = CliRunner()
TINY = ("conv_channels=8", "primary_types=4", "class_dim=8", "decoder=false")
TEST_SUBSET = 300


def invoke_ok(*args: str) -> str:
    res = runner.invoke(app, list(args))
    assert res.exit_code == 0, res.output
    return res.stdout


@pytest.fixture(scope="module")
def padded_run(mnist_root, tmp_path_factory):
    """A tiny CapsNet trained by ``capslab train --pad-to 40`` on 1,000 MNIST images."""
    out = tmp_path_factory.mktemp("padded")
    options = [arg for opt in TINY for arg in ("--model-opt", opt)]
    summary = json.loads(invoke_ok(
        "train", "--dataset", "mnist", "--pad-to", "40", *options, "--epochs", "2",
        "--batch-size", "32", "--lr", "3e-3", "--subset", "1000", "--test-subset", str(TEST_SUBSET),
        "--seed", "0", "--device", "cpu", "--out", str(out), "--json"))
    return out / "best.pt", summary


def test_padded_training_learns_and_records_its_canvas(padded_run):
    path, summary = padded_run
    assert summary["best_test_accuracy"] > 0.3  # on centred 40x40 test digits; chance is 0.1
    model = load_model(path)
    assert tuple(model.image_shape) == (1, 40, 40)
    assert model.pretrained_cfg["settings"]["pad_to"] == 40
    assert model.pretrained_cfg["mean"] == pytest.approx(list(dataset_info("mnist").padded(40).mean))
    assert model.pretrained_cfg["dataset_info"]["image_size"] == 40  # the info recorded: the canvas


def test_eval_pads_mnist_and_takes_affnist_as_it_is(padded_run, tmp_path):
    path, summary = padded_run
    common = ("--checkpoint", str(path), "--device", "cpu", "--json")
    mnist = json.loads(invoke_ok("eval", *common, "--test-subset", str(TEST_SUBSET)))
    assert mnist["dataset"] == "mnist" and mnist["padded_to"] == 40
    # the same centred test images the run evaluated its best epoch on
    assert mnist["test_accuracy"] == pytest.approx(summary["best_test_accuracy"], abs=1e-9)
    # those digits, upright, written in affNIST's official layout (column per image, row by row)
    test = load_dataset("mnist", "test").stratified(TEST_SUBSET, 0).padded(40)
    write_affnist(tmp_path / "affnist" / "test.mat.zip", test.images[:, 0].numpy(),
                  test.labels.numpy())
    affnist = json.loads(invoke_ok("eval", *common, "--dataset", "affnist",
                                   "--data-dir", str(tmp_path)))
    assert affnist["dataset"] == "affnist" and affnist["trained_on"] == "mnist"
    assert affnist["padded_to"] is None and affnist["images"] == TEST_SUBSET
    # read back upright: exactly the accuracy on the same digits (a transposed reader loses it)
    assert affnist["test_accuracy"] == pytest.approx(mnist["test_accuracy"], abs=1e-9)
    text = invoke_ok("eval", "--checkpoint", str(path), "--device", "cpu", "--test-subset", "20")
    assert "20 images padded to 40x40" in text


def test_a_28x28_network_on_affnist_is_one_line_saying_how_to_fix_it(tmp_path):
    out = tmp_path / "run"
    config = TrainConfig(model="capsnet", model_options={"conv_channels": 8, "primary_types": 2},
                         dataset="mnist", epochs=1, out=str(out))
    net = build_model(config, dataset_info("mnist"))
    state = RunState()
    state.add({"epoch": 1, "test_accuracy": 0.5, "test_loss": 0.5})
    schedule = build_schedule(config.policy, 1, 64, config.batch_size, config.lr)
    save_epoch(out, config, net, torch.optim.Adam(net.parameters()), schedule, state, True)
    res = runner.invoke(app, ["eval", "--checkpoint", str(out / "best.pt"), "--dataset", "affnist"])
    assert res.exit_code == 2 and "Traceback" not in res.output
    assert len(res.output.strip().splitlines()) == 1
    message = res.output
    assert "is a model for images (1, 28, 28) with 10 classes; affnist has (1, 40, 40)" in message
    assert "train on mnist placed on a 40x40 canvas (capslab train --pad-to 40" in message


def test_pad_to_places_training_images_anywhere_on_the_canvas():
    config = TrainConfig(dataset="mnist", pad_to=40, out=None)
    assert augmentation_shift(config) == 6 and augmentation_shift(TrainConfig(out=None)) == 2
    square = torch.zeros(64, 1, 28, 28, dtype=torch.uint8)
    square[:, :, :, :] = 255  # the whole 28x28 image lit: its placement is its bounding box
    ds = ImageDataset(square, torch.arange(64) % 10, dataset_info("mnist")).padded(40)
    assert ds.images.shape == (64, 1, 40, 40) and ds.info.image_size == 40
    assert torch.equal(ds.images[0, 0, 6:34, 6:34], square[0, 0])  # centred when evaluated
    corners = set()
    loader = BatchLoader(ds, 64, augment=True, max_shift=augmentation_shift(config), seed=1)
    for _ in range(3):  # a new placement each epoch
        images, _ = next(iter(loader))
        lit = images[:, 0] > 0
        assert torch.all(lit.sum(dim=(1, 2)) == 28 * 28)  # never cut by the canvas' edge
        rows, cols = lit.any(dim=2).float().argmax(1), lit.any(dim=1).float().argmax(1)
        corners |= set(zip(rows.tolist(), cols.tolist(), strict=True))
    assert {r for r, _ in corners} == set(range(13)) == {c for _, c in corners}


def test_pad_to_must_be_larger_than_the_images(mnist_root):
    with pytest.raises(ConfigError, match="pad_to 28 must be larger than the 28x28 images of mnist"):
        TrainConfig(dataset="mnist", pad_to=28)
    config = TrainConfig(dataset="mnist", pad_to=36, subset=20, test_subset=10, out=None)
    train_set, eval_set = prepare_data(config)
    assert train_set.images.shape[1:] == eval_set.images.shape[1:] == (1, 36, 36)
    assert np.isclose(train_set.info.mean[0], 0.1307 * 28**2 / 36**2)


def test_every_command_reading_a_checkpoints_data_centres_it_on_the_canvas(padded_run, tmp_path):
    from capslab.studies.quantize import load_test_split

    path, summary = padded_run
    model = load_model(path)
    name, test = load_test_split(model, None, None, 50, str(path))  # study quantize, bitwidths
    assert name == "mnist" and tuple(test.images.shape[1:]) == (1, 40, 40)
    study = json.loads(invoke_ok("study", "quantize", "--checkpoint", str(path), "--bits", "8",
                                 "--test-subset", "100", "--device", "cpu",
                                 "--out", str(tmp_path / "q"), "--json"))
    assert study["float"]["test_accuracy"] > 0.3  # the padded network scores on padded digits, not on 28x28 ones
    onnx = json.loads(invoke_ok("export", str(path), "--out", str(tmp_path / "n.onnx"),
                                "--check", "20", "--json"))
    assert onnx["checked_on"].startswith("20 mnist") and onnx["same_predictions"]
