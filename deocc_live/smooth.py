"""Smooth stage: the restored crop and occlusion mask averaged over time in aligned space, per
track; reset on a new track or fast motion so nothing lags behind the face."""
from __future__ import annotations

from deocc_live.frame import Frame


class SmoothStage:
    def __init__(self, strength: float = 0.8, reset_motion: float = 0.02):
        self.strength = strength          # weight of the past, 0 = off
        self.reset_motion = reset_motion  # crop widths per frame that count as fast motion
        self._state: dict[int, tuple] = {}

    def __call__(self, frame: Frame) -> Frame:
        if frame.still:
            return frame  # a picture on its own: nothing to average with
        state = {}
        for face in frame.faces:
            if face.restored is None:
                continue
            previous = self._state.get(face.track_id)
            weight = self.strength * max(0.0, 1.0 - face.motion / self.reset_motion) if self.reset_motion else self.strength
            if previous is not None and not face.new_track and weight > 0:
                restored, occlusion = previous
                face.restored = weight * restored + (1 - weight) * face.restored
                face.occlusion = weight * occlusion + (1 - weight) * face.occlusion
            state[face.track_id] = (face.restored, face.occlusion)
        self._state = state
        return frame

    def reset(self) -> None:
        self._state = {}
