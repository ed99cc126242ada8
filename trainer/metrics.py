"""Image-quality metrics on aligned crops (numpy, [0, 1] floats): MSE, PSNR and SSIM over the
whole crop and over the covered region, and mask IoU."""
from __future__ import annotations

import cv2
import numpy as np


def ssim_map(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Per-pixel SSIM (Gaussian window 11, sigma 1.5) of two (H, W, C) images in [0, 1],
    averaged over channels: (H, W)."""
    a, b = a.astype(np.float64), b.astype(np.float64)

    def blur(x):
        return cv2.GaussianBlur(x, (11, 11), 1.5, borderType=cv2.BORDER_REFLECT)

    c1, c2 = 0.01**2, 0.03**2
    mu_a, mu_b = blur(a), blur(b)
    var_a = blur(a * a) - mu_a**2
    var_b = blur(b * b) - mu_b**2
    cov = blur(a * b) - mu_a * mu_b
    value = ((2 * mu_a * mu_b + c1) * (2 * cov + c2)) / ((mu_a**2 + mu_b**2 + c1) * (var_a + var_b + c2))
    return value.mean(axis=2) if value.ndim == 3 else value


def psnr_from_mse(mse: float) -> float:
    return float(10 * np.log10(1.0 / max(mse, 1e-10)))


def image_metrics(prediction: np.ndarray, truth: np.ndarray, covered: np.ndarray) -> dict[str, float]:
    """prediction, truth: (H, W, 3) in [0, 1]; covered: (H, W) bool."""
    squared = ((prediction.astype(np.float64) - truth) ** 2).mean(axis=2)
    similarity = ssim_map(prediction, truth)
    mse = float(squared.mean())
    result = {"mse": mse, "psnr": psnr_from_mse(mse), "ssim": float(similarity.mean())}
    if covered.any():
        hole_mse = float(squared[covered].mean())
        result.update(hole_mse=hole_mse, hole_psnr=psnr_from_mse(hole_mse), hole_ssim=float(similarity[covered].mean()))
    return result


def mask_iou(predicted: np.ndarray, truth: np.ndarray) -> float:
    union = np.logical_or(predicted, truth).sum()
    return float(np.logical_and(predicted, truth).sum() / union) if union else 1.0
