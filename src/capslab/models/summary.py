"""Per-layer summary of any CapsLab model: output shapes (from one forward pass) and parameters."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor, nn


def describe_layers(
    model: nn.Module, input_shape: Sequence[int], device: str | torch.device | None = None
) -> list[dict[str, Any]]:
    """Run one image through ``model`` and list its top-level layers in execution order.

    Args:
        model: any CapsLab classifier. Its direct children are described; ``ModuleList`` /
            ``ModuleDict`` containers (never called themselves) are opened one level, so a
            :class:`GenotypeNet` lists one entry per gene.
        input_shape: ``(channels, height, width)`` of one image.
    Returns:
        ``[{"name", "type", "output_shape", "parameters"}]`` with ``output_shape`` excluding
        the batch axis (capsule grids are ``(types, dim, H, W)``, capsules ``(N, D)``).
    """
    targets: list[tuple[str, nn.Module]] = []
    for name, child in model.named_children():
        if isinstance(child, (nn.ModuleList, nn.ModuleDict)):
            targets += [(f"{name}.{sub}", m) for sub, m in child.named_children()]
        else:
            targets.append((name, child))
    rows: list[dict[str, Any]] = []
    seen: set[str] = set()

    def hook_for(name: str, module: nn.Module):
        def hook(_module: nn.Module, _inputs: Any, output: Any) -> None:
            if name in seen:
                return
            seen.add(name)
            out = output[0] if isinstance(output, (tuple, list)) else output
            shape = tuple(out.shape[1:]) if isinstance(out, Tensor) else None
            rows.append({
                "name": name,
                "type": type(module).__name__,
                "output_shape": shape,
                "parameters": sum(p.numel() for p in module.parameters()),
            })
        return hook

    handles = [m.register_forward_hook(hook_for(n, m)) for n, m in targets]
    was_training = model.training
    if device is None:
        device = next((p.device for p in model.parameters()), torch.device("cpu"))
    try:
        model.eval()
        with torch.no_grad():
            model(torch.zeros(1, *input_shape, device=device))
    finally:
        for h in handles:
            h.remove()
        model.train(was_training)
    return rows
