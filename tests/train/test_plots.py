"""The run's PNG plots: real images with the expected content size, written where asked."""

import torch

from capslab.train.plots import plot_history, plot_reconstructions

PNG = b"\x89PNG\r\n\x1a\n"


def test_history_and_reconstruction_plots(tmp_path):
    history = [{"epoch": e, "train_loss": 1 / e, "test_loss": 1.2 / e, "test_accuracy": 0.5 + e / 10,
                "train_accuracy": 0.4 + e / 10} for e in range(1, 4)]
    curves = plot_history(history, tmp_path / "curves.png")
    images = torch.rand(4, 1, 28, 28)
    recon = plot_reconstructions(images, images.flip(-1), tmp_path / "recon.png")
    color = plot_reconstructions(torch.rand(3, 3, 32, 32), torch.rand(3, 3, 32, 32), tmp_path / "c.png")
    for path in (curves, recon, color):
        assert path.read_bytes()[:8] == PNG and path.stat().st_size > 5_000
    assert sorted(p.name for p in tmp_path.iterdir()) == ["c.png", "curves.png", "recon.png"]


def test_history_of_a_validation_run_is_plotted_and_shown(tmp_path):
    from rich.console import Console

    from capslab.train.callbacks import ProgressDisplay, held_out_split
    from capslab.train.plots import plot_history

    history = [{"epoch": e, "train_loss": 1.0 / e, "train_accuracy": 0.5, "val_loss": 0.9 / e,
                "val_accuracy": 0.4 + 0.1 * e, "lr": 1e-3, "batch_size": 8,
                "images_per_second": 10.0} for e in (1, 2)]
    assert held_out_split(history[0]) == "val" and held_out_split({"test_accuracy": 1}) == "test"
    assert plot_history(history, tmp_path / "curves.png").stat().st_size > 0
    display = ProgressDisplay()
    display.bar = type("Bar", (), {"console": Console(record=True, width=200)})()
    for record in history:
        display.on_epoch_end(record)
    text = display.bar.console.export_text()
    assert "epoch 2: validation accuracy 60.00% (best 60.00% @ 2)" in text
