"""Virtual camera output. No v4l2loopback device, OBS or Unity Capture can exist on these test
machines, so a stand-in backend (standins.RecordingBackend) is registered through pyvirtualcam's
own backend registry: it receives exactly what a real device would, and everything up to
pyvirtualcam is real."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from deocc_live.stages.capture import MemorySource
from deocc_live.stages.outputs import OutputError, VirtualCameraOutput, find_v4l2_device, how_to_create_camera
from media import face_files, occluded_frame
from standins import RecordingBackend

ROOT = Path(__file__).resolve().parents[1]


def test_pipeline_sends_restored_frames_to_the_camera(generator_onnx):
    from deocc_live.landmark_model import resolve
    from deocc_live.pipeline import Pipeline
    from engines import open_engine

    _clean, occluded, mask, _box = occluded_frame(face_files(1)[0], (640, 480))
    source = MemorySource([occluded] * 12, fps=30)
    camera = VirtualCameraOutput(source.size, source.fps, backend="deocc-test")
    with open_engine(generator_onnx) as engine:
        pipeline = Pipeline(source, engine, resolve(), [camera])
        with pipeline:
            assert pipeline.wait(60)
    camera.close()
    backend = RecordingBackend.instances[-1]
    assert backend.closed and (backend.width, backend.height, backend.fps) == (640, 480, 30)
    assert len(backend.frames) == 12
    sent = backend.frames[-1]
    assert sent.shape == (480, 640, 3)
    # pyvirtualcam was asked for BGR: what arrives is our BGR frame, covered face restored.
    assert np.abs(sent.astype(int) - occluded.astype(int)).mean(axis=2)[mask].mean() > 8.0
    assert np.array_equal(sent[:20, :20], occluded[:20, :20])


def test_frames_of_another_size_are_scaled_to_the_session_size():
    camera = VirtualCameraOutput((320, 240), 30, backend="deocc-test")
    frame = type("F", (), {"output": np.zeros((480, 640, 3), np.uint8)})()
    camera.write(frame)
    camera.close()
    assert RecordingBackend.instances[-1].frames[-1].shape == (240, 320, 3)


def test_finds_the_loopback_device_by_its_label(tmp_path):
    for index, name in ((0, "Integrated Webcam"), (4, "Deocc Camera"), (5, "OBS Virtual Camera")):
        (tmp_path / f"video{index}").mkdir()
        (tmp_path / f"video{index}" / "name").write_text(name + "\n")
    assert find_v4l2_device(sysfs=tmp_path) == "/dev/video4"
    assert find_v4l2_device("Nothing", sysfs=tmp_path) is None


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the message checked is Linux's")
def test_no_camera_message_has_the_modprobe_line():
    assert 'modprobe v4l2loopback devices=1 exclusive_caps=1 card_label="Deocc Camera"' in how_to_create_camera()
    if find_v4l2_device() is None:
        with pytest.raises(OutputError, match="modprobe"):
            VirtualCameraOutput((640, 480), 30)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="Linux's loopback device")
def test_cli_without_a_camera_device_exits_non_zero_with_the_hint(tmp_path, generator_onnx):
    if find_v4l2_device() is not None:
        pytest.skip("this machine has a real Deocc Camera")
    clip = tmp_path / "still.png"
    import cv2

    cv2.imwrite(str(clip), occluded_frame(face_files(1)[0], (640, 480))[1])
    result = subprocess.run([sys.executable, "-m", "deocc_live.cli", "--input", str(clip), "--engine", str(generator_onnx)],
                            cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert result.returncode == 1
    assert "modprobe v4l2loopback" in result.stderr and "Traceback" not in result.stderr
    # With an output file the job still runs and only warns.
    result = subprocess.run([sys.executable, "-m", "deocc_live.cli", "--input", str(clip), "--engine", str(generator_onnx),
                             "--output", str(tmp_path / "o.png"), "--virtual-camera"],
                            cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0 and "modprobe" in result.stderr
    assert (tmp_path / "o.png").is_file()
