"""`deocc-train synth`: aligned training pairs from face photos and occluder cut-outs.

Each face is aligned by the app's own function (MediaPipe landmarks onto the canonical crop);
faces without landmarks are skipped and counted. Deterministic for a given seed.
"""
from __future__ import annotations

import json
import os
import zlib
from dataclasses import asdict
from multiprocessing import get_context
from pathlib import Path

import cv2
import numpy as np

from deocc_live.stages import align
from trainer.configs import SynthConfig
from trainer.pairs import IMAGE_SUFFIXES, SPLITS, split_of
from engines.atomic import atomic_write_bytes
from trainer.util import progress

MIN_EYE_DISTANCE_PX = 18.0


def face_files(root: str | Path) -> list[Path]:
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"faces folder not found: {root}")
    return sorted(p for p in root.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())


def face_key(path: Path, root: Path) -> str:
    relative = path.relative_to(root).with_suffix("")
    return "_".join(relative.parts).replace(" ", "-")


_worker = {}


def _init_worker(config: SynthConfig, model_path: str) -> None:
    from deocc_live.landmarks import FaceLandmarks
    from trainer.occluders import OccluderBank

    cv2.setNumThreads(1)
    _worker["landmarks"] = FaceLandmarks(model_path, max_faces=1)
    _worker["bank"] = OccluderBank.load(config.occluders)
    _worker["config"] = config


def with_border(image: np.ndarray) -> tuple[np.ndarray, int]:
    """(the picture with a replicated border a quarter of its size wide, that width): tight crops
    leave MediaPipe's detector no context."""
    pad = max(image.shape[:2]) // 4
    return cv2.copyMakeBorder(image, pad, pad, pad, pad, cv2.BORDER_REPLICATE), pad


def _process(item: tuple[str, str]) -> tuple[str, str]:
    """One face -> its pairs on disk. Returns (key, status)."""
    key, path = item
    config: SynthConfig = _worker["config"]
    image = cv2.imread(path, cv2.IMREAD_COLOR)
    if image is None:
        return key, "unreadable"
    padded, _pad = with_border(image)
    found = _worker["landmarks"].detect(padded)
    if len(found) == 0:
        return key, "no_face"
    landmarks = found[0].astype(np.float64)
    points = align.five_points(landmarks)
    if np.linalg.norm(points[1] - points[0]) < MIN_EYE_DISTANCE_PX:
        return key, "too_small"
    size = config.size
    matrix = align.crop_matrix(landmarks, size)
    crop = align.warp_crop(padded, matrix, size)
    crop_landmarks = align.transform_points(matrix, landmarks).astype(np.float32)
    split = split_of(key)
    base = Path(config.out) / split
    variants = config.variants if split == "train" else 1
    for variant in range(variants):
        name = key if variant == 0 else f"{key}_v{variant}"
        rng = np.random.default_rng([config.seed, zlib.crc32(name.encode())])
        occluded, mask = _worker["bank"].render(crop, crop_landmarks, rng)
        atomic_write_bytes(base / "Mask" / f"{name}_Mask.jpg", _encode(".jpg", occluded, [cv2.IMWRITE_JPEG_QUALITY, 95]))
        atomic_write_bytes(base / "Unmask" / f"{name}.png", _encode(".png", crop))
        atomic_write_bytes(base / "Occlusion" / f"{name}.png", _encode(".png", mask))
        buffer = _npy_bytes(crop_landmarks.astype(np.float16))
        atomic_write_bytes(base / "Landmarks" / f"{name}.npy", buffer)
    return key, split


def _encode(suffix: str, image: np.ndarray, params=()) -> bytes:
    ok, data = cv2.imencode(suffix, image, list(params))
    if not ok:
        raise RuntimeError(f"cannot encode {suffix}")
    return data.tobytes()


def _npy_bytes(array: np.ndarray) -> bytes:
    import io

    buffer = io.BytesIO()
    np.save(buffer, array)
    return buffer.getvalue()


def run(config: SynthConfig) -> dict:
    from deocc_live.landmark_model import resolve

    model_path = str(resolve(config.landmarker))
    if not Path(config.occluders).is_dir():  # checked here: a failing pool initializer would respawn forever
        raise FileNotFoundError(f"occluder folder not found: {config.occluders}")
    root = Path(config.faces)
    files = face_files(root)
    if config.limit:
        files = files[: config.limit]
    if not files:
        raise FileNotFoundError(f"no face pictures under {root}")
    items = [(face_key(p, root), str(p)) for p in files]
    counts = {name: 0 for name in (*SPLITS, "no_face", "too_small", "unreadable")}
    workers = max(1, min(config.workers, os.cpu_count() or 1))
    context = get_context("spawn")
    with context.Pool(workers, initializer=_init_worker, initargs=(config, model_path)) as pool:
        for _key, status in progress(pool.imap_unordered(_process, items, chunksize=16),
                                     total=len(items), desc="synth"):
            counts[status] += 1
    summary = {"config": {**asdict(config), "occluders": str(Path(config.occluders).resolve())}, "faces": len(items), "counts": counts,
               "skipped": counts["no_face"] + counts["too_small"] + counts["unreadable"]}
    atomic_write_bytes(Path(config.out) / "summary.json", json.dumps(summary, indent=2).encode())
    return summary
