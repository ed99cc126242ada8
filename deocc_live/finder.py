"""The finder at run time: our own small network (trained by `deocc-train finder`) that finds a
covered face MediaPipe misses, in ONNX Runtime on the CPU.

It looks at the whole picture (made square with a grey border) and at the windows of the track
stage's scan, all in one batch. A window scores whether a face's centre is in it at a size it can
hold, and gives the face's five alignment points. A face is reported where at least two windows
agree on its points; its 478 landmarks are the mean face of the training crops placed on those
five points (MediaPipe's mesh layout, so every later stage reads them as it reads MediaPipe's).
"""
from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np

from deocc_live.stages.align import five_points, similarity, transform_points

SCORE_FLOOR = 0.9      # a window's score that counts as "a face here"
# The score a window needs to back a face that another window found (at SCORE_FLOOR or more). At
# 0.6 instead of 0.9: 180 validation scenes at 720p, faces found 177 -> 178 (a phone over an eye,
# the nose and the mouth: its windows scored 0.99 and 0.82); 200 real masked photos other than
# the e2e's 40, found 96.5% -> 98.0% (three close-ups, one in profile), acted on 94% -> 95% (a
# profile face's points moved and its mask was left); 100 face-free pictures: no face from the
# finder either way. At 0.75: found 97.5%, acted 95%.
AGREEING_FLOOR = 0.6
AGREEING_WINDOWS = 2   # windows whose points must agree on a face before it is reported
AGREEMENT = 0.25       # how far apart (eye distances) two windows' points may be and still agree
# The whole picture's windows, in its longer side. 2 and 2.5 were added for close-ups wider than
# the picture (before: 1 and 1.5 only): 200 real masked photos other than the e2e's 40, acted on
# 92.5% -> 94.0% (3 close-ups found, 1 face moved from a mask's print to the face, none lost);
# the e2e's 40, 92.5% -> 95%; validation scenes at 720p and 100 face-free pictures unchanged.
WHOLE_PICTURE = np.array([1.0, 1.5, 2.0, 2.5])
CLOSER_SPAN = 3.6      # the closer look's window, in eye distances (its eyes 0.28 of it apart)


def _apart(five: np.ndarray, other: np.ndarray) -> float:
    """The mean distance of two sets of five points, in the first set's eye distances."""
    return float(np.linalg.norm(five - other, axis=1).mean()) / max(float(np.linalg.norm(five[1] - five[0])), 1e-6)


def _centred_window(five: np.ndarray, span: float) -> tuple[float, float, float]:
    """(x0, y0, side) of the window centred on five points, ``span`` eye distances wide."""
    side = span * max(float(np.linalg.norm(five[1] - five[0])), 1.0)
    x, y = five.mean(axis=0)
    return float(x - side / 2), float(y - side / 2), side


class FinderError(RuntimeError):
    """The finder's model file is missing or is not a finder."""


class FaceFinder:
    def __init__(self, path: str | Path, threads: int = 1):
        import onnxruntime as ort

        path = Path(path)
        if not path.is_file():
            raise FinderError(f"finder model not found: {path}")
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        options.log_severity_level = 3
        self.session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        meta = self.session.get_modelmeta().custom_metadata_map.get("deocc_finder")
        if not meta:
            raise FinderError(f"{path} is not a deocc-live finder (no deocc_finder metadata)")
        meta = json.loads(meta)
        self.window = int(meta["window"])
        self.mean_face = np.asarray(meta["mean_face"], np.float64)
        self._mean_points = five_points(self.mean_face)

    @staticmethod
    def windows(shape, scan=()) -> list[tuple[float, float, float]]:
        """(x0, y0, side) of each window in the picture's pixels: the whole picture as a square
        around its centre, and 1.5, 2 and 2.5 times as large (beyond the picture: grey; a face
        that fills the picture or is larger than it, in a close-up, needs two windows that hold
        it to agree), then the windows of ``scan`` ((side as a share of the shorter side,
        centre x, centre y as shares of the picture), the track stage's)."""
        height, width = shape[:2]
        short, long = min(height, width), max(height, width)
        boxes = [((width - side) / 2, (height - side) / 2, float(side)) for side in WHOLE_PICTURE * long]
        for share, fx, fy in scan:
            side = share * short
            boxes.append((float(np.clip(fx * width - side / 2, 0, width - side)),
                          float(np.clip(fy * height - side / 2, 0, height - side)), side))
        return boxes

    def find(self, image: np.ndarray, max_faces: int = 1, scan=()) -> np.ndarray:
        """(N, 478, 2) float32 landmarks of the faces found, best first (N <= max_faces), looking
        at the whole picture and the windows of ``scan``."""
        boxes = self.windows(image.shape, scan)
        scored = self._run(image, boxes)
        candidates = [(score, five) for score, five in scored if score >= SCORE_FLOOR]
        backing = [five for score, five in scored if score >= AGREEING_FLOOR]
        faces = []
        for score, five in sorted(candidates, key=lambda c: -c[0]):
            eye = float(np.linalg.norm(five[1] - five[0]))
            if eye < 4 or any(_apart(five, kept[0]) < 1.0 for kept in faces):
                continue  # too small, or a face already kept
            agreeing = [other for other in backing if _apart(five, other) < AGREEMENT]
            if len(agreeing) >= AGREEING_WINDOWS:
                faces.append((np.mean(agreeing, axis=0), score))
            if len(faces) >= max_faces:
                break
        if not faces:
            return np.zeros((0, 478, 2), np.float32)
        # A closer look: a window centred on each face, at the size it was trained best on.
        closer = [_centred_window(five, CLOSER_SPAN) for five, _ in faces]
        refined = [again if score >= SCORE_FLOOR and _apart(five, again) < 2 * AGREEMENT else five
                   for (five, _), (score, again) in zip(faces, self._run(image, closer))]
        return np.stack([self.landmarks_for(five) for five in refined]).astype(np.float32)

    def face_score(self, image: np.ndarray, five: np.ndarray, spans) -> float:
        """The best score of windows centred on five points, ``spans`` eye distances wide: does
        the finder see a face where another detector put one?"""
        return max(score for score, _ in self._run(image, [_centred_window(five, span) for span in spans]))

    def _run(self, image: np.ndarray, boxes) -> list[tuple[float, np.ndarray]]:
        """(score, five points in the picture's pixels) for each window (x0, y0, side)."""
        size = self.window
        batch = np.empty((len(boxes), 3, size, size), np.float32)
        for i, (x0, y0, side) in enumerate(boxes):
            scale = size / side
            matrix = np.float32([[scale, 0, -scale * x0], [0, scale, -scale * y0]])
            crop = cv2.warpAffine(image, matrix, (size, size), flags=cv2.INTER_LINEAR,  # as in training
                                  borderMode=cv2.BORDER_CONSTANT, borderValue=(127, 127, 127))
            batch[i] = crop.transpose(2, 0, 1) * np.float32(1 / 255)
        scores, points = self.session.run(None, {"window": batch})
        return [(float(score), flat.reshape(5, 2).astype(np.float64) * side + (x0, y0))
                for (x0, y0, side), score, flat in zip(boxes, scores[:, 0], points)]

    def landmarks_for(self, five: np.ndarray) -> np.ndarray:
        """The mean face's 478 landmarks placed on five alignment points."""
        return transform_points(similarity(self._mean_points, five), self.mean_face)

    def close(self) -> None:
        self.session = None
