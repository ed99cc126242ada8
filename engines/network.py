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


def _refiner_block(in_ch: int, out_ch: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(in_ch, out_ch, 3, padding=1), nn.GroupNorm(8, out_ch), nn.SiLU(),
                         nn.Conv2d(out_ch, out_ch, 3, padding=1), nn.GroupNorm(8, out_ch), nn.SiLU())


class _RefinerRes(nn.Module):
    def __init__(self, channels: int):
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(channels, channels, 3, padding=1), nn.GroupNorm(8, channels), nn.SiLU(),
                                  nn.Conv2d(channels, channels, 3, padding=1), nn.GroupNorm(8, channels))

    def forward(self, x):
        return nn.functional.silu(x + self.body(x))


class Refiner(nn.Module):
    """The second look at the generator's fill, at half the crop's size: the crop, the
    generator's restored face and its mask in (7 channels), a correction of the restored face out
    (a U-Net down to an eighth, with the picture's mean features added at the bottom). Its last
    convolution starts at zero: a new refiner changes nothing. Trained with the generator frozen,
    on the squared error where the face was covered (``deocc-train refine``): the generator's L1
    and SSIM losses aim at the median guess of a hidden face, the squared error at the mean, which
    is what PSNR scores."""

    def __init__(self, width: int = 16, blocks: int = 3):
        super().__init__()
        c = [width, 2 * width, 4 * width, 8 * width]
        self.width = width
        self.encode = nn.ModuleList([_refiner_block(7, c[0])] + [_refiner_block(c[i], c[i + 1]) for i in range(3)])
        self.middle = nn.Sequential(*[_RefinerRes(c[3]) for _ in range(blocks)])
        self.pooled = nn.Linear(c[3], c[3])
        self.decode = nn.ModuleList([_refiner_block(c[i + 1] + c[i], c[i]) for i in reversed(range(3))])
        self.out = nn.Conv2d(c[0], 3, 3, padding=1)
        nn.init.zeros_(self.out.weight)
        nn.init.zeros_(self.out.bias)

    def forward(self, crop, restored, mask):
        skips = [self.encode[0](torch.cat([crop, restored, mask], dim=1))]
        for block in self.encode[1:]:
            skips.append(block(nn.functional.avg_pool2d(skips[-1], 2)))
        x = self.middle(skips.pop())
        x = x + self.pooled(x.mean(dim=(2, 3)))[:, :, None, None]
        for block in self.decode:
            up = nn.functional.interpolate(x, scale_factor=2.0, mode="bilinear", align_corners=False)
            x = block(torch.cat([up, skips.pop()], dim=1))
        return self.out(x)


class Refined(nn.Module):
    """The generator with its refiner: the same contract as ``Generator``. The refiner sees the
    crop, the restored face and the mask at half size (2x2 means) and its correction is enlarged
    (bilinear) onto the restored face; the mask is the generator's."""

    def __init__(self, generator: Generator, refiner: Refiner):
        super().__init__()
        self.generator, self.refiner = generator, refiner

    def refine(self, image, restored, mask):
        half = nn.functional.avg_pool2d
        correction = self.refiner(half(image, 2), half(restored, 2), half(mask, 2))
        correction = nn.functional.interpolate(correction, scale_factor=2.0, mode="bilinear", align_corners=False)
        return (restored + correction).clamp(-1.0, 1.0)

    def forward(self, image):
        restored, mask = self.generator(image)
        return self.refine(image, restored, mask), mask


def build(shape: dict, generator_weights: dict, refiner_weights: dict | None = None) -> nn.Module:
    """The network a model's ``shape`` describes (width, bottleneck_blocks, and a ``refiner``
    entry {width, blocks} when it has one), with its weights loaded."""
    generator = Generator(width=shape["width"], bottleneck_blocks=shape["bottleneck_blocks"])
    generator.load_state_dict(generator_weights)
    refiner_shape = shape.get("refiner")
    if not refiner_shape:
        return generator
    refiner = Refiner(width=refiner_shape["width"], blocks=refiner_shape["blocks"])
    if refiner_weights is None:
        raise KeyError("the model has a refiner but no refiner weights")
    refiner.load_state_dict(refiner_weights)
    return Refined(generator, refiner)


def from_state_dict(shape: dict, state_dict: dict) -> nn.Module:
    """The network of a `.pt` generator file: the whole module's weights (a refined one's under
    ``generator.`` and ``refiner.``)."""
    if not shape.get("refiner"):
        return build(shape, state_dict)
    parts = {"generator": {}, "refiner": {}}
    for name, tensor in state_dict.items():
        part, _, rest = name.partition(".")
        if part not in parts:
            raise KeyError(f"unexpected weight {name}")
        parts[part][rest] = tensor
    return build(shape, parts["generator"], parts["refiner"])
