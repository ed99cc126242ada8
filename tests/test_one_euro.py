import numpy as np

from deocc_live.one_euro import OneEuroFilter
from deocc_live.settings import LiveSettings
from deocc_live.stages.smooth import SmoothStage
from deocc_live.frame import Face, Frame


def test_still_noisy_points_get_much_steadier():
    rng = np.random.default_rng(0)
    truth = np.full((478, 2), 100.0)
    filt = OneEuroFilter(min_cutoff=1.0, beta=0.05)
    raw, smooth = [], []
    for i in range(120):
        noisy = truth + rng.normal(0, 1.0, truth.shape)
        raw.append(noisy)
        smooth.append(filt(noisy, i / 30))
    jitter_raw = np.abs(np.diff(raw[20:], axis=0)).mean()
    jitter_smooth = np.abs(np.diff(smooth[20:], axis=0)).mean()
    assert jitter_smooth < 0.35 * jitter_raw


def test_fast_motion_is_followed_without_much_lag():
    filt = OneEuroFilter(min_cutoff=1.0, beta=0.05)
    for i in range(30):
        position = np.array([10.0 * i])
        out = filt(position, i / 30)
    assert abs(out[0] - position[0]) < 15.0  # under 1.5 frames of lag at 300 px/s


def _face(track_id, value, motion=0.0, new=False):
    face = Face(track_id=track_id, landmarks=np.zeros((478, 2), np.float32), motion=motion, new_track=new)
    face.restored = np.full((4, 4, 3), value, np.float32)
    face.occlusion = np.ones((4, 4), np.float32)  # covered alike in every frame: the fill alone changes
    return face


def test_smoothing_averages_still_faces_and_resets_on_fast_motion():
    stage = SmoothStage(LiveSettings(face_smoothing=0.5), reset_motion=0.02)
    stage(Frame(image=None, index=0, time_ms=0, faces=[_face(1, 0.0, new=True)]))
    still = stage(Frame(image=None, index=1, time_ms=33, faces=[_face(1, 1.0)])).faces[0]
    assert np.allclose(still.restored, 0.5)
    fast = stage(Frame(image=None, index=2, time_ms=66, faces=[_face(1, 0.0, motion=0.05)])).faces[0]
    assert np.allclose(fast.restored, 0.0)
    other = stage(Frame(image=None, index=3, time_ms=99, faces=[_face(2, 1.0, new=True)])).faces[0]
    assert np.allclose(other.restored, 1.0)
