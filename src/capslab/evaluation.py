"""Evaluating a trained network on a loader: loss and accuracy.

Below the trainer, so that whatever evaluates a network (the training loop, quantization, the
studies) shares one definition of the test loss and accuracy.
"""

from __future__ import annotations

from collections.abc import Iterable

import torch
from torch import nn

from capslab.device import autocast
from capslab.losses import capsule_loss


@torch.no_grad()  # a graph would keep every batch's activations alive through the summed loss
def evaluate(
    model: nn.Module,
    loader: Iterable,
    device: torch.device | str = "cpu",
    reconstruction_weight: float = 0.0005,
    precision: str = "fp32",
) -> dict[str, float]:
    """Test loss and accuracy; the decoder reads the longest capsule (no target)."""
    device = torch.device(device)
    model.eval()
    total_loss = torch.zeros((), device=device)
    correct = torch.zeros((), dtype=torch.long, device=device)
    seen = 0
    for images, labels in loader:
        images, labels = images.to(device), labels.to(device)
        with autocast(device, precision):
            out = model(images)
        loss, _, _ = capsule_loss(
            out.lengths.float(), labels,
            None if out.reconstruction is None else out.reconstruction.float(),
            images, reconstruction_weight,
        )
        total_loss += loss * labels.shape[0]
        correct += (out.lengths.argmax(dim=1) == labels).sum()
        seen += labels.shape[0]
    return {"test_loss": total_loss.item() / max(seen, 1),
            "test_accuracy": correct.item() / max(seen, 1)}
