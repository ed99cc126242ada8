"""The trainer's discriminator; the generator it trains is engines.network.Generator."""
from __future__ import annotations

import torch
from torch import nn


class Discriminator(nn.Module):
    """DCGAN-style convolutional discriminator, patch-wise: conditioned on the occluded input,
    it scores 16x16 patches of a 128 px crop as real or generated (logits)."""

    def __init__(self, channels: int = 32):
        super().__init__()
        c = channels
        self.net = nn.Sequential(
            nn.Conv2d(6, c, 4, 2, 1), nn.LeakyReLU(0.2, inplace=True),
            nn.Conv2d(c, 2 * c, 4, 2, 1, bias=False), nn.BatchNorm2d(2 * c), nn.LeakyReLU(0.2, inplace=True),
            nn.Conv2d(2 * c, 4 * c, 4, 2, 1, bias=False), nn.BatchNorm2d(4 * c), nn.LeakyReLU(0.2, inplace=True),
            nn.Conv2d(4 * c, 1, 3, 1, 1),
        )

    def forward(self, occluded, candidate, features: bool = False):
        """Patch logits; with ``features``, also the activations after each of its three
        LeakyReLUs (64, 32 and 16 px for a 128 px crop), which feature matching compares."""
        x = torch.cat([occluded, candidate], dim=1)
        if not features:
            return self.net(x)
        taken = []
        for layer in self.net:
            x = layer(x)
            if isinstance(layer, nn.LeakyReLU):
                taken.append(x)
        return x, taken
