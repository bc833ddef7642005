"""Model registry and the models that register themselves in it."""

from capslab.models import (
    capsnet,  # noqa: F401  (registers "capsnet")
    deepcaps,  # noqa: F401  (registers "deepcaps")
    efficient_capsnet,  # noqa: F401  (registers "efficient-capsnet")
    genotype_net,  # noqa: F401  (registers "genotype")
    momentum,  # noqa: F401  (registers "rescapsnet", "mocapsnet")
)
from capslab.models.base import CapsuleClassifier, CapsuleOutput
from capslab.models.factory import create_model
from capslab.models.pretrained import load_model, load_model_and_checkpoint
from capslab.models.registry import (
    check_model_options,
    list_models,
    model_options,
    register_model,
)

__all__ = [
    "CapsuleClassifier", "CapsuleOutput", "check_model_options", "create_model", "list_models",
    "load_model", "load_model_and_checkpoint", "model_options", "register_model",
]
