"""Model registry: ``create_model(name, **options)`` and ``list_models()``, as timm does it.

``create_model(name, checkpoint_path=...)`` also loads trained weights; the checkpoint side
lives in :mod:`capslab.models.pretrained`.
"""

from __future__ import annotations

import inspect
import json
import os
from collections.abc import Callable
from typing import Any

from torch import nn

from capslab.errors import ConfigError

_MODELS: dict[str, Callable[..., nn.Module]] = {}


def register_model(name: str) -> Callable[[Callable[..., nn.Module]], Callable[..., nn.Module]]:
    """Decorator that registers a model factory under ``name``."""

    def wrap(factory: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
        if name in _MODELS:
            raise ValueError(f"model {name!r} is already registered")
        _MODELS[name] = factory
        return factory

    return wrap


def list_models() -> list[str]:
    """Names of every registered model, sorted."""
    return sorted(_MODELS)


def model_options(name: str) -> list[str]:
    """Keyword options that the factory of ``name`` accepts."""
    return list(inspect.signature(_get(name)).parameters)


def _get(name: str) -> Callable[..., nn.Module]:
    try:
        return _MODELS[name]
    except KeyError:
        raise ConfigError(f"unknown model {name!r}; available: {', '.join(list_models())}") from None


def check_model_options(name: str, options: dict) -> None:
    """Refuse an unknown model, or options its factory does not take (with the valid ones)."""
    params = inspect.signature(_get(name)).parameters
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
        return
    unknown = sorted(set(options) - set(params))
    if unknown:
        raise ConfigError(
            f"model {name!r} has no option(s) {', '.join(unknown)}; valid options: {', '.join(params)}"
        )


def effective_options(name: str, options: dict[str, Any]) -> dict[str, Any]:
    """The factory's defaults overridden by ``options``, as JSON values (tuples become lists,
    objects their text): two option sets build the same network when these are equal."""
    params = inspect.signature(_get(name)).parameters
    full = {k: p.default for k, p in params.items()
            if p.default is not inspect.Parameter.empty
            and p.kind not in (inspect.Parameter.VAR_KEYWORD, inspect.Parameter.VAR_POSITIONAL)}
    full.update(options)
    return json.loads(json.dumps(full, default=str))


def create_model(name: str, checkpoint_path: str | os.PathLike | None = None, **options) -> nn.Module:
    """Build a registered model; with ``checkpoint_path``, the trained network of that checkpoint.

    Args:
        name: a registered model name (see :func:`list_models`).
        checkpoint_path: a checkpoint written by training model ``name``. The options it was
            trained with are used; options given here must equal them (a
            :class:`~capslab.errors.CheckpointError` names the ones that differ). The model comes
            back in eval mode with the checkpoint's metadata in ``model.pretrained_cfg`` (see
            :func:`capslab.models.pretrained.load_model`).
        **options: the factory's options. Unknown options are refused with the list of valid ones.

    The model records ``model_name`` and ``model_options``; checkpoints store both.
    """
    if checkpoint_path is not None:
        from capslab.models.pretrained import create_from_checkpoint  # it imports this module

        return create_from_checkpoint(name, checkpoint_path, options)
    check_model_options(name, options)
    model = _get(name)(**options)
    model.model_name = name  # type: ignore[attr-defined]
    model.model_options = dict(options)  # type: ignore[attr-defined]
    return model
