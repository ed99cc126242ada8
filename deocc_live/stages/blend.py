"""Blend stage: each face's restored crop warped back into the frame, inside the face's box only,
feathered by its occlusion mask and colour matched to the visible face. Pixels that were not
covered stay the camera's."""
from __future__ import annotations

import cv2
import numpy as np

from deocc_live.stages import align
from deocc_live.frame import Frame
from deocc_live.landmarks import FACE_OVAL, face_outline_region
from deocc_live.settings import LiveSettings

MASK_FLOOR = 0.04  # occlusion below this counts as "not covered": those pixels stay untouched
COLOUR_PULL = np.array([0.3, 0.8, 0.8], np.float32)  # L, a, b: how far the fill moves to the colour of the skin beside it
COLOUR_RING = 0.03  # crop widths: the visible face this close to the filled part gives the colour pulled to
COLOUR_RING_LEAST = 30  # crop pixels: a thinner ring than this gives way to the whole visible face
MONO_SPREAD = 2.0  # Lab units: a picture whose a and b vary less than this (standard deviation) is monochrome
MONO_READ = 320    # pixels: the picture is read at most about this wide to tell
MONO_EVERY = 30    # frames of a stream between two looks


GRAIN_SCALE = 0.7  # pixels: what a Gaussian of this width leaves is grain (finer than any shape of a face)
GRAIN_TILE = 256   # side of the noise tile the grain is read from (repeated)
GRAIN_MOST = 10.0  # grey levels: the most grain added (a textured or blocky face is not matched beyond it)
GRAIN_EVERY = 10   # frames of a stream between two measurements of a face's grain


def high_pass(grey: np.ndarray) -> np.ndarray:
    return grey - cv2.GaussianBlur(grey, (0, 0), GRAIN_SCALE)


def grain_level(residue: np.ndarray, where: np.ndarray) -> float:
    """The grain of a high-passed picture where ``where`` is set: a robust standard deviation
    (1.4826 times the median absolute value), which the edges of eyes and brows do not sway."""
    values = np.abs(residue[::2, ::2][where[::2, ::2]])  # every other pixel tells the same
    return 1.4826 * float(np.median(values)) if values.size else 0.0


def grain_tile(seed: int = 0) -> np.ndarray:
    """GRAIN_TILE square of high-passed white noise (seamless when repeated), standard deviation 1."""
    noise = np.random.default_rng(seed).standard_normal((GRAIN_TILE, GRAIN_TILE)).astype(np.float32)
    residue = high_pass(np.pad(noise, 8, mode="wrap"))[8:-8, 8:-8]
    return residue / residue.std()


def picture_tint(image: np.ndarray) -> np.ndarray | None:
    """The (a, b) Lab tint of a monochrome picture (an infrared webcam, a black-and-white or sepia
    photo), or None for a colour one. Of the 2,109 real masked photos, the 17 monochrome ones vary
    by 0.02 to 1.85 in a or b (standard deviation over the picture), the least colourful colour
    one by 2.36; the e2e's colour frames by far more."""
    step = max(1, image.shape[1] // MONO_READ)
    lab = cv2.cvtColor(image[::step, ::step].astype(np.float32) * np.float32(1 / 255), cv2.COLOR_BGR2LAB)
    mean, spread = cv2.meanStdDev(lab)
    if float(spread[1:].max()) >= MONO_SPREAD:
        return None
    return mean[1:, 0].astype(np.float32)


def edge_fade(size: int, width: float = 0.06) -> np.ndarray:
    """1 inside the crop, falling to 0 at its edges, so no seam shows where the crop ends."""
    ramp = np.clip(np.minimum(np.arange(size), np.arange(size)[::-1]) / max(width * size, 1.0), 0, 1)
    return np.minimum(ramp[:, None], ramp[None, :]).astype(np.float32)


class BlendStage:
    def __init__(self, settings: LiveSettings | None = None, colour_match: bool = True, grow: float = 0.024):
        self.settings = settings or LiveSettings()  # feather (blur of the mask, crop widths), show_mask
        # Dilation of the mask, in crop widths (3 px of 128): an occluder's rim the mask head
        # half-sees goes too. On 180 validation scenes 0.024 against 0.016: SSIM 0.688 -> 0.692
        # (glasses 0.643 -> 0.655), recall 0.966 -> 0.967, PSNR the same.
        self.grow = grow
        self.colour_match = colour_match
        self._fade: dict[int, np.ndarray] = {}
        self._grain_tile = grain_tile()
        self._grain_levels: dict[int, tuple[int, float]] = {}  # track id -> (frame index, grain level)
        self._tint: tuple[int, np.ndarray | None] | None = None  # a stream's (frame index, picture_tint)

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
        """Paints each face's covered part into ``frame.image`` in place (the pixels it replaces
        go to ``frame.before``): the whole frame is never copied, and read only for its tint
        (``picture_tint``: every 16th pixel or so at 720p, every MONO_EVERY frames of a stream)."""
        if enabled:
            faces = [face for face in frame.faces if face.restored is not None and face.inverse is not None]
            tint = self._picture_tint(frame) if faces and self.colour_match else None
            # Every face is read (its colour, its grain) before any is painted: faces may overlap.
            for painted in [self._prepare(frame, face, tint) for face in faces]:
                self._paint(frame, *painted)
            if not frame.still:  # tracks that ended are forgotten
                present = {face.track_id for face in faces}
                self._grain_levels = {k: v for k, v in self._grain_levels.items() if k in present}
        frame.output = frame.image
        return frame

    def _picture_tint(self, frame: Frame) -> np.ndarray | None:
        """``picture_tint`` of the frame; a stream's looked at again every MONO_EVERY frames."""
        if frame.still:
            return picture_tint(frame.image)
        if not _fresh(self._tint, frame.index, MONO_EVERY):
            self._tint = (frame.index, picture_tint(frame.image))
        return self._tint[1]

    def _colour_matched(self, face, tint: np.ndarray | None = None) -> np.ndarray:
        """The restored crop with what it filled in moved toward the colour of the face next to it:
        the mean Lab colour of the filled part (predicted covered) toward that of the visible face
        (not covered) within ``COLOUR_RING`` of the filled part, both read inside the face's
        outline, ``COLOUR_PULL`` of the way for L, a and b, applied inside that outline in
        proportion to the occlusion. The fill takes some colour from the occluder (a blue mask
        gives a bluish chin); on 180 validation scenes (the same faces found) pulling toward the
        whole visible face took the colour shift from 11.55 to 10.62 Lab and PSNR from 17.33 to
        17.47 dB, against shifting the whole crop by the visible difference (the colour match
        before). The hidden part's colour differs from the visible face's as a whole (lips, the
        shade under the nose and chin): its error followed the visible face's own (correlation
        0.76-0.90 for L, a, b), while the skin right beside it tells more. With the ring as the
        target, the same 180 scenes and generator went from colour shift 7.48 to 6.44 Lab and
        19.09 to 19.28 dB (a ring of 2 to 8 crop pixels: 6.38-6.60 Lab, 19.25-19.29 dB), and
        with a and b pulled 0.8 of the way instead of 0.6, to 6.25 Lab (1.0: 6.26; L pulled 0.15
        or 0.5 instead of 0.3: 19.26 and 19.23 dB). A face restored from the face memory is not
        pulled (in proportion to the memory's share).

        In a monochrome picture (``tint``: its a and b) the fill takes the picture's tint: the
        generator, trained on colour faces, paints a black-and-white face's lower half in colour."""
        restored = face.restored
        if not self.colour_match or face.crop is None or face.matrix is None:
            return restored
        restored_lab = cv2.cvtColor(np.ascontiguousarray(restored, dtype=np.float32), cv2.COLOR_BGR2LAB)
        pulled = self._pull_colour(face, restored_lab)
        if tint is not None:
            restored_lab[..., 1:] = tint
        elif not pulled:
            return restored
        return np.clip(cv2.cvtColor(restored_lab, cv2.COLOR_LAB2BGR), 0, 1)

    def _pull_colour(self, face, restored_lab: np.ndarray) -> bool:
        """``restored_lab`` moved toward the colour of the skin beside the fill, in place (see
        ``_colour_matched``); False where the face shows too little to tell."""
        size = restored_lab.shape[0]
        inside = face_outline_region(face.landmarks, (size, size), face.matrix)
        occlusion = face.occlusion
        visible = inside & (occlusion < 0.2)
        filled = inside & (occlusion > 0.5)
        if cv2.countNonZero(visible) < 0.05 * size * size or cv2.countNonZero(filled) < 16:
            return False
        reach = max(int(round(COLOUR_RING * size)), 1)
        near = cv2.dilate(filled, cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * reach + 1, 2 * reach + 1)))
        ring = visible & near
        beside = ring if cv2.countNonZero(ring) >= COLOUR_RING_LEAST else visible
        crop_lab = cv2.cvtColor(face.crop.astype(np.float32) * (1 / 255), cv2.COLOR_BGR2LAB)
        shift = (np.array(cv2.mean(crop_lab, beside)[:3], np.float32)
                 - np.array(cv2.mean(restored_lab, filled)[:3], np.float32)) * COLOUR_PULL
        shift *= 1.0 - face.memory  # a remembered face is this face's own colour, lips and all
        # Only the face: a hand reaching past the jaw fills neck and background, which keep theirs.
        weight = occlusion * cv2.GaussianBlur(inside.astype(np.float32), (0, 0), 0.03 * size)
        restored_lab += weight[..., None] * shift
        return True

    def _prepare(self, frame: Frame, face, tint: np.ndarray | None = None):
        """(face, colour8, alpha8, grain): what painting the face takes, read from the camera's frame."""
        mask = self.mask_for(face.occlusion)
        restored = self._colour_matched(face, tint)
        if self.settings.show_mask:
            restored = restored * 0.5 + np.array([0, 0, 0.5], np.float32)
            mask = np.maximum(mask, (mask > 0.01) * np.float32(0.5))
        alpha8 = cv2.convertScaleAbs(mask, alpha=255.0)  # rounds: below half a level counts as 0
        colour8 = cv2.convertScaleAbs(np.maximum(restored, 0), alpha=255.0)  # saturates at 255
        grain = 0.0
        if self.settings.grain > 0 and not self.settings.show_mask:
            # A stream's face is measured again every GRAIN_EVERY frames (its light and the
            # camera's noise change slowly); a still on its own.
            cached = None if frame.still else self._grain_levels.get(face.track_id)
            if not _fresh(cached, frame.index, GRAIN_EVERY):
                cached = (frame.index, self._grain(frame.image, face, colour8, alpha8))
                if not frame.still:
                    self._grain_levels[face.track_id] = cached
            grain = self.settings.grain * cached[1]
        return face, colour8, alpha8, grain

    def _paint(self, frame: Frame, face, colour8: np.ndarray, alpha8: np.ndarray, grain: float) -> None:
        # Each covered part of the crop (a mask, and a speck at the hairline) has its own small
        # footprint in the frame: only those are warped and blended (overlapping ones as one).
        count, _, stats, _ = cv2.connectedComponentsWithStats((alpha8 > 0).view(np.uint8), connectivity=8)
        # A part's box, one crop pixel out on each side (the reach of bilinear interpolation).
        parts = [(left - 1, top - 1, left + width, top + height) for left, top, width, height, _ in stats[1:count]]
        boxes = [box for box in (align.crop_box(face.inverse, alpha8.shape[0], frame.image.shape, 1, part)
                                 for part in parts) if box is not None]
        for box in _merged(boxes):
            self._blend_box(frame, face.inverse, colour8, alpha8, box, grain, face.landmarks[FACE_OVAL].mean(axis=0))

    def _grain(self, image: np.ndarray, face, colour8: np.ndarray, alpha8: np.ndarray) -> float:
        """The grain to add to the fill (before the ``grain`` setting): what the visible face shows
        in the camera's pixels (inside its outline, not covered) beyond what the fill has. The
        generator's fill, drawn at 128 px and enlarged, is smoother than the camera's picture
        around it, and looks pasted on. On 180 validation scenes the sharpness ratio where the app
        acted went from 0.51 to 0.75 (Telea 0.82), PSNR 18.32 dB unchanged, SSIM 0.678 to 0.677;
        about 1.4 ms a face at 720p. This is grain, not detail: lips and nostrils are as soft as
        before."""
        height, width = image.shape[:2]
        outline = face.landmarks[FACE_OVAL]
        x0, y0 = np.maximum(np.floor(outline.min(axis=0)).astype(int), 0)
        x1, y1 = np.minimum(np.ceil(outline.max(axis=0)).astype(int) + 1, (width, height))
        if x1 - x0 < 16 or y1 - y0 < 16:
            return 0.0
        colour, alpha = _warped(face.inverse, colour8, alpha8, (int(x0), int(y0), int(x1), int(y1)))
        inside = face_outline_region(face.landmarks - np.float32([x0, y0]), alpha.shape).astype(bool)
        visible, filled = inside & (alpha == 0), alpha > 127
        if np.count_nonzero(visible) < 64 or np.count_nonzero(filled) < 16:
            return 0.0
        grey = cv2.cvtColor(np.ascontiguousarray(image[y0:y1, x0:x1]), cv2.COLOR_BGR2GRAY).astype(np.float32)
        seen = grain_level(high_pass(grey), visible)
        own = grain_level(high_pass(cv2.cvtColor(colour, cv2.COLOR_BGR2GRAY).astype(np.float32)), filled)
        return min(float(np.sqrt(max(seen * seen - own * own, 0.0))), GRAIN_MOST)

    def _blend_box(self, frame: Frame, inverse: np.ndarray, colour8: np.ndarray, alpha8: np.ndarray, box,
                   grain: float = 0.0, face_centre=(0.0, 0.0)) -> None:
        x0, y0, x1, y1 = box
        colour, alpha = _warped(inverse, colour8, alpha8, box)
        if grain > 0:
            # The grain is pinned to the face's centre: still on a still face (no shimmer the
            # camera does not have), moving with a moving one, the same for a picture whatever
            # came before it.
            centre = np.round(face_centre).astype(int)
            dy, dx = -int(centre[1]), -int(centre[0])
            noise = (self._grain_tile.take(np.arange(y0 + dy, y1 + dy), axis=0, mode="wrap")
                     .take(np.arange(x0 + dx, x1 + dx), axis=1, mode="wrap")[..., None] * np.float32(grain))
            colour = np.clip(colour + noise + np.float32(0.5), 0, 255).astype(np.uint8)
        alpha = cv2.merge([alpha, alpha, alpha])
        region = frame.image[y0:y1, x0:x1]
        frame.before.append((x0, y0, region.copy()))
        # In 8 bits: colour * a + camera * (255 - a), each rounded; where a is 0 the camera's pixel
        # stays exactly as it was.
        painted = cv2.multiply(colour, alpha, scale=1 / 255)
        region[...] = cv2.add(painted, cv2.multiply(region, cv2.bitwise_not(alpha), scale=1 / 255))


def _fresh(cached: tuple | None, index: int, every: int) -> bool:
    """A stream's measurement ``cached`` as (frame index, value) still holds at frame ``index``:
    taken fewer than ``every`` frames before it (a stream that started again is measured again)."""
    return cached is not None and 0 <= index - cached[0] < every


def _warped(inverse: np.ndarray, colour8: np.ndarray, alpha8: np.ndarray, box) -> tuple[np.ndarray, np.ndarray]:
    """The crop's colour and mask warped into the frame's box (x0, y0, x1, y1)."""
    x0, y0, x1, y1 = box
    matrix = inverse.copy()
    matrix[:, 2] -= (x0, y0)
    size = (x1 - x0, y1 - y0)
    colour = cv2.warpAffine(colour8, matrix, size, flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
    alpha = cv2.warpAffine(alpha8, matrix, size, flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT)
    return colour, alpha


def _merged(boxes: list) -> list:
    """Boxes (x0, y0, x1, y1) with every overlapping pair replaced by their union: a pixel is
    blended once."""
    boxes = list(boxes)
    merged = True
    while merged:
        merged = False
        for i in range(len(boxes)):
            for j in range(i + 1, len(boxes)):
                a, b = boxes[i], boxes[j]
                if a[0] < b[2] and b[0] < a[2] and a[1] < b[3] and b[1] < a[3]:
                    boxes[i] = (min(a[0], b[0]), min(a[1], b[1]), max(a[2], b[2]), max(a[3], b[3]))
                    del boxes[j]
                    merged = True
                    break
            if merged:
                break
    return boxes
