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
    """Frame in, frame with ``faces`` (id, smoothed landmarks, motion) out."""

    def __init__(self, model_path, max_faces: int = 1, smoothing: bool = True,
                 min_cutoff: float = 1.5, beta: float = 0.08, keep_missing: int = 0):
        self.landmarker = FaceLandmarks(model_path, max_faces=max_faces, video=True)
        self.smoothing = smoothing
        self.min_cutoff, self.beta = min_cutoff, beta
        self.keep_missing = keep_missing
        self._tracks: list[_Track] = []
        self._next_id = 0

    def __call__(self, frame: Frame) -> Frame:
        found = self.landmarker.detect(frame.image, int(frame.time_ms))
        frame.faces = self._associate(found, frame.time_ms / 1000.0)
        return frame

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
