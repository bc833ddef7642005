"""`--dataset PATH` on the command line: your own folder of images or .npz file trained on,
evaluated (also after the folder moved), loaded with capslab.load_model, searched; bad data is
one line with exit code 2 before anything is written."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
from helpers import SHAPE_CLASSES, shape_images, write_shape_folder
from PIL import Image
from typer.testing import CliRunner

import capslab
from capslab.cli.main import app

runner = CliRunner()
pytestmark = pytest.mark.usefixtures("isolated_data")

TINY = ["--model-opt", "conv_channels=8", "--model-opt", "primary_types=4",
        "--model-opt", "class_dim=4", "--model-opt", "decoder=false"]


def invoke(*args: str):
    return runner.invoke(app, [str(a) for a in args])


def _error_line(res) -> str:
    assert res.exit_code == 2, res.output
    lines = [line for line in res.output.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error:"), res.output
    return lines[0]


def _bad_data(tmp_path, case: str):
    if case == "missing":
        return tmp_path / "nowhere", "does not exist"
    if case == "labels out of range":
        x, y = shape_images(3, 20)
        np.savez(tmp_path / "bad.npz", x_train=x, y_train=y, x_test=x[:2], y_test=np.array([0, 7]))
        return tmp_path / "bad.npz", "label 7 at index 1, outside 0..2"
    root = write_shape_folder(tmp_path / "bad", per_class=3, size=20)
    if case == "empty class":
        (root / "zebra").mkdir()
        return root, "class folder .*zebra holds no image"
    if case == "mixed sizes":
        Image.new("L", (24, 24)).save(root / "box" / "big.png")
        return root, "images of different sizes: .*big.png is 24x24; .*--resize N"
    (root / "hbar" / "broken.png").write_bytes(b"\x89PNG not really")
    return root, "cannot read image .*broken.png"


@pytest.mark.parametrize("case", ["empty class", "mixed sizes", "unreadable", "labels out of range",
                                  "missing"])
def test_bad_data_is_one_line_and_nothing_is_written(tmp_path, case):
    import re

    path, message = _bad_data(tmp_path, case)
    out = tmp_path / "run"
    line = _error_line(invoke("train", "--dataset", path, "--epochs", "1", "--out", out, *TINY))
    assert re.search(message, line), line
    assert not out.exists()
    # the search refuses it the same way, before its run folder
    line = _error_line(invoke("search", "run", "--dataset", path, "--out", tmp_path / "search"))
    assert re.search(message, line) and not (tmp_path / "search").exists()


def test_train_eval_and_load_a_network_on_a_folder_of_images(tmp_path):
    root = write_shape_folder(tmp_path / "shapes", per_class=30, size=20)
    out = tmp_path / "run"
    res = invoke("train", "--dataset", root, "--epochs", "4", "--batch-size", "16", "--lr", "0.01",
                 "--device", "cpu", "--out", out, "--quiet", *TINY)
    assert res.exit_code == 0, res.output
    assert "3 classes (box, hbar, vbar), images 1x20x20; 72 training and 18 test images" in res.output
    assert "20% of each class held out" in res.output
    summary = json.loads((out / "summary.json").read_text())
    assert summary["best_test_accuracy"] > 0.7  # chance: 1/3
    assert summary["dataset"] == str(root) and summary["test_size"] == 18

    res = invoke("eval", "--checkpoint", out / "best.pt", "--device", "cpu", "--json")
    assert res.exit_code == 0, res.output
    result = json.loads(res.stdout)
    assert result["dataset"] == str(root) and result["images"] == 18
    assert result["test_accuracy"] == summary["best_test_accuracy"]

    moved = tmp_path / "elsewhere"
    shutil.move(root, moved)
    line = _error_line(invoke("eval", "--checkpoint", out / "best.pt", "--device", "cpu"))
    assert f"was trained on {root}, which does not exist any more" in line and "--dataset PATH" in line
    res = invoke("eval", "--checkpoint", out / "best.pt", "--dataset", moved, "--device", "cpu",
                 "--json")
    assert res.exit_code == 0 and json.loads(res.stdout)["test_accuracy"] == result["test_accuracy"]

    shutil.rmtree(moved)  # the checkpoint alone: its info is recorded
    net = capslab.load_model(out / "best.pt")
    cfg = net.pretrained_cfg
    assert cfg["classes"] == list(SHAPE_CLASSES) and cfg["input_shape"] == [1, 20, 20]
    assert cfg["dataset_info"]["num_classes"] == 3 and cfg["dataset_origin"]["format"] == "folder"
    assert cfg["dataset_info"]["mean"] == pytest.approx(cfg["mean"])


def test_eval_refuses_data_with_other_classes(tmp_path):
    root = write_shape_folder(tmp_path / "shapes", per_class=4, size=20)
    out = tmp_path / "run"
    res = invoke("train", "--dataset", root, "--epochs", "1", "--device", "cpu", "--out", out,
                 "--quiet", *TINY)
    assert res.exit_code == 0, res.output
    other = write_shape_folder(tmp_path / "other", per_class=4, size=20)
    (other / "vbar").rename(other / "zigzag")
    line = _error_line(invoke("eval", "--checkpoint", out / "last.pt", "--dataset", other))
    assert "trained on the classes box, hbar, vbar" in line and "box, hbar, zigzag" in line


def test_resize_brings_mixed_sizes_to_one(tmp_path):
    root = write_shape_folder(tmp_path / "mixed", per_class=4, size=16)
    Image.fromarray(shape_images(1, 24)[0][0]).save(root / "box" / "big.png")
    out = tmp_path / "run"
    res = invoke("train", "--dataset", root, "--resize", "20", "--epochs", "1", "--device", "cpu",
                 "--out", out, "--quiet", *TINY)
    assert res.exit_code == 0, res.output
    assert json.loads((out / "config.json").read_text())["dataset"] == f"{root}@20"
    res = invoke("eval", "--checkpoint", out / "last.pt", "--device", "cpu", "--json")
    assert res.exit_code == 0 and json.loads(res.stdout)["images"] == 3, res.output
    line = _error_line(invoke("train", "--dataset", f"{root}@20", "--resize", "20"))
    assert "already gives a size" in line
    line = _error_line(invoke("train", "--dataset", "mnist", "--resize", "32"))
    assert "applies to your own data" in line


def test_info_takes_an_npz_file(tmp_path):
    x, y = shape_images(4, 20)
    np.savez(tmp_path / "d.npz", images=x, labels=y, classes=np.array(SHAPE_CLASSES))
    res = invoke("info", "--dataset", tmp_path / "d.npz", *TINY, "--json")
    assert res.exit_code == 0, res.output
    assert json.loads(res.stdout)["input_shape"] == [1, 20, 20]


SMALL_SPACE = ["conv_layers=2,2", "kernels=3,5", "strides=2", "channels=4,8", "capsules=4,8",
               "conv_channel_exponents=3,4", "caps_layers=2,3", "families=sabour", "resizes=1",
               "class_dim=8"]


def test_a_search_on_your_own_data(tmp_path):
    root = write_shape_folder(tmp_path / "shapes", per_class=12, size=20)
    out = tmp_path / "search"
    space = [arg for item in SMALL_SPACE for arg in ("--space", item)]
    res = invoke("search", "run", "--dataset", root, "--generations", "0", "--population", "2",
                 "--epochs", "1", "--batch-size", "16", "--device", "cpu", "--workers", "1",
                 "--out", out, "--quiet", "--json", *space)
    assert res.exit_code == 0, res.output
    result = json.loads(res.stdout)
    assert result["evaluations"] == 2 and result["front"]
    saved = json.loads((out / "run.json").read_text())["config"]["training"]
    assert saved["dataset"] == str(root) and saved["val_size"] == 6  # 20% of its 29 training images


def test_datasets_shows_what_was_found_in_your_own_data(tmp_path):
    root = write_shape_folder(tmp_path / "shapes", per_class=5, size=16, test_per_class=2)
    res = invoke("datasets", root)
    assert res.exit_code == 0, res.output
    assert "3 classes (box, hbar, vbar), images 1x16x16; 15 training and 6 test images" in res.output
    assert "test split: the test/ folder" in res.output
    res = invoke("datasets", root, "--json")
    entry = json.loads(res.stdout)["custom"][str(root)]
    assert entry["num_classes"] == 3 and entry["origin"]["format"] == "folder"
    (root / "train" / "box" / "0000.png").write_bytes(b"junk")
    assert "0000.png" in _error_line(invoke("datasets", root))
