"""The desktop app on Qt's offscreen platform, driving the real pipeline on a video file."""
from __future__ import annotations

import gc
import threading
import time

from pathlib import Path

import numpy as np
import pytest
from PySide6.QtCore import QPoint, QSettings, Qt
from PySide6.QtWidgets import QLabel

from deocc_live.gui.controller import PipelineController
from deocc_live.gui.window import MainWindow
from deocc_live.landmark_model import resolve
from media import face_files, moving_clip, write_video


@pytest.fixture(scope="module")
def clip(tmp_path_factory):
    frames, masks = moving_clip(face_files(1)[0], count=16, size=(640, 480), step=(0, 0))
    return write_video(tmp_path_factory.mktemp("gui") / "clip.mp4", frames), masks[0]


@pytest.fixture
def window(qtbot, tmp_path, clip, generator_onnx):
    settings = QSettings(str(tmp_path / "settings.ini"), QSettings.Format.IniFormat)
    controller = PipelineController(resolve())
    win = MainWindow(controller, settings, source=str(clip[0]), engine=str(generator_onnx))
    qtbot.addWidget(win)
    win.resize(1100, 650)
    win.show()
    yield win
    win.close()
    # What the test leaves (its window, its pipeline) is collected here, on the GUI thread. A
    # collection that a later pipeline's worker thread happens to trigger would finalise them there
    # instead: one fresh-clone CI run died with SIGSEGV in such a collection, on the track thread,
    # during the next test (session 10; the cause is not proven, this takes the chance away).
    gc.collect()


def _wait_for_frames(qtbot, win, count=3):
    """The last of ``count`` frames shown after this call (the one on screen now not counted)."""
    seen = [win.last_frame]

    def got():
        frame = win.last_frame
        if frame is not None and seen[-1] is not frame:
            seen.append(frame)
        return len(seen) - 1 >= count

    qtbot.waitUntil(got, timeout=30000)
    return win.last_frame


def test_toggle_changes_the_face_and_errors_show(qtbot, window, clip, tmp_path, artifacts, tiny_onnx):
    _path, mask = clip
    window.view_picker.setCurrentText("After")
    frame = _wait_for_frames(qtbot, window)
    assert window.preview.pixmap() is not None and not window.preview.pixmap().isNull()
    on_difference = np.abs(frame.output.astype(int) - frame.input_image().astype(int)).mean(axis=2)[mask].mean()
    assert on_difference > 8.0
    window.grab().save(str(artifacts / "gui_window.png"))

    window.toggle_button.click()  # effect off
    assert window.toggle_button.text() == "Effect OFF"
    qtbot.waitUntil(lambda: window.last_frame is not None and not window.last_frame.faces
                    or np.array_equal(window.last_frame.output, window.last_frame.input_image()), timeout=30000)
    assert np.array_equal(window.last_frame.output, window.last_frame.input_image())
    window.activateWindow()
    qtbot.keyClick(window, Qt.Key.Key_D, Qt.KeyboardModifier.ControlModifier | Qt.KeyboardModifier.ShiftModifier)
    assert window.toggle_button.isChecked()  # the real key press, as a user types it
    qtbot.keyClick(window.view_picker, Qt.Key.Key_D, Qt.KeyboardModifier.ControlModifier | Qt.KeyboardModifier.ShiftModifier)
    assert not window.toggle_button.isChecked()  # from whichever widget has focus
    window.toggle_button.click()

    window.set_engine(str(tiny_onnx))  # switch engine while running
    qtbot.waitUntil(lambda: "onnxruntime" in window.engine_label.text() and str(tiny_onnx) in window.engine_label.text(),
                    timeout=10000)
    _wait_for_frames(qtbot, window)

    bad = tmp_path / "broken.onnx"
    bad.write_bytes(b"not a model")
    window.set_engine(str(bad))
    assert "broken.onnx" in window.error_label.text()
    assert "pass-through" in window.engine_label.text()
    # Frames the old engine restored before the switch may still be in the queues (up to two a
    # queue for a file source) and on their way to the window: wait for the first passed through,
    # then every later frame must pass through too.
    passed = lambda: window.last_frame is not None and np.array_equal(window.last_frame.output,
                                                                      window.last_frame.input_image())
    qtbot.waitUntil(passed, timeout=30000)
    for _ in range(3):
        frame = _wait_for_frames(qtbot, window, count=1)
        assert np.array_equal(frame.output, frame.input_image())  # no engine: frames pass through, no crash


def test_side_by_side_view_and_readout(qtbot, window):
    window.view_picker.setCurrentText("Side by side")
    frame = _wait_for_frames(qtbot, window)
    assert window.shown_image.shape[1] == 2 * frame.image.shape[1]
    qtbot.waitUntil(lambda: "FPS" in window.readout.text() and "generate" in window.readout.text(), timeout=10000)


def test_bad_source_is_shown_not_raised(qtbot, tmp_path, generator_onnx):
    settings = QSettings(str(tmp_path / "s.ini"), QSettings.Format.IniFormat)
    win = MainWindow(PipelineController(resolve()), settings, source=str(tmp_path / "missing.mp4"), engine=str(generator_onnx))
    qtbot.addWidget(win)
    assert "input not found" in win.error_label.text()
    win.close()


def test_close_stops_every_thread_within_a_second(qtbot, window):
    _wait_for_frames(qtbot, window, 2)
    started = time.monotonic()
    window.close()
    assert time.monotonic() - started < 1.5
    assert not [t.name for t in threading.enumerate() if t.name.startswith("deocc-")]


def test_settings_are_remembered(qtbot, tmp_path, clip, generator_onnx):
    path = tmp_path / "remember.ini"
    first = MainWindow(PipelineController(resolve()), QSettings(str(path), QSettings.Format.IniFormat), source=str(clip[0]),
                       engine=str(generator_onnx))
    qtbot.addWidget(first)
    first.smoothing_slider.setValue(42)
    first.view_picker.setCurrentText("Side by side")
    assert first.memory_check.isChecked() and first.controller.settings.face_memory
    first.show()
    qtbot.waitExposed(first)
    qtbot.mouseClick(first.memory_check, Qt.MouseButton.LeftButton)  # the real box, clicked
    assert not first.controller.settings.face_memory
    assert first.mirror_check.isChecked() and first.controller.settings.mirror_pass
    # On the box itself (the check box spans its row; a click right of its text does nothing).
    qtbot.mouseClick(first.mirror_check, Qt.MouseButton.LeftButton, pos=QPoint(8, first.mirror_check.height() // 2))
    assert not first.controller.settings.mirror_pass
    assert first.finder_check.isChecked() and first.controller.settings.finder
    qtbot.mouseClick(first.finder_check, Qt.MouseButton.LeftButton, pos=QPoint(8, first.finder_check.height() // 2))
    assert not first.controller.settings.finder
    first.close()
    second = MainWindow(PipelineController(resolve()), QSettings(str(path), QSettings.Format.IniFormat), source=str(clip[0]))
    qtbot.addWidget(second)
    assert second.smoothing_slider.value() == 42 and second.view_picker.currentText() == "Side by side"
    assert not second.memory_check.isChecked() and not second.controller.settings.face_memory
    assert not second.mirror_check.isChecked() and not second.controller.settings.mirror_pass
    assert not second.finder_check.isChecked() and not second.controller.settings.finder
    assert second.engine_path == str(generator_onnx)
    second.close()


def _start_recording(qtbot, window, monkeypatch, path):
    from PySide6.QtWidgets import QFileDialog

    monkeypatch.setattr(QFileDialog, "getSaveFileName", lambda *a, **k: (str(path), "Video (*.mp4 *.avi)"))
    window.record_button.click()
    assert window.record_button.isChecked() and window.record_button.text() == "Stop recording"


def test_recording_writes_a_video_and_a_full_disk_stops_it_cleanly(qtbot, window, monkeypatch, tmp_path):
    from media import read_video

    _wait_for_frames(qtbot, window, 2)
    done = tmp_path / "take1.mp4"
    _start_recording(qtbot, window, monkeypatch, done)
    _wait_for_frames(qtbot, window, 10)
    window.record_button.click()
    assert not window.record_button.isChecked() and len(read_video(done)) >= 8

    # Recording over the clip that is playing is refused: it would replace the input.
    from PySide6.QtWidgets import QFileDialog

    playing = Path(window.controller.pipeline.source.path)
    before = playing.read_bytes()
    monkeypatch.setattr(QFileDialog, "getSaveFileName", lambda *a, **k: (str(playing), "Video (*.mp4 *.avi)"))
    window.record_button.click()
    assert not window.record_button.isChecked() and "is the input" in window.error_label.text()
    assert window.controller.recorder is None and playing.read_bytes() == before

    failing = tmp_path / "take2.mp4"
    _start_recording(qtbot, window, monkeypatch, failing)
    _wait_for_frames(qtbot, window, 3)
    window.controller.recorder.reserve = 1 << 62  # from now on the disk counts as full
    qtbot.waitUntil(lambda: not window.record_button.isChecked(), timeout=10000)
    assert "disk full" in window.error_label.text() and window.record_button.text() == "Record..."
    assert sorted(p.name for p in tmp_path.iterdir() if p.suffix == ".mp4") == ["take1.mp4"]
    _wait_for_frames(qtbot, window, 3)  # the preview goes on


def test_sliders_span_the_settings_table_and_show_their_value(qtbot, window):
    from deocc_live.settings import SETTINGS

    for name, slider in (("face_smoothing", window.smoothing_slider), ("feather", window.feather_slider),
                         ("grain", window.sliders["grain"])):
        setting = SETTINGS[name]
        assert slider.minimum() / setting.slider_scale == setting.low
        assert slider.maximum() / setting.slider_scale == setting.high
        slider.setValue(slider.maximum() + 50)  # a slider cannot go past the range the CLI accepts
        assert window.setting_value(name) == setting.high
    window.smoothing_slider.setValue(37)
    assert window.controller.settings.face_smoothing == pytest.approx(0.37)  # what the running pipeline reads
    assert "0.37" in [label.text() for label in window.findChildren(QLabel)]
    window.sliders["grain"].setValue(40)
    assert window.controller.settings.grain == pytest.approx(0.4)
