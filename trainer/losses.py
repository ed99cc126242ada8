"""Losses: generator and discriminator losses as separate functions, SSIM shared with eval."""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F


def _gaussian_window(channels: int, size: int = 11, sigma: float = 1.5, device=None) -> torch.Tensor:
    coords = torch.arange(size, dtype=torch.float32, device=device) - size // 2
    g = torch.exp(-(coords**2) / (2 * sigma**2))
    g = g / g.sum()
    return (g[:, None] @ g[None, :]).expand(channels, 1, size, size).contiguous()


def ssim_map(a: torch.Tensor, b: torch.Tensor, data_range: float = 1.0) -> torch.Tensor:
    """Per-pixel SSIM (Wang et al., Gaussian window 11/1.5) of two [N, C, H, W] images, averaged
    over channels: [N, 1, H, W]. Edges use reflected padding so the map keeps the image size."""
    channels = a.shape[1]
    window = _gaussian_window(channels, device=a.device).to(a.dtype)
    pad = window.shape[-1] // 2

    def blur(x):
        return F.conv2d(F.pad(x, (pad, pad, pad, pad), mode="reflect"), window, groups=channels)

    c1, c2 = (0.01 * data_range) ** 2, (0.03 * data_range) ** 2
    mu_a, mu_b = blur(a), blur(b)
    var_a = blur(a * a) - mu_a**2
    var_b = blur(b * b) - mu_b**2
    cov = blur(a * b) - mu_a * mu_b
    value = ((2 * mu_a * mu_b + c1) * (2 * cov + c2)) / ((mu_a**2 + mu_b**2 + c1) * (var_a + var_b + c2))
    return value.mean(dim=1, keepdim=True)


@dataclass
class LossWeights:
    rec: float = 1.2
    ssim: float = 80.0
    adv: float = 0.5
    mask: float = 10.0
    hole: float = 4.0  # extra L1 weight inside the covered region
    recall: float = 0.7  # Tversky weight of missed covered pixels (0.5: Dice); a rim left uncovered shows
    detail: float = 0.0  # weight of the local detail loss where covered (0: none)
    feature_match: float = 0.0  # weight of discriminator feature matching (0: none)
    colour: float = 0.0  # weight of the covered region's mean colour error (0: none)
    hole_mean: float = 0.0  # weight of the L1 over each sample's own covered pixels, samples alike (0: none)
    mse: float = 0.0  # weight of the squared error over the covered pixels (0: none)


_LAPLACIAN = torch.tensor([[0.0, 1.0, 0.0], [1.0, -4.0, 1.0], [0.0, 1.0, 0.0]]).view(1, 1, 3, 3)


def local_detail(image: torch.Tensor) -> torch.Tensor:
    """How much fine detail each place of an [N, C, H, W] image has: the magnitude of the
    Laplacian of its grey, averaged over a Gaussian neighbourhood (sigma 2 px): [N, 1, H, W].
    Unlike L1, which a blur minimises wherever the detail's exact place is uncertain, matching
    this asks for as much detail as the truth has near each place, wherever it lies."""
    grey = image.mean(dim=1, keepdim=True)
    edges = F.conv2d(F.pad(grey, (1, 1, 1, 1), mode="reflect"), _LAPLACIAN.to(grey.device, grey.dtype)).abs()
    window = _gaussian_window(1, size=13, sigma=2.0, device=grey.device).to(grey.dtype)
    return F.conv2d(F.pad(edges, (6, 6, 6, 6), mode="reflect"), window)


def generator_loss(restored, occlusion, target, true_mask, weights: LossWeights,
                   fake_logits: torch.Tensor | None = None, fake_features=None,
                   real_features=None, floats: bool = True) -> tuple[torch.Tensor, dict]:
    """λ_rec·L1 (heavier where covered) + λ_ssim·(1 − SSIM) + λ_adv·adversarial + λ_mask·mask
    (BCE + Tversky, which with ``recall`` above 0.5 weighs missed covered pixels over false alarms)
    + λ_detail·(local detail's L1 where covered, see ``local_detail``)
    + λ_colour·(the L1 between the mean colours of ours and of the truth over each sample's covered
    region: the colour shift a viewer sees, which per-pixel L1 leaves to the pixels' medians)
    + λ_hole_mean·(the L1 over each sample's covered pixels, averaged over the covered samples:
    a thin glasses frame weighs as much as a face mask, as each scene does in the end-to-end
    evaluation, where the pixel-wise L1 leaves small covers to a few pixels' worth)
    + λ_mse·(the squared error over the covered pixels: PSNR scores the mean guess of a hidden face,
    where L1 and SSIM settle for the median)
    + λ_fm·(feature matching: the mean L1 between the discriminator's activations on ours and on
    the truth, layer by layer, as in pix2pixHD; the truth's are constants).
    Images in [-1, 1]; masks in [0, 1]. The parts come back as numbers, or with ``floats=False``
    as detached 0-d tensors, which on a GPU leaves the step unsynchronised until someone reads one
    (``fit`` reads them only on the steps it logs)."""
    restored, occlusion = restored.float(), occlusion.float()
    pixel_weight = 1.0 + weights.hole * true_mask
    l1 = ((restored - target).abs() * pixel_weight).mean() / (1.0 + weights.hole * true_mask.mean()).clamp(min=1.0)
    ssim = ssim_map((restored + 1) / 2, (target + 1) / 2).mean()
    bce = F.binary_cross_entropy(occlusion.clamp(1e-6, 1 - 1e-6), true_mask)
    hits = (occlusion * true_mask).sum(dim=(1, 2, 3))
    misses = ((1 - occlusion) * true_mask).sum(dim=(1, 2, 3))
    false_alarms = (occlusion * (1 - true_mask)).sum(dim=(1, 2, 3))
    tversky = 1 - (hits + 1) / (hits + weights.recall * misses + (1 - weights.recall) * false_alarms + 1)
    mask_loss = bce + tversky.mean()
    total = weights.rec * l1 + weights.ssim * (1 - ssim) + weights.mask * mask_loss
    parts = {"l1": l1.detach(), "ssim": ssim.detach(), "mask": mask_loss.detach()}
    if weights.detail > 0:
        gap = (local_detail(restored) - local_detail(target)).abs() * true_mask
        detail = gap.sum() / true_mask.sum().clamp(min=1.0)
        total = total + weights.detail * detail
        parts["detail"] = detail.detach()
    if weights.colour > 0:
        area = true_mask.sum(dim=(2, 3)).clamp(min=1.0)
        ours = (restored * true_mask).sum(dim=(2, 3)) / area
        truth = (target * true_mask).sum(dim=(2, 3)) / area
        # Samples weighed by how much of them is covered (an uncovered one asks nothing).
        share = true_mask.mean(dim=(1, 2, 3))
        colour = ((ours - truth).abs().sum(dim=1) * share).sum() / share.sum().clamp(min=1e-6)
        total = total + weights.colour * colour
        parts["colour"] = colour.detach()
    if weights.hole_mean > 0:
        area = true_mask.sum(dim=(1, 2, 3))
        per_sample = ((restored - target).abs() * true_mask).sum(dim=(1, 2, 3)) / (area * restored.shape[1]).clamp(min=1.0)
        covered = (area >= 1.0).float()  # an uncovered sample asks nothing
        hole_mean = (per_sample * covered).sum() / covered.sum().clamp(min=1.0)
        total = total + weights.hole_mean * hole_mean
        parts["hole_mean"] = hole_mean.detach()
    if weights.mse > 0:
        squared = (((restored - target) ** 2) * true_mask).sum() / (true_mask.sum() * restored.shape[1]).clamp(min=1.0)
        total = total + weights.mse * squared
        parts["mse"] = squared.detach()
    if fake_features is not None and real_features is not None and weights.feature_match > 0:
        matching = sum((fake.float() - real.detach().float()).abs().mean()
                       for fake, real in zip(fake_features, real_features)) / len(fake_features)
        total = total + weights.feature_match * matching
        parts["fm"] = matching.detach()
    if fake_logits is not None and weights.adv > 0:
        adversarial = F.binary_cross_entropy_with_logits(fake_logits.float(), torch.ones_like(fake_logits, dtype=torch.float32))
        total = total + weights.adv * adversarial
        parts["adv"] = adversarial.detach()
    parts["total"] = total.detach()
    return total, (as_floats(parts) if floats else parts)


def as_floats(parts: dict) -> dict[str, float]:
    """A loss's parts as plain numbers (each a device sync where they are tensors on a GPU)."""
    return {name: float(value) for name, value in parts.items()}


def discriminator_loss(real_logits: torch.Tensor, fake_logits: torch.Tensor,
                       floats: bool = True) -> tuple[torch.Tensor, dict]:
    """DCGAN's binary cross-entropy: real patches towards 1, generated ones towards 0."""
    real_logits, fake_logits = real_logits.float(), fake_logits.float()
    real = F.binary_cross_entropy_with_logits(real_logits, torch.ones_like(real_logits))
    fake = F.binary_cross_entropy_with_logits(fake_logits, torch.zeros_like(fake_logits))
    loss = 0.5 * (real + fake)
    parts = {"d": loss.detach()}
    return loss, (as_floats(parts) if floats else parts)
