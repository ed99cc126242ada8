"""`deocc-train e2e`: quality the way a user meets it, not on the trainer's own crops.

Whole pictures at frame scale are built from TEST-split faces only. Occluders are placed on the
frame by a placement the trainer never uses (other scales, offsets and rotations, procedural
cups, microphones and phones drawn by other painters than the trainer's) and, for about half of
each kind, from cut-outs and mask templates held back from training
(``trainer.occluders.held_out``). The app's own pipeline then tracks the COVERED picture, aligns,
generates, smooths and blends, exactly as ``deocc-live --input photo`` does. Scores are taken
where the face was covered, against the truth, for the app, for OpenCV Telea given the true mask,
and for the untouched input, per occluder kind: PSNR, SSIM, sharpness ratio (energy of the
Laplacian over the truth's), colour shift (distance of mean Lab colours), the share of covered
faces the app acted on, and the recall of covered face pixels by the mask the app blends with.
A clip (an occluder that comes and goes over a still face, the app in stream mode) is scored
frame by frame, and real masked photos (no truth exists) are shown input / output in a panel.
"""
from __future__ import annotations

import json
import zlib
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from deocc_live.landmarks import face_outline_region
from trainer.metrics import image_metrics, psnr_from_mse
from trainer.occluders import (CHIN, EYE_OUTER, MOUTH, NOSE_TIP, OccluderBank, _jitter_colour, _place,
                                _read_rgba, _recolour, _trim, held_out)
from trainer.pairs import IMAGE_SUFFIXES, grey, jpeg_round_trip, split_of
from engines.atomic import atomic_write_bytes
from trainer.util import progress

KINDS = ("mask", "glasses", "hand", "cup", "microphone", "phone")
METHODS = ("input", "telea", "ours")
ACTED_LEVEL = 2.0 / 255  # mean change over the covered face that counts as "the app acted"
REAL_ACTED_SHARE = 0.05  # share of a real photo's face outline that changed: "acted on" (no truth there)
CLEAN_CHANGED_SHARE = 0.01  # share of an uncovered face changed by more than 12 levels: "not left alone"
CHEEK_OUTER = (234, 454)
NOSE_TOP = 168


@dataclass
class Scene:
    frame: np.ndarray         # what the camera sees: BGR uint8, the occluder on the face
    truth: np.ndarray         # the same frame without the occluder
    alpha: np.ndarray         # (H, W) float32 occluder coverage
    face: np.ndarray          # (H, W) bool: the face (oval of the clean landmarks)
    kind: str
    held_out: bool            # the occluder's cut-out or template was kept from training
    name: str
    solid: np.ndarray | None = None  # (H, W) bool: where the face picture is pasted whole

    @property
    def covered(self) -> np.ndarray:
        return (self.alpha > 0.5) & self.face


# Faces and frames.
def split_faces(faces_root: str | Path, split: str = "test") -> list[Path]:
    """Face pictures of one split (the split synth gives them, by file-name hash)."""
    root = Path(faces_root)
    files = sorted(p for p in root.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
    keys = ["_".join(p.relative_to(root).with_suffix("").parts).replace(" ", "-") for p in files]
    return [path for path, key in zip(files, keys) if split_of(key) == split]


def background(size: tuple[int, int], rng: np.random.Generator) -> np.ndarray:
    width, height = size
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    a, b = rng.uniform(30, 220, 3), rng.uniform(-80, 80, 3)
    base = a[None, None] + b[None, None] * (xx / width)[..., None] + rng.uniform(-40, 40) * (yy / height)[..., None]
    noise = rng.normal(0, 10, (height // 16 + 1, width // 16 + 1, 3)).astype(np.float32)
    base += cv2.resize(noise, (width, height), interpolation=cv2.INTER_CUBIC)
    return np.clip(base, 0, 255).astype(np.uint8)


def face_frame(face: np.ndarray, size: tuple[int, int], rng: np.random.Generator, neck: bool = False) -> np.ndarray:
    """The face picture pasted with a soft edge into a frame, a third to a half of its height.
    With ``neck``, as a webcam shows a face: the picture's last row carried down to the frame's
    bottom (the neck and shirt going on out of the frame), soft at the top and sides only, the
    picture and its carried rows softened by a blur of one pixel (sigma). Our face
    photos are cut at the chin, and faded there into the background they show a band under the
    chin no camera shows, which the mask head takes for a cover (then the face memory never sees
    the chin: this decided the clips between generators since session 14, not the face)."""
    return face_frame_and_solid(face, size, rng, neck)[0]


def face_frame_and_solid(face: np.ndarray, size: tuple[int, int], rng: np.random.Generator, neck: bool = False):
    """``face_frame``'s frame, and where in it the picture is pasted whole (not faded into the
    background)."""
    width, height = size
    target = rng.uniform(0.35, 0.55) * height
    scale = target / face.shape[0]
    big = cv2.resize(face, None, fx=scale, fy=scale, interpolation=cv2.INTER_CUBIC)
    h, w = big.shape[:2]
    x0 = int((width - w) / 2 + rng.uniform(-0.25, 0.25) * (width - w))
    y0 = int((height - h) / 2 + rng.uniform(-0.3, 0.3) * (height - h))
    edge = max(4, w // 10)
    ramp_x = np.clip(np.minimum(np.arange(w), np.arange(w)[::-1]) / edge, 0, 1)
    if neck:
        big = cv2.GaussianBlur(cv2.copyMakeBorder(big, 0, height - y0 - h, 0, 0, cv2.BORDER_REPLICATE), (0, 0), 1.0)
        h = big.shape[0]
        ramp_y = np.clip(np.arange(h) / edge, 0, 1)
    else:
        ramp_y = np.clip(np.minimum(np.arange(h), np.arange(h)[::-1]) / edge, 0, 1)
    fade = np.minimum(ramp_x[None, :], ramp_y[:, None])[..., None]
    frame = background(size, rng).astype(np.float32)
    region = frame[y0:y0 + h, x0:x0 + w]
    frame[y0:y0 + h, x0:x0 + w] = region * (1 - fade) + big * fade
    solid = np.zeros((height, width), bool)
    solid[y0:y0 + h, x0:x0 + w] = fade[..., 0] >= 1
    return frame.astype(np.uint8), solid


def face_region(landmarks: np.ndarray, shape) -> np.ndarray:
    return face_outline_region(landmarks, shape).astype(bool)


# Occluders at frame scale, by the evaluation's own placement.
def _frame_geometry(landmarks):
    face_width = float(np.linalg.norm(landmarks[CHEEK_OUTER[1]] - landmarks[CHEEK_OUTER[0]]))
    eye_a, eye_b = landmarks[EYE_OUTER[0]], landmarks[EYE_OUTER[1]]
    roll = float(np.degrees(np.arctan2(eye_b[1] - eye_a[1], eye_b[0] - eye_a[0])))
    mouth = (landmarks[MOUTH[0]] + landmarks[MOUTH[1]]) / 2
    return face_width, roll, mouth


def _mask(bank, landmarks, shape, rng):
    group = bank.mask_sets[rng.integers(len(bank.mask_sets))]
    face_width, roll, _ = _frame_geometry(landmarks)
    # Anchors further out and lower than the trainer's, then scaled, shifted and turned as a whole.
    bridge = landmarks[NOSE_TOP] + rng.uniform(0.1, 0.5) * (landmarks[NOSE_TIP] - landmarks[NOSE_TOP])
    inward = rng.uniform(0.08, 0.2)
    left = landmarks[CHEEK_OUTER[0]] + inward * (bridge - landmarks[CHEEK_OUTER[0]])
    right = landmarks[CHEEK_OUTER[1]] + inward * (bridge - landmarks[CHEEK_OUTER[1]])
    chin = landmarks[CHIN] + np.array([0.0, rng.uniform(0.0, 0.12) * face_width])
    targets = np.array([left, bridge, right, landmarks[58], chin, landmarks[288]], np.float64)
    centre = targets.mean(axis=0)
    turn = np.radians(rng.uniform(-10, 10))
    rotation = np.array([[np.cos(turn), -np.sin(turn)], [np.sin(turn), np.cos(turn)]])
    targets = (targets - centre) @ rotation.T * rng.uniform(1.0, 1.2) + centre
    targets += np.array([rng.uniform(-0.05, 0.05), rng.uniform(-0.04, 0.08)]) * face_width
    template = group[0] if abs(roll) < 8 or len(group) == 1 else group[rng.integers(len(group))]
    homography, _ = cv2.findHomography(template.anchors, targets, 0)
    rgba = template.rgba.astype(np.float32)
    if template.recolourable and rng.random() < 0.5:
        rgba[..., :3] = _recolour(rgba[..., :3], bank.textures, rng)
    rgba[..., :3] = _jitter_colour(rgba[..., :3], rng)
    warped = cv2.warpPerspective(rgba, homography, (shape[1], shape[0]), flags=cv2.INTER_LINEAR)
    return warped[..., :3], warped[..., 3] / 255.0


def _glasses(bank, landmarks, shape, rng):
    images = bank.cutouts["glasses"]
    rgba = images[rng.integers(len(images))].astype(np.float32)
    face_width, roll, _ = _frame_geometry(landmarks)
    eye_a, eye_b = landmarks[EYE_OUTER[0]], landmarks[EYE_OUTER[1]]
    scale = float(np.linalg.norm(eye_b - eye_a)) * rng.uniform(1.6, 2.0) / rgba.shape[1]
    centre = (eye_a + eye_b) / 2 + np.array([0.0, rng.uniform(-0.02, 0.06)]) * face_width
    rgba[..., :3] = _jitter_colour(rgba[..., :3], rng)
    return _place(rgba, centre, scale, roll + rng.uniform(-8, 8), (shape[1], shape[0]))


def _hand(bank, landmarks, shape, rng):
    images = bank.cutouts["hand"]
    rgba = images[rng.integers(len(images))].astype(np.float32)
    if rng.random() < 0.5:
        rgba = rgba[:, ::-1]
    face_width, _, mouth = _frame_geometry(landmarks)
    anchor = [mouth, landmarks[CHIN], landmarks[58], landmarks[288]][rng.integers(4)]
    centre = anchor + np.array([rng.uniform(-0.15, 0.15), rng.uniform(0.05, 0.3)]) * face_width
    scale = face_width * rng.uniform(0.9, 1.5) / max(rgba.shape[:2])
    rgba[..., :3] = _jitter_colour(rgba[..., :3], rng)
    return _place(rgba, centre, scale, rng.uniform(-90, 90), (shape[1], shape[0]))


def _supersampled(width: int, height: int, painter, factor: int = 4) -> np.ndarray:
    """An RGBA patch (alpha 0-255, as cut-outs have) drawn at ``factor`` times its size with
    alpha 0-1, and shrunk (clean edges)."""
    big = np.zeros((height * factor, width * factor, 4), np.float32)
    painter(big, factor)
    big[..., 3] = np.clip(big[..., 3], 0, 1) * 255
    return cv2.resize(big, (width, height), interpolation=cv2.INTER_AREA)


def _shade(width: int, strength: float) -> np.ndarray:
    """Left-to-right light falloff of a cylinder: (width,) gains."""
    x = np.linspace(-1, 1, width)
    return (1 - strength) + strength * np.sqrt(np.clip(1 - x * x, 0, 1))


def _mug(face_width, rng):
    width, height = int(0.42 * face_width), int(0.55 * face_width)
    colour = rng.uniform(30, 240, 3)

    def paint(canvas, k):
        w, h = width * k, height * k
        body_w = int(0.75 * w)
        body = np.zeros((h, w), np.uint8)
        cv2.rectangle(body, (0, int(0.06 * h)), (body_w, h - 1), 1, -1)
        cv2.ellipse(body, (body_w + int(0.02 * w), h // 2), (int(0.2 * w), int(0.22 * h)), 0, -90, 90, 1, max(2, int(0.07 * w)))
        shade = np.concatenate([_shade(body_w, 0.55), np.full(w - body_w, 0.7)])
        canvas[..., :3] = colour[None, None] * shade[None, :, None]
        cv2.ellipse(canvas, (body_w // 2, int(0.06 * h)), (body_w // 2, int(0.06 * h)), 0, 0, 360,
                    (*(colour * 0.45), 1.0), -1)
        canvas[..., 3] = np.maximum(body, (canvas[..., 3] > 0.5)).astype(np.float32)

    return _supersampled(width, height, paint)


def _microphone(face_width, rng):
    width, height = int(0.36 * face_width), int(1.1 * face_width)
    grille = rng.uniform(60, 170)

    def paint(canvas, k):
        w, h = width * k, height * k
        radius = w // 2 - 1
        handle = np.zeros((h, w), np.uint8)
        top, half = 2 * radius, int(0.22 * w)
        cv2.fillConvexPoly(handle, np.array([[w // 2 - half, top], [w // 2 + half, top],
                                             [w // 2 + int(0.7 * half), h - 1], [w // 2 - int(0.7 * half), h - 1]]), 1)
        canvas[..., :3] = np.where(handle[..., None] > 0, 25.0 * _shade(w, 0.8)[None, :, None] + 10, 0)
        head = np.zeros((h, w), np.uint8)
        cv2.circle(head, (w // 2, radius), radius, 1, -1)
        yy, xx = np.mgrid[0:h, 0:w]
        mesh = ((xx // max(1, k * 3)) + (yy // max(1, k * 3))) % 2
        light = np.clip(1.2 - np.hypot(xx - 0.7 * w, yy - 0.6 * radius) / (2 * radius), 0.4, 1.2)
        canvas[..., :3] = np.where(head[..., None] > 0, (grille * (0.75 + 0.25 * mesh) * light)[..., None], canvas[..., :3])
        canvas[..., 3] = np.maximum(handle, head).astype(np.float32)

    return _supersampled(width, height, paint)


def _phone_patch(face_width, rng):
    width, height = int(0.48 * face_width), int(0.98 * face_width)
    top, bottom = rng.uniform(0, 255, 3), rng.uniform(0, 255, 3)

    def paint(canvas, k):
        w, h = width * k, height * k
        radius = int(0.12 * w)
        body = np.zeros((h, w), np.uint8)
        cv2.rectangle(body, (radius, 0), (w - radius, h - 1), 1, -1)
        cv2.rectangle(body, (0, radius), (w - 1, h - radius), 1, -1)
        for cx in (radius, w - radius - 1):
            for cy in (radius, h - radius - 1):
                cv2.circle(body, (cx, cy), radius, 1, -1)
        canvas[..., :3] = 18.0
        border = int(0.05 * w)
        ramp = np.linspace(0, 1, h - 4 * border)[:, None, None]
        canvas[2 * border:h - 2 * border, border:w - border, :3] = top * (1 - ramp) + bottom * ramp
        canvas[..., 3] = body.astype(np.float32)

    return _supersampled(width, height, paint)


def cutouts(occluders, folder: str) -> list[np.ndarray]:
    """The cut-outs of one occluder folder (cups/, phones/: all held out from training)."""
    images = [_read_rgba(path) for path in sorted((Path(occluders) / folder).glob("*.png")) if held_out(path.name)]
    return [_trim(image) for image in images if image is not None]


def _object(held, landmarks, shape, rng, kind):
    face_width, _, mouth = _frame_geometry(landmarks)
    if held and rng.random() < 0.5:
        rgba = held[rng.integers(len(held))].astype(np.float32)
        scale = face_width * rng.uniform(0.5, 0.9) / max(rgba.shape[:2])
    else:
        painter = {"cup": _mug, "microphone": _microphone, "phone": _phone_patch}[kind]
        rgba, scale = painter(face_width, rng), 1.0
    if kind == "microphone":
        centre = mouth + np.array([rng.uniform(-0.12, 0.12), rng.uniform(0.2, 0.45)]) * face_width
        angle = rng.uniform(-35, 35)
    elif kind == "phone":
        centre = mouth + np.array([rng.choice([-1, 1]) * rng.uniform(0.1, 0.35), rng.uniform(-0.1, 0.2)]) * face_width
        angle = rng.uniform(-35, 35)
    else:
        centre = mouth + np.array([rng.uniform(-0.2, 0.2), rng.uniform(-0.05, 0.2)]) * face_width
        angle = rng.uniform(-25, 25)
    rgba[..., :3] = _jitter_colour(rgba[..., :3], rng)
    return _place(rgba, centre, scale, angle, (shape[1], shape[0]))


def as_camera_gives_it(picture: np.ndarray, quality: int) -> np.ndarray:
    """The picture through JPEG at ``quality`` (a webcam's or a call's codec); 0: as it is."""
    return jpeg_round_trip(picture, quality) if quality else picture


def in_black_and_white(picture: np.ndarray, mono: bool) -> np.ndarray:
    """The picture in grey (still three channels), as a monochrome camera sees it; or as it is."""
    return grey(picture) if mono else picture


def composite(picture: np.ndarray, layer: np.ndarray, alpha: np.ndarray) -> np.ndarray:
    """``layer`` over ``picture`` where ``alpha`` (H, W, 0-1) says, as uint8."""
    out = picture.astype(np.float32) * (1 - alpha[..., None]) + layer.astype(np.float32) * alpha[..., None]
    return np.clip(out, 0, 255).astype(np.uint8)


def occluder_layer(frame: np.ndarray, landmarks: np.ndarray, kind: str, banks: dict, rng: np.random.Generator):
    """(colour, alpha, held_out): one occluder of ``kind`` placed for the face, as a frame-sized layer."""
    kept_back = kind == "microphone" or bool(rng.random() < 0.5)  # the microphone's painter is the evaluation's own
    bank = banks["held_out" if kept_back else "train"]
    if kind == "mask":
        layer = _mask(bank, landmarks, frame.shape, rng)
    elif kind == "glasses":
        layer = _glasses(bank, landmarks, frame.shape, rng)
    elif kind == "hand":
        layer = _hand(bank, landmarks, frame.shape, rng)
    else:  # cup and phone cut-outs are all held out from training; the painted ones are new
        layer = _object(banks.get(kind, []), landmarks, frame.shape, rng, kind)
        kept_back = True
    rgb, alpha = layer
    sigma = rng.uniform(0.3, 1.0)
    rgb, alpha = cv2.GaussianBlur(rgb, (0, 0), sigma), cv2.GaussianBlur(alpha.astype(np.float32), (0, 0), sigma)
    return rgb, alpha.astype(np.float32), kept_back


def occlude(frame: np.ndarray, landmarks: np.ndarray, kind: str, banks: dict, rng: np.random.Generator):
    """(occluded frame, alpha, held_out) for one occluder of ``kind`` placed on the frame."""
    rgb, alpha, kept_back = occluder_layer(frame, landmarks, kind, banks, rng)
    return composite(frame, rgb, alpha), alpha, kept_back


# The app, as a user runs it.
def run_app(images: list[np.ndarray], engine, landmarker: str, still: bool, settings=None):
    """Every picture through the app's pipeline (stills on their own, or a clip as a stream);
    returns the frames as the outputs receive them (output, faces)."""
    from deocc_live.stages.capture import MemorySource
    from deocc_live.pipeline import Pipeline

    done = []
    source = MemorySource(images, still=still)
    pipeline = Pipeline(source, engine, landmarker, [], settings=settings, on_frame=done.append)
    with pipeline:
        pipeline.wait()
    return done, pipeline.blend


def app_mask(frame, blend) -> np.ndarray:
    """The mask the app blended with, in frame pixels (the most over its faces)."""
    height, width = frame.image.shape[:2]
    total = np.zeros((height, width), np.float32)
    for face in frame.faces:
        if face.occlusion is None or face.inverse is None:
            continue
        mask = blend.mask_for(np.ascontiguousarray(face.occlusion, dtype=np.float32))
        total = np.maximum(total, cv2.warpAffine(mask, face.inverse, (width, height), flags=cv2.INTER_LINEAR))
    return total


# Scores.
def _box(region: np.ndarray, margin: int = 12):
    ys, xs = np.nonzero(region)
    return (slice(max(ys.min() - margin, 0), ys.max() + margin + 1), slice(max(xs.min() - margin, 0), xs.max() + margin + 1))


def laplacian_energy(image: np.ndarray, region: np.ndarray) -> float:
    gray = cv2.cvtColor(image, cv2.COLOR_BGR2GRAY).astype(np.float32)
    return float((cv2.Laplacian(gray, cv2.CV_32F) ** 2)[region].mean())


def colour_shift(image: np.ndarray, truth: np.ndarray, region: np.ndarray) -> float:
    """Distance between the mean Lab colours (CIE76, L in 0-100) of two pictures over a region."""
    def mean_lab(picture):
        lab = cv2.cvtColor(picture.astype(np.float32) / 255, cv2.COLOR_BGR2LAB)
        return lab[region].mean(axis=0)
    return float(np.linalg.norm(mean_lab(image) - mean_lab(truth)))


def telea(scene_frame: np.ndarray, alpha: np.ndarray) -> np.ndarray:
    """OpenCV Telea given the true mask (everything the occluder touches), in the occluder's box."""
    holes = (alpha > 0.1).astype(np.uint8) * 255
    out = scene_frame.copy()
    if holes.any():
        box = _box(holes > 0, 24)
        out[box] = cv2.inpaint(np.ascontiguousarray(scene_frame[box]), np.ascontiguousarray(holes[box]), 3,
                               cv2.INPAINT_TELEA)
    return out


def score(picture: np.ndarray, truth: np.ndarray, covered: np.ndarray) -> dict[str, float]:
    box = _box(covered)
    metrics = image_metrics(picture[box].astype(np.float64) / 255, truth[box].astype(np.float64) / 255, covered[box])
    return {"psnr": metrics["hole_psnr"], "mse": metrics["hole_mse"], "ssim": metrics["hole_ssim"],
            "laplacian": laplacian_energy(picture[box], covered[box]),
            "truth_laplacian": laplacian_energy(truth[box], covered[box]),
            "colour_shift": colour_shift(picture[box], truth[box], covered[box])}


def _summary(rows: list[dict]) -> dict:
    """Means over scenes; PSNR from the mean MSE and from the mean per-scene PSNR."""
    if not rows:
        return {}
    out = {"scenes": len(rows)}
    for method in METHODS:
        values = [row[method] for row in rows]
        out[method] = {key: float(np.mean([v[key] for v in values])) for key in values[0]}
        out[method]["psnr_of_mean_mse"] = psnr_from_mse(out[method]["mse"])
        # Energy of the Laplacian over the truth's, summed over scenes: a blurry truth would make
        # per-scene ratios explode wherever a sharp occluder edge is left.
        out[method]["sharpness"] = out[method]["laplacian"] / max(out[method]["truth_laplacian"], 1e-9)
        # The same over the scenes the app acted on: where it did not, the occluder's own edges are
        # scored, and a face left covered would count as "sharp".
        acted = [row[method] for row in rows if row["acted"]]
        out[method]["sharpness_acted"] = (float(np.sum([v["laplacian"] for v in acted]))
                                          / max(float(np.sum([v["truth_laplacian"] for v in acted])), 1e-9)) if acted else 0.0
    out["acted"] = float(np.mean([row["acted"] for row in rows]))
    out["found"] = float(np.mean([row["found"] for row in rows]))
    out["mask_recall"] = float(np.mean([row["mask_recall"] for row in rows]))
    out["gain_over_telea_db"] = out["ours"]["psnr"] - out["telea"]["psnr"]
    return out


# The three parts.
def build_scenes(faces_root, occluders, landmarker, per_kind: int, size, seed: int, split: str = "test") -> list[Scene]:
    """``per_kind`` covered pictures of each kind, from faces of ``split``, placed by this
    evaluation's own placement (the clean face's landmarks place the occluder, never the app's)."""
    from deocc_live.landmarks import FaceLandmarks

    banks = scene_banks(occluders)
    faces = split_faces(faces_root, split)
    if not faces:
        raise FileNotFoundError(f"no {split}-split faces under {faces_root}")
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(faces))
    scenes, cursor = [], 0
    with FaceLandmarks(landmarker) as finder:
        for kind in KINDS:
            made = 0
            attempts = 0
            while made < per_kind and attempts < 10 * per_kind:
                attempts += 1
                path = faces[order[cursor % len(order)]]
                cursor += 1
                scene = make_scene(path, kind, seed, size, banks, finder)
                if scene is None:
                    continue
                scenes.append(scene)
                made += 1
    return scenes


def scene_banks(occluders) -> dict:
    """The occluders scenes draw from: the training and held-out banks, cups' and phones' cut-outs."""
    banks = {subset: OccluderBank.load(occluders, subset) for subset in ("train", "held_out")}
    banks.update(cup=cutouts(occluders, "cups"), phone=cutouts(occluders, "phones"))
    return banks


def make_scene(path: Path, kind: str, seed: int, size, banks: dict, finder) -> Scene | None:
    """The scene of one face picture and occluder kind at ``seed`` (the same whatever else is
    drawn): None where the picture cannot be read, MediaPipe (``finder``) does not find exactly
    one face in it, or the occluder covers under 3% of the face."""
    picture = cv2.imread(str(path))
    if picture is None:
        return None
    scene_rng = np.random.default_rng([seed, zlib.crc32(f"{kind}/{path.name}".encode())])
    truth, solid = face_frame_and_solid(picture, size, scene_rng)
    found = finder.detect(truth)
    if len(found) != 1:
        return None  # placement needs the clean face's landmarks
    frame, alpha, held = occlude(truth, found[0], kind, banks, scene_rng)
    scene = Scene(frame, truth, alpha, face_region(found[0], truth.shape), kind, held, path.name, solid)
    return scene if scene.covered.sum() >= 0.03 * scene.face.sum() else None


def score_scene(scene: Scene, frame, blend, inpainted: np.ndarray | None = None) -> dict:
    """The scores of one scene: the app's output ``frame`` (its faces, and ``blend`` for the mask
    it blended with), Telea given the true mask, and the input."""
    covered = scene.covered
    ours = frame.output
    inpainted = telea(scene.frame, scene.alpha) if inpainted is None else inpainted
    row = {"kind": scene.kind, "held_out": scene.held_out, "name": scene.name,
           "input": score(scene.frame, scene.truth, covered),
           "telea": score(inpainted, scene.truth, covered),
           "ours": score(ours, scene.truth, covered)}
    change = np.abs(ours.astype(np.float32) - scene.frame.astype(np.float32)).mean(axis=2)[covered].mean() / 255
    row["found"] = bool(frame.faces)
    row["acted"] = bool(frame.faces and change > ACTED_LEVEL)
    row["mask_recall"] = float((app_mask(frame, blend)[covered] > 0.5).mean())
    through = through_the_crop(scene.truth, covered, frame)
    if through is not None:
        row["crop_ceiling"] = score(through, scene.truth, covered)
    return row


def through_the_crop(truth: np.ndarray, covered: np.ndarray, frame) -> np.ndarray | None:
    """The truth cut to the aligned crop of the app's face nearest the cover and put back, as the
    app puts a restored crop back: what a perfect generator at the model's crop size would give
    (nothing finer than the crop's pixels, no grain). None where the app found no face."""
    from deocc_live.stages.align import warp_crop

    faces = [face for face in frame.faces if face.matrix is not None and face.inverse is not None and face.crop is not None]
    if not faces:
        return None
    centre = np.argwhere(covered).mean(axis=0)[::-1]
    face = min(faces, key=lambda f: float(np.linalg.norm(f.landmarks[:, :2].mean(axis=0) - centre)))
    crop = warp_crop(truth, face.matrix, face.crop.shape[0])  # the app's own cut
    back = truth.copy()
    cv2.warpAffine(crop, face.inverse, (truth.shape[1], truth.shape[0]), dst=back,
                   flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_TRANSPARENT)
    return back


def ceiling_summary(rows: list[dict]) -> dict:
    """The scores of the truth through the app's crop (``through_the_crop``) over the scenes the
    app acted on: the covered region's PSNR (mean over scenes) and sharpness ratio (sums, as
    ``sharpness_acted``) a perfect generator at this crop size would reach without grain."""
    rows = [row for row in rows if row["acted"] and "crop_ceiling" in row]
    if not rows:
        return {}
    ceiling = [row["crop_ceiling"] for row in rows]
    return {"scenes": len(rows), "psnr": float(np.mean([c["psnr"] for c in ceiling])),
            "sharpness_acted": float(np.sum([c["laplacian"] for c in ceiling]))
            / max(float(np.sum([c["truth_laplacian"] for c in ceiling])), 1e-9)}


def changed_pixels(output: np.ndarray, picture: np.ndarray) -> np.ndarray:
    """(H, W) bool: where the app's output differs from the picture it was given by more than 12
    levels in some channel (what "changed" means for real photos and uncovered faces alike)."""
    return np.abs(output.astype(np.int16) - picture.astype(np.int16)).max(axis=2) > 12


def score_clean(scene: Scene, picture: np.ndarray, frame, blend) -> dict:
    """What the app did to the scene's face before the cover came (``picture``, as the camera
    gave it): the share of the face changed by more than 12 grey levels, and the share the mask
    head took for covered (a false alarm: the app repaints it, and the face memory takes a face it
    thinks covered for one it cannot remember). Only where the face picture is pasted whole: a
    face photo cut at the chin fades into the background there, which no camera shows and the
    mask head rightly takes for something over the face."""
    face = scene.face & scene.solid if scene.solid is not None else scene.face
    if not face.any():
        face = scene.face
    changed = changed_pixels(frame.output, picture)
    flagged = app_mask(frame, blend) > 0.5
    return {"clean_found": bool(frame.faces), "clean_changed": float(changed[face].mean()),
            "clean_flagged": float(flagged[face].mean())}


def clean_summary(rows: list[dict]) -> dict:
    """The uncovered faces: how many, the share found, the share left alone (at most
    CLEAN_CHANGED_SHARE of the face changed), and the mean share of the face taken for covered."""
    if not rows:
        return {}
    return {"faces": len(rows), "found": float(np.mean([r["clean_found"] for r in rows])),
            "left_alone": float(np.mean([r["clean_changed"] <= CLEAN_CHANGED_SHARE for r in rows])),
            "changed": float(np.mean([r["clean_changed"] for r in rows])),
            "flagged": float(np.mean([r["clean_flagged"] for r in rows]))}


def evaluate_scenes(faces_root, occluders, engine, landmarker, per_kind: int, size, seed: int, split: str = "test",
                    examples: int = 2, jpeg: int = 0, mono: bool = False):
    scenes = build_scenes(faces_root, occluders, landmarker, per_kind, size, seed, split)
    for scene in scenes:  # the same scenes (placed on the clean face), as the camera and its codec leave them
        scene.frame = as_camera_gives_it(in_black_and_white(scene.frame, mono), jpeg)
        scene.truth = in_black_and_white(scene.truth, mono)
    frames, blend = run_app([s.frame for s in scenes], engine, landmarker, still=True)
    # The same faces before the cover came, as the camera gives them: the app should leave them be.
    clean_pictures = [as_camera_gives_it(s.truth, jpeg) for s in scenes]
    clean_frames, clean_blend = run_app(clean_pictures, engine, landmarker, still=True)
    rows, tiles = [], {}
    for scene, frame, picture, clean in progress(list(zip(scenes, frames, clean_pictures, clean_frames)), desc="e2e"):
        inpainted = telea(scene.frame, scene.alpha)
        rows.append({**score_scene(scene, frame, blend, inpainted), **score_clean(scene, picture, clean, clean_blend)})
        if len(tiles.setdefault(scene.kind, [])) < examples:
            box = _box(scene.face, 40)
            pictures = [scene.frame[box], frame.output[box], scene.truth[box], inpainted[box]]
            tiles[scene.kind].append(np.hstack([cv2.resize(p, (192, 192), interpolation=cv2.INTER_AREA) for p in pictures]))
    return rows, tiles


def evaluate_clip(faces_root, occluders, engine, landmarker, size, seed: int, split: str = "test", length: int = 60,
                  jpeg: int = 0, mono: bool = False):
    """A held-out hand rises over a still test face, stays, and leaves: the app in stream mode."""
    from deocc_live.landmarks import FaceLandmarks

    bank = OccluderBank.load(occluders, "held_out")
    rng = np.random.default_rng(seed + 1)
    with FaceLandmarks(landmarker) as finder:
        for path in split_faces(faces_root, split)[::7]:
            truth = face_frame(cv2.imread(str(path)), size, rng, neck=True)
            found = finder.detect(truth)
            if len(found) == 1:
                break
        else:
            raise RuntimeError(f"no {split}-split face was found for the clip")
    landmarks = found[0]
    face = face_region(landmarks, truth.shape)
    truth = in_black_and_white(truth, mono)
    (rgb, alpha), = [_hand(bank, landmarks, truth.shape, np.random.default_rng(seed + 2))]
    rise, stay = length // 3, length // 3
    frames, alphas = [], []
    height = truth.shape[0]
    for index in range(length):
        if index < length // 6:
            lift = 1.0  # below the frame
        elif index < rise:
            lift = 1.0 - (index - length // 6) / (rise - length // 6)
        elif index < rise + stay:
            lift = 0.0
        else:
            lift = (index - rise - stay) / (length - rise - stay)
        shift = np.float32([[1, 0, 0], [0, 1, lift * 0.8 * height]])
        moved_rgb = cv2.warpAffine(rgb, shift, (truth.shape[1], height))
        moved_alpha = cv2.warpAffine(alpha.astype(np.float32), shift, (truth.shape[1], height))
        frames.append(as_camera_gives_it(in_black_and_white(composite(truth, moved_rgb, moved_alpha), mono), jpeg))
        alphas.append(moved_alpha)
    outputs, _blend = run_app(frames, engine, landmarker, still=False)
    per_frame = []
    for index, (frame, alpha_now) in enumerate(zip(outputs, alphas)):
        covered = (alpha_now > 0.5) & face
        if covered.sum() < 0.03 * face.sum():
            continue
        ours = score(frame.output, truth, covered)
        baseline = score(telea(frames[index], alpha_now), truth, covered)
        change = np.abs(frame.output.astype(np.float32) - frames[index].astype(np.float32)).mean(axis=2)[covered].mean() / 255
        per_frame.append({"frame": index, "ours_psnr": ours["psnr"], "telea_psnr": baseline["psnr"],
                          "ours_ssim": ours["ssim"], "telea_ssim": baseline["ssim"],
                          "acted": bool(frame.faces and change > ACTED_LEVEL)})
    return {"frames": length, "covered_frames": len(per_frame),
            "acted": float(np.mean([f["acted"] for f in per_frame])) if per_frame else 0.0,
            "ours_psnr": float(np.mean([f["ours_psnr"] for f in per_frame])) if per_frame else 0.0,
            "telea_psnr": float(np.mean([f["telea_psnr"] for f in per_frame])) if per_frame else 0.0,
            "per_frame": per_frame}


def acted_on_face(image: np.ndarray, frame) -> bool:
    """A real photo was acted on when, for some face found, more than REAL_ACTED_SHARE of the
    face's outline changed by more than 12 grey levels. Counted over the whole picture (1% of it,
    before), a small face in a street photo that was restored did not count: on 120 other real
    masked photos the changed share of the outline has a gap between 0.3% and 6.7%, and 5 of
    them (small faces, restored or painted over) did not count: acted on 86.7% per picture,
    90.8% per face."""
    changed = changed_pixels(frame.output, image)
    for face in frame.faces:
        inside = face_region(face.landmarks, image.shape)
        if inside.any() and changed[inside].mean() > REAL_ACTED_SHARE:
            return True
    return False


def real_photos(real_root, count: int, seed: int) -> list[Path]:
    """The real photos the evaluation shows: ``count`` of them in an order drawn from ``seed``."""
    files = sorted(p for p in Path(real_root).rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)
    return sorted(files, key=lambda p: zlib.crc32(f"{seed}/{p.name}".encode()))[:count]


def evaluate_real(real_root, engine, landmarker, count: int, seed: int):
    """Real masked photos (no truth): the share the app acted on, and a panel input / output."""
    files = real_photos(real_root, count, seed)
    images = [image for image in (cv2.imread(str(p)) for p in files) if image is not None]
    if not images:
        return {"photos": 0}, None
    frames, _blend = run_app(images, engine, landmarker, still=True)
    acted, tiles = [], []
    for image, frame in zip(images, frames):
        acted.append(acted_on_face(image, frame))
        tiles.append(pair_tile(image, frame.output))
    return {"photos": len(images), "found": float(np.mean([bool(f.faces) for f in frames])),
            "acted": float(np.mean(acted))}, panel(tiles, width=1400)


def pair_tile(image: np.ndarray, output: np.ndarray, height: int = 160, gap: int = 6,
              interpolation: int = cv2.INTER_LINEAR) -> np.ndarray:
    """A picture and what the app made of it, side by side at ``height``, a white gap after."""
    width = max(1, int(image.shape[1] * height / image.shape[0]))
    pair = [cv2.resize(p, (width, height), interpolation=interpolation) for p in (image, output)]
    return np.hstack([*pair, np.full((height, gap, 3), 255, np.uint8)])


def panel(tiles: list[np.ndarray], width: int) -> np.ndarray:
    """Tiles of one height in rows at most ``width`` wide, each row padded white to it."""
    rows, row, used = [], [], 0
    for tile in tiles:
        if used + tile.shape[1] > width and row:
            rows.append(row)
            row, used = [], 0
        row.append(tile)
        used += tile.shape[1]
    if row:
        rows.append(row)
    lines = [np.hstack(r + [np.full((r[0].shape[0], width - sum(t.shape[1] for t in r), 3), 255, np.uint8)]) for r in rows]
    return np.vstack(lines)


def markdown(report: dict) -> str:
    lines = ["| occluder | scenes | acted | mask recall | PSNR ours / Telea / input (dB) | SSIM ours / Telea | "
             "sharpness ours / Telea | sharpness where acted, ours / Telea | colour shift ours / Telea (Lab) |", "|" + "---|" * 9]
    for name, part in [*report["kinds"].items(), ("held-out occluders", report["held_out"]),
                       ("trained occluders, new placement", report["seen"]), ("**all**", report["overall"])]:
        if not part:
            continue
        ours, base, source = part["ours"], part["telea"], part["input"]
        lines.append(f"| {name} | {part['scenes']} | {part['acted']:.1%} | {part['mask_recall']:.3f} | "
                     f"{ours['psnr']:.2f} / {base['psnr']:.2f} / {source['psnr']:.2f} | {ours['ssim']:.3f} / {base['ssim']:.3f} | "
                     f"{ours['sharpness']:.2f} / {base['sharpness']:.2f} | {ours['sharpness_acted']:.2f} / {base['sharpness_acted']:.2f} | "
                     f"{ours['colour_shift']:.2f} / {base['colour_shift']:.2f} |")
    clip, real, clean = report["clip"], report["real"], report.get("clean") or {}
    if clean:
        lines += ["", f"Uncovered faces (the {clean['faces']} scenes' faces before the cover came): left alone on "
                  f"{clean['left_alone']:.0%} (at most {CLEAN_CHANGED_SHARE:.0%} of the face changed by over 12 levels, counted "
                  "where the face picture is pasted whole, not where it fades into the background); "
                  f"on average {clean['changed']:.2%} of a face changed and {clean['flagged']:.2%} taken for covered."]
    ceiling = report.get("ceiling") or {}
    if ceiling:
        lines += ["", f"A perfect generator at the model's crop size (the truth cut to the app's aligned crop and put "
                  f"back, on the {ceiling['scenes']} scenes acted on): PSNR {ceiling['psnr']:.2f} dB, sharpness ratio "
                  f"{ceiling['sharpness_acted']:.2f} before grain (ours {report['overall']['ours']['sharpness_acted']:.2f} "
                  "with the app's grain)."]
    lines += ["", f"Clip ({clip['frames']} frames, a hand comes and goes, stream mode): acted in "
              f"{clip['acted']:.0%} of {clip['covered_frames']} covered frames; PSNR inside the hand "
              f"{clip['ours_psnr']:.2f} dB against Telea's {clip['telea_psnr']:.2f} dB.",
              f"Real masked photos: {real.get('photos', 0)}; a face found on {real.get('found', 0):.0%}, "
              f"acted on {real.get('acted', 0):.0%} (over 5% of a found face's outline changed)."]
    if report.get("jpeg"):
        lines.append(f"Pictures and clip frames as JPEG at quality {report['jpeg']} (a camera's codec) before the app "
                     "and Telea see them; the truth as drawn.")
    if report.get("mono"):
        lines.append("Pictures, clip frames and their truth in black and white (a monochrome camera); the real photos as they are.")
    return "\n".join(lines)


def run(config) -> dict:
    from deocc_live.landmark_model import resolve
    from engines import open_engine

    data = Path(config.data)
    try:
        size = tuple(int(v) for v in config.size.lower().split("x"))
    except ValueError:
        size = ()
    if len(size) != 2 or not (320 <= size[0] <= 7680 and 240 <= size[1] <= 4320):
        raise ValueError(f"--size must look like 1280x720 (320x240 to 7680x4320), got {config.size}")
    landmarker = str(resolve(config.landmarker))
    engine = open_engine(config.model)
    try:
        rows, tiles = evaluate_scenes(data / "faces", data / "occluders", engine, landmarker, config.per_kind, size,
                                      config.seed, config.split, jpeg=config.jpeg, mono=config.mono)
        clip = evaluate_clip(data / "faces", data / "occluders", engine, landmarker, size, config.seed, config.split,
                             jpeg=config.jpeg, mono=config.mono)
        real, real_panel = evaluate_real(data / "occluded_real", engine, landmarker, config.real, config.seed)
    finally:
        engine.close()
    from deocc_live.assets import FINDER, find_asset
    from deocc_live.settings import LiveSettings

    finder = find_asset(FINDER)  # the app's pipeline loads it where it is installed
    report = {"model": str(config.model), "data": str(data), "split": config.split, "frame_size": list(size),
              "seed": config.seed, "jpeg": config.jpeg, "mono": config.mono, "finder": str(finder) if finder else None,
              "picture_views": LiveSettings().picture_views,
              "kinds": {kind: _summary([r for r in rows if r["kind"] == kind]) for kind in KINDS},
              "held_out": _summary([r for r in rows if r["held_out"]]),
              "seen": _summary([r for r in rows if not r["held_out"]]),
              "overall": _summary(rows), "clean": clean_summary(rows), "ceiling": ceiling_summary(rows), "clip": clip,
              "real": real, "scenes": rows}
    report["markdown"] = markdown(report)
    out = Path(config.out)
    atomic_write_bytes(out / "e2e.json", json.dumps(report, indent=1).encode())
    atomic_write_bytes(out / "e2e.md", (report["markdown"] + "\n").encode())
    grid = [tile for kind in KINDS for tile in tiles.get(kind, [])]
    for name, picture in (("e2e_grid.jpg", np.vstack(grid) if grid else None), ("e2e_real_panel.jpg", real_panel)):
        if picture is not None:
            ok, encoded = cv2.imencode(".jpg", picture, [cv2.IMWRITE_JPEG_QUALITY, 90])
            if ok:
                atomic_write_bytes(out / name, encoded.tobytes())
    return report
