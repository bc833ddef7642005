"""How the command line reads values, and the options several commands share.

Conventions, the same in every command:

* a list is one comma-separated value: ``--models capsnet,mocapsnet``, ``--blocks 1-8``;
* options of a model, a policy or the search space are repeatable ``key=value`` pairs
  (``--policy-opt batch_sizes=8,64``); the typed settings class converts and checks the values;
* every command that writes files writes them under ``runs/<command>`` unless ``--out`` says
  otherwise (:func:`default_out`);
* ``--json`` prints the command's result as JSON on stdout instead of tables.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Annotated, Any

import typer

from capslab.errors import ConfigError

RUNS = Path("runs")


def default_out(command: str) -> Path:
    """The folder a command writes to when ``--out`` is not given: ``runs/<command>``."""
    return RUNS / command


def _scalar(text: str) -> Any:
    low = text.strip().lower()
    if low in ("true", "yes", "on"):
        return True
    if low in ("false", "no", "off"):
        return False
    if low in ("none", "null"):
        return None
    for conv in (int, float):
        try:
            return conv(text)
        except ValueError:
            pass
    return text.strip()


def parse_key_values(items: Sequence[str] | None, what: str = "option") -> dict[str, Any]:
    """``["key=value", ...]`` -> dict.

    Values become ints, floats, booleans (true/false/yes/no/on/off), ``None`` (none/null),
    lists (``batch_sizes=8,64`` -> ``[8, 64]``) or strings; dashes in keys become underscores.
    The settings class that receives the dict checks the keys and converts to declared types.
    """
    out: dict[str, Any] = {}
    for item in items or []:
        key, sep, value = item.partition("=")
        key = key.strip().replace("-", "_")
        if not sep or not key:
            raise ConfigError(f"{what} {item!r} is not of the form key=value")
        if key in out:
            raise ConfigError(f"{what} {key!r} is given twice")
        if "," in value:
            out[key] = [_scalar(v) for v in value.split(",") if v.strip()]
        else:
            out[key] = _scalar(value)
    return out


def split_list(text: str | None) -> list[str]:
    """``"a,b, c"`` -> ``["a", "b", "c"]`` (empty or ``None`` -> ``[]``)."""
    if text is None:
        return []
    return [part.strip() for part in text.split(",") if part.strip()]


def parse_int_list(text: str | None, what: str) -> tuple[int, ...]:
    """``"1-8"``, ``"1,2,4"`` or ``"1-3,6"`` -> sorted distinct integers."""
    out: set[int] = set()
    for part in split_list(text):
        try:
            if "-" in part:
                lo, hi = (int(p) for p in part.split("-", 1))
                if hi < lo:
                    raise ValueError
                out.update(range(lo, hi + 1))
            else:
                out.add(int(part))
        except ValueError:
            raise ConfigError(f"{what}: cannot read {part!r} (use e.g. 1-8 or 1,2,4)") from None
    return tuple(sorted(out))


def parse_shape(text: str, what: str = "shape") -> tuple[int, int, int]:
    """``"1x28x28"`` -> ``(1, 28, 28)``."""
    try:
        c, h, w = (int(p) for p in text.lower().split("x"))
    except ValueError:
        raise ConfigError(f"{what}: expected CxHxW such as 1x28x28, got {text!r}") from None
    return c, h, w


def with_resize(dataset: str, resize: int | None) -> str:
    """The dataset value of ``--dataset PATH --resize N``: ``PATH@N`` (your own data, every image
    resized to N x N); ``dataset`` itself without ``--resize``."""
    if resize is None:
        return dataset
    head, sep, tail = dataset.rpartition("@")
    if sep and tail.isdigit():
        raise ConfigError(f"--dataset {dataset} already gives a size (@{tail}); drop --resize {resize}")
    return f"{dataset}@{resize}"


# ------------------------------------------------------------------ shared options
JsonFlag = Annotated[bool, typer.Option("--json", help="Print the result as JSON instead of tables.")]
Quiet = Annotated[bool, typer.Option(help="No progress display.")]
DataDir = Annotated[Path | None, typer.Option(help="Dataset folder (else $CAPSLAB_DATA, else the cache).")]
Device = Annotated[str, typer.Option(help="auto, cpu, cuda or cuda:N.")]
Deterministic = Annotated[bool, typer.Option("--deterministic", help="On CUDA: bit-for-bit repeatable (cuDNN deterministic, no TF32; slower). The CPU is repeatable anyway.")]
Seed = Annotated[int, typer.Option(help="Random seed.")]
Subset = Annotated[int | None, typer.Option(help="Train on a stratified subset of N images.")]
TestSubset = Annotated[int | None, typer.Option(help="Evaluate on a stratified subset of N test images.")]
BatchSize = Annotated[int, typer.Option(min=1, help="Batch size (policies with batch phases override it).")]
LearningRate = Annotated[float | None, typer.Option(help="Main learning rate; default: the policy's.")]
Policy = Annotated[str, typer.Option(help="fixed, exp-decay, one-cycle, warm-restarts, adabatch, warm-adabatch.")]
PolicyOpt = Annotated[list[str] | None, typer.Option("--policy-opt", help="Policy option key=value (repeatable).")]
ModelOpt = Annotated[list[str] | None, typer.Option("--model-opt", help="Model option key=value (repeatable).")]
SpaceOpt = Annotated[list[str] | None, typer.Option("--space", help="Search-space field key=value, e.g. kernels=3,5 (repeatable).")]
Optimizer = Annotated[str, typer.Option(help="adam, ranger21 or sgd.")]
Augment = Annotated[bool, typer.Option(help="Random shift by up to 2 pixels (training only; with --pad-to, anywhere on the canvas).")]
#: ``--dataset`` of the commands that train: a built-in dataset or your own data
DATASET_HELP = ("A built-in dataset (mnist, fashion-mnist, cifar10, ...: `capslab datasets` lists "
                "them) or your own data: a folder of images in one subfolder per class (or in "
                "train/ and test/ subfolders), or an .npz file (docs/data.md).")
Resize = Annotated[int | None, typer.Option(min=1, help="Your own data: resize every image to N x N pixels (needed when their sizes differ or are not square); the same as --dataset PATH@N.", show_default=False)]
