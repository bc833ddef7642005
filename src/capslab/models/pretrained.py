"""Trained networks from checkpoints: ``load_model(path)`` and ``create_model(name,
checkpoint_path=path)``, as timm loads its pretrained models.

A checkpoint written by training (``last.pt``, ``best.pt``) carries everything needed to
rebuild its network with no other file: the registered model name, every option the model was
built with (for a genotype network the genotype itself, as its NASCaps list; the image shape,
number of classes and normalisation statistics), the weights and buffers, and the training
settings (dataset, epochs, ...) with the history of test accuracies.

Example::

    model = capslab.load_model("runs/train/best.pt")   # eval mode, on the CPU
    model.pretrained_cfg["dataset"], model.pretrained_cfg["test_accuracy"]
    scores = model(images).lengths                      # images [B, C, H, W] in [0, 1]
"""

from __future__ import annotations

import os
from typing import Any

import torch
from torch import nn

from capslab.checkpoint import load_checkpoint
from capslab.data import ImageDataset, dataset_info, is_custom, load_dataset
from capslab.errors import CheckpointError, ConfigError, DatasetError
from capslab.models.registry import (
    check_model_options,
    effective_options,
    list_models,
    new_model,
)

PathLike = str | os.PathLike
MapLocation = str | torch.device

# what a checkpoint needs besides the format marker to rebuild its network
MODEL_KEYS = ("model_name", "model_options", "model")


def read_model_checkpoint(path: PathLike, map_location: MapLocation = "cpu") -> dict[str, Any]:
    """A CapsLab checkpoint that holds a model (name, options and weights).

    Raises:
        CheckpointError: the file is missing, unreadable, foreign, or holds no model.
    """
    ckpt = load_checkpoint(path, map_location=map_location)
    missing = [k for k in MODEL_KEYS if k not in ckpt]
    if missing:
        raise CheckpointError(f"checkpoint {path} holds no model ({', '.join(missing)} missing)")
    if not isinstance(ckpt["model_name"], str) or not isinstance(ckpt["model_options"], dict) \
            or not isinstance(ckpt["model"], dict):
        raise CheckpointError(f"checkpoint {path} has a malformed model entry")
    return ckpt


def pretrained_cfg(ckpt: dict[str, Any], path: PathLike, model: nn.Module | None = None) -> dict[str, Any]:
    """The metadata of a trained network, as plain JSON values.

    Keys: ``model_name``, ``model_options``, ``dataset`` (the training dataset, or ``None``),
    ``classes`` (class names, or ``[]``), ``input_shape`` ``[C, H, W]``, ``num_classes``,
    ``normalization``, ``mean``, ``std``, ``epoch`` (epochs trained), ``test_accuracy`` (of that
    epoch), ``best_epoch``, ``best_accuracy``, ``settings`` (the training settings),
    ``source`` (the checkpoint file), ``dataset_info`` (the training dataset's info as recorded:
    for your own data computed from it; ``None`` in older checkpoints) and ``dataset_origin``
    (your own data's path, format and test split; ``None`` for a built-in dataset).
    Accuracies are fractions.
    """
    name, options = ckpt["model_name"], ckpt["model_options"]
    full = effective_options(name, options) if name in list_models() else dict(options)
    settings = ckpt.get("config") or {}
    dataset = settings.get("dataset")
    history = ckpt.get("history") or []
    best = ckpt.get("best_accuracy")
    shape = list(model.image_shape) if model is not None and hasattr(model, "image_shape") else None
    return {
        "model_name": name,
        "model_options": options,
        "dataset": dataset,
        "classes": list(ckpt.get("classes") or _dataset_classes(dataset)),
        "input_shape": shape,
        "num_classes": getattr(model, "num_classes", full.get("num_classes")),
        "normalization": full.get("normalization"),
        "mean": full.get("mean"),
        "std": full.get("std"),
        "epoch": ckpt.get("epoch"),
        "test_accuracy": history[-1].get("test_accuracy") if history else None,
        "best_epoch": ckpt.get("best_epoch"),
        "best_accuracy": best if best is not None and best >= 0 else None,  # -1: no epoch yet
        "settings": settings,
        "source": str(path),
        "dataset_info": ckpt.get("dataset_info"),
        "dataset_origin": ckpt.get("dataset_origin"),
    }


def _dataset_classes(dataset: str | None) -> tuple[str, ...]:
    if dataset is None:
        return ()

    try:
        return dataset_info(dataset).classes
    except DatasetError:  # a dataset this installation does not know, data gone: no names
        return ()


def create_from_checkpoint(
    name: str, path: PathLike, options: dict[str, Any] | None = None,
    map_location: MapLocation = "cpu",
) -> nn.Module:
    """``create_model(name, checkpoint_path=path, **options)``: see :func:`create_model`."""
    return _build(name, read_model_checkpoint(path, map_location), path, options or {})


def load_model_and_checkpoint(
    path: PathLike, map_location: MapLocation = "cpu",
) -> tuple[nn.Module, dict[str, Any]]:
    """The trained network of a checkpoint and the whole checkpoint (optimiser state,
    history, ...), for callers that need more than :attr:`pretrained_cfg`."""
    ckpt = read_model_checkpoint(path, map_location)
    model = _build(ckpt["model_name"], ckpt, path, {})
    return model.to(map_location), ckpt


def check_fits_dataset(model: nn.Module, dataset: str, source: Any,
                       padded_to: int | None = None) -> None:
    """Refuse (:class:`ConfigError`, one line naming ``source``, the checkpoint) a dataset
    whose image shape (once centred on a ``padded_to`` canvas, when given) or number of
    classes is not the trained ``model``'s. When only the image size differs, the line says
    how to train a network for the dataset's size (``pad_to``)."""
    info = dataset_info(dataset)
    if padded_to is not None:
        info = info.padded(padded_to)
    shape = tuple(model.image_shape)
    if shape == info.shape and model.num_classes == info.num_classes:
        return
    hint = ""
    if shape[0] == info.channels and model.num_classes == info.num_classes:
        cfg = getattr(model, "pretrained_cfg", None) or {}
        trained, side, size = cfg.get("dataset") or "its dataset", shape[-1], info.image_size
        if size > side:
            hint = (f": a network takes the image size it was trained on; to evaluate on "
                    f"{dataset}, train on {trained} placed on a {size}x{size} canvas (capslab "
                    f"train --pad-to {size}, or pad_to={size} in the training settings)")
        elif (cfg.get("settings") or {}).get("pad_to") == side:
            hint = (f": it was trained on images centred on a {side}x{side} canvas (pad_to); "
                    f"centre {dataset}'s on it too (ImageDataset.padded({side}), as capslab "
                    "eval does)")
        else:
            hint = (f": a network takes the image size it was trained on; evaluate it on "
                    f"{side}x{side} images, or train one on {dataset}")
    raise ConfigError(
        f"checkpoint {source} is a model for images {shape} with "
        f"{model.num_classes} classes; {dataset} has {info.shape} with {info.num_classes} "
        f"classes{hint}"
    )


def check_same_classes(model: nn.Module, dataset: str, source: Any) -> None:
    """Refuse (:class:`ConfigError`, one line naming ``source``) your own data whose classes
    are not the ones ``model`` was trained on (names and order), as recorded in its checkpoint.
    Built-in datasets are left to :func:`check_fits_dataset` (their classes are fixed)."""
    trained = list((getattr(model, "pretrained_cfg", None) or {}).get("classes") or [])
    if not trained or not is_custom(dataset):
        return
    classes = list(dataset_info(dataset).classes)
    if classes != trained:
        raise ConfigError(
            f"checkpoint {source} was trained on the classes {', '.join(trained)}; {dataset} "
            f"has {', '.join(classes)}"
        )


def input_padding(model: nn.Module, dataset: str) -> int | None:
    """The canvas size to centre ``dataset``'s images on for ``model``: its input size, when it
    was trained on images padded to it (``pad_to`` in its training settings) and ``dataset``'s
    images are smaller; ``None`` otherwise (the images are used as they are)."""
    settings = (getattr(model, "pretrained_cfg", None) or {}).get("settings") or {}
    size = int(model.image_shape[-1])
    if settings.get("pad_to") == size and dataset_info(dataset).image_size < size:
        return size
    return None


def model_split(model: nn.Module, dataset: str, split: str, source: Any,
                data_dir: str | None = None) -> ImageDataset:
    """Split ``split`` of ``dataset`` as ``model`` takes it: refused in one line when it does
    not fit (:func:`check_fits_dataset`, :func:`check_same_classes`), centred on the model's
    canvas when it was trained with ``pad_to`` on smaller images (:func:`input_padding`).
    ``source`` (the checkpoint) names the network in the errors."""
    pad = input_padding(model, dataset)
    check_fits_dataset(model, dataset, source, pad)
    check_same_classes(model, dataset, source)
    images = load_dataset(dataset, split, data_dir=data_dir)
    return images.padded(pad) if pad else images


def load_model(path: PathLike, map_location: MapLocation = "cpu") -> nn.Module:
    """The trained network of a checkpoint, ready to use: eval mode, on ``map_location``.

    Args:
        path: a checkpoint written by training (``last.pt`` or ``best.pt``).
        map_location: the device of the returned model.

    The checkpoint's metadata is ``model.pretrained_cfg`` (see :func:`pretrained_cfg`);
    ``model.model_name`` and ``model.model_options`` are set as by :func:`create_model`.

    Raises:
        CheckpointError: a missing, corrupt or foreign file, or one that holds no model.
    """
    return load_model_and_checkpoint(path, map_location)[0]


def _build(name: str, ckpt: dict[str, Any], path: PathLike, options: dict[str, Any]) -> nn.Module:
    """Model ``name`` with the checkpoint's options (``options`` must agree) and weights."""
    saved_name, saved = ckpt["model_name"], ckpt["model_options"]
    if name != saved_name:
        raise CheckpointError(f"checkpoint {path} holds a {saved_name!r} model, not {name!r}")
    if saved_name not in list_models():
        raise CheckpointError(
            f"checkpoint {path} holds model {saved_name!r}, which is not registered "
            f"(available: {', '.join(list_models())})"
        )
    try:
        check_model_options(name, saved)
    except ConfigError as exc:  # the factory changed since the checkpoint was written
        raise CheckpointError(f"checkpoint {path}: {exc}") from None
    model = new_model(name, **{**saved, **options})
    diff = option_difference(effective_options(name, saved),
                             effective_options(name, model.model_options))
    if diff:
        raise CheckpointError(
            f"checkpoint {path} was trained with other options of {name!r} ({diff}); "
            "leave them out to build the checkpoint's network"
        )
    problem = state_mismatch(model, ckpt["model"])
    if problem:
        raise CheckpointError(f"checkpoint {path} does not fit model {name!r}: {problem}")
    model.load_state_dict(ckpt["model"])
    model.eval()
    model.pretrained_cfg = pretrained_cfg(ckpt, path, model)  # type: ignore[attr-defined]
    return model


def option_difference(saved: dict[str, Any], given: dict[str, Any]) -> str:
    """``"key: checkpoint a, given b, ..."`` for the keys whose values differ ("" if none)."""
    keys = [k for k in sorted(set(saved) | set(given)) if saved.get(k) != given.get(k)]
    return ", ".join(f"{k}: checkpoint {_short(saved.get(k))}, given {_short(given.get(k))}"
                     for k in keys)


def _short(value: Any, limit: int = 60) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def state_mismatch(model: nn.Module, state: dict[str, Any]) -> str:
    """What keeps ``state`` from loading into ``model`` strictly, in one line ("" if nothing)."""
    own = model.state_dict()
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    resized = [k for k in own if k in state and (
        not isinstance(state[k], torch.Tensor) or state[k].shape != own[k].shape)]
    parts = []
    if missing:
        parts.append(f"{len(missing)} missing tensor(s), e.g. {missing[0]}")
    if unexpected:
        parts.append(f"{len(unexpected)} unexpected tensor(s), e.g. {unexpected[0]}")
    if resized:
        k = resized[0]
        got = tuple(state[k].shape) if isinstance(state[k], torch.Tensor) else type(state[k]).__name__
        parts.append(f"{len(resized)} of another shape, e.g. {k} {got} vs {tuple(own[k].shape)}")
    return "; ".join(parts)
