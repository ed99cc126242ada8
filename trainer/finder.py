"""The finder: a small network of our own that finds a face MediaPipe misses under a cover.

MediaPipe's detector misses some faces under a face mask, a hand or a phone, and its landmark
model, given the right square, scores them as no face. The finder is trained on exactly those:
windows of training faces covered by the trainer's occluders, and of real masked photos (with the
points MediaPipe found on them where it did), at many scales, places and tilts, against windows
with no face or only a part of one. For each window it gives a score (is a face's centre in here,
at a size this window can hold) and the five alignment points. The app asks it only when every
MediaPipe look found nothing.

Windows are WINDOW pixels square, BGR in [0, 1]. The five points are those of
``deocc_live.stages.align.five_points``, in window widths.
"""
from __future__ import annotations

import json
import math
import time
import zlib
from dataclasses import asdict
from pathlib import Path

import cv2
import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, Dataset

from deocc_live.stages.align import five_points
from engines.metadata import TEMPLATE
from trainer.e2e import background
from trainer.occluders import OccluderBank, _pick
from trainer.pairs import IMAGE_SUFFIXES, list_pairs, split_of

WINDOW = 96
SWAP = [1, 0, 2, 4, 3]  # the five points' order in a mirrored window
EYE_SPAN = (0.09, 0.42)  # eye distance, in window widths, of a face the finder reports


class Finder(nn.Module):
    """Five strided stages (96 -> 3 px) and a small head: a score logit and ten coordinates."""

    def __init__(self, width: float = 1.0):
        super().__init__()
        channels = [max(8, int(round(c * width))) for c in (24, 32, 48, 64, 96)]
        layers, last = [], 3
        for c in channels:
            layers += [nn.Conv2d(last, c, 3, 2, 1, bias=False), nn.BatchNorm2d(c), nn.ReLU(inplace=True),
                       nn.Conv2d(c, c, 3, 1, 1, bias=False), nn.BatchNorm2d(c), nn.ReLU(inplace=True)]
            last = c
        self.body = nn.Sequential(*layers)
        self.head = nn.Sequential(nn.Flatten(), nn.Linear(last * 9, 192), nn.ReLU(inplace=True), nn.Linear(192, 11))

    def forward(self, window: torch.Tensor):
        out = self.head(self.body(window))
        return torch.sigmoid(out[:, :1]), out[:, 1:]


def _similarity(points: np.ndarray, scale: float, angle: float, centre) -> np.ndarray:
    """2x3 matrix turning the picture by ``angle`` about the five points' centre, scaling by
    ``scale`` and putting that centre at ``centre``."""
    c = points.mean(axis=0)
    cos, sin = scale * math.cos(angle), scale * math.sin(angle)
    matrix = np.array([[cos, -sin, 0.0], [sin, cos, 0.0]])
    matrix[:, 2] = np.asarray(centre) - matrix[:, :2] @ c
    return matrix


def _roll(points: np.ndarray) -> float:
    d = points[1] - points[0]
    return math.atan2(d[1], d[0])


class WindowSamples(Dataset):
    """Windows made online from (index, seed): (window [3, 96, 96], score target [1], the five
    points' ten coordinates in window widths; only a face's are learnt)."""

    def __init__(self, pairs_root, split: str, occluders, real_root=None, real_labels=None, exclude=(),
                 real_share: float = 0.35, negative_share: float = 0.45, cut: float = 0.0, lone: float = 0.0):
        self.pairs = [p for p in list_pairs(pairs_root, split) if p.landmarks is not None]
        if not self.pairs:
            raise FileNotFoundError(f"no {split} pairs with landmarks under {pairs_root}")
        self.bank = OccluderBank.load(occluders, "train")
        self.real = []
        if real_root and real_labels:
            labels = json.loads(Path(real_labels).read_text())
            for name, faces in sorted(labels.items()):
                if len(faces) == 1 and split_of(Path(name).stem) == split and Path(name).name not in exclude:
                    self.real.append((Path(real_root) / name, np.float32(faces[0])))
        self.real_share = real_share if self.real else 0.0
        self.negative_share = negative_share
        self.cut = cut
        self.lone = lone

    def __len__(self):
        return 1 << 30

    def _cover_alone(self, rng):
        """(picture, five points) of no face: the occluders of a training face (a mask, a hand, a
        cup...) drawn where they would sit, over a background instead of the face."""
        pair = self.pairs[rng.integers(len(self.pairs))]
        landmarks = np.load(pair.landmarks).astype(np.float32)
        size = cv2.imread(str(pair.clean)).shape[0]
        base = cv2.resize(self._background(rng), (size, size), interpolation=cv2.INTER_LINEAR)
        picture, _mask = self.bank.render(base, landmarks, rng)
        return picture, five_points(landmarks).astype(np.float32)

    def _lone_cutout(self, base, rng):
        """A cut-out alone (a hand most often, or a cup, a phone, glasses) as large in the window as
        a face would be, near its centre and turned: a fist or a hand held up with no face behind
        it, which MediaPipe can take for a face and the app then asks the finder about."""
        kind = _pick(rng, {k: share for k, share in (("hand", 0.6), ("object", 0.3), ("glasses", 0.1))
                           if self.bank.cutouts.get(k)})
        rgba = self.bank.cutouts[kind][rng.integers(len(self.bank.cutouts[kind]))]
        h, w = rgba.shape[:2]
        scale = rng.uniform(0.3, 1.0) * WINDOW / max(h, w)
        angle = -math.radians(rng.uniform(-45, 45))
        matrix = _similarity(np.array([[w / 2, h / 2]]), scale, angle, rng.uniform(0.3, 0.7, 2) * WINDOW)
        layer = cv2.warpAffine(rgba, matrix, (WINDOW, WINDOW), flags=cv2.INTER_LINEAR).astype(np.float32)
        alpha = layer[..., 3:4] / 255
        return base * (1 - alpha) + layer[..., :3] * alpha

    def _face_picture(self, rng):
        """(picture, its five points): an occluded training crop, or a real masked photo."""
        if rng.random() < self.real_share:
            path, points = self.real[rng.integers(len(self.real))]
            picture = cv2.imread(str(path))
            if picture is not None:
                return picture, points.copy()
        pair = self.pairs[rng.integers(len(self.pairs))]
        landmarks = np.load(pair.landmarks).astype(np.float32)
        if rng.random() < 0.3:  # a fresh occluder (slower), else the one synth drew, or none
            picture, _mask = self.bank.render(cv2.imread(str(pair.clean)), landmarks, rng)
        else:
            picture = cv2.imread(str(pair.occluded if rng.random() < 0.85 else pair.clean))
        return picture, five_points(landmarks).astype(np.float32)

    def _background(self, rng):
        if rng.random() < 0.5:
            return background((WINDOW, WINDOW), rng)
        picture, points = self._face_picture(rng)
        # A corner of a picture, zoomed: the background, a shoulder, a part of a face (no whole face).
        h, w = picture.shape[:2]
        side = int(rng.uniform(0.15, 0.4) * min(h, w))
        x0, y0 = rng.integers(0, w - side + 1), rng.integers(0, h - side + 1)
        return cv2.resize(picture[y0:y0 + side, x0:x0 + side], (WINDOW, WINDOW), interpolation=cv2.INTER_LINEAR)

    def sample(self, rng):
        negative = rng.random() < self.negative_share
        base = self._background(rng).astype(np.float32)
        kind = rng.random() if negative else 1.0
        if negative and rng.random() < self.lone:
            window, points, positive = self._lone_cutout(base, rng), None, False
        elif kind < 0.3:
            window, points, positive = base, None, False
        else:
            cover_alone = kind < 0.6  # an occluder where a face would be, and no face
            picture, points = self._cover_alone(rng) if cover_alone else self._face_picture(rng)
            eye = float(np.linalg.norm(points[1] - points[0]))
            if negative and not cover_alone:  # a face too small, too large, or with its centre outside the window
                choice = rng.integers(3)
                span = (rng.uniform(0.03, EYE_SPAN[0] * 0.7) if choice == 0 else
                        rng.uniform(EYE_SPAN[1] * 1.4, 0.9) if choice == 1 else rng.uniform(*EYE_SPAN))
                centre = rng.uniform(0.2, 0.8, 2) * WINDOW
                if choice == 2:
                    side = rng.integers(4)
                    outside = rng.uniform(-0.45, -0.05) if side < 2 else rng.uniform(1.05, 1.45)
                    centre[side % 2] = outside * WINDOW
            else:
                span = rng.uniform(*EYE_SPAN)
                centre = rng.uniform(0.22, 0.78, 2) * WINDOW
            angle = rng.uniform(-0.45, 0.45) - _roll(points)
            matrix = _similarity(points, span * WINDOW / max(eye, 1.0), angle, centre)
            face = cv2.warpAffine(picture, matrix, (WINDOW, WINDOW), flags=cv2.INTER_LINEAR,
                                  borderMode=cv2.BORDER_REPLICATE).astype(np.float32)
            shown = np.ones(picture.shape[:2], np.float32)
            if self.cut and rng.random() < self.cut:
                shown = _cut_by_edges(shown, points, rng)
            footprint = cv2.warpAffine(shown, matrix, (WINDOW, WINDOW))
            footprint = cv2.GaussianBlur(cv2.erode(footprint, np.ones((3, 3), np.uint8)), (0, 0), rng.uniform(0.8, 4))
            window = face * footprint[..., None] + base * (1 - footprint[..., None])
            points = (points @ matrix[:, :2].T + matrix[:, 2]) / WINDOW
            positive = not negative
        window = self._degrade(window, rng)
        if rng.random() < 0.5:
            window = window[:, ::-1]
            if points is not None:
                points = points[SWAP]
                points[:, 0] = 1.0 - points[:, 0]
        target = np.zeros(10, np.float32) if points is None else points.reshape(-1).astype(np.float32)
        return window, float(positive), target

    @staticmethod
    def _degrade(window, rng):
        out = window * rng.uniform(0.7, 1.3) + rng.uniform(-30, 30)
        out *= rng.uniform(0.9, 1.1, 3)
        if rng.random() < 0.3:
            out = cv2.GaussianBlur(out, (0, 0), rng.uniform(0.5, 1.8))
        if rng.random() < 0.3:
            small = int(rng.uniform(0.3, 0.8) * WINDOW)
            out = cv2.resize(cv2.resize(out, (small, small), interpolation=cv2.INTER_AREA), (WINDOW, WINDOW))
        if rng.random() < 0.3:
            out = out + rng.normal(0, rng.uniform(2, 8), out.shape)
        if rng.random() < 0.05:
            out = np.repeat(out.mean(axis=2, keepdims=True), 3, axis=2)
        return np.clip(out, 0, 255)

    def __getitem__(self, item):
        index, seed = item if isinstance(item, tuple) else (item, 0)
        rng = np.random.default_rng([seed, index])
        window, score, points = self.sample(rng)
        tensor = torch.from_numpy(np.ascontiguousarray(window.transpose(2, 0, 1), dtype=np.float32) / 255.0)
        return tensor, torch.tensor([score]), torch.from_numpy(points)


def _cut_by_edges(shown: np.ndarray, points: np.ndarray, rng) -> np.ndarray:
    """``shown`` kept only inside a box around the eyes, as a photo cut close or a face half out
    of the frame shows it: each side drawn in eye distances from the five points (the top from
    the brows' height down to just above the eyes, the bottom anywhere from the nose's tip to
    well below the mouth, the sides from beyond the cheeks to just outside the eyes)."""
    eye = max(float(np.linalg.norm(points[1] - points[0])), 1.0)
    left, right = points[[0, 1], 0].min(), points[[0, 1], 0].max()
    eyes_y = points[[0, 1], 1].min()
    bottom = (points[2, 1] + rng.uniform(0.05, 0.4) * eye if rng.random() < 0.3
              else points[[3, 4], 1].max() + rng.uniform(0.0, 1.2) * eye)
    box = (left - rng.uniform(0.25, 1.3) * eye, eyes_y - rng.uniform(0.3, 1.3) * eye,
           right + rng.uniform(0.25, 1.3) * eye, bottom)
    x0, y0, x1, y1 = (int(round(v)) for v in box)
    out = np.zeros_like(shown)
    out[max(y0, 0):max(y1, 0), max(x0, 0):max(x1, 0)] = shown[max(y0, 0):max(y1, 0), max(x0, 0):max(x1, 0)]
    return out


def fixed_set(samples: WindowSamples, count: int, seed: int):
    items = [samples[(i, seed)] for i in range(count)]
    return tuple(torch.stack(part) for part in zip(*items))


def losses(model, windows, scores, points):
    predicted_score, predicted_points = model(windows)
    score_loss = F.binary_cross_entropy(predicted_score.clamp(1e-6, 1 - 1e-6), scores)
    weight = scores  # points are learnt on faces only
    point_loss = (F.smooth_l1_loss(predicted_points, points, reduction="none", beta=0.02) * weight).sum() / (
        weight.sum() * 10 + 1e-6)
    return score_loss, point_loss


def scores_of(model, fixed) -> dict:
    """Validation: the share of faces scored above 0.5, of windows without a face below it, and
    the points' mean error on faces in eye distances."""
    windows, scores, points = fixed
    model.eval()
    with torch.no_grad():
        predicted_score, predicted_points = model(windows)
    model.train()
    face = scores[:, 0] > 0.5
    found = predicted_score[:, 0] > 0.5
    error = (predicted_points - points).reshape(-1, 5, 2).norm(dim=2).mean(dim=1)
    eye = (points.reshape(-1, 5, 2)[:, 1] - points.reshape(-1, 5, 2)[:, 0]).norm(dim=1).clamp(min=1e-3)
    return {"faces_found": float((found & face).sum() / face.sum().clamp(min=1)),
            "non_faces_rejected": float((~found & ~face).sum() / (~face).sum().clamp(min=1)),
            "point_error_eyes": float((error / eye)[face].mean())}


def mean_face(pairs_root, count: int = 3000) -> np.ndarray:
    """The mean of the training crops' 478 landmarks, in crop widths: the face the finder's five
    points place when MediaPipe gives no landmarks."""
    pairs = [p for p in list_pairs(pairs_root, "train") if p.landmarks is not None][:count]
    if not pairs:
        raise FileNotFoundError(f"no training pairs with landmarks under {pairs_root}")
    first = cv2.imread(str(pairs[0].clean))
    size = float(first.shape[0])
    return np.mean([np.load(p.landmarks).astype(np.float64) for p in pairs], axis=0) / size


def fit(config) -> dict:
    torch.manual_seed(config.seed)
    if config.threads:
        torch.set_num_threads(config.threads)
    if bool(config.real) != bool(config.real_labels):
        raise ValueError("--real and --real-labels go together (the photos and MediaPipe's points on them)")
    exclude = set()
    if config.real_labels:
        from trainer.e2e import real_photos

        exclude = {p.name for p in real_photos(config.real, 40, 0)}  # the e2e's real photos: never trained on
    train = WindowSamples(config.data, "train", config.occluders, config.real, config.real_labels, exclude,
                          cut=config.cut, lone=config.lone)
    # Validation windows from the validation split (other seeds than training's if it has none).
    held = "validation" if any(p.landmarks for p in list_pairs(config.data, "validation")) else "train"
    valid = WindowSamples(config.data, held, config.occluders, config.real, config.real_labels, exclude)
    fixed = fixed_set(valid, config.validation, seed=12345)
    model = Finder(config.width)
    optimiser = torch.optim.AdamW(model.parameters(), lr=config.lr, weight_decay=1e-4)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimiser, max_lr=config.lr, total_steps=config.steps, pct_start=0.05)
    loader = DataLoader(_Stream(train, config.seed), batch_size=config.batch, num_workers=config.workers,
                        persistent_workers=config.workers > 0)
    out = Path(config.out)
    out.mkdir(parents=True, exist_ok=True)
    started, step, log = time.time(), 0, []
    for windows, scores, points in loader:
        score_loss, point_loss = losses(model, windows, scores, points)
        loss = score_loss + config.point_weight * point_loss
        optimiser.zero_grad(set_to_none=True)
        loss.backward()
        optimiser.step()
        schedule.step()
        step += 1
        if step % config.log_every == 0 or step == config.steps:
            row = {"step": step, "score_loss": round(score_loss.item(), 4), "point_loss": round(point_loss.item(), 5),
                   "samples_per_s": round(step * config.batch / (time.time() - started), 1)}
            if step % (config.log_every * 10) == 0 or step == config.steps:
                row.update(scores_of(model, fixed))
            log.append(row)
            print(json.dumps(row), flush=True)
        if step >= config.steps:
            break
    result = scores_of(model, fixed)
    face = mean_face(config.data)
    options = {k: (Path(v).name if k in ("data", "occluders", "real", "real_labels") and v else v)
               for k, v in asdict(config).items() if k != "out"}  # no local paths in a shipped file
    export(model, face, out / "finder.onnx", {"steps": config.steps, "validation": result, "options": options,
                                               "never_trained_on": "the e2e's 40 real photos (--real 40, --seed 0)"})
    (out / "log.json").write_text(json.dumps(log))
    return result


class _Stream(torch.utils.data.IterableDataset):
    def __init__(self, samples, seed):
        self.samples, self.seed = samples, seed

    def __iter__(self):
        info = torch.utils.data.get_worker_info()
        worker = info.id if info else 0
        index = 0
        while True:
            yield self.samples[(index, zlib.crc32(f"{self.seed}/{worker}".encode()))]
            index += 1


def export(model: Finder, face: np.ndarray, path: Path, about: dict) -> None:
    """The finder as ONNX (windows in, score and points out) with what the app needs in its
    metadata: the window size, the mean face, the eye-distance range it was trained on."""
    import onnx

    from engines.atomic import atomic_write_bytes

    model = model.eval()
    example = torch.zeros(2, 3, WINDOW, WINDOW)
    temporary = Path(str(path) + ".export.tmp")
    torch.onnx.export(model, (example,), str(temporary), input_names=["window"], output_names=["score", "points"],
                      dynamic_axes={"window": {0: "n"}, "score": {0: "n"}, "points": {0: "n"}}, opset_version=17,
                      dynamo=False)
    graph = onnx.load(str(temporary))
    temporary.unlink()
    meta = {"kind": "deocc-finder", "window": WINDOW, "eye_span": list(EYE_SPAN),
            "template": np.asarray(TEMPLATE).tolist(), "mean_face": np.round(face, 5).tolist(), **about}
    entry = graph.metadata_props.add()
    entry.key, entry.value = "deocc_finder", json.dumps(meta)
    atomic_write_bytes(path, graph.SerializeToString())


def label_real(config) -> dict:
    """MediaPipe's five points on each real photo (with the border `synth` gives its faces): the
    finder's labels for real covers. Written as JSON, atomically."""
    from deocc_live.landmark_model import resolve
    from deocc_live.landmarks import FaceLandmarks
    from engines.atomic import atomic_write_bytes
    from trainer.synth import with_border
    from trainer.util import progress

    root = Path(config.real)
    files = sorted(p for p in root.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
    if not files:
        raise FileNotFoundError(f"no pictures under {root}")
    labels = {}
    with FaceLandmarks(str(resolve(config.landmarker))) as landmarker:
        for path in progress(files, desc="labels"):
            picture = cv2.imread(str(path))
            if picture is None:
                continue
            padded, pad = with_border(picture)
            labels[path.relative_to(root).as_posix()] = [np.round(five_points(f - pad), 2).tolist()
                                                         for f in landmarker.detect(padded)]
    atomic_write_bytes(Path(config.out), json.dumps(labels).encode())
    return {"photos": len(labels), "with_one_face": sum(1 for v in labels.values() if len(v) == 1)}
