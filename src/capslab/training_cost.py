"""What training a network costs per image, computed from its description without training it:
the activation memory saved for the backward pass and the operations of a training step.

The network is built on PyTorch's ``meta`` device, which runs every operator on shapes alone
(no data, no arithmetic: milliseconds for CapsNet), and one training step (forward, capsule
loss, backward) is traced there:

* **activations**: the distinct storages that autograd saves for the backward pass
  (``torch.autograd.graph.saved_tensors_hooks``, parameters excluded), exactly what
  :func:`capslab.profiling.saved_activation_bytes` counts on real data for ``capslab memory``.
  A reversible momentum stack saves nothing per block, and that shows here too.
* **operations**: the floating-point operations of the matrix products and convolutions
  (PyTorch's ``torch.utils.flop_counter`` formulas: 2 per multiply-accumulate), forward and
  backward; a reversible stack's recomputation in the backward pass is counted. Element-wise
  operations (squash, softmax, BatchNorm) are not counted, as in every FLOP count of this kind.

Both are per image: the slope between batches of :data:`SLOPE_BATCHES` images, so that
batch-independent terms (a weight transposed once) do not count. Those batches take the paths
CapsLab trains with from batch 9 on, on every device; below that the CPU computes some layers
in other forms (the GEMM form of PrimaryCaps, the prediction vectors of RBA routing), which
save other tensors.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

import torch
from torch import nn
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_map
from torch.utils.flop_counter import flop_registry

from capslab.genotype import Genotype
from capslab.losses import capsule_loss
from capslab.models import create_model

META = torch.device("meta")
#: the two batch sizes whose difference gives the per-image costs
SLOPE_BATCHES = (16, 32)


@dataclass(frozen=True)
class TrainingCost:
    """Per image: bytes of activations saved for the backward pass, and operations (FLOPs) of
    the forward pass and of a whole training step (forward and backward)."""

    activation_bytes: float
    forward_flops: float
    train_flops: float

    @property
    def activation_KiB(self) -> float:
        return self.activation_bytes / 1024

    def to_dict(self) -> dict[str, float]:
        return {**asdict(self), "activation_KiB": self.activation_KiB}


class _FlopCount(TorchDispatchMode):
    """Sums ``torch.utils.flop_counter``'s formula of every operator that has one. (PyTorch's
    own ``FlopCounterMode`` also tracks modules with backward hooks, which a reversible
    stack's ``autograd.grad`` inside its backward pass does not allow.)"""

    def __init__(self):
        super().__init__()
        self.flops = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        formula = flop_registry.get(func._overloadpacket)
        if formula is not None:
            shapes = tree_map(_shape, (args, kwargs, out))
            self.flops += formula(*shapes[0], **shapes[1], out_val=shapes[2])
        return out


def _shape(x: Any) -> Any:
    return x.shape if isinstance(x, torch.Tensor) else x


def step_cost(model: nn.Module, batch: int) -> tuple[int, int, int]:
    """``(saved activation bytes, forward FLOPs, training-step FLOPs)`` of one step of ``model``
    (built on the meta device) at ``batch`` images of ``model.image_shape``."""
    x = torch.rand(batch, *model.image_shape, device=META)
    y = torch.zeros(batch, dtype=torch.long, device=META)
    params = {p.untyped_storage()._cdata for p in model.parameters()}
    saved: dict[int, int] = {}

    def pack(t: torch.Tensor) -> torch.Tensor:
        storage = t.untyped_storage()
        if storage._cdata not in params:  # views of one storage count once, as on real data
            saved[storage._cdata] = storage.nbytes()
        return t

    counter = _FlopCount()
    with counter:
        with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
            out = model(x, y)
            loss = capsule_loss(out.lengths, y, out.reconstruction, x)[0]
        forward = counter.flops
        loss.backward()
    return sum(saved.values()), forward, counter.flops


def model_training_cost(build: Callable[[], nn.Module]) -> TrainingCost:
    """:class:`TrainingCost` of the network ``build()`` makes (called under the meta device)."""
    with META:
        model = build()
    model.train()
    small, large = SLOPE_BATCHES
    a, b = step_cost(model, small), step_cost(model, large)
    return TrainingCost(*(float(hi - lo) / (large - small) for lo, hi in zip(a, b, strict=True)))


def training_cost(model: str, **options: Any) -> TrainingCost:
    """:class:`TrainingCost` of the registered ``model`` built with ``options``."""
    return model_training_cost(lambda: create_model(model, **options))


def genotype_training_cost(genotype: Genotype, num_classes: int = 10) -> TrainingCost:
    """:class:`TrainingCost` of the network ``genotype`` describes (input size and channels from
    its first gene, as :class:`~capslab.models.genotype_net.GenotypeNet` reads them)."""
    return training_cost("genotype", genotype=genotype.exchange(), num_classes=num_classes)
