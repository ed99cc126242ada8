"""The smooth stage: a still face's fill is averaged over frames, reset on fast motion and on a new
track, and where a cover comes or goes the occlusion and the fill follow the current frame at once."""
from __future__ import annotations

import numpy as np

from deocc_live.frame import Face, Frame
from deocc_live.settings import LiveSettings
from deocc_live.stages.smooth import SmoothStage

SIZE = 128


def _frame(index: int, restored: np.ndarray, occlusion: np.ndarray, track_id: int = 0, motion: float = 0.0,
           new: bool | None = None) -> Frame:
    face = Face(track_id=track_id, landmarks=np.zeros((478, 2), np.float32), restored=restored.copy(),
                occlusion=occlusion.copy(), motion=motion, new_track=index == 0 if new is None else new)
    return Frame(image=np.zeros((8, 8, 3), np.uint8), index=index, time_ms=index * 33.3, faces=[face])


def _fill(value: float) -> np.ndarray:
    return np.full((4, 4, 3), value, np.float32)


def test_smoothing_averages_still_faces_and_resets_on_fast_motion():
    stage = SmoothStage(LiveSettings(face_smoothing=0.5), reset_motion=0.02)
    covered = np.ones((4, 4), np.float32)  # covered alike in every frame: the fill alone changes
    stage(_frame(0, _fill(0.0), covered, track_id=1))
    still = stage(_frame(1, _fill(1.0), covered, track_id=1)).faces[0]
    assert np.allclose(still.restored, 0.5)
    fast = stage(_frame(2, _fill(0.0), covered, track_id=1, motion=0.05)).faces[0]
    assert np.allclose(fast.restored, 0.0)
    other = stage(_frame(3, _fill(1.0), covered, track_id=2, new=True)).faces[0]
    assert np.allclose(other.restored, 1.0)


def test_a_steady_fill_is_averaged_and_a_cover_that_comes_is_followed_at_once():
    smooth = SmoothStage(LiveSettings(face_smoothing=0.8))
    rng = np.random.default_rng(0)
    lower = np.zeros((SIZE, SIZE), np.float32)
    lower[80:] = 1.0
    # A covered lower face, still: the fill's noise from frame to frame is averaged away.
    outputs = []
    for index in range(12):
        fill = np.clip(0.5 + 0.1 * rng.standard_normal((SIZE, SIZE, 3)), 0, 1).astype(np.float32)
        outputs.append(smooth(_frame(index, fill, lower)).faces[0].restored)
    assert np.std(outputs[-1][90:] - 0.5) < 0.5 * 0.1
    # A hand rises over the mouth (rows 50-80): the occlusion and the fill there follow this frame.
    higher = lower.copy()
    higher[50:] = 1.0
    hand_fill = np.full((SIZE, SIZE, 3), 0.9, np.float32)
    face = smooth(_frame(12, hand_fill, higher)).faces[0]
    assert face.occlusion[56:76].min() > 0.95
    assert np.abs(face.restored[56:76] - 0.9).max() < 0.05
    # Still averaged where the cover did not change.
    assert np.abs(face.restored[100:] - 0.9).mean() > 0.2
    # The hand leaves: the mouth's occlusion falls at once.
    face = smooth(_frame(13, hand_fill, lower)).faces[0]
    assert face.occlusion[56:76].max() < 0.05
