"""A training pack: what `fit` needs of a pairs folder, small enough to travel with the code to a
machine that has a GPU but not the data (the device machine takes at most 64 MiB of tree).

    PACK/pack.npz        the faces: per split, their keys, their crops as WebP (one blob and the
                         end of each crop in it) and, for online occlusion, the landmarks the
                         occluders are placed by (float16, only those points: ``PLACED_BY``);
                         validation also keeps its occluded crops and masks (fit's fixed batch)
    PACK/occluders/      the occluder folder's training cut-outs (none of the held-out ones)
    PACK/summary.json    what was packed, from where, at what quality, how large

`fit --data PACK` trains from it as from the pairs folder (occluders drawn online, the same
augmentation); the crops went through WebP (about 39 dB at quality 85) and, with ``--limit``,
fewer faces are drawn from.
"""
from __future__ import annotations

import json
import shutil
import zlib
from dataclasses import asdict
from pathlib import Path

import cv2
import numpy as np

from engines.atomic import atomic_write_bytes
from trainer.configs import PackConfig
from trainer.pairs import list_pairs, mask_for, read_image, read_pair, sized

PACK_FILE = "pack.npz"
LANDMARK_COUNT = 478
# Folders of the occluder folder copied whole: the bank reads all of them whatever the subset.
SHARED_OCCLUDER_FOLDERS = ("face_masks_meta", "mask_textures_rgb")


def is_pack(root) -> bool:
    return (Path(root) / PACK_FILE).is_file()


def _encoded(image: np.ndarray, suffix: str, quality: int) -> bytes:
    params = [cv2.IMWRITE_WEBP_QUALITY, quality] if suffix == ".webp" else []
    ok, data = cv2.imencode(suffix, image, params)
    if not ok:
        raise ValueError(f"could not encode a crop as {suffix}")
    return data.tobytes()


def _decoded(blob: np.ndarray, flags: int) -> np.ndarray | None:
    image = cv2.imdecode(blob, flags)
    return None if image is None or image.size == 0 else image


class _Blobs:
    """Byte strings kept as one uint8 array and the end of each (cheap to pickle to loader processes)."""

    def __init__(self, data: np.ndarray, ends: np.ndarray):
        self.data, self.ends = data, ends

    @classmethod
    def of(cls, items: list[bytes]) -> "_Blobs":
        ends = np.cumsum([len(item) for item in items], dtype=np.int64)
        return cls(np.frombuffer(b"".join(items), np.uint8).copy(), ends)

    def __getitem__(self, index: int) -> np.ndarray:
        start = int(self.ends[index - 1]) if index else 0
        return self.data[start:int(self.ends[index])]


class PackedPair:
    """One face of a pack, with the reading methods of ``trainer.pairs.Pair``."""

    def __init__(self, split: "PackedSplit", index: int):
        self.split, self.index = split, index
        self.key = str(split.keys[index])

    @property
    def landmarks(self) -> bool | None:
        """Whether the pack holds this face's landmarks (a Pair holds their file's path)."""
        return None if self.split.landmarks is None else True

    def read_clean(self, size: int | None = None) -> np.ndarray | None:
        return sized(_decoded(self.split.clean[self.index], cv2.IMREAD_COLOR), size)

    def read_landmarks(self) -> np.ndarray:
        """478 x 2 in crop pixels: the packed points where they were, zeros elsewhere."""
        full = np.zeros((LANDMARK_COUNT, 2), np.float32)
        full[self.split.landmark_index] = self.split.landmarks[self.index]
        return full

    def read(self, size: int | None = None):
        if self.split.occluded is None:
            return None
        occluded = sized(_decoded(self.split.occluded[self.index], cv2.IMREAD_COLOR), size)
        clean = self.read_clean(size)
        mask = _decoded(self.split.masks[self.index], cv2.IMREAD_GRAYSCALE)
        if occluded is None or clean is None or mask is None:
            return None
        return occluded, clean, mask_for(mask, occluded, clean)


class PackedSplit:
    def __init__(self, arrays, split: str):
        self.keys = arrays[f"{split}_keys"]
        self.clean = _Blobs(arrays[f"{split}_clean"], arrays[f"{split}_clean_ends"])
        self.landmark_index = arrays["landmark_index"]
        self.landmarks = arrays[f"{split}_landmarks"] if f"{split}_landmarks" in arrays else None
        self.occluded = self.masks = None
        if f"{split}_occluded" in arrays:
            self.occluded = _Blobs(arrays[f"{split}_occluded"], arrays[f"{split}_occluded_ends"])
            self.masks = _Blobs(arrays[f"{split}_masks"], arrays[f"{split}_masks_ends"])


def list_packed(root, split: str) -> list[PackedPair]:
    """The faces of one split of the pack at ``root`` (none when the pack lacks that split)."""
    with np.load(Path(root) / PACK_FILE, allow_pickle=False) as npz:
        if f"{split}_keys" not in npz.files:
            return []
        arrays = {name: npz[name] for name in npz.files if name.startswith(split) or name == "landmark_index"}
    packed = PackedSplit(arrays, split)
    return [PackedPair(packed, i) for i in range(len(packed.keys))]


def _spread(pairs: list, limit: int) -> list:
    """``limit`` pairs spread over the sources (keys sort by source), chosen by a hash of the key:
    the same ones on every machine, and a larger limit keeps the smaller one's."""
    if not limit or limit >= len(pairs):
        return pairs
    chosen = sorted(pairs, key=lambda pair: zlib.crc32(pair.key.encode()))[:limit]
    return sorted(chosen, key=lambda pair: pair.key)


def _copy_occluders(source: Path, target: Path) -> int:
    """The cut-outs and templates ``OccluderBank.load(subset="train")`` reads, and nothing held out."""
    from trainer.occluders import held_out

    copied = 0
    for path in sorted(source.rglob("*")):
        if not path.is_file():
            continue
        relative = path.relative_to(source)
        if relative.parts[0] not in SHARED_OCCLUDER_FOLDERS and held_out(path.name):
            continue
        (target / relative).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(path, target / relative)
        copied += path.stat().st_size
    return copied


def write_pack(config: PackConfig) -> dict:
    from trainer.occluders import PLACED_BY

    source, out = Path(config.data), Path(config.out)
    if is_pack(source):
        raise ValueError(f"{source} is a pack already; pack the pairs folder `deocc-train synth` wrote")
    train = [pair for pair in list_pairs(source, "train") if pair.landmarks is not None]
    if not train:
        raise FileNotFoundError(f"no training pairs with landmarks under {source} (write them with `deocc-train synth`)")
    summary_path = source / "summary.json"
    source_summary = json.loads(summary_path.read_text()) if summary_path.is_file() else {}
    occluders = Path(config.occluders or source_summary.get("config", {}).get("occluders") or "")
    if not (occluders / "face_masks").is_dir():
        raise FileNotFoundError(f"occluder folder not found: {occluders or '(none given)'} (give --occluders)")
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise FileExistsError(f"{out} exists and is not empty")

    index = np.array(PLACED_BY, np.int16)
    arrays: dict[str, np.ndarray] = {"landmark_index": index}
    counts = {}
    chosen = {"train": _spread(train, config.limit),
              "validation": list_pairs(source, "validation")[:config.validation]}
    for split, pairs in chosen.items():
        keys, clean, landmarks, occluded, masks = [], [], [], [], []
        for pair in pairs:
            if split == "validation":
                loaded = read_pair(pair)
                if loaded is None:
                    continue
                image = loaded[1]
                occluded.append(_encoded(loaded[0], ".webp", config.quality))
                masks.append(_encoded(loaded[2], ".png", 0))
            else:
                image = read_image(pair.clean)
                if image is None:
                    continue
                points = pair.read_landmarks()
                if points.shape != (LANDMARK_COUNT, 2):
                    raise ValueError(f"{pair.landmarks}: landmarks of shape {points.shape}, expected (478, 2)")
                landmarks.append(points[index].astype(np.float16))
            keys.append(pair.key)
            clean.append(_encoded(image, ".webp", config.quality))
        counts[split] = len(keys)
        if not keys:
            continue
        arrays[f"{split}_keys"] = np.array(keys)
        blobs = _Blobs.of(clean)
        arrays[f"{split}_clean"], arrays[f"{split}_clean_ends"] = blobs.data, blobs.ends
        if landmarks:
            arrays[f"{split}_landmarks"] = np.stack(landmarks)
        if occluded:
            for name, items in (("occluded", occluded), ("masks", masks)):
                blobs = _Blobs.of(items)
                arrays[f"{split}_{name}"], arrays[f"{split}_{name}_ends"] = blobs.data, blobs.ends

    if not counts["validation"]:
        raise FileNotFoundError(f"no validation pairs under {source} (fit scores some)")

    # Written whole beside it, then renamed: an interrupted pack leaves no half of one.
    partial = out.with_name(out.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    partial.mkdir(parents=True)
    with open(partial / PACK_FILE, "wb") as handle:
        np.savez(handle, **arrays)
    occluder_bytes = _copy_occluders(occluders, partial / "occluders")
    faces_bytes = (partial / PACK_FILE).stat().st_size
    # The pairs folder's own summary (faces, counts: what the model card cites), then the pack's.
    summary = {**source_summary, "config": {**source_summary.get("config", {}), "occluders": "occluders"},
               "pack": {**asdict(config), "counts": counts, "faces_bytes": faces_bytes,
                        "occluder_bytes": occluder_bytes, "bytes": faces_bytes + occluder_bytes}}
    atomic_write_bytes(partial / "summary.json", json.dumps(summary, indent=2).encode())
    if out.exists():
        out.rmdir()  # empty (checked above)
    partial.rename(out)
    return summary

