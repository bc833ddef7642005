"""Your own data: a folder of images, an .npz file, tensors and map-style datasets from Python.
The info computed from the training split, the splits, the caches, what a dataset value names,
and every kind of bad data refused with one message that names the file."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import SHAPE_CLASSES, shape_images, write_shape_folder
from PIL import Image

from capslab.data import (
    canonical_dataset,
    custom,
    dataset_info,
    dataset_origin,
    folders,
    from_tensors,
    from_torch_dataset,
    is_custom,
    load_dataset,
    register_dataset,
    save_npz,
    split_size,
    unregister_dataset,
)
from capslab.errors import (
    ConfigError,
    CustomDataError,
    DatasetNotFoundError,
    UnknownDatasetError,
)
from capslab.train import TrainConfig, train

pytestmark = pytest.mark.usefixtures("isolated_data")


def _numpy_stats(images: torch.Tensor):
    x = images.numpy().astype(np.float64) / 255
    return x.mean(axis=(0, 2, 3)), x.std(axis=(0, 2, 3))


# ---------------------------------------------------------------- folders
def test_a_folder_of_class_folders_gives_info_and_a_held_out_test_split(tmp_path):
    root = write_shape_folder(tmp_path / "shapes", per_class=10, size=16)
    (root / "README.txt").write_text("not an image")  # files beside the class folders: skipped
    (root / "box" / "notes.txt").write_text("skipped too")
    info = dataset_info(str(root))
    assert (info.num_classes, info.channels, info.image_size) == (3, 1, 16)
    assert info.classes == SHAPE_CLASSES and info.name == str(root)
    train, test = load_dataset(str(root), "train"), load_dataset(str(root), "test")
    assert (len(train), len(test)) == (24, 6)  # 20% of each class held out
    assert torch.bincount(test.labels).tolist() == [2, 2, 2]
    assert train.images.dtype == torch.uint8 and list(train.images.shape) == [24, 1, 16, 16]
    mean, std = _numpy_stats(train.images)  # from the training split only
    assert info.mean == pytest.approx(tuple(mean)) and info.std == pytest.approx(tuple(std))
    origin = dataset_origin(str(root))
    assert origin["format"] == "folder" and "20% of each class held out" in origin["test_split"]
    # the same test images every time (a later evaluation must not see training images)
    custom.clear_custom_cache()
    assert torch.equal(load_dataset(str(root), "test", cache=False).images, test.images)
    # the pixels are the files' own
    first = np.asarray(Image.open(sorted((root / "box").glob("*.png"))[0]))
    every = torch.cat([train.images, test.images])[:, 0].numpy()
    assert any(np.array_equal(first, image) for image in every)


def test_train_and_test_folders_are_the_splits(tmp_path):
    root = write_shape_folder(tmp_path / "split", per_class=6, size=16, test_per_class=3)
    (root / "test" / "box").rename(root / "test" / ".hidden")  # a class missing from test: fine
    assert split_size(str(root), "train") == 18 and split_size(str(root), "test") == 6
    assert dataset_info(str(root)).classes == SHAPE_CLASSES
    assert load_dataset(str(root), "test").labels.unique().tolist() == [1, 2]
    assert dataset_origin(str(root))["test_split"] == "the test/ folder"
    with pytest.raises(UnknownDatasetError, match="has no split 'extra'"):
        load_dataset(str(root), "extra")


def test_grey_and_colour_images_mix_as_rgb(tmp_path):
    root = write_shape_folder(tmp_path / "mixed", per_class=4, size=16)
    Image.new("RGB", (16, 16), (255, 0, 0)).save(root / "box" / "red.png")
    Image.new("RGBA", (16, 16), (0, 0, 255, 10)).save(root / "hbar" / "blue.png")
    info = dataset_info(str(root))
    assert info.channels == 3 and len(info.mean) == 3
    images = torch.cat([load_dataset(str(root), s).images for s in ("train", "test")])
    grey = ((images[:, 0] == images[:, 1]) & (images[:, 1] == images[:, 2])).flatten(1).all(1)
    assert int(grey.sum()) == 12  # grey images repeated over the three channels


def test_image_modes_are_read_as_grey_or_rgb(tmp_path):
    from capslab.data.images import read_image

    wide = (np.arange(64).reshape(8, 8) * 1000).astype(np.uint16)
    Image.fromarray(wide).save(tmp_path / "deep.png")  # 16-bit grey: the high byte
    assert np.array_equal(read_image(tmp_path / "deep.png")[0], (wide >> 8).astype(np.uint8))
    grey = np.arange(64, dtype=np.uint8).reshape(8, 8)
    Image.fromarray(grey).convert("P").save(tmp_path / "grey.gif")  # a palette of greys
    assert np.array_equal(read_image(tmp_path / "grey.gif"), grey[None])
    Image.new("RGBA", (8, 8), (10, 20, 30, 0)).save(tmp_path / "alpha.png")
    assert read_image(tmp_path / "alpha.png")[:, 0, 0].tolist() == [10, 20, 30]


def test_mixed_sizes_need_a_size_and_get_it_with_at_n(tmp_path):
    root = write_shape_folder(tmp_path / "sizes", per_class=4, size=16)
    Image.fromarray(shape_images(1, 24)[0][0]).save(root / "box" / "big.png")
    with pytest.raises(CustomDataError) as err:
        dataset_info(str(root))
    message = str(err.value)
    assert "different sizes" in message and "big.png is 24x24" in message and "16x16" in message
    assert "--resize N" in message
    info = dataset_info(f"{root}@20")
    assert info.image_size == 20 and info.name == f"{root}@20"
    assert list(load_dataset(f"{root}@20", "train").images.shape[1:]) == [1, 20, 20]


def test_non_square_images_need_a_size(tmp_path):
    root = tmp_path / "wide"
    for name in ("a", "b"):
        (root / name).mkdir(parents=True)
        for i in range(3):
            Image.new("L", (20, 12), 40 * i).save(root / name / f"{i}.png")
    with pytest.raises(CustomDataError, match=r"12x20 pixels \(height x width\).*square"):
        dataset_info(str(root))
    assert dataset_info(f"{root}@8").image_size == 8


@pytest.mark.parametrize("case", ["empty class", "corrupt", "truncated", "one class", "no classes",
                                  "stray test class", "test without train", "single image"])
def test_bad_folders_are_refused_naming_what_is_wrong(tmp_path, case):
    root = write_shape_folder(tmp_path / "bad", per_class=3, size=16)
    expected = {
        "empty class": "class folder .*empty holds no image",
        "corrupt": "cannot read image .*broken.png",
        "truncated": "cannot read image .*cut.png",
        "one class": "single class folder",
        "no classes": "holds no class folders",
        "stray test class": "test/zebra is a class that the training folder",
        "test without train": "has a test/ folder but no train/ folder",
        "single image": "class solo of .* has a single image",
    }[case]
    if case == "empty class":
        (root / "empty").mkdir()
    elif case == "corrupt":
        (root / "hbar" / "broken.png").write_bytes(b"not a png at all")
    elif case == "truncated":
        data = sorted((root / "vbar").glob("*.png"))[0].read_bytes()
        (root / "vbar" / "cut.png").write_bytes(data[: len(data) // 2])
    elif case == "one class":
        root = tmp_path / "one"
        (root / "only").mkdir(parents=True)
    elif case == "no classes":
        root = tmp_path / "flat"
        root.mkdir()
        Image.new("L", (8, 8)).save(root / "x.png")
    elif case == "stray test class":
        root = write_shape_folder(tmp_path / "tt", per_class=3, size=16, test_per_class=1)
        (root / "test" / "zebra").mkdir()
    elif case == "test without train":
        (root / "test").mkdir()
    elif case == "single image":
        (root / "solo").mkdir()
        Image.new("L", (16, 16)).save(root / "solo" / "0.png")
    with pytest.raises(CustomDataError, match=expected):
        dataset_info(str(root))


def test_a_missing_path_is_not_found(tmp_path):
    with pytest.raises(DatasetNotFoundError, match="does not exist"):
        dataset_info(str(tmp_path / "nowhere"))
    (tmp_path / "notes.txt").write_text("x")
    with pytest.raises(CustomDataError, match="neither a folder of images"):
        dataset_info(str(tmp_path / "notes.txt"))


# ---------------------------------------------------------------- caches
def test_a_folder_is_decoded_once_then_again_when_an_image_changes(tmp_path, monkeypatch):
    root = write_shape_folder(tmp_path / "cached", per_class=4, size=16)
    decoded = []
    real = folders.read_image
    monkeypatch.setattr(folders, "read_image", lambda p: decoded.append(p) or real(p))
    first = load_dataset(str(root), "train")
    assert len(decoded) == 12
    load_dataset(str(root), "test")
    dataset_info(str(root))
    assert len(decoded) == 12  # in memory
    custom.clear_custom_cache()
    again = load_dataset(str(root), "train")
    assert len(decoded) == 12 and torch.equal(again.images, first.images)  # the disk cache
    image = root / "box" / "0000.png"
    Image.new("L", (16, 16), 255).save(image)
    os.utime(image, ns=(1, 1))  # another modification time whatever the clock
    load_dataset(str(root), "train")
    assert len(decoded) == 24  # changed: decoded again


# ---------------------------------------------------------------- .npz files
def _npz(path: Path, **arrays) -> str:
    np.savez(path, **arrays)
    return str(path)


def test_npz_in_keras_form_with_classes(tmp_path):
    x, y = shape_images(6, 16)
    xt, yt = shape_images(2, 16, seed=1)
    hwc = np.repeat(x[..., None], 3, axis=3)  # [N, H, W, 3]
    chw = np.repeat(xt[:, None], 3, axis=1).astype(np.float32) / 255  # [N, 3, H, W] in [0, 1]
    path = _npz(tmp_path / "data.npz", x_train=hwc, y_train=y, x_test=chw, y_test=yt,
                classes=np.array(["b", "h", "v"]))
    info = dataset_info(path)
    assert (info.num_classes, info.channels, info.image_size, info.classes) == (3, 3, 16, ("b", "h", "v"))
    train, test = load_dataset(path, "train"), load_dataset(path, "test")
    assert len(train) == 18 and len(test) == 6
    assert torch.equal(train.images[:, 1], torch.from_numpy(x))
    assert torch.equal(test.images[:, 0], torch.from_numpy(xt))  # floats scaled back to 0..255
    mean, std = _numpy_stats(train.images)
    assert info.mean == pytest.approx(tuple(mean)) and info.std == pytest.approx(tuple(std))


def test_npz_of_one_split_holds_out_a_test_split(tmp_path):
    x, y = shape_images(10, 16)
    path = _npz(tmp_path / "one.npz", images=x, labels=y)
    assert split_size(path, "train") == 24 and split_size(path, "test") == 6
    assert dataset_info(path).classes == ("0", "1", "2")
    assert dataset_info(f"{path}@8").image_size == 8


@pytest.mark.parametrize("case", ["missing keys", "test label out of range", "negative label",
                                  "float pixels", "lengths", "class without images",
                                  "classes out of range", "not npz", "bad shape", "half test"])
def test_bad_npz_files_are_refused_in_one_message(tmp_path, case):
    x, y = shape_images(3, 8)
    arrays = {"x_train": x, "y_train": y}
    expected = {
        "missing keys": r"holds the arrays \['pixels', 'y_train'\]; expected x_train and y_train",
        "test label out of range": "test labels of .* hold label 3 at index 1, outside 0..2",
        "negative label": "y_train of .* holds label -1 at index 4",
        "float pixels": "float pixels from 0 to 2",
        "lengths": "holds 9 images but y_train of .* 8 labels",
        "class without images": "class 1 of .* has no training image",
        "classes out of range": "hold label 2 at index 2, outside 0..1 \\(2 classes\\)",
        "not npz": "cannot read .* as an .npz file",
        "bad shape": r"has shape \[9, 2, 8, 8\]",
        "half test": "holds x_test but not y_test",
    }[case]
    if case == "missing keys":
        arrays = {"pixels": x, "y_train": y}
    elif case == "test label out of range":
        arrays.update(x_test=x[:3], y_test=np.array([0, 3, 1]))
    elif case == "negative label":
        arrays["y_train"] = np.where(np.arange(9) == 4, -1, y)
    elif case == "float pixels":
        arrays["x_train"] = x.astype(np.float32) / 127.5
    elif case == "lengths":
        arrays["y_train"] = y[:8]
    elif case == "class without images":
        arrays["y_train"] = np.where(y == 1, 2, y)
    elif case == "classes out of range":
        arrays["classes"] = np.array(["a", "b"])
    elif case == "bad shape":
        arrays["x_train"] = np.zeros((9, 2, 8, 8), np.uint8)
    elif case == "half test":
        arrays["x_test"] = x
    path = tmp_path / "bad.npz"
    if case == "not npz":
        path.write_bytes(b"garbage")
    else:
        _npz(path, **arrays)
    with pytest.raises(CustomDataError, match=expected):
        dataset_info(str(path))


# ---------------------------------------------------------------- from Python
def test_from_tensors_and_from_torch_dataset_compute_the_info():
    x, y = shape_images(4, 12)
    a = from_tensors(torch.from_numpy(x), torch.from_numpy(y), classes=SHAPE_CLASSES, name="mine")
    assert a.info.classes == SHAPE_CLASSES and a.info.shape == (1, 12, 12) and a.name == "mine"
    assert a.info.mean == pytest.approx(tuple(_numpy_stats(a.images)[0]))
    floats = torch.from_numpy(x).float().div(255).unsqueeze(1)  # ToTensor's form
    b = from_torch_dataset(torch.utils.data.TensorDataset(floats, torch.from_numpy(y)))
    assert torch.equal(b.images, a.images) and torch.equal(b.labels, a.labels)
    pil = [(Image.fromarray(image), int(label)) for image, label in zip(x, y, strict=True)]
    c = from_torch_dataset(pil, name="pil", size=6)
    assert c.info.shape == (1, 6, 6) and c.info.classes == ("0", "1", "2")
    with pytest.raises(CustomDataError, match="label 3 at index 0, outside 0..2"):
        from_tensors(x[:1], [3], classes=SHAPE_CLASSES)
    with pytest.raises(CustomDataError, match="item 1 is 8x8"):
        from_torch_dataset([(x[0], 0), (x[1][:8, :8], 1)], name="ragged")
    with pytest.raises(CustomDataError, match="label of item 1 of named is 'cat'"):
        from_torch_dataset([(x[0], 0), (x[1], "cat")], name="named")


def test_registered_data_is_a_dataset_for_this_process(tmp_path):
    x, y = shape_images(10, 12)
    try:
        info = register_dataset("my-shapes", (x, y), classes=SHAPE_CLASSES)
        assert is_custom("my-shapes") and dataset_info("my-shapes") == info
        assert len(load_dataset("my-shapes", "train")) == 24
        assert dataset_origin("my-shapes")["format"] == "registered"
        config = TrainConfig(dataset="my-shapes", model="capsnet", epochs=1)
        assert config.dataset == "my-shapes"
        with pytest.raises(ConfigError, match="registered from Python in this process; the 2 "
                                              "training processes"):
            train(config.replace(nproc=2, batch_size=8))
        # saved as .npz, the same data for any process
        path = save_npz(tmp_path / "saved.npz", load_dataset("my-shapes", "train"),
                        load_dataset("my-shapes", "test"))
        assert dataset_info(str(path)).classes == SHAPE_CLASSES
        assert torch.equal(load_dataset(str(path), "test").images,
                           load_dataset("my-shapes", "test").images)
    finally:
        unregister_dataset("my-shapes")
    assert not is_custom("my-shapes")
    for bad in ("mnist", "a/b", "x.npz", "x@3", ""):
        with pytest.raises(ConfigError):
            register_dataset(bad, (x, y))


# ---------------------------------------------------------------- what a value names
def test_what_a_dataset_value_names(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    write_shape_folder(tmp_path / "mnist", per_class=2, size=16)
    write_shape_folder(tmp_path / "shapes", per_class=2, size=16)
    assert not is_custom("mnist") and dataset_info("mnist").image_size == 28  # the built-in wins
    assert is_custom("./mnist") and dataset_info("./mnist").classes == SHAPE_CLASSES
    assert is_custom("shapes") and is_custom("shapes@20") and is_custom("some/where.npz")
    assert not is_custom("nonsense")
    assert canonical_dataset("shapes@20") == f"{tmp_path / 'shapes'}@20"
    assert canonical_dataset("mnist") == "mnist"
    with pytest.raises(ConfigError, match="applies to your own data; mnist's images are 28x28"):
        dataset_info("mnist@32")
    with pytest.raises(UnknownDatasetError, match="or your own data: a folder of images"):
        dataset_info("nonsense")
    with pytest.raises(ConfigError, match="positive"):
        dataset_info("shapes@0")


def test_training_settings_record_the_absolute_path(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    write_shape_folder(tmp_path / "shapes", per_class=5, size=20)
    config = TrainConfig(dataset="shapes", model="capsnet", epochs=1, val_size=4)
    assert config.dataset == str(tmp_path / "shapes")
    assert TrainConfig.from_dict(config.to_dict()).identity() == config.identity()
    with pytest.raises(ConfigError, match="val_size 12 leaves no training image"):
        TrainConfig(dataset="shapes", model="capsnet", val_size=12)
