"""CapsLab: capsule networks that train fast, fit a hardware budget and go deep in little memory.

``capslab.create_model``, ``capslab.list_models`` and ``capslab.load_model`` are loaded on
first use, so ``import capslab`` (and ``capslab --version``) does not import torch.
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

# public name -> the module that defines it
_LAZY = {
    "create_model": "capslab.models",
    "list_models": "capslab.models",
    "load_model": "capslab.models.pretrained",
}

__all__ = ["__version__", *_LAZY]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        value = getattr(importlib.import_module(_LAZY[name]), name)
        globals()[name] = value  # later lookups skip this function
        return value
    raise AttributeError(f"module 'capslab' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted({*globals(), *_LAZY})
