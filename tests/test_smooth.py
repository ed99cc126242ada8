"""The smooth stage on a still face: a steady fill is averaged over frames, but where a cover comes
or goes the occlusion and the fill follow the current frame at once."""
from __future__ import annotations

import numpy as np

from deocc_live.frame import Face, Frame
from deocc_live.settings import LiveSettings
from deocc_live.stages.smooth import SmoothStage

SIZE = 128


def _frame(index: int, restored: np.ndarray, occlusion: np.ndarray) -> Frame:
    face = Face(track_id=0, landmarks=np.zeros((478, 2), np.float32), restored=restored.copy(),
                occlusion=occlusion.copy(), new_track=index == 0)
    return Frame(image=np.zeros((8, 8, 3), np.uint8), index=index, time_ms=index * 33.3, faces=[face])


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
