"""PNG plots of a training run (matplotlib, Agg backend), saved atomically."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from capslab.results import pyplot, save_figure
from capslab.train.callbacks import held_out_history


def plot_history(history: list[dict[str, Any]], path: str | Path) -> Path:
    """Accuracy and losses per epoch, side by side."""
    from matplotlib.ticker import MaxNLocator

    plt = pyplot()

    epochs = [h["epoch"] for h in history]
    # with eval_final_only only the last epoch has held-out figures: one point, not a line
    split, held_out = held_out_history(history)
    label = "validation" if split == "val" else "test"
    fig, (ax_acc, ax_loss) = plt.subplots(1, 2, figsize=(10, 4))
    ax_acc.plot([h["epoch"] for h in held_out], [100 * h[f"{split}_accuracy"] for h in held_out],
                "o-", label=label)
    if all("train_accuracy" in h for h in history):
        ax_acc.plot(epochs, [100 * h["train_accuracy"] for h in history], "s--", label="train")
    ax_acc.set(xlabel="epoch", ylabel="accuracy (%)", title="Accuracy")
    ax_acc.legend()
    ax_loss.plot(epochs, [h["train_loss"] for h in history], "s--", label="train")
    ax_loss.plot([h["epoch"] for h in held_out], [h[f"{split}_loss"] for h in held_out], "o-",
                 label=label)
    ax_loss.set(xlabel="epoch", ylabel="loss", title="Loss", yscale="log")
    ax_loss.legend()
    for ax in (ax_acc, ax_loss):
        ax.grid(alpha=0.3)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    fig.tight_layout()
    return save_figure(fig, path)


def plot_reconstructions(images: torch.Tensor, reconstructions: torch.Tensor, path: str | Path) -> Path:
    """Inputs (top row) beside their reconstructions (bottom row); ``[N, C, H, W]`` in [0, 1]."""
    plt = pyplot()
    n = images.shape[0]
    fig, axes = plt.subplots(2, n, figsize=(1.2 * n, 2.6), squeeze=False)
    for row, batch in enumerate((images, reconstructions)):
        for i in range(n):
            img = batch[i].detach().float().cpu().clamp(0, 1).numpy()
            ax = axes[row][i]
            if img.shape[0] == 1:
                ax.imshow(img[0], cmap="gray", vmin=0, vmax=1)
            else:
                ax.imshow(img.transpose(1, 2, 0))
            ax.set_xticks([])
            ax.set_yticks([])
        axes[row][0].set_ylabel("input" if row == 0 else "recon.")
    fig.tight_layout()
    return save_figure(fig, path)
