"""Generate stage: every face's aligned crop through the engine in one batch."""
from __future__ import annotations

import cv2
import numpy as np

from deocc_live.frame import Frame
from deocc_live.settings import LiveSettings
from deocc_live.stages.align import thumbnail, warp_crop

# The extra views of a face in a picture, in the order ``settings.picture_views`` takes them: each
# a similarity in crop pixels (as fractions of the crop: scale about the centre, shift, turn in
# degrees) applied after the face's own crop matrix.
VIEWS = ((1.08, 0.0, 0.0, 0.0), (1 / 1.08, 0.0, 0.0, 0.0),
         (1.0, 0.0234, 0.0, 0.0), (1.0, -0.0234, 0.0, 0.0), (1.0, 0.0, 0.0234, 0.0), (1.0, 0.0, -0.0234, 0.0),
         (1.0, 0.0, 0.0, 4.0), (1.0, 0.0, 0.0, -4.0))


def view_matrices(count: int, size: int) -> list[np.ndarray]:
    """The 2x3 matrices (crop pixels -> the view's crop pixels) of a picture's first ``count - 1``
    extra views."""
    centre = (size - 1) / 2
    matrices = []
    for scale, dx, dy, degrees in VIEWS[:max(count - 1, 0)]:
        matrix = cv2.getRotationMatrix2D((centre, centre), degrees, scale)
        matrix[:, 2] += (dx * size, dy * size)
        matrices.append(matrix)
    return matrices


def view_crop_matrix(view: np.ndarray, matrix: np.ndarray) -> np.ndarray:
    """Frame pixels -> the view's crop: the face's crop matrix followed by the view's."""
    return (np.vstack([view, (0.0, 0.0, 1.0)]) @ np.vstack([matrix, (0.0, 0.0, 1.0)]))[:2]


def from_view(image: np.ndarray, view: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """A picture in a view's crop pixels put back in the face's own crop pixels, with where the
    view saw that pixel (1) or not (0)."""
    size = image.shape[0]
    back = cv2.warpAffine(image, view, (size, size), flags=cv2.WARP_INVERSE_MAP | cv2.INTER_LINEAR,
                          borderMode=cv2.BORDER_REPLICATE)
    seen = cv2.warpAffine(np.ones((size, size), np.float32), view, (size, size),
                          flags=cv2.WARP_INVERSE_MAP | cv2.INTER_LINEAR, borderValue=0.0)
    return back, (seen > 0.999).astype(np.float32)


def crops_to_batch(crops: list[np.ndarray]) -> np.ndarray:
    """BGR uint8 crops -> float32 [N, 3, S, S] RGB in [-1, 1]."""
    batch = np.stack(crops)[..., ::-1].astype(np.float32) * (1 / 127.5) - 1.0
    return np.ascontiguousarray(batch.transpose(0, 3, 1, 2))


def batch_to_images(batch: np.ndarray) -> np.ndarray:
    """float [N, 3, S, S] RGB in [-1, 1] -> new float32 (N, S, S, 3) BGR arrays in [0, 1]."""
    images = (batch.transpose(0, 2, 3, 1)[..., ::-1] + 1.0) * 0.5
    return np.clip(images, 0.0, 1.0).astype(np.float32)


class GenerateStage:
    """Every face's crop through the engine, in batches. In a stream, a face whose crop has not
    changed since it was last generated (mean change of its thumbnail below ``still_level``)
    keeps that result, for at most ``still_reuse`` frames in a row: a still face costs the
    generator one frame in ``still_reuse + 1``. The results are never changed in place
    downstream, so they are shared, not copied.

    With ``settings.mirror_pass`` each crop goes through the engine with its mirror image in the
    same batch: the two restored faces are averaged and the two masks joined (the larger of the
    two). The generator is not symmetric, and the two answers' errors are partly independent: on
    180 covered validation scenes at 720p (the same faces found, the same blend) the covered face
    went 17.47 -> 17.76 dB, SSIM 0.632 -> 0.654 and mask recall 0.896 -> 0.902, for twice the
    generator's work (9.5 -> 18.7 ms a face on one core of this project's 2-core CPU; an engine
    that takes batches of two or more runs both in one call).

    A still picture's face goes through in ``settings.picture_views`` views: its crop and, cut
    from the frame, crops a little closer, wider, shifted or turned (``VIEWS``); each view's
    result is put back in the face's own crop and the views are averaged where they saw each
    pixel, their masks averaged. The crop follows landmarks guessed on a covered face, so each
    view's errors are partly its own (docs/experiments.md, session 27)."""

    def __init__(self, engine, settings: LiveSettings | None = None, still_reuse: int = 2, still_level: float = 1.0):
        self.engine = engine
        self.settings = settings or LiveSettings()
        self.still_reuse, self.still_level = still_reuse, still_level
        self._kept: dict[int, tuple[np.ndarray, np.ndarray, np.ndarray, int]] = {}  # track -> thumb, restored, mask, reuses

    def __call__(self, frame: Frame) -> Frame:
        faces = [face for face in frame.faces if face.crop is not None]
        kept, thumbs = {}, {}
        if not frame.still and self.still_reuse > 0:
            for face in faces:
                thumbs[face.track_id] = thumb = thumbnail(face.crop, 32)
                previous = self._kept.get(face.track_id)
                if (previous is not None and not face.new_track and previous[3] < self.still_reuse
                        and float(np.abs(thumb - previous[0]).mean()) < self.still_level):
                    face.restored, face.occlusion = previous[1], previous[2]
                    kept[face.track_id] = (*previous[:3], previous[3] + 1)
            faces = [face for face in faces if face.track_id not in kept]
        if faces:
            views = view_matrices(self.settings.picture_views, faces[0].crop.shape[0]) if frame.still else []
            crops = []
            for face in faces:
                crops.append(face.crop)
                crops += [warp_crop(frame.image, view_crop_matrix(view, face.matrix), face.crop.shape[0])
                          for view in views]
            if self.settings.mirror_pass:
                crops += [np.ascontiguousarray(crop[:, ::-1]) for crop in crops]
            restored, occlusion = self._infer(crops)
            if self.settings.mirror_pass:
                count = len(crops) // 2
                restored = (restored[:count] + restored[count:, :, ::-1]) * np.float32(0.5)
                occlusion = np.maximum(occlusion[:count], occlusion[count:, :, ::-1])
            if views:
                restored, occlusion = _join_views(restored, occlusion, views)
            for face, image, mask in zip(faces, restored, occlusion):
                face.restored = image
                face.occlusion = mask
                if face.track_id in thumbs:
                    kept[face.track_id] = (thumbs[face.track_id], face.restored, face.occlusion, 0)
        self._kept = kept  # a track not in this frame is forgotten
        return frame

    def _infer(self, crops: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
        """Restored (N, S, S, 3) BGR in [0, 1] and occlusion (N, S, S), both float32 and new
        arrays (the engine may reuse its output buffers), in batches the engine takes."""
        limit = self.engine.spec.max_batch
        images, masks = [], []
        for start in range(0, len(crops), limit):
            restored, occlusion = self.engine.infer(crops_to_batch(crops[start:start + limit]))
            images.append(batch_to_images(restored))
            masks.append(np.array(occlusion[:, 0], dtype=np.float32))
        return np.concatenate(images), np.concatenate(masks)


def _join_views(restored: np.ndarray, occlusion: np.ndarray, views: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """Each face's views (its own crop first, then one per view) put back in its own crop and
    averaged: the restored faces over the views that saw each pixel, the masks over all of them
    (the face's own mask where a view did not see the pixel)."""
    per = 1 + len(views)
    faces_restored, faces_occlusion = [], []
    for first in range(0, len(restored), per):
        image, mask = restored[first].copy(), occlusion[first].copy()
        weight, masks = np.ones(mask.shape, np.float32), mask.copy()
        for index, view in enumerate(views, start=first + 1):
            back, seen = from_view(np.dstack([restored[index], occlusion[index]]), view)  # one warp for both
            image += back[..., :3] * seen[..., None]
            weight += seen
            masks += back[..., 3] * seen + mask * (1.0 - seen)
        faces_restored.append(image / weight[..., None])
        faces_occlusion.append(masks * np.float32(1 / per))
    return np.stack(faces_restored), np.stack(faces_occlusion)
