"""Model registry: ``create_model(name, **options)`` and ``list_models()``, as timm does it."""

from __future__ import annotations

import inspect
from collections.abc import Callable

from torch import nn

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
        raise ValueError(f"unknown model {name!r}; available: {', '.join(list_models())}") from None


def create_model(name: str, **options) -> nn.Module:
    """Build a registered model. Unknown options are refused with the list of valid ones."""
    factory = _get(name)
    params = inspect.signature(factory).parameters
    if not any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
        params = {k: v for k, v in params.items() if k != "self"}
        unknown = sorted(set(options) - set(params))
        if unknown:
            raise ValueError(
                f"model {name!r} has no option(s) {', '.join(unknown)}; "
                f"valid options: {', '.join(params)}"
            )
    try:
        model = factory(**options)
    except TypeError as exc:
        if "unexpected keyword argument" in str(exc):
            raise ValueError(f"model {name!r}: {exc}") from None
        raise
    model.model_name = name  # type: ignore[attr-defined]
    model.model_options = dict(options)  # type: ignore[attr-defined]
    return model
