"""Model registry: ``register_model``, ``list_models()`` and the options of every factory, as
timm keeps its registry.

:func:`capslab.models.factory.create_model` builds from it; trained networks come from
:mod:`capslab.models.pretrained`.
"""

from __future__ import annotations

import inspect
import json
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


def new_model(name: str, **options) -> nn.Module:
    """A freshly initialised registered model ``name`` built with ``options`` (checked first).

    The model records ``model_name`` and ``model_options``; checkpoints store both.
    """
    check_model_options(name, options)
    model = _get(name)(**options)
    model.model_name = name  # type: ignore[attr-defined]
    model.model_options = dict(options)  # type: ignore[attr-defined]
    return model
