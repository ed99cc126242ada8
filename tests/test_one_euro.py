import numpy as np

from deocc_live.one_euro import OneEuroFilter


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

