"""``create_model``: a registered network, new or trained, as timm's factory builds it.

Above both the registry (:mod:`capslab.models.registry`) and the checkpoint side
(:mod:`capslab.models.pretrained`), so neither needs the other's caller.
"""

from __future__ import annotations

import os

from torch import nn

from capslab.models.pretrained import create_from_checkpoint
from capslab.models.registry import new_model


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
        return create_from_checkpoint(name, checkpoint_path, options)
    return new_model(name, **options)
