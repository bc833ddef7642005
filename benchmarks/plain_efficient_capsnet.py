"""A plain eager Efficient-CapsNet written the way public code writes it: the baseline of
`capslab bench --model efficient-capsnet`.

Same network as ``capslab.models.EfficientCapsNet`` (the same layers, 161,824 encoder
parameters, the same decoder); the routing follows the paper's equations literally: for each
output the ``n_in x n_in`` self-attention matrix of the predictions, then its row sums.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn


def _squash(s, eps=1e-20):
    n = torch.norm(s, dim=-1, keepdim=True)
    return (1 - 1 / (torch.exp(n) + eps)) * (s / (n + eps))


class PlainEfficientCapsNet(nn.Module):
    def __init__(self, in_channels=1, image_size=28, num_classes=10):
        super().__init__()
        self.stem = nn.Sequential(
            nn.Conv2d(in_channels, 32, 5), nn.BatchNorm2d(32), nn.ReLU(),
            nn.Conv2d(32, 64, 3), nn.BatchNorm2d(64), nn.ReLU(),
            nn.Conv2d(64, 64, 3), nn.BatchNorm2d(64), nn.ReLU(),
            nn.Conv2d(64, 128, 3, stride=2), nn.BatchNorm2d(128), nn.ReLU(),
        )
        size = (image_size - 4 - 2 - 2 - 3) // 2 + 1
        self.primary = nn.Conv2d(128, 128, size, groups=128)
        self.num_classes = num_classes
        self.W = nn.Parameter(torch.randn(num_classes, 16, 8, 16) * 0.04)
        self.b = nn.Parameter(torch.zeros(num_classes, 16, 1))
        self.decoder = nn.Sequential(
            nn.Linear(16 * num_classes, 512), nn.ReLU(), nn.Linear(512, 1024), nn.ReLU(),
            nn.Linear(1024, in_channels * image_size * image_size), nn.Sigmoid(),
        )
        self.image_shape = (in_channels, image_size, image_size)

    def forward(self, x, y=None):
        b = x.shape[0]
        u = _squash(self.primary(self.stem(x)).view(b, 16, 8))  # [B, 16, 8]
        u_hat = torch.einsum("bid,jide->bjie", u, self.W)  # [B, C, 16, 16]
        a = u_hat @ u_hat.transpose(-1, -2) / math.sqrt(16)  # [B, C, 16, 16] per output
        c = F.softmax(a.sum(-1, keepdim=True), dim=1)  # [B, C, 16, 1] over the outputs
        v = _squash(((c + self.b) * u_hat).sum(dim=2))  # [B, C, 16]
        lengths = torch.sqrt((v**2).sum(-1) + 1e-8)
        index = y if y is not None else lengths.argmax(1)
        mask = F.one_hot(index, self.num_classes).float()
        recon = self.decoder((v * mask.unsqueeze(-1)).flatten(1)).view(b, *self.image_shape)
        return v, lengths, recon
