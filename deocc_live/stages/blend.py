"""Blend stage: each face's restored crop warped back into the frame, inside the face's box only,
feathered by its occlusion mask and colour matched to the visible face. Pixels that were not
covered stay the camera's."""
from __future__ import annotations

import cv2
import numpy as np

from deocc_live.stages import align
from deocc_live.frame import Frame
from deocc_live.settings import LiveSettings

MASK_FLOOR = 0.04  # occlusion below this counts as "not covered": those pixels stay untouched


def edge_fade(size: int, width: float = 0.06) -> np.ndarray:
    """1 inside the crop, falling to 0 at its edges, so no seam shows where the crop ends."""
    ramp = np.clip(np.minimum(np.arange(size), np.arange(size)[::-1]) / max(width * size, 1.0), 0, 1)
    return np.minimum(ramp[:, None], ramp[None, :]).astype(np.float32)


class BlendStage:
    def __init__(self, settings: LiveSettings | None = None, colour_match: bool = True, grow: float = 0.016):
        self.settings = settings or LiveSettings()  # feather (blur of the mask, crop widths), show_mask
        self.grow = grow                  # dilation of the mask, in crop widths
        self.colour_match = colour_match
        self._fade: dict[int, np.ndarray] = {}

    def mask_for(self, occlusion: np.ndarray) -> np.ndarray:
        size = occlusion.shape[0]
        # Grow the mask a little: an occluder's anti-aliased rim must not show through.
        mask = cv2.dilate(occlusion, self._grow_kernel(size))
        feather = self.settings.feather
        if feather > 0:
            mask = cv2.GaussianBlur(mask, (0, 0), feather * size)
        mask = np.clip((mask - MASK_FLOOR) / (1 - MASK_FLOOR), 0, 1)
        fade = self._fade.get(size)
        if fade is None:
            fade = self._fade[size] = edge_fade(size)
        return mask * fade

    def _grow_kernel(self, size: int) -> np.ndarray:
        radius = max(1, int(round(self.grow * size)))
        return cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * radius + 1, 2 * radius + 1))

    def __call__(self, frame: Frame, enabled: bool = True) -> Frame:
        output = frame.image
        if enabled:
            output = frame.image.copy()
            for face in frame.faces:
                if face.restored is not None and face.inverse is not None:
                    self._blend_face(output, face)
        frame.output = output
        return frame

    def _blend_face(self, output: np.ndarray, face) -> None:
        size = face.restored.shape[0]
        mask = self.mask_for(face.occlusion)
        restored = face.restored
        if self.colour_match and face.crop is not None:
            visible = (face.occlusion < 0.2) & (self._fade[size] > 0.99)
            if visible.sum() > 0.05 * size * size:
                crop = face.crop.astype(np.float32) * (1 / 255)
                shift = crop[visible].mean(axis=0) - restored[visible].mean(axis=0)
                restored = restored + np.clip(shift, -0.15, 0.15)
        box = align.crop_box(face.inverse, size, output.shape)
        if box is None:
            return
        x0, y0, x1, y1 = box
        matrix = face.inverse.copy()
        matrix[:, 2] -= (x0, y0)
        alpha = cv2.warpAffine(mask, matrix, (x1 - x0, y1 - y0), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT)
        if self.settings.show_mask:
            restored = restored * 0.5 + np.array([0, 0, 0.5], np.float32)
            alpha = np.maximum(alpha, (alpha > 0.01) * np.float32(0.5))
        # Only the covered part of the box is touched: find it, then warp and blend just that.
        rows = np.flatnonzero(alpha.max(axis=1) > 0)
        if rows.size == 0:
            return
        cols = np.flatnonzero(alpha[rows[0]:rows[-1] + 1].max(axis=0) > 0)
        top, bottom, left, right = rows[0], rows[-1] + 1, cols[0], cols[-1] + 1
        alpha = np.ascontiguousarray(alpha[top:bottom, left:right])
        matrix[:, 2] -= (left, top)
        restored8 = np.clip(restored * 255.0 + 0.5, 0, 255).astype(np.uint8)
        warped = cv2.warpAffine(restored8, matrix, (right - left, bottom - top), flags=cv2.INTER_LINEAR,
                                borderMode=cv2.BORDER_REPLICATE)
        region = output[y0 + top:y0 + bottom, x0 + left:x0 + right]
        # blendLinear leaves a pixel exactly as it was where alpha is 0.
        region[...] = cv2.blendLinear(warped, region, alpha, 1.0 - alpha)
