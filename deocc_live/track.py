"""Track stage: MediaPipe FaceLandmarker in VIDEO mode, several faces, track ids kept by nearest
face centre, landmarks smoothed by a One Euro filter per track."""
from __future__ import annotations

import numpy as np

from deocc_live.frame import Face, Frame
from deocc_live.landmarks import FaceLandmarks
from deocc_live.one_euro import OneEuroFilter


class _Track:
    def __init__(self, track_id: int, landmarks: np.ndarray, min_cutoff: float, beta: float):
        self.id = track_id
        self.filter = OneEuroFilter(min_cutoff=min_cutoff, beta=beta)
        self.centre = landmarks.mean(axis=0)
        self.previous: np.ndarray | None = None
        self.missed = 0


class TrackStage:
    """Frame in, frame with ``faces`` (id, smoothed landmarks, motion) out. A stream is tracked
    in VIDEO mode with smoothing; a still (``frame.still``) is looked at on its own in IMAGE mode,
    and neither reads nor changes the stream's state."""

    def __init__(self, model_path, max_faces: int = 1, smoothing: bool = True,
                 min_cutoff: float = 1.5, beta: float = 0.08, keep_missing: int = 0, second_look: bool = True):
        self.model_path, self.max_faces = model_path, max_faces
        self.landmarker = FaceLandmarks(model_path, max_faces=max_faces, video=True)
        # Covered faces are easy to miss in a whole frame: a second look at a closer region
        # (where the face was last seen, else the frame's centre) finds about half of those misses.
        self.second_look = FaceLandmarks(model_path, max_faces=max_faces) if second_look else None
        self._last_box: tuple[float, float, float] | None = None  # centre x, centre y, face width
        self._since_seen = 10**6
        self.smoothing = smoothing
        self.min_cutoff, self.beta = min_cutoff, beta
        self.keep_missing = keep_missing
        self._tracks: list[_Track] = []
        self._next_id = 0

    def __call__(self, frame: Frame) -> Frame:
        if frame.still:
            return self._still(frame)
        found = self.landmarker.detect(frame.image, int(frame.time_ms))
        if len(found) == 0 and self.second_look is not None:
            found = self._look_closer(frame.image)
        if len(found):
            xy = found[0]
            self._last_box = (float(xy[:, 0].mean()), float(xy[:, 1].mean()), float(np.ptp(xy[:, 0])))
            self._since_seen = 0
        else:
            self._since_seen += 1
        frame.faces = self._associate(found, frame.time_ms / 1000.0)
        return frame

    def _still(self, frame: Frame) -> Frame:
        found = self.still_landmarker.detect(frame.image)
        if len(found) == 0:
            found = self._look_closer(frame.image, recent=False)
        frame.faces = [Face(track_id=-1 - i, landmarks=landmarks.astype(np.float32), new_track=True)
                       for i, landmarks in enumerate(found)]
        return frame

    @property
    def still_landmarker(self) -> FaceLandmarks:
        if self.second_look is None:
            self.second_look = FaceLandmarks(self.model_path, max_faces=self.max_faces)
        return self.second_look

    def _look_closer(self, image: np.ndarray, recent: bool = True) -> np.ndarray:
        nothing = np.zeros((0, 478, 2), np.float32)
        if recent and self._since_seen >= 60 and self._since_seen % 5:
            return nothing  # a face-free scene: look closer only on every fifth frame
        height, width = image.shape[:2]
        if recent and self._last_box is not None and self._since_seen < 60:
            cx, cy, face_width = self._last_box
            side = 2.4 * face_width
        else:
            cx, cy, side = width / 2, height / 2, 0.75 * min(width, height)
        side = min(side, width, height)
        x0 = int(np.clip(cx - side / 2, 0, width - side))
        y0 = int(np.clip(cy - side / 2, 0, height - side))
        if side < 32:
            return nothing
        found = self.still_landmarker.detect(np.ascontiguousarray(image[y0:y0 + int(side), x0:x0 + int(side)]))
        if len(found):
            found = found + np.array([x0, y0], np.float32)
        return found

    def _associate(self, found: np.ndarray, time_s: float) -> list[Face]:
        faces, unused = [], list(self._tracks)
        kept = []
        for landmarks in found:
            centre = landmarks.mean(axis=0)
            scale = float(np.ptp(landmarks[:, 0])) or 1.0
            best = min(unused, key=lambda t: np.linalg.norm(t.centre - centre), default=None)
            new = best is None or np.linalg.norm(best.centre - centre) > 0.5 * scale
            if new:
                best = _Track(self._next_id, landmarks, self.min_cutoff, self.beta)
                self._next_id += 1
            else:
                unused.remove(best)
            smoothed = best.filter(landmarks, time_s) if self.smoothing else landmarks.astype(np.float64)
            motion = 0.0
            if best.previous is not None:
                motion = float(np.abs(smoothed - best.previous).mean()) / scale
            best.previous, best.centre, best.missed = smoothed, centre, 0
            kept.append(best)
            faces.append(Face(track_id=best.id, landmarks=smoothed.astype(np.float32), motion=motion, new_track=new))
        for track in unused:
            track.missed += 1
            if track.missed <= self.keep_missing:
                kept.append(track)
        self._tracks = kept
        return faces

    def close(self) -> None:
        self.landmarker.close()
        if self.second_look is not None:
            self.second_look.close()
