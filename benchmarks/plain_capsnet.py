"""A plain eager CapsNet written the way most public code writes it: the baseline of `capslab bench`.

Same maths as ``capslab.models.CapsNet`` (same layers, routing, losses); the difference is the
prediction-vector product, which broadcasts the transformation matrices over the batch
(``[B, n_in, n_out, D_out, D_in]`` temporaries) instead of one batched matrix product.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def _squash(s, dim=-1):
    n2 = (s * s).sum(dim=dim, keepdim=True)
    return n2 / (1 + n2) * s / torch.sqrt(n2 + 1e-8)


class PlainCapsNet(nn.Module):
    def __init__(self, in_channels=1, image_size=28, num_classes=10):
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, 256, 9)
        self.primary = nn.Conv2d(256, 256, 9, stride=2)
        grid = ((image_size - 8) - 9) // 2 + 1
        self.n_in = 32 * grid * grid
        self.num_classes = num_classes
        self.W = nn.Parameter(0.01 * torch.randn(1, self.n_in, num_classes, 16, 8))
        self.decoder = nn.Sequential(
            nn.Linear(16 * num_classes, 512), nn.ReLU(), nn.Linear(512, 1024), nn.ReLU(),
            nn.Linear(1024, in_channels * image_size * image_size), nn.Sigmoid(),
        )
        self.image_shape = (in_channels, image_size, image_size)

    def forward(self, x, y=None):
        b = x.shape[0]
        h = F.relu(self.conv1(x))
        p = self.primary(h)  # [B, 256, g, g]
        g = p.shape[-1]
        u = p.view(b, 32, 8, g * g).permute(0, 1, 3, 2).reshape(b, -1, 8)
        u = _squash(u)
        u_hat = (self.W @ u[:, :, None, :, None]).squeeze(-1)  # [B, n_in, C, 16]
        u_det = u_hat.detach()
        logits = torch.zeros(b, self.n_in, self.num_classes, device=x.device)
        for it in range(3):
            c = F.softmax(logits, dim=2)
            src = u_hat if it == 2 else u_det
            v = _squash((c.unsqueeze(-1) * src).sum(dim=1))
            if it < 2:
                logits = logits + (src * v.unsqueeze(1)).sum(-1)
        lengths = torch.sqrt((v**2).sum(-1) + 1e-8)
        index = y if y is not None else lengths.argmax(1)
        mask = F.one_hot(index, self.num_classes).float()
        recon = self.decoder((v * mask.unsqueeze(-1)).flatten(1)).view(b, *self.image_shape)
        return v, lengths, recon
