"""Alignment: face landmarks -> similarity transform onto the canonical square crop.

The trainer aligns its training faces with these very functions, so the generator sees at run
time what it saw in training. Everything here is plain numpy/OpenCV and works in pixels.
"""
from __future__ import annotations

import cv2
import numpy as np

from deocc_live.frame import Frame
from engines.metadata import TEMPLATE

# MediaPipe FaceLandmarker mesh indices of the five alignment points. Eye centres are the mean
# of each eye's two corners (stable whatever the gaze), the nose tip, the two mouth corners.
EYE_A_CORNERS = (33, 133)
EYE_B_CORNERS = (362, 263)
NOSE_TIP = 1
MOUTH_A = 61
MOUTH_B = 291

def five_points(landmarks: np.ndarray) -> np.ndarray:
    """The five alignment points (5, 2) from 478 (or 468) MediaPipe landmarks in pixels."""
    landmarks = np.asarray(landmarks, dtype=np.float64)
    if landmarks.ndim != 2 or landmarks.shape[0] < 468 or landmarks.shape[1] < 2:
        raise ValueError(f"expected (478, 2) landmarks, got {landmarks.shape}")
    xy = landmarks[:, :2]
    return np.stack(
        [
            xy[list(EYE_A_CORNERS)].mean(axis=0),
            xy[list(EYE_B_CORNERS)].mean(axis=0),
            xy[NOSE_TIP],
            xy[MOUTH_A],
            xy[MOUTH_B],
        ]
    )


def similarity(src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """Least-squares similarity transform (rotation, uniform scale, translation), 2x3, mapping
    src points onto dst points (Umeyama's closed form; no reflection)."""
    src = np.asarray(src, dtype=np.float64)
    dst = np.asarray(dst, dtype=np.float64)
    if src.shape != dst.shape or src.ndim != 2 or src.shape[1] != 2 or src.shape[0] < 2:
        raise ValueError(f"need two matching (N>=2, 2) point sets, got {src.shape} and {dst.shape}")
    src_mean, dst_mean = src.mean(axis=0), dst.mean(axis=0)
    src_c, dst_c = src - src_mean, dst - dst_mean
    src_var = (src_c**2).sum() / len(src)
    if src_var < 1e-12:
        raise ValueError("degenerate points: all at one place")
    cov = dst_c.T @ src_c / len(src)
    u, s, vt = np.linalg.svd(cov)
    d = np.eye(2)
    if np.linalg.det(u) * np.linalg.det(vt) < 0:
        d[1, 1] = -1.0
    rotation = u @ d @ vt
    scale = np.trace(np.diag(s) @ d) / src_var
    matrix = np.empty((2, 3))
    matrix[:, :2] = scale * rotation
    matrix[:, 2] = dst_mean - scale * rotation @ src_mean
    return matrix


def crop_matrix(landmarks: np.ndarray, size: int, template: np.ndarray = TEMPLATE) -> np.ndarray:
    """The 2x3 matrix taking frame pixels to the aligned crop of side ``size``."""
    return similarity(five_points(landmarks), np.asarray(template, dtype=np.float64) * size)


def invert(matrix: np.ndarray) -> np.ndarray:
    """Inverse of a 2x3 affine matrix."""
    return cv2.invertAffineTransform(np.asarray(matrix, dtype=np.float64))


def transform_points(matrix: np.ndarray, points: np.ndarray) -> np.ndarray:
    """Apply a 2x3 matrix to (N, 2) points."""
    points = np.asarray(points, dtype=np.float64)[:, :2]
    return points @ np.asarray(matrix, dtype=np.float64)[:, :2].T + np.asarray(matrix)[:, 2]


def warp_crop(image: np.ndarray, matrix: np.ndarray, size: int) -> np.ndarray:
    """Cut the aligned crop out of ``image`` (pixels outside the image repeat its border)."""
    return cv2.warpAffine(
        image, np.asarray(matrix, dtype=np.float64), (size, size),
        flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE,
    )


def crop_box(inverse: np.ndarray, size: int, frame_shape: tuple[int, ...], margin: int = 2,
             part: tuple[float, float, float, float] | None = None):
    """The frame's integer box (x0, y0, x1, y1) covering the footprint of the crop (or of its
    ``part``, a rectangle (left, top, right, bottom) in crop pixels), ``margin`` pixels out,
    clipped to the frame; None when the footprint lies outside it."""
    left, top, right, bottom = part if part is not None else (0, 0, size, size)
    corners = np.array([[left, top], [right, top], [right, bottom], [left, bottom]], dtype=np.float64)
    frame_corners = transform_points(inverse, corners)
    height, width = frame_shape[:2]
    x0 = max(int(np.floor(frame_corners[:, 0].min())) - margin, 0)
    y0 = max(int(np.floor(frame_corners[:, 1].min())) - margin, 0)
    x1 = min(int(np.ceil(frame_corners[:, 0].max())) + margin, width)
    y1 = min(int(np.ceil(frame_corners[:, 1].max())) + margin, height)
    if x1 <= x0 or y1 <= y0:
        return None
    return x0, y0, x1, y1


def thumbnail(image: np.ndarray, side: int) -> np.ndarray:
    """A small grey summary of a picture (``side`` pixels square, int16) for telling whether it
    changed: sensor noise averages out, a moving face or hand does not."""
    small = cv2.resize(image, (side, side), interpolation=cv2.INTER_AREA)
    return cv2.cvtColor(small, cv2.COLOR_BGR2GRAY).astype(np.int16)


class AlignStage:
    """Each face's crop matrix, its inverse and the aligned crop."""

    def __init__(self, crop_size: int):
        self.crop_size = crop_size

    def __call__(self, frame: Frame) -> Frame:
        for face in frame.faces:
            face.matrix = crop_matrix(face.landmarks, self.crop_size)
            face.inverse = invert(face.matrix)
            face.crop = warp_crop(frame.image, face.matrix, self.crop_size)
        return frame
