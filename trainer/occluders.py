"""Occluders placed on aligned face crops by their landmarks: MaskTheFace templates fitted by
their anchor points, glasses on the eyes, hats on the forehead, hands and objects near the mouth,
cheeks and chin, and procedurally drawn microphones, cups, bottles, phones, hands and scarves.

Everything works in the aligned crop's pixels, so placement follows the face's pose as the
landmarks describe it. ``OccluderBank.render`` is deterministic for a given numpy Generator.
"""
from __future__ import annotations

import configparser
import csv
import re
import zlib
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np

from deocc_live.landmarks import FACE_OVAL, face_outline_region

# MediaPipe mesh indices used for placement (image-left point first).
CHEEK_UPPER = (93, 323)
JAW = (172, 397)
CHIN = 152
NOSE_BRIDGE = (6, 197)
NOSE_TIP = 1
MOUTH = (61, 291)
EYE_OUTER = (33, 263)
BROW_TOP = (105, 334)
FOREHEAD = 10
CHEEKS = (205, 425)
# Every point the bank reads: the named ones and the face's outline (a training pack keeps only these).
PLACED_BY = tuple(sorted({*CHEEK_UPPER, *JAW, CHIN, *NOSE_BRIDGE, NOSE_TIP, *MOUTH, *EYE_OUTER, *BROW_TOP,
                          FOREHEAD, *CHEEKS, *FACE_OVAL}))

KINDS = {
    # kind: sampling weight
    "face_mask": 0.28,
    "glasses": 0.10,
    "hand": 0.16,
    "object": 0.10,
    "hat": 0.04,
    "microphone": 0.08,
    "cup": 0.07,
    "bottle": 0.04,
    "phone": 0.05,
    "hand_shape": 0.05,
    "scarf": 0.03,
}


# The least share of the face an occluder must cover to be drawn (else another is drawn): 4%,
# but glasses 1%. Thin frames cover 1-4% of the face: at 4% for all, 28% of the glasses cut-outs
# drawn (the thin ones) were put aside for another kind, and in the app thin frames are where
# the mask head misses rims and the fill keeps a ghost of the wire.
LEAST_COVERED = {"glasses": 0.01}

HELD_OUT_MODULUS = 4  # one occluder in about four is kept from training for the end-to-end evaluation
SUBSETS = ("all", "train", "held_out")


def held_out(name: str) -> bool:
    """Whether a cut-out or mask template is held back from training. Views of one thing (a mask's
    left/right views, a pair of glasses and its try-on shot, hands from one EgoHands frame) share
    their fate, so nothing the evaluation shows was seen from another angle."""
    base = re.sub(r"(_tryon|_c\d+|_left|_right)$", "", Path(name).stem, flags=re.IGNORECASE)
    return zlib.crc32(base.encode("utf-8")) % HELD_OUT_MODULUS == 0


def _wanted(name: str, subset: str) -> bool:
    return subset == "all" or held_out(name) == (subset == "held_out")


@dataclass
class MaskTemplate:
    rgba: np.ndarray
    anchors: np.ndarray  # (6, 2): a, b, c (top: left, middle, right), d, e, f (bottom)
    recolourable: bool
    name: str = ""
    half: np.ndarray | None = None  # float32 RGBA at half the size (made when first used)


@dataclass
class OccluderBank:
    """The occluder cut-outs of a data folder (see ../shared/data/README.md), loaded once."""

    mask_sets: list[list[MaskTemplate]] = field(default_factory=list)  # frontal/left/right sets
    textures: list[np.ndarray] = field(default_factory=list)
    cutouts: dict[str, list[np.ndarray]] = field(default_factory=dict)
    # Share of face masks with something printed on them: a mouth (the face's own, larger and
    # moved: a printed-lips mask) or bold shapes (a skull, a logo). On real photos the mask head
    # took such prints for the face and left them. `deocc-train fit --printed` sets it.
    printed: float = 0.0
    # Share of glasses drawn procedurally as thin frames (`_frames`: rims of 0.4-2.5 crop pixels,
    # clear or lightly tinted lenses, a bridge and temples) instead of a cut-out: of the 13
    # training cut-outs few are wire-thin, and on thin frames the mask head misses rims and the
    # fill keeps a ghost of them. `deocc-train fit --frames` sets it.
    frames: float = 0.0

    @classmethod
    def load(cls, root: str | Path, subset: str = "train") -> "OccluderBank":
        """The cut-outs and templates of ``subset``: "train" (what the trainer may see),
        "held_out" (kept for the end-to-end evaluation) or "all"."""
        if subset not in SUBSETS:
            raise ValueError(f"occluder subset must be one of {SUBSETS}, got {subset!r}")
        root = Path(root)
        if not root.is_dir():
            raise FileNotFoundError(f"occluder folder not found: {root}")
        bank = cls()
        bank.mask_sets = [group for group in _load_mask_templates(root) if _wanted(group[0].name, subset)]
        bank.textures = [img for img in (cv2.imread(str(p)) for p in
                                         sorted((root / "mask_textures_rgb").glob("*.jpg"))) if img is not None]
        groups = {"glasses": ["glasses"], "hat": ["hats"], "hand": ["hands"],
                  "object": ["cups", "phones", "other"]}
        for kind, folders in groups.items():
            images = []
            for folder in folders:
                for path in sorted((root / folder).glob("*.png")):
                    if not _wanted(path.name, subset):
                        continue
                    rgba = _read_rgba(path)
                    if rgba is not None:
                        images.append(_trim(rgba))
            bank.cutouts[kind] = images
        return bank

    def render(self, face: np.ndarray, landmarks: np.ndarray, rng: np.random.Generator,
               kind: str | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Cover ``face`` (BGR uint8 crop) with one or two occluders placed by ``landmarks``
        ((478, 2) in crop pixels). Returns the occluded crop and the occlusion mask (uint8
        0-255: how much of each pixel the occluder covers, its shadow included)."""
        size = face.shape[0]
        face_region = face_outline_region(landmarks, face.shape)
        face_area = max(int(face_region.sum()), 1)
        canvas = face.astype(np.float32)
        total_alpha = np.zeros(face.shape[:2], np.float32)
        count = 2 if rng.random() < 0.15 else 1
        for index in range(count):
            for _attempt in range(6):
                chosen = kind if (kind and index == 0) else _pick(rng, self._available_kinds())
                layer = self._draw(chosen, landmarks, size, rng, face)
                if layer is None:
                    continue
                rgb, alpha = layer
                covered = float((alpha * face_region).sum()) / face_area
                if LEAST_COVERED.get(chosen, 0.04) <= covered <= 0.75:
                    break
            else:
                continue
            rgb, alpha = _match_sharpness(face, rgb, alpha, rng)
            shadow = _shadow(alpha, size, rng)
            canvas *= (1.0 - shadow)[..., None]
            canvas = canvas * (1.0 - alpha[..., None]) + rgb * alpha[..., None]
            total_alpha = np.maximum(total_alpha, np.maximum(alpha, np.clip(shadow * 3.0, 0, 1)))
        occluded = np.clip(canvas, 0, 255).astype(np.uint8)
        return occluded, np.clip(total_alpha * 255.0 + 0.5, 0, 255).astype(np.uint8)

    def _available_kinds(self) -> dict[str, float]:
        available = dict(KINDS)
        if not self.mask_sets:
            available.pop("face_mask")
        for kind in ("glasses", "hat", "hand", "object"):
            if not self.cutouts.get(kind):
                available.pop(kind)
        return available

    def _draw(self, kind, landmarks, size, rng, face=None):
        if kind == "face_mask":
            layer = self._face_mask(landmarks, size, rng)
            # Asked only when prints are on: with none, the draws that follow are what they were.
            if self.printed > 0 and layer is not None and face is not None and rng.random() < self.printed:
                layer = (_printed(layer[0], layer[1], face, landmarks, rng), layer[1])
            return layer
        # Asked only when frames are on: with none, the draws that follow are what they were.
        if kind == "glasses" and self.frames > 0 and rng.random() < self.frames:
            return _frames(landmarks, size, rng)
        if kind in ("glasses", "hat", "hand", "object"):
            return self._cutout(kind, landmarks, size, rng)
        return PROCEDURAL[kind](landmarks, size, rng)

    def _face_mask(self, landmarks, size, rng):
        bridge = landmarks[NOSE_BRIDGE[0]] + rng.uniform(0.3, 1.0) * (landmarks[NOSE_BRIDGE[1]] - landmarks[NOSE_BRIDGE[0]])
        targets = np.array([landmarks[CHEEK_UPPER[0]], bridge, landmarks[CHEEK_UPPER[1]],
                            landmarks[JAW[0]], landmarks[CHIN], landmarks[JAW[1]]], np.float64)
        targets[3:] += (targets[3:] - targets[:3].mean(axis=0)) * rng.uniform(0.0, 0.08)
        best = None
        for template in self.mask_sets[rng.integers(len(self.mask_sets))]:
            homography, _ = cv2.findHomography(template.anchors, targets, 0)
            if homography is None:
                continue
            projected = cv2.perspectiveTransform(template.anchors[None], homography)[0]
            error = float(np.abs(projected - targets).mean())
            if best is None or error < best[0]:
                best = (error, template, homography)
        if best is None:
            return None
        _, template, homography = best
        # The template (512 px wide) lands 5-7 times smaller in the crop: recoloured and warped
        # from twice the size it lands at, not from all of it (same look, a fifth of the work).
        factor = min(1.0, 2.0 * float(max(np.ptp(targets[:, 0]) / max(np.ptp(template.anchors[:, 0]), 1e-6),
                                          np.ptp(targets[:, 1]) / max(np.ptp(template.anchors[:, 1]), 1e-6))))
        rgba, (fx, fy) = _shrunk_template(template, factor)
        homography = homography @ np.diag([1.0 / fx, 1.0 / fy, 1.0])
        if template.recolourable and rng.random() < 0.6:
            rgba[..., :3] = _recolour(rgba[..., :3], self.textures, rng, texture_scale=fx)
        rgba[..., :3] = _jitter_colour(rgba[..., :3], rng)
        warped = cv2.warpPerspective(rgba, homography, (size, size), flags=cv2.INTER_AREA,
                                     borderMode=cv2.BORDER_CONSTANT, borderValue=0)
        return warped[..., :3], warped[..., 3] / 255.0

    def _cutout(self, kind, landmarks, size, rng):
        images = self.cutouts[kind]
        rgba = images[rng.integers(len(images))]
        if rng.random() < 0.5:
            rgba = rgba[:, ::-1]
        eye_a, eye_b = landmarks[EYE_OUTER[0]], landmarks[EYE_OUTER[1]]
        face_width = float(np.linalg.norm(landmarks[CHEEK_UPPER[1]] - landmarks[CHEEK_UPPER[0]]))
        roll = float(np.degrees(np.arctan2(eye_b[1] - eye_a[1], eye_b[0] - eye_a[0])))
        height, width = rgba.shape[:2]
        if kind == "glasses":
            centre = (eye_a + eye_b) / 2 + rng.normal(0, 0.01 * size, 2)
            # Frames as wide as the face and wider: on glasses wider than the 1.3-1.6 eye spans
            # trained before, the generator left pale outlines of the frames.
            scale = float(np.linalg.norm(eye_b - eye_a)) * rng.uniform(1.3, 1.9) / width
            angle = roll + rng.normal(0, 3)
        elif kind == "hat":
            brow = (landmarks[BROW_TOP[0]] + landmarks[BROW_TOP[1]]) / 2
            scale = face_width * rng.uniform(1.1, 1.5) / width
            centre = brow + np.array([0.0, -0.5 * height * scale + rng.uniform(0.0, 0.12) * size])
            angle = roll + rng.normal(0, 5)
        else:
            anchors = [(landmarks[MOUTH[0]] + landmarks[MOUTH[1]]) / 2, landmarks[CHIN],
                       landmarks[CHEEKS[0]], landmarks[CHEEKS[1]], landmarks[NOSE_TIP],
                       landmarks[EYE_OUTER[rng.integers(2)]]]
            weights = np.array([0.35, 0.2, 0.15, 0.15, 0.1, 0.05])
            centre = anchors[rng.choice(len(anchors), p=weights)] + rng.normal(0, 0.06 * size, 2)
            extent = face_width * (rng.uniform(0.5, 1.4) if kind == "hand" else rng.uniform(0.35, 0.9))
            scale = extent / max(height, width)
            angle = rng.uniform(-70, 70) if kind == "hand" else rng.uniform(-45, 45)
        # Shrunk to its final size first, then recoloured (the colour change is per pixel).
        small = _shrunk(rgba, scale)
        if small is None:
            return None
        small[..., :3] = _jitter_colour(small[..., :3], rng)
        return _turned(small, centre, angle, size)


def _printed(rgb: np.ndarray, alpha: np.ndarray, face: np.ndarray, landmarks: np.ndarray, rng) -> np.ndarray:
    """A face mask's colour (crop pixels) with a print on its front: the face's own mouth,
    enlarged and moved (a printed-lips mask), or bold shapes in a few colours (a skull, a logo)."""
    inside = alpha > 0.5
    ys, xs = np.nonzero(inside)
    if xs.size < 64:
        return rgb
    x0, x1, y0, y1 = xs.min(), xs.max() + 1, ys.min(), ys.max() + 1
    width, height = int(x1 - x0), int(y1 - y0)
    ink = np.zeros(rgb.shape, np.float32)
    cover = np.zeros(rgb.shape[:2], np.float32)
    if rng.random() < 0.5:
        left, right = landmarks[MOUTH[0]], landmarks[MOUTH[1]]
        span = max(float(np.linalg.norm(right - left)), 4.0)
        centre = (left + right) / 2
        box = np.array([centre[0] - 0.8 * span, centre[1] - 0.45 * span, centre[0] + 0.8 * span, centre[1] + 0.45 * span])
        box = np.clip(np.round(box).astype(int), 0, [face.shape[1], face.shape[0], face.shape[1], face.shape[0]])
        patch = face[box[1]:box[3], box[0]:box[2]].astype(np.float32)
        if patch.shape[0] < 3 or patch.shape[1] < 3:
            return rgb
        scale = rng.uniform(1.0, 1.8)
        new_w = int(np.clip(patch.shape[1] * scale, 4, width))
        new_h = int(np.clip(patch.shape[0] * scale, 4, height))
        patch = cv2.resize(patch, (new_w, new_h), interpolation=cv2.INTER_LINEAR)
        if rng.random() < 0.4:  # drawn lips: bolder, redder
            patch = np.clip((patch - patch.mean()) * 1.6 + np.array([60, 60, 190], np.float32) * 0.5 + patch.mean() * 0.5, 0, 255)
        cx = x0 + width / 2 + rng.normal(0, 0.08) * width
        cy = y0 + height * rng.uniform(0.45, 0.65)
        px, py = int(round(cx - new_w / 2)), int(round(cy - new_h / 2))
        soft = np.ones((new_h, new_w), np.float32)
        soft = cv2.GaussianBlur(np.pad(soft, 2), (0, 0), max(new_w, new_h) * 0.08)[2:-2, 2:-2]
        soft = np.clip(soft * 2.0, 0, 1)
        ax0, ay0 = max(px, 0), max(py, 0)
        ax1, ay1 = min(px + new_w, rgb.shape[1]), min(py + new_h, rgb.shape[0])
        if ax1 <= ax0 or ay1 <= ay0:
            return rgb
        ink[ay0:ay1, ax0:ax1] = patch[ay0 - py:ay1 - py, ax0 - px:ax1 - px]
        cover[ay0:ay1, ax0:ax1] = soft[ay0 - py:ay1 - py, ax0 - px:ax1 - px]
    else:
        palette = [rng.uniform(0, 255, 3) for _ in range(int(rng.integers(1, 4)))] + [np.full(3, 15.0), np.full(3, 240.0)]
        for _ in range(int(rng.integers(3, 14))):
            colour = tuple(float(c) for c in palette[rng.integers(len(palette))])
            centre = (int(rng.uniform(x0, x1)), int(rng.uniform(y0, y1)))
            shape = rng.integers(3)
            extent = max(2, int(rng.uniform(0.05, 0.3) * width))
            if shape == 0:
                axes = (extent, max(1, int(extent * rng.uniform(0.3, 1.0))))
                angle = float(rng.uniform(0, 180))
                cv2.ellipse(ink, centre, axes, angle, 0, 360, colour, -1, cv2.LINE_AA)
                cv2.ellipse(cover, centre, axes, angle, 0, 360, 1.0, -1, cv2.LINE_AA)
            elif shape == 1:
                end = (centre[0] + int(rng.normal(0, extent)), centre[1] + int(rng.normal(0, extent)))
                thick = max(1, int(extent * rng.uniform(0.1, 0.4)))
                cv2.line(ink, centre, end, colour, thick, cv2.LINE_AA)
                cv2.line(cover, centre, end, 1.0, thick, cv2.LINE_AA)
            else:
                points = (np.array(centre) + rng.normal(0, extent, (int(rng.integers(3, 7)), 2))).astype(np.int32)
                cv2.fillPoly(ink, [points], colour, cv2.LINE_AA)
                cv2.fillPoly(cover, [points], 1.0, cv2.LINE_AA)
    cover = np.clip(cover, 0, 1) * inside
    return rgb * (1 - cover[..., None]) + ink * cover[..., None]


def _pick(rng, weights: dict[str, float]) -> str:
    names = list(weights)
    probabilities = np.array([weights[name] for name in names], np.float64)
    return names[rng.choice(len(names), p=probabilities / probabilities.sum())]


def _read_rgba(path: Path):
    if not path.is_file():
        return None
    image = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    if image is None or image.ndim != 3 or image.shape[2] != 4:
        return None
    return image


def _trim(rgba: np.ndarray) -> np.ndarray:
    ys, xs = np.nonzero(rgba[..., 3] > 8)
    if len(xs) == 0:
        return rgba
    return np.ascontiguousarray(rgba[ys.min():ys.max() + 1, xs.min():xs.max() + 1])


def _load_mask_templates(root: Path) -> list[list[MaskTemplate]]:
    folder, meta = root / "face_masks", root / "face_masks_meta"
    config = configparser.ConfigParser()
    if not (meta / "masks.cfg").is_file():
        return []
    config.read(meta / "masks.cfg")
    sizes = {}
    if (meta / "original_sizes.csv").is_file():
        with open(meta / "original_sizes.csv", newline="") as handle:
            for row in csv.DictReader(handle):
                sizes[row["template"]] = (float(row["width_here"]) / float(row["original_width"]),
                                          float(row["height_here"]) / float(row["original_height"]))
    templates = {}
    for section in config.sections():
        name = f"masktheface_{section}.png"
        rgba = _read_rgba(folder / name)
        if rgba is None:
            continue
        sx, sy = sizes.get(name, (1.0, 1.0))
        anchors = np.array([[float(v) for v in config[section][f"mask_{k}"].split(",")]
                            for k in "abcdef"], np.float64) * [sx, sy]
        templates[section] = MaskTemplate(rgba, anchors, recolourable=not section.startswith("gas"), name=name)
    sets = []
    for base in sorted(name for name in templates if not name.endswith(("_left", "_right"))):
        group = [templates[base]] + [templates[f"{base}_{side}"] for side in ("left", "right")
                                     if f"{base}_{side}" in templates]
        sets.append(group)
    return sets


def _recolour(rgb: np.ndarray, textures: list[np.ndarray], rng, texture_scale: float = 1.0) -> np.ndarray:
    """A mask's colour replaced by a fabric texture or a plain colour, its shading kept; the texture
    shrunk by ``texture_scale`` (a template that was shrunk by as much keeps the pattern's size)."""
    height, width = rgb.shape[:2]
    shade = rgb.mean(axis=2, keepdims=True) / max(float(rgb.mean()), 1.0)
    if textures and rng.random() < 0.6:
        texture = textures[rng.integers(len(textures))]
        if texture_scale < 1.0:
            texture = cv2.resize(texture, (max(1, round(texture.shape[1] * texture_scale)),
                                           max(1, round(texture.shape[0] * texture_scale))),
                                 interpolation=cv2.INTER_AREA)
        reps = (height // texture.shape[0] + 1, width // texture.shape[1] + 1, 1)
        pattern = np.tile(texture, reps)[:height, :width].astype(np.float32)
    else:
        pattern = np.broadcast_to(rng.uniform(20, 235, 3).astype(np.float32), rgb.shape)
    return np.clip(pattern * np.clip(shade, 0.3, 1.6), 0, 255)


def _jitter_colour(rgb: np.ndarray, rng) -> np.ndarray:
    gain = rng.uniform(0.75, 1.25) * rng.uniform(0.9, 1.1, 3)
    return np.clip(rgb * gain.astype(np.float32) + rng.uniform(-20, 20), 0, 255)


def _place(rgba: np.ndarray, centre, scale: float, angle: float, size):
    """Shrink the cut-out to its final scale (area filter, no aliasing), rotate about its centre
    and put its centre at ``centre``, on a canvas of ``size`` (a square's side, or (width, height))."""
    small = _shrunk(rgba, scale)
    return None if small is None else _turned(small, centre, angle, size)


def _shrunk(rgba: np.ndarray, scale: float) -> np.ndarray | None:
    """The cut-out at ``scale`` (area filter when shrinking), as float32."""
    if scale <= 0:
        return None
    height, width = rgba.shape[:2]
    new_w, new_h = max(int(round(width * scale)), 2), max(int(round(height * scale)), 2)
    small = cv2.resize(np.ascontiguousarray(rgba), (new_w, new_h),
                       interpolation=cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR)
    return small.astype(np.float32, copy=False)


def _shrunk_template(template: MaskTemplate, factor: float) -> tuple[np.ndarray, tuple[float, float]]:
    """(the template's RGBA shrunk by ``factor`` (area filter: its mean colour, which recolouring
    reads, stays), as float32; the actual (x, y) factors), or the template as float32 and (1, 1)
    when ``factor`` is 1 or more. Shrunk from a half-size copy kept with the template when
    ``factor`` is under 0.5."""
    rgba = template.rgba
    height, width = rgba.shape[:2]
    if factor >= 1.0:
        return rgba.astype(np.float32), (1.0, 1.0)
    new_w, new_h = max(int(round(width * factor)), 2), max(int(round(height * factor)), 2)
    if factor <= 0.5:
        if template.half is None:
            template.half = cv2.resize(rgba.astype(np.float32), (max(width // 2, 2), max(height // 2, 2)),
                                       interpolation=cv2.INTER_AREA)
        source = template.half
    else:
        source = rgba.astype(np.float32)
    small = cv2.resize(source, (new_w, new_h), interpolation=cv2.INTER_AREA)
    return small, (new_w / width, new_h / height)


def _turned(small: np.ndarray, centre, angle: float, size):
    """A cut-out at its final scale rotated about its centre, its centre at ``centre``."""
    new_h, new_w = small.shape[:2]
    matrix = cv2.getRotationMatrix2D((new_w / 2, new_h / 2), angle, 1.0)
    matrix[:, 2] += np.asarray(centre) - np.array([new_w / 2, new_h / 2])
    canvas = (size, size) if np.isscalar(size) else tuple(size)
    warped = cv2.warpAffine(small, matrix, canvas, flags=cv2.INTER_LINEAR,
                            borderMode=cv2.BORDER_CONSTANT, borderValue=0)
    return warped[..., :3], warped[..., 3] / 255.0


def _match_sharpness(face, rgb, alpha, rng):
    """Blur the occluder as much as the face is blurred, and a little at random."""
    sharpness = cv2.Laplacian(cv2.cvtColor(face, cv2.COLOR_BGR2GRAY), cv2.CV_32F).var()
    sigma = (1.2 if sharpness < 60 else 0.7 if sharpness < 200 else 0.3) * rng.uniform(0.5, 1.5)
    if sigma < 0.35:
        return rgb, alpha
    return (cv2.GaussianBlur(rgb, (0, 0), sigma), cv2.GaussianBlur(alpha, (0, 0), sigma))


def _shadow(alpha: np.ndarray, size: int, rng) -> np.ndarray:
    """A soft shadow: the occluder's silhouette shifted down-sideways, blurred, outside it."""
    shift = rng.uniform(0.01, 0.04, 2) * size * np.array([rng.choice([-1, 1]), 1])
    matrix = np.float32([[1, 0, shift[0]], [0, 1, shift[1]]])
    moved = cv2.warpAffine(alpha.astype(np.float32), matrix, (size, size))
    soft = cv2.GaussianBlur(moved, (0, 0), size * 0.02)
    return np.clip(soft * (1.0 - alpha), 0, 1) * rng.uniform(0.1, 0.3)


# Procedural occluders, drawn at 4x and shrunk for clean edges.
def _draw_layer(size: int, painter, supersample: int = 4):
    big = size * supersample
    rgb = np.zeros((big, big, 3), np.float32)
    alpha = np.zeros((big, big), np.float32)
    painter(rgb, alpha, supersample)
    rgb = cv2.resize(rgb * alpha[..., None], (size, size), interpolation=cv2.INTER_AREA)
    alpha = cv2.resize(alpha, (size, size), interpolation=cv2.INTER_AREA)
    rgb = rgb / np.maximum(alpha, 1e-4)[..., None]
    return rgb, alpha


def _cylinder_shading(width: int, rng) -> np.ndarray:
    x = np.linspace(-1, 1, width)
    light = rng.uniform(-0.6, 0.6)
    return (0.55 + 0.45 * np.cos(np.clip(x - light, -1.5, 1.5) * 1.2) + 0.25 * np.exp(-((x - light - 0.3) ** 2) / 0.02)).astype(np.float32)


def _rotated_body(rgb, alpha, centre, width, height, angle, colour, rng, shading=True):
    """Fill a rotated rectangle with a colour shaded like a cylinder across its width."""
    w, h = max(int(width), 2), max(int(height), 2)
    patch = np.ones((h, w, 3), np.float32) * np.asarray(colour, np.float32)
    if shading:
        patch *= _cylinder_shading(w, rng)[None, :, None]
    patch += rng.normal(0, 4, patch.shape).astype(np.float32)
    patch_alpha = np.ones((h, w), np.float32)
    matrix = cv2.getRotationMatrix2D((w / 2, h / 2), angle, 1.0)
    matrix[:, 2] += np.asarray(centre) - np.array([w / 2, h / 2])
    # Only the box the rectangle lands in is warped and blended (the canvas is 4x the crop).
    size = rgb.shape[0]
    corners = np.array([[0, 0, 1], [w, 0, 1], [0, h, 1], [w, h, 1]], np.float64) @ matrix.T
    x0, y0 = np.clip(np.floor(corners.min(axis=0)).astype(int) - 2, 0, size)
    x1, y1 = np.clip(np.ceil(corners.max(axis=0)).astype(int) + 2, 0, size)
    if x1 <= x0 or y1 <= y0:
        return
    matrix[:, 2] -= (x0, y0)
    layer = cv2.warpAffine(patch, matrix, (int(x1 - x0), int(y1 - y0)), flags=cv2.INTER_LINEAR)
    mask = cv2.warpAffine(patch_alpha, matrix, (int(x1 - x0), int(y1 - y0)), flags=cv2.INTER_LINEAR)
    box = (slice(y0, y1), slice(x0, x1))
    rgb[box] = rgb[box] * (1 - mask[..., None]) + layer * mask[..., None]
    alpha[box] = np.maximum(alpha[box], mask)


def _mouth_and_width(landmarks):
    mouth = (landmarks[MOUTH[0]] + landmarks[MOUTH[1]]) / 2
    face_width = float(np.linalg.norm(landmarks[CHEEK_UPPER[1]] - landmarks[CHEEK_UPPER[0]]))
    return mouth, face_width


def _microphone(landmarks, size, rng):
    mouth, face_width = _mouth_and_width(landmarks)
    radius = face_width * rng.uniform(0.13, 0.22)
    centre = mouth + rng.normal(0, 0.05 * size, 2) + np.array([0.0, radius * rng.uniform(0.2, 1.0)])
    angle = rng.uniform(-35, 35)
    grille = rng.choice([np.array([70, 70, 75]), np.array([160, 160, 165]), np.array([30, 30, 30])])
    handle_colour = rng.uniform(10, 60, 3)

    def paint(rgb, alpha, k):
        c, r = centre * k, radius * k
        direction = np.array([np.sin(np.radians(angle)), np.cos(np.radians(angle))])
        length = r * rng.uniform(3.0, 6.0)
        _rotated_body(rgb, alpha, c + direction * (length / 2 + r * 0.6), r * 0.8, length, angle, handle_colour, rng)
        ball = np.zeros(alpha.shape, np.uint8)
        cv2.circle(ball, tuple(int(v) for v in c), int(r), 1, -1, cv2.LINE_AA)
        # The grille's shading and mesh, worked out only in the ball's box.
        x0, y0 = (max(int(np.floor(v - r)) - 2, 0) for v in c)
        x1, y1 = min(int(np.ceil(c[0] + r)) + 3, alpha.shape[1]), min(int(np.ceil(c[1] + r)) + 3, alpha.shape[0])
        if x1 <= x0 or y1 <= y0:
            return
        yy, xx = np.mgrid[y0:y1, x0:x1].astype(np.float32)
        shade = np.clip(1.15 - 0.6 * np.hypot(xx - c[0] + 0.35 * r, yy - c[1] + 0.35 * r) / r, 0.3, 1.3)
        period = max(int(r / 4), 2)
        mesh = 0.75 + 0.25 * (((xx.astype(int) // period) + (yy.astype(int) // period)) % 2)
        sphere = grille[None, None, :] * (shade * mesh)[..., None]
        inside = ball[y0:y1, x0:x1].astype(bool)
        rgb[y0:y1, x0:x1][inside] = sphere[inside]
        alpha[y0:y1, x0:x1][inside] = 1.0
    return _draw_layer(size, paint)


def _cup(landmarks, size, rng, bottle=False):
    mouth, face_width = _mouth_and_width(landmarks)
    width = face_width * (rng.uniform(0.18, 0.3) if bottle else rng.uniform(0.3, 0.5))
    height = width * (rng.uniform(2.5, 3.5) if bottle else rng.uniform(1.0, 1.5))
    centre = mouth + np.array([rng.normal(0, 0.06 * size), height * rng.uniform(0.2, 0.5)])
    angle = rng.uniform(-25, 25) if not bottle else rng.uniform(-60, 60)
    colour = rng.uniform(20, 240, 3)

    def paint(rgb, alpha, k):
        _rotated_body(rgb, alpha, centre * k, width * k, height * k, angle, colour, rng)
        if bottle:
            direction = np.array([np.sin(np.radians(angle)), -np.cos(np.radians(angle))])
            _rotated_body(rgb, alpha, (centre + direction * height * 0.6) * k, width * 0.4 * k,
                          height * 0.3 * k, angle, colour * 0.9, rng)
        else:
            side = rng.choice([-1, 1])
            handle_centre = tuple(int(v) for v in ((centre + np.array([side * width * 0.55, 0])) * k))
            axes = (int(width * 0.25 * k), int(height * 0.25 * k))
            mask = np.zeros(alpha.shape, np.uint8)
            cv2.ellipse(mask, handle_centre, axes, angle, -90 if side > 0 else 90,
                        90 if side > 0 else 270, 1, max(int(width * 0.08 * k), 2), cv2.LINE_AA)
            inside = mask.astype(bool) & (alpha < 0.5)
            rgb[inside] = colour * 0.85
            alpha[inside] = 1.0
    return _draw_layer(size, paint)


def _bottle(landmarks, size, rng):
    return _cup(landmarks, size, rng, bottle=True)


def _phone(landmarks, size, rng):
    mouth, face_width = _mouth_and_width(landmarks)
    width = face_width * rng.uniform(0.35, 0.55)
    height = width * rng.uniform(1.8, 2.1)
    anchor = landmarks[CHEEKS[rng.integers(2)]] if rng.random() < 0.5 else mouth
    centre = anchor + rng.normal(0, 0.05 * size, 2)
    angle = rng.uniform(-40, 40)
    body = rng.choice([np.array([25, 25, 25]), np.array([200, 200, 205]), rng.uniform(30, 220, 3)])

    def paint(rgb, alpha, k):
        _rotated_body(rgb, alpha, centre * k, width * k, height * k, angle, body, rng, shading=False)
        screen = rng.uniform(5, 60, 3) if rng.random() < 0.7 else rng.uniform(60, 255, 3)
        _rotated_body(rgb, alpha, centre * k, width * 0.88 * k, height * 0.9 * k, angle, screen, rng)
    return _draw_layer(size, paint)


def _hand_shape(landmarks, size, rng):
    mouth, face_width = _mouth_and_width(landmarks)
    tones = [np.array([95, 130, 190]), np.array([60, 90, 150]), np.array([45, 60, 95]),
             np.array([140, 170, 220]), np.array([30, 45, 70])]
    skin = tones[rng.integers(len(tones))] * rng.uniform(0.85, 1.15)
    palm_w = face_width * rng.uniform(0.35, 0.5)
    palm_h = palm_w * rng.uniform(1.0, 1.3)
    anchor = [mouth, landmarks[CHIN], landmarks[CHEEKS[0]], landmarks[CHEEKS[1]]][rng.integers(4)]
    centre = anchor + rng.normal(0, 0.05 * size, 2) + np.array([0, palm_h * 0.5])
    angle = rng.uniform(-50, 50)

    def paint(rgb, alpha, k):
        _rotated_body(rgb, alpha, centre * k, palm_w * k, palm_h * k, angle, skin, rng)
        direction = np.array([np.sin(np.radians(angle)), -np.cos(np.radians(angle))])
        across = np.array([direction[1], -direction[0]])
        for finger in range(4):
            length = palm_h * rng.uniform(0.7, 1.0) * (0.8 if finger in (0, 3) else 1.0)
            offset = (finger - 1.5) * palm_w * 0.24
            spread = angle + (finger - 1.5) * rng.uniform(0, 8)
            base = centre - direction * palm_h * 0.5 + across * offset
            _rotated_body(rgb, alpha, (base - direction * length * 0.45) * k, palm_w * 0.21 * k,
                          length * k, spread, skin * rng.uniform(0.9, 1.05), rng)
        thumb_side = rng.choice([-1, 1])
        _rotated_body(rgb, alpha, (centre + across * thumb_side * palm_w * 0.6) * k, palm_w * 0.24 * k,
                      palm_h * 0.7 * k, angle + thumb_side * 35, skin, rng)
    return _draw_layer(size, paint)


def _scarf(landmarks, size, rng):
    mouth, face_width = _mouth_and_width(landmarks)
    top = float(rng.uniform(landmarks[NOSE_TIP][1], mouth[1] + 0.05 * size))
    colour = rng.uniform(20, 230, 3)

    def paint(rgb, alpha, k):
        big = alpha.shape[0]
        wave = (np.sin(np.linspace(0, rng.uniform(2, 6), big) + rng.uniform(0, 6)) * 0.02 * big).astype(int)
        yy = np.arange(big)[:, None]
        band = (yy >= (top * k + wave[None, :])).astype(np.float32)
        stripes = 0.8 + 0.2 * np.sin(yy / (rng.uniform(2, 6) * k) + np.arange(big)[None, :] * rng.uniform(0, 0.05))
        rgb[:] = colour[None, None, :] * stripes[..., None]
        alpha[:] = band
    return _draw_layer(size, paint)


def _lens_outline(centre, u, v, half_w, half_h, squareness, lift, outward):
    """A lens's outline: a superellipse (``squareness`` 2: an ellipse, higher: a rounded
    rectangle) with its upper outer corner lifted by ``lift`` of its height (a cat-eye);
    ``outward`` is +1 or -1 along ``u`` (towards the face's side)."""
    t = np.linspace(0, 2 * np.pi, 72, endpoint=False)
    cos, sin = np.cos(t), np.sin(t)
    x = np.sign(cos) * np.abs(cos) ** (2 / squareness)
    y = np.sign(sin) * np.abs(sin) ** (2 / squareness)
    y = y - lift * np.clip(x * outward, 0, 1) ** 2 * np.clip(-y, 0, 1)
    return centre + np.outer(x * half_w, u) + np.outer(y * half_h, v)


def _frames(landmarks, size, rng):
    """Glasses drawn thin: two rims (oval to round, rectangular or cat-eye; sometimes rimless, only
    a faint lens edge, or half-rims along the top), a bridge, temples towards the ears from the
    hinges, lenses clear or lightly tinted; 1.2-1.6 outer-eye-corner spans wide."""
    eye_a, eye_b = landmarks[EYE_OUTER[0]].astype(np.float64), landmarks[EYE_OUTER[1]].astype(np.float64)
    span = float(np.linalg.norm(eye_b - eye_a))
    if span < 4:
        return None
    u = (eye_b - eye_a) / span
    v = np.array([-u[1], u[0]])  # down the face
    inset = span * rng.uniform(0.05, 0.15)  # lens centre from the outer corner
    # Lenses 0.5-0.66 eye spans wide, a bridge of at least 0.16 left between them: the front is
    # 1.2-1.6 spans wide, as real frames and the cut-outs (1.3-1.9) are.
    half_w = min(span * rng.uniform(0.25, 0.33), span * (0.5 - 0.08) - inset)
    half_h = half_w * rng.uniform(0.55, 1.0)
    drop = span * rng.uniform(-0.04, 0.08)
    squareness = rng.choice([2.0, rng.uniform(2.5, 6.0)])
    lift = rng.uniform(0.2, 0.5) if rng.random() < 0.2 else 0.0
    style = _pick(rng, {"full": 0.7, "half": 0.15, "rimless": 0.15})
    rim = rng.uniform(0.4, 2.5)  # crop pixels
    colours = [np.array([20, 20, 20]), np.array([30, 45, 70]), np.array([90, 170, 205]),
               np.array([190, 190, 195]), rng.uniform(20, 230, 3)]
    colour = colours[rng.integers(len(colours))].astype(np.float32)
    opacity = rng.uniform(0.85, 1.0)  # the bridge and temples; a rimless lens's edge is fainter
    edge = opacity if style != "rimless" else rng.uniform(0.35, 0.7)
    tint_alpha = 0.0 if rng.random() < 0.6 else rng.uniform(0.05, 0.2)
    tint = rng.uniform(40, 200, 3).astype(np.float32)
    temple_length = span * rng.uniform(0.05, 0.4)
    outlines = [_lens_outline(eye_a + u * inset + v * drop, u, v, half_w, half_h, squareness, lift, -1),
                _lens_outline(eye_b - u * inset + v * drop, u, v, half_w, half_h, squareness, lift, +1)]

    def paint(rgb, alpha, k):
        drawn_outlines = [np.round(outline * k).astype(np.int32) for outline in outlines]
        if tint_alpha > 0:
            lenses = np.zeros(alpha.shape, np.uint8)
            cv2.fillPoly(lenses, drawn_outlines, 1, cv2.LINE_AA)
            inside = lenses.astype(bool)
            rgb[inside] = tint
            alpha[inside] = tint_alpha
        rims, wire = np.zeros(alpha.shape, np.uint8), np.zeros(alpha.shape, np.uint8)
        thickness = max(int(round(rim * k)), 1)
        for points in drawn_outlines:
            if style == "half":  # the rim's upper half only (the outline's second half of its turn)
                cv2.polylines(rims, [points[np.r_[len(points) // 2:len(points), 0]]], False, 1, thickness, cv2.LINE_AA)
            else:
                cv2.polylines(rims, [points], True, 1, thickness, cv2.LINE_AA)
        inner = [outlines[0][np.argmax(outlines[0] @ u)], outlines[1][np.argmin(outlines[1] @ u)]]
        arch = (inner[0] + inner[1]) / 2 - v * half_h * rng.uniform(0.0, 0.5)
        bridge = np.array([inner[0], arch, inner[1]])
        cv2.polylines(wire, [np.round(bridge * k).astype(np.int32)], False, 1, thickness, cv2.LINE_AA)
        # The temples leave from the lenses' upper outer corners, where hinges are.
        outer = [outline[np.argmax(outline @ (sign * u) - 0.5 * (outline @ v))]
                 for outline, sign in zip(outlines, (-1, 1))]
        for point, sign in zip(outer, (-1, 1)):
            end = point + sign * u * temple_length + v * temple_length * rng.uniform(0.0, 0.3)
            cv2.line(wire, tuple(int(c) for c in np.round(point * k)), tuple(int(c) for c in np.round(end * k)),
                     1, thickness, cv2.LINE_AA)
        for drawn, strength in ((rims, edge), (wire, opacity)):
            on = drawn.astype(bool)
            shade = colour * rng.uniform(0.8, 1.2, (int(on.sum()), 1)).astype(np.float32)
            rgb[on] = np.clip(shade, 0, 255)
            alpha[on] = strength
    return _draw_layer(size, paint)


PROCEDURAL = {
    "microphone": _microphone,
    "cup": _cup,
    "bottle": _bottle,
    "phone": _phone,
    "hand_shape": _hand_shape,
    "scarf": _scarf,
}
