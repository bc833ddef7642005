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
