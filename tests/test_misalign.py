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
