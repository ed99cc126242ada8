"""Crop errors of landmarks found on covered faces: recorded by `deocc-train misalign`, replayed
by `fit` on training crops."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from deocc_live.stages import align
from trainer import misalign

ROOT = Path(__file__).resolve().parents[1]


def test_a_recorded_error_is_replayed_exactly():
    rng = np.random.default_rng(0)
    landmarks = rng.uniform(100, 300, (478, 2))
    clean = align.crop_matrix(landmarks, 128)
    turn = np.radians(4.0)
    moved = landmarks @ (1.08 * np.array([[np.cos(turn), -np.sin(turn)], [np.sin(turn), np.cos(turn)]])).T + [6.0, -3.0]
    covered = align.crop_matrix(moved, 128)
    sample = misalign.error_transform(clean, covered, 128)
    replay = misalign.error_matrix(sample, 128)
    expected = (np.vstack([covered, [0, 0, 1]]) @ np.linalg.inv(np.vstack([clean, [0, 0, 1]])))[:2]
    np.testing.assert_allclose(replay, expected, atol=1e-9)
    assert sample["scale"] == pytest.approx(1 / 1.08, rel=1e-6)


def test_the_shipped_errors_are_measured_and_loaded():
    assert misalign.load("off") == [] and misalign.load(None) == []
    samples = misalign.load("auto")
    assert len(samples) >= 100
    scales = np.array([s["scale"] for s in samples])
    assert 0.64 < scales.min() and scales.max() < 1.36 and scales.std() > 0.01  # real, varied errors
    assert misalign.gross({"scale": 2.8, "angle": 0.0, "dx": 0.0, "dy": 0.0})
    with pytest.raises(FileNotFoundError):
        misalign.load(ROOT / "no-such-file.json")


def test_training_crops_replay_the_errors(tiny_pairs):
    from trainer.data import PairDataset

    plain = PairDataset(tiny_pairs, "train", augment=True)
    moved = PairDataset(tiny_pairs, "train", augment=True, misalign=[{"scale": 1.1, "angle": 3.0, "dx": 0.02, "dy": -0.01}])
    occluded_a, clean_a, _ = plain.load(0, 7)
    occluded_b, clean_b, mask_b = moved.load(0, 7)
    assert clean_a.shape == clean_b.shape == (128, 128, 3)
    assert np.abs(clean_a.astype(int) - clean_b.astype(int)).mean() > 3  # the crop moved
    assert mask_b.dtype == np.uint8 and mask_b.max() > 0


def test_misalign_command_records_covered_faces(tmp_path):
    out = tmp_path / "errors.json"
    result = subprocess.run([sys.executable, "-m", "trainer", "misalign", "--count", "10", "--out", str(out)], cwd=ROOT,
                            capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-2000:]
    recorded = json.loads(out.read_text())
    assert len(recorded["samples"]) == 10 and recorded["covered_faces"] >= 10
    assert "the tracker missed" in result.stdout


def test_crop_jitter_moves_about_half_the_crops_within_its_bounds(tiny_pairs):
    from trainer.data import PairDataset, jittered

    rng = np.random.default_rng(0)
    drawn = [jittered(None, 0.1, rng) for _ in range(400)]
    for key, bound in (("dx", 0.1), ("dy", 0.1), ("angle", 6.0)):
        values = np.array([d[key] for d in drawn])
        assert np.abs(values).max() <= bound and values.std() > bound / 3  # spread over the range
    scales = np.array([d["scale"] for d in drawn])
    assert np.exp(-0.15) <= scales.min() and scales.max() <= np.exp(0.15)
    recorded = {"scale": 1.2, "angle": 10.0, "dx": 0.3, "dy": -0.3}
    moved = jittered(recorded, 0.1, rng)
    assert recorded["dx"] == 0.3  # the recorded error is not changed in place
    assert 0.2 <= moved["dx"] <= 0.4 and -0.4 <= moved["dy"] <= -0.2 and 4.0 <= moved["angle"] <= 16.0

    plain = PairDataset(tiny_pairs, "train", augment=True)
    jittering = PairDataset(tiny_pairs, "train", augment=True, crop_jitter=0.1)
    kept = 0
    for seed in range(24):
        clean_a = plain.load(0, seed)[1]
        occluded_b, clean_b, mask_b = jittering.load(0, seed)
        assert clean_b.shape == (128, 128, 3) and mask_b.shape == (128, 128)
        kept += any(np.array_equal(clean_b, c) for c in (clean_a, clean_a[:, ::-1]))
    assert 4 <= kept <= 20  # about half moved, the others as they were (perhaps mirrored)
