"""The generator network (attention U-Net with an occlusion head): the PyTorch engine loads it,
the trainer trains it (its discriminator lives in trainer/model.py).

Generator contract (../shared/DESIGN.md): ``image`` [N, 3, S, S] RGB in [-1, 1] ->
``restored`` [N, 3, S, S] in [-1, 1] (tanh) and ``occlusion`` [N, 1, S, S] in [0, 1].
"""
from __future__ import annotations

import torch
from torch import nn

BASE_CHANNELS = (16, 24, 48, 96, 128)


class StridedPointwise(nn.Conv2d):
    """A 1x1 convolution with stride 2, computed as a stride-1 1x1 convolution of every other pixel
    (the same result and the same weights). oneDNN's AVX-512 kernel for the weight gradient of a
    strided 1x1 convolution over channels-last input with fewer than 16 input channels corrupts
    the heap (SIGSEGV or "double free" in backward, seen on AMD EPYC and Intel AVX-512 CPUs); the
    stride-1 kernel is safe for every channel count, so training keeps its channels-last fast path."""

    def __init__(self, in_ch: int, out_ch: int):
        super().__init__(in_ch, out_ch, 1, 1, bias=False)

    def forward(self, x):
        return super().forward(x[:, :, ::2, ::2])


def _channels(width: float) -> list[int]:
    return [max(8, int(round(c * width / 8)) * 8) for c in BASE_CHANNELS]


class ResBlock(nn.Module):
    """Encoder block: two 3x3 convolutions with a residual path (1x1 when the shape changes)."""

    def __init__(self, in_ch: int, out_ch: int, stride: int = 1, dilation: int = 1):
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(in_ch, out_ch, 3, stride, padding=1, bias=False),
            nn.BatchNorm2d(out_ch),
            nn.ReLU(inplace=True),
            nn.Conv2d(out_ch, out_ch, 3, 1, padding=dilation, dilation=dilation, bias=False),
            nn.BatchNorm2d(out_ch),
        )
        self.skip = (
            nn.Identity() if stride == 1 and in_ch == out_ch
            else nn.Sequential(StridedPointwise(in_ch, out_ch) if stride == 2 else nn.Conv2d(in_ch, out_ch, 1, bias=False),
                               nn.BatchNorm2d(out_ch))
        )
        self.act = nn.ReLU(inplace=True)

    def forward(self, x):
        return self.act(self.body(x) + self.skip(x))


class InvertedResidual(nn.Module):
    """Decoder block (MobileNetV2): 1x1 expand, 3x3 depthwise, 1x1 project, residual."""

    def __init__(self, channels: int, expand: int = 4):
        super().__init__()
        hidden = channels * expand
        self.body = nn.Sequential(
            nn.Conv2d(channels, hidden, 1, bias=False),
            nn.BatchNorm2d(hidden),
            nn.ReLU6(inplace=True),
            nn.Conv2d(hidden, hidden, 3, padding=1, groups=hidden, bias=False),
            nn.BatchNorm2d(hidden),
            nn.ReLU6(inplace=True),
            nn.Conv2d(hidden, channels, 1, bias=False),
            nn.BatchNorm2d(channels),
        )

    def forward(self, x):
        return x + self.body(x)


class AttentionFuse(nn.Module):
    """Skip fusion by spatial attention: F = F_enc * A_enc + F_dec * A_dec, where the two
    single-channel maps A come from both feature maps."""

    def __init__(self, channels: int):
        super().__init__()
        self.attention = nn.Sequential(
            nn.Conv2d(2 * channels, channels // 2, 1),
            nn.ReLU(inplace=True),
            nn.Conv2d(channels // 2, 2, 3, padding=1),
            nn.Sigmoid(),
        )

    def forward(self, encoder, decoder):
        maps = self.attention(torch.cat([encoder, decoder], dim=1))
        return encoder * maps[:, 0:1] + decoder * maps[:, 1:2]


class UpBlock(nn.Module):
    def __init__(self, in_ch: int, out_ch: int):
        super().__init__()
        self.up = nn.Sequential(
            nn.Upsample(scale_factor=2, mode="nearest"),
            nn.Conv2d(in_ch, out_ch, 3, padding=1, bias=False),
            nn.BatchNorm2d(out_ch),
            nn.ReLU(inplace=True),
        )
        self.fuse = AttentionFuse(out_ch)
        self.refine = InvertedResidual(out_ch)

    def forward(self, x, skip):
        return self.refine(self.fuse(skip, self.up(x)))


class Generator(nn.Module):
    def __init__(self, width: float = 1.0, bottleneck_blocks: int = 2):
        super().__init__()
        c = _channels(width)
        self.width = width
        self.stem = nn.Sequential(nn.Conv2d(3, c[0], 3, padding=1, bias=False), nn.BatchNorm2d(c[0]), nn.ReLU(inplace=True))
        self.down = nn.ModuleList([ResBlock(c[i], c[i + 1], stride=2) for i in range(4)])
        self.bottleneck = nn.Sequential(*[ResBlock(c[4], c[4], dilation=2 ** (i % 2)) for i in range(bottleneck_blocks)])
        self.up = nn.ModuleList([UpBlock(c[i + 1], c[i]) for i in reversed(range(4))])
        self.to_image = nn.Conv2d(c[0], 3, 3, padding=1)
        self.to_mask = nn.Conv2d(c[0], 1, 3, padding=1)

    def forward(self, image):
        skips = [self.stem(image)]
        for block in self.down:
            skips.append(block(skips[-1]))
        x = self.bottleneck(skips.pop())
        for block in self.up:
            x = block(x, skips.pop())
        return torch.tanh(self.to_image(x)), torch.sigmoid(self.to_mask(x))


def parameter_count(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())
