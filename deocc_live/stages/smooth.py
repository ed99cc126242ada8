"""Smooth stage: the restored crop and occlusion mask averaged over time in aligned space, per
track; reset on a new track or fast motion so nothing lags behind the face."""
from __future__ import annotations

from deocc_live.frame import Frame
from deocc_live.settings import LiveSettings


class SmoothStage:
    def __init__(self, settings: LiveSettings | None = None, reset_motion: float = 0.02):
        self.settings = settings or LiveSettings()  # face_smoothing: the weight of the past, 0 = off
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
            strength = self.settings.face_smoothing
            weight = strength * max(0.0, 1.0 - face.motion / self.reset_motion) if self.reset_motion else strength
            if previous is not None and not face.new_track and weight > 0:
                restored, occlusion = previous
                face.restored = weight * restored + (1 - weight) * face.restored
                face.occlusion = weight * occlusion + (1 - weight) * face.occlusion
            state[face.track_id] = (face.restored, face.occlusion)
        self._state = state
        return frame

    def reset(self) -> None:
        self._state = {}
