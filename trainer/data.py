"""Training data as tensors: pairs from disk, optionally re-occluded online.

With landmarks beside the clean crops (what ``synth`` writes) and the occluder folder at hand,
every training sample gets a fresh occluder drawn for it, so the generator sees endless
variations of the few cut-outs; validation and test always use the pairs on disk.
Sample order and occluders depend only on (seed, step), so a resumed run sees what an
uninterrupted one would have seen.
"""
from __future__ import annotations

import zlib

import cv2
import numpy as np
import torch
from torch.utils.data import Dataset, Sampler

from trainer.misalign import error_matrix
from trainer.pack import is_pack, list_packed
from trainer.pairs import grey, jpeg_round_trip, list_pairs


def to_tensor(image_bgr: np.ndarray) -> torch.Tensor:
    """BGR uint8 (H, W, 3) -> RGB float32 [3, H, W] in [-1, 1]."""
    rgb = np.ascontiguousarray(image_bgr[..., ::-1], dtype=np.float32)
    return torch.from_numpy(rgb).permute(2, 0, 1) / 127.5 - 1.0


def mask_tensor(mask: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(mask.astype(np.float32) / 255.0)[None]


def to_image(tensor: torch.Tensor) -> np.ndarray:
    """RGB [3, H, W] in [-1, 1] -> BGR uint8 (H, W, 3)."""
    array = ((tensor.detach().float().clamp(-1, 1) + 1) * 127.5 + 0.5).byte().permute(1, 2, 0).cpu().numpy()
    return np.ascontiguousarray(array[..., ::-1])


def _jitter(image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Colour and light jitter of the whole scene (applied before the occluder is drawn)."""
    out = image.astype(np.float32)
    out = (out - 128.0) * rng.uniform(0.85, 1.15) + 128.0 + rng.uniform(-18, 18)
    out *= rng.uniform(0.92, 1.08, 3).astype(np.float32)
    return np.clip(out, 0, 255).astype(np.uint8)


def softened(image: np.ndarray, seed: int) -> np.ndarray:
    """A picture as a webcam or a small face in a photo gives it: at a lower resolution (shrunk
    1.5 to 3 times and enlarged back) and/or with sensor noise (sigma 2 to 8). The same ``seed``
    degrades two pictures (the covered one and its truth) alike."""
    rng = np.random.default_rng(seed)
    out = image
    if rng.random() < 0.7:
        size = image.shape[0]
        small = max(int(round(size / rng.uniform(1.5, 3.0))), 8)
        out = cv2.resize(cv2.resize(out, (small, small), interpolation=cv2.INTER_AREA), (size, size),
                         interpolation=cv2.INTER_LINEAR)
    if rng.random() < 0.5:
        noise = rng.normal(0.0, rng.uniform(2.0, 8.0), out.shape).astype(np.float32)
        out = np.clip(out.astype(np.float32) + noise, 0, 255).astype(np.uint8)
    return out


def compressed(image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """The covered picture as JPEG at quality 30 to 85 (web photos, video calls' streams)."""
    return jpeg_round_trip(image, int(rng.integers(30, 86)))


def jittered(error: dict | None, amount: float, rng: np.random.Generator) -> dict:
    """A crop error moved further at random: shifts of up to ``amount`` crop widths each way,
    scale by up to e^(1.5 amount), a turn of up to 60 amount degrees. Real photos put the crop
    further off than the errors recorded on synthetic faces (a face looking down, a face cut by
    the picture's edge), and the mask head misses a mask that sits 12% lower than it expects."""
    error = dict(error or {"scale": 1.0, "angle": 0.0, "dx": 0.0, "dy": 0.0})
    shift = rng.uniform(-amount, amount, 2)
    error["dx"] += float(shift[0])
    error["dy"] += float(shift[1])
    error["scale"] *= float(np.exp(rng.uniform(-1.5 * amount, 1.5 * amount)))
    error["angle"] += float(rng.uniform(-60 * amount, 60 * amount))
    return error


class PairDataset(Dataset):
    """Items are (index, sample_seed); returns (occluded, clean, mask) tensors."""

    def __init__(self, root, split: str, size: int | None = None, bank=None, augment: bool = False,
                 misalign: list[dict] | None = None, crop_jitter: float = 0.0, degrade: float = 0.0,
                 uncovered: float = 0.0, mono: float = 0.0):
        packed = is_pack(root)
        self.pairs = list_packed(root, split) if packed else list_pairs(root, split)
        if not self.pairs:
            raise FileNotFoundError(f"no {split} faces in the pack {root}" if packed else
                                    f"no {split} pairs under {root} (expected {split}/Mask and {split}/Unmask)")
        first = self.pairs[0].read_clean()
        self.size = size or (first.shape[0] if first is not None else 128)
        self.bank = bank if bank is not None and all(p.landmarks is not None for p in self.pairs) else None
        if packed and self.bank is None and self.pairs[0].read() is None:
            raise FileNotFoundError(f"the pack {root} holds {split} faces for online occlusion only, and no occluders "
                                    "were found (its occluders folder, or --occluders)")
        self.augment = augment
        self.misalign = misalign or []  # crop errors recorded on covered faces (trainer.misalign)
        self.crop_jitter = crop_jitter  # further crop errors, drawn (see jittered)
        self.degrade = degrade  # share of samples softened and compressed as real footage is
        self.uncovered = uncovered  # share of samples shown with no cover (input = truth, empty mask)
        self.mono = mono  # share of samples in black and white (input and truth)
        self.unreadable: set[str] = set()

    @property
    def online(self) -> bool:
        return self.bank is not None

    def __len__(self) -> int:
        return len(self.pairs)

    def load(self, index: int, seed: int):
        pair = self.pairs[index]
        rng = np.random.default_rng([seed, zlib.crc32(pair.key.encode())])
        if self.bank is not None:
            clean = pair.read_clean()
            if clean is None:
                return None
            landmarks = pair.read_landmarks()
            if clean.shape[0] != self.size:
                landmarks *= self.size / clean.shape[0]
                clean = cv2.resize(clean, (self.size, self.size), interpolation=cv2.INTER_AREA)
            if self.augment:
                clean = _jitter(clean, rng)
            occluded, mask = self.bank.render(clean, landmarks, rng)
        else:
            loaded = pair.read(self.size)
            if loaded is None:
                return None
            occluded, clean, mask = loaded
        # Asked only when it is on (as below): with none, the draws that follow are what they were.
        if self.augment and self.uncovered > 0 and rng.random() < self.uncovered:
            occluded, mask = clean.copy(), np.zeros_like(mask)
        # Asked only when it is on: with none, the draws that follow are what they were.
        if self.augment and self.mono > 0 and rng.random() < self.mono:
            occluded, clean = grey(occluded), grey(clean)
        # Asked only when degrading is on: with none, the draws that follow are what they were.
        if self.augment and self.degrade > 0 and rng.random() < self.degrade:
            seed = int(rng.integers(2**32))
            # Both alike (the fill must match the picture around it), then the input as the codec left it.
            occluded, clean = softened(occluded, seed), softened(clean, seed)
            occluded = compressed(occluded, rng)
        error = None
        if self.augment and self.misalign:
            # The crop the app cuts with landmarks of the covered face: the same error for all three.
            error = self.misalign[rng.integers(len(self.misalign))]
        # Asked only when jitter is on: with none, the draws that follow are what they were.
        if self.augment and self.crop_jitter > 0 and rng.random() < 0.5:
            error = jittered(error, self.crop_jitter, rng)
        if error is not None:
            matrix = error_matrix(error, self.size)
            size = (self.size, self.size)
            occluded = cv2.warpAffine(occluded, matrix, size, flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT101)
            clean = cv2.warpAffine(clean, matrix, size, flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT101)
            mask = cv2.warpAffine(mask, matrix, size, flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT)
        if self.augment and rng.random() < 0.5:
            occluded, clean, mask = occluded[:, ::-1], clean[:, ::-1], mask[:, ::-1]
        return occluded, clean, mask

    def __getitem__(self, item):
        index, seed = item if isinstance(item, tuple) else (item, 0)
        for offset in range(len(self.pairs)):
            loaded = self.load((index + offset) % len(self.pairs), seed)
            if loaded is not None:
                break
            self.unreadable.add(self.pairs[(index + offset) % len(self.pairs)].key)
        else:
            raise RuntimeError("no readable pair in the data set")
        occluded, clean, mask = loaded
        return to_tensor(occluded), to_tensor(clean), mask_tensor(np.ascontiguousarray(mask))


class StepBatchSampler(Sampler):
    """Batches for steps start..steps-1, each drawn from (seed, step) alone; each DDP rank takes
    its own slice of the global batch."""

    def __init__(self, length: int, batch: int, seed: int, start: int, steps: int,
                 rank: int = 0, world: int = 1):
        self.length, self.batch, self.seed = length, batch, seed
        self.start, self.steps, self.rank, self.world = start, steps, rank, world

    def __len__(self) -> int:
        return max(self.steps - self.start, 0)

    def __iter__(self):
        for step in range(self.start, self.steps):
            rng = np.random.default_rng([self.seed, step])
            total = self.batch * self.world
            indices = rng.choice(self.length, size=total, replace=total > self.length)
            seeds = rng.integers(0, 2**31 - 1, size=total)
            part = slice(self.rank * self.batch, (self.rank + 1) * self.batch)
            yield [(int(i), int(s)) for i, s in zip(indices[part], seeds[part])]


def validation_set(root, size: int) -> PairDataset:
    """The validation split to score on, or the training split where the folder has none."""
    try:
        return PairDataset(root, "validation", size)
    except FileNotFoundError:
        return PairDataset(root, "train", size)


def fixed_batch(dataset: PairDataset, count: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The first ``count`` items of a split, stacked (for sample grids and quick validation)."""
    items = [dataset[(i, 0)] for i in range(min(count, len(dataset)))]
    return tuple(torch.stack(column) for column in zip(*items))
