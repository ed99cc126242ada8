"""The training-pair folder layout (the seed write-up's, plus our masks and landmarks):

    {train,validation,test}/Mask/{id}_Mask.jpg     occluded face (aligned crop)
    {train,validation,test}/Unmask/{id}.png        the same face uncovered
    {train,validation,test}/Occlusion/{id}.png     occlusion mask, 0-255 (ours; optional)
    {train,validation,test}/Landmarks/{id}.npy     478x2 landmarks in crop pixels (ours; optional)

Folders without Occlusion masks (a user's own Kaggle-style set) get masks estimated from the
difference between the two pictures.
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

SPLITS = ("train", "validation", "test")
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".webp")


def split_of(name: str, validation: float = 0.05, test: float = 0.05) -> str:
    """A stable split from a hash of the file name: the same on every machine."""
    bucket = int(hashlib.sha1(name.encode("utf-8")).hexdigest()[:8], 16) / 0xFFFFFFFF
    if bucket < test:
        return "test"
    if bucket < test + validation:
        return "validation"
    return "train"


@dataclass(frozen=True)
class Pair:
    key: str
    occluded: Path
    clean: Path
    mask: Path | None
    landmarks: Path | None

    def read_clean(self, size: int | None = None) -> np.ndarray | None:
        return read_image(self.clean, size)

    def read_landmarks(self) -> np.ndarray:
        """478 x 2 in crop pixels."""
        return np.load(self.landmarks, allow_pickle=False).astype(np.float32)

    def read(self, size: int | None = None):
        return read_pair(self, size)


def _find(folder: Path, stems: list[str]) -> Path | None:
    for stem in stems:
        for suffix in IMAGE_SUFFIXES:
            candidate = folder / f"{stem}{suffix}"
            if candidate.is_file():
                return candidate
    return None


def list_pairs(root: str | Path, split: str) -> list[Pair]:
    """Every complete pair of one split, sorted by key. Pairs whose occluded picture is
    missing are left out."""
    base = Path(root) / split
    clean_dir, occluded_dir = base / "Unmask", base / "Mask"
    if not clean_dir.is_dir() or not occluded_dir.is_dir():
        return []
    pairs = []
    for clean in sorted(clean_dir.iterdir()):
        if clean.suffix.lower() not in IMAGE_SUFFIXES:
            continue
        key = clean.stem
        occluded = _find(occluded_dir, [f"{key}_Mask", key])
        if occluded is None:
            continue
        mask = _find(base / "Occlusion", [key])
        landmarks = base / "Landmarks" / f"{key}.npy"
        pairs.append(Pair(key, occluded, clean, mask, landmarks if landmarks.is_file() else None))
    return pairs


def sized(image: np.ndarray | None, size: int | None) -> np.ndarray | None:
    """A crop resized to size x size if a size is given (area-filtered)."""
    if image is not None and size is not None and image.shape[:2] != (size, size):
        image = cv2.resize(image, (size, size), interpolation=cv2.INTER_AREA)
    return image


def read_image(path: Path, size: int | None = None) -> np.ndarray | None:
    """A BGR uint8 picture, resized to size x size if given; None if unreadable."""
    image = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if image is None or image.size == 0:
        return None
    return sized(image, size)


def grey(image: np.ndarray) -> np.ndarray:
    """The picture in black and white, still three channels."""
    return cv2.cvtColor(cv2.cvtColor(image, cv2.COLOR_BGR2GRAY), cv2.COLOR_GRAY2BGR)


def jpeg_round_trip(image: np.ndarray, quality: int) -> np.ndarray:
    """A BGR picture through JPEG at ``quality`` and back, as a camera's or a website's codec
    leaves it (the picture itself where encoding fails)."""
    ok, data = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, int(quality)])
    return cv2.imdecode(data, cv2.IMREAD_COLOR) if ok else image


def estimate_mask(occluded: np.ndarray, clean: np.ndarray) -> np.ndarray:
    """An occlusion mask (uint8 0-255) for pairs that come without one: where the pictures
    differ beyond JPEG noise, closed and slightly grown."""
    difference = cv2.absdiff(occluded, clean).max(axis=2)
    mask = (cv2.GaussianBlur(difference, (5, 5), 0) > 24).astype(np.uint8)
    kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (5, 5))
    mask = cv2.morphologyEx(mask, cv2.MORPH_CLOSE, kernel)
    return (cv2.dilate(mask, kernel) * 255).astype(np.uint8)


def read_pair(pair: Pair, size: int | None = None):
    """(occluded, clean, mask) as uint8 arrays, or None when a file is unreadable."""
    occluded = read_image(pair.occluded, size)
    clean = read_image(pair.clean, size)
    if occluded is None or clean is None:
        return None
    mask = cv2.imread(str(pair.mask), cv2.IMREAD_GRAYSCALE) if pair.mask is not None else None
    return occluded, clean, mask_for(mask, occluded, clean)


def mask_for(mask: np.ndarray | None, occluded: np.ndarray, clean: np.ndarray) -> np.ndarray:
    """A pair's occlusion mask at the clean crop's size; estimated from the two pictures when missing."""
    if mask is not None and mask.shape != clean.shape[:2]:
        mask = cv2.resize(mask, clean.shape[1::-1], interpolation=cv2.INTER_LINEAR)
    return estimate_mask(occluded, clean) if mask is None else mask
