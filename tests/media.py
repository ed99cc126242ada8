"""Real test media made from ../shared/data faces: a face placed in a larger frame with an
occluder (a face-mask shaped patch over nose, mouth and chin, from the face's own landmarks)."""
from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from deocc_live.landmarks import LOWER_FACE_OUTLINE, FaceLandmarks

SHARED = Path(__file__).resolve().parents[2] / "shared"
DATA = Path(__import__("os").environ.get("DEOCC_DATA", SHARED / "data"))
MODELS = Path(__import__("os").environ.get("DEOCC_MODEL_DIR", SHARED / "models"))
LANDMARKER = MODELS / "face_landmarker.task"
FACE = DATA / "faces" / "utkface"


def face_files(count: int) -> list[Path]:
    return sorted(FACE.glob("*.jpg"))[:count]


def background(size: tuple[int, int], seed: int = 0) -> np.ndarray:
    width, height = size
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    base = np.stack([60 + 80 * xx / width, 90 + 60 * yy / height, 140 - 50 * xx / width], axis=2)
    noise = rng.normal(0, 6, (height // 8 + 1, width // 8 + 1, 3)).astype(np.float32)
    base += cv2.resize(noise, (width, height), interpolation=cv2.INTER_CUBIC)
    return np.clip(base, 0, 255).astype(np.uint8)


def place_face(face: np.ndarray, size: tuple[int, int], scale: float = 1.6, offset=(0, 0), seed: int = 0) -> tuple[np.ndarray, tuple]:
    """The face pasted (with a soft edge) into a frame; returns the frame and the face box."""
    frame = background(size, seed)
    big = cv2.resize(face, None, fx=scale, fy=scale, interpolation=cv2.INTER_CUBIC)
    h, w = big.shape[:2]
    x0 = (size[0] - w) // 2 + offset[0]
    y0 = (size[1] - h) // 2 + offset[1]
    fade = np.ones((h, w), np.float32)
    edge = max(4, w // 12)
    ramp = np.clip(np.minimum(np.arange(w), np.arange(w)[::-1]) / edge, 0, 1)
    ramp_y = np.clip(np.minimum(np.arange(h), np.arange(h)[::-1]) / edge, 0, 1)
    fade = np.minimum(ramp[None, :], ramp_y[:, None])[..., None]
    # Clip to the frame: a face may stand partly outside it.
    fx0, fy0 = max(x0, 0), max(y0, 0)
    fx1, fy1 = min(x0 + w, size[0]), min(y0 + h, size[1])
    part = (slice(fy0 - y0, fy1 - y0), slice(fx0 - x0, fx1 - x0))
    region = frame[fy0:fy1, fx0:fx1].astype(np.float32)
    frame[fy0:fy1, fx0:fx1] = (region * (1 - fade[part]) + big[part] * fade[part]).astype(np.uint8)
    return frame, (x0, y0, x0 + w, y0 + h)


def occlude(frame: np.ndarray, landmarks: np.ndarray, colour=(200, 170, 120)) -> tuple[np.ndarray, np.ndarray]:
    """A surgical-mask-like patch over the lower face; returns (occluded frame, mask bool)."""
    mask = np.zeros(frame.shape[:2], np.uint8)
    cv2.fillPoly(mask, [landmarks[LOWER_FACE_OUTLINE].astype(np.int32)], 1)
    out = frame.copy()
    height, width = frame.shape[:2]
    rng = np.random.default_rng(1)
    shade = np.linspace(0.8, 1.05, width, dtype=np.float32)[None, :, None]
    pleats = 1 + 0.08 * np.sin(np.arange(height, dtype=np.float32) / 6.0)[:, None, None]
    patch = np.array(colour, np.float32)[None, None, :] * shade * pleats + rng.normal(0, 4, frame.shape)
    patch = patch.clip(0, 255).astype(np.uint8)
    out[mask.astype(bool)] = patch[mask.astype(bool)]
    return out, mask.astype(bool)


def occluded_frame(face_path: Path, size=(640, 480), scale: float = 1.6, offset=(0, 0), seed: int = 0):
    """(clean frame, occluded frame, occluder mask, face box) for one face picture."""
    face = cv2.imread(str(face_path))
    clean, box = place_face(face, size, scale, offset, seed)
    with FaceLandmarks(LANDMARKER) as landmarks:
        found = landmarks.detect(clean)
    if len(found) == 0:
        raise RuntimeError(f"no face found in {face_path}")
    occluded, mask = occlude(clean, found[0])
    return clean, occluded, mask, box


def write_video(path: Path, frames: list[np.ndarray], fps: float = 30.0) -> Path:
    height, width = frames[0].shape[:2]
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), fps, (width, height))
    for frame in frames:
        writer.write(frame)
    writer.release()
    return path


def read_video(path: Path) -> list[np.ndarray]:
    capture = cv2.VideoCapture(str(path))
    frames = []
    while True:
        ok, frame = capture.read()
        if not ok:
            break
        frames.append(frame)
    capture.release()
    return frames


def moving_clip(face_path: Path, count: int = 30, size=(640, 480), step=(2, 1)) -> tuple[list, list]:
    """A short clip of an occluded face drifting slowly; returns (frames, masks)."""
    frames, masks = [], []
    for i in range(count):
        offset = (step[0] * i - step[0] * count // 2, step[1] * i - step[1] * count // 2)
        _clean, occluded, mask, _box = occluded_frame(face_path, size, offset=offset)
        frames.append(occluded)
        masks.append(mask)
    return frames, masks
