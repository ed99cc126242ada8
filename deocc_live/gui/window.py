"""The main window: preview with before/after, the big toggle, pickers, virtual camera, sliders,
FPS and latency readout, recording. Settings are remembered with QSettings."""
from __future__ import annotations

import numpy as np
from PySide6.QtCore import QSettings, Qt, QTimer
from PySide6.QtGui import QAction, QImage, QKeySequence, QPixmap
from PySide6.QtWidgets import (QCheckBox, QComboBox, QFileDialog, QFormLayout, QGroupBox, QHBoxLayout, QLabel,
                               QMainWindow, QPushButton, QSizePolicy, QSlider, QSpinBox, QSystemTrayIcon, QVBoxLayout,
                               QWidget)

from deocc_live.gui.controller import PipelineController
from deocc_live.settings import SETTINGS

VIEWS = ("After", "Side by side", "Split")
HOTKEY = "Ctrl+Shift+D"


def to_qimage(image_bgr: np.ndarray) -> QImage:
    rgb = np.ascontiguousarray(image_bgr[..., ::-1])
    height, width = rgb.shape[:2]
    return QImage(rgb.data, width, height, 3 * width, QImage.Format.Format_RGB888).copy()


def compose_view(before: np.ndarray, after: np.ndarray, view: str, split: float) -> np.ndarray:
    if view == "Side by side":
        return np.hstack([before, after])
    if view == "Split":
        cut = int(round(split * after.shape[1]))
        shown = after.copy()
        shown[:, :cut] = before[:, :cut]
        shown[:, max(cut - 1, 0):cut + 1] = (255, 255, 255)
        return shown
    return after


class MainWindow(QMainWindow):
    def __init__(self, controller: PipelineController, settings: QSettings, source=None, engine: str | None = None,
                 options: dict | None = None):
        super().__init__()
        self.controller, self.settings = controller, settings
        self.setWindowTitle("deocc-live")
        self.last_frame = None
        self.shown_image: np.ndarray | None = None
        self._build()
        self._restore_settings()
        self.apply_options(options or {})
        if engine:
            self.engine_path = engine
        controller.frame_ready.connect(self._show_frame)
        controller.error.connect(self._show_error)
        controller.engine_changed.connect(self._show_engine)
        controller.camera_status.connect(self.camera_status.setText)
        self.readout_timer = QTimer(self, interval=500, timeout=self._update_readout)
        self.readout_timer.start()
        self.source = source if source is not None else self.camera_picker.currentData()
        self._start()

    # Layout.
    def _build(self):
        central = QWidget()
        layout = QHBoxLayout(central)
        layout.addLayout(self._build_preview(), 1)
        side = QVBoxLayout()
        self.toggle_button = QPushButton("Effect ON")
        self.toggle_button.setCheckable(True)
        self.toggle_button.setChecked(True)
        self.toggle_button.setMinimumHeight(56)
        self.toggle_button.setToolTip(f"Toggle the effect ({HOTKEY})")
        self.toggle_button.toggled.connect(self._set_enabled)
        side.addWidget(self.toggle_button)
        side.addWidget(self._build_source_box())
        side.addWidget(self._build_camera_box())
        side.addWidget(self._build_tuning_box())
        self.record_button = QPushButton("Record...")
        self.record_button.setCheckable(True)
        self.record_button.toggled.connect(self._record)
        side.addWidget(self.record_button)
        self.readout = QLabel("")
        self.readout.setStyleSheet("font-family: monospace;")
        side.addWidget(self.readout)
        side.addStretch(1)
        layout.addLayout(side)
        self.setCentralWidget(central)
        self._build_hotkey()

    def _build_preview(self) -> QVBoxLayout:
        left = QVBoxLayout()
        self.preview = QLabel("starting...")
        self.preview.setAlignment(Qt.AlignmentFlag.AlignCenter)
        self.preview.setMinimumSize(640, 360)
        self.preview.setSizePolicy(QSizePolicy.Policy.Expanding, QSizePolicy.Policy.Expanding)
        self.preview.setStyleSheet("background: #202020; color: #aaa;")
        left.addWidget(self.preview, 1)
        view_row = QHBoxLayout()
        self.view_picker = QComboBox()
        self.view_picker.addItems(VIEWS)
        self.split_slider = QSlider(Qt.Orientation.Horizontal, minimum=0, maximum=100, value=50)
        view_row.addWidget(QLabel("View"))
        view_row.addWidget(self.view_picker)
        view_row.addWidget(QLabel("Split"))
        view_row.addWidget(self.split_slider, 1)
        left.addLayout(view_row)
        self.error_label = QLabel("")
        self.error_label.setWordWrap(True)
        self.error_label.setStyleSheet("color: #c0392b;")
        left.addWidget(self.error_label)
        return left

    def _build_source_box(self) -> QGroupBox:
        source_box = QGroupBox("Source and engine")
        form = QFormLayout(source_box)
        self.camera_picker = QComboBox()
        self.camera_picker.addItem("Camera 0", 0)
        refresh = QPushButton("Find cameras")
        refresh.clicked.connect(self._find_cameras)
        open_video = QPushButton("Open video file...")
        open_video.clicked.connect(self._open_video)
        self.camera_picker.activated.connect(lambda _i: self._switch_source(self.camera_picker.currentData()))
        form.addRow("Camera", self.camera_picker)
        form.addRow(refresh, open_video)
        self.engine_label = QLabel("-")
        self.engine_label.setWordWrap(True)
        engine_button = QPushButton("Engine file...")
        engine_button.clicked.connect(self._pick_engine)
        form.addRow(engine_button, self.engine_label)
        faces = SETTINGS["max_faces"]
        self.max_faces = QSpinBox(minimum=faces.low, maximum=faces.high, value=faces.default, toolTip=faces.help)
        self.max_faces.valueChanged.connect(lambda _v: self._switch_source(self.source))  # the tracker is rebuilt
        form.addRow("Max faces", self.max_faces)
        return source_box

    def _build_camera_box(self) -> QGroupBox:
        camera_box = QGroupBox("Virtual camera")
        camera_layout = QVBoxLayout(camera_box)
        self.camera_check = QCheckBox('Send to "Deocc Camera"')
        self.camera_check.toggled.connect(self._set_virtual_camera)
        self.camera_status = QLabel("virtual camera off")
        self.camera_status.setWordWrap(True)
        self.camera_status.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        camera_layout.addWidget(self.camera_check)
        camera_layout.addWidget(self.camera_status)
        return camera_box

    def _build_tuning_box(self) -> QGroupBox:
        tune_box = QGroupBox("Tuning")
        tune = QFormLayout(tune_box)
        self.sliders = {name: self._setting_slider(tune, label, name) for label, name in
                        (("Smoothing", "face_smoothing"), ("Feather", "feather"), ("Grain", "grain"))}
        self.smoothing_slider, self.feather_slider = self.sliders["face_smoothing"], self.sliders["feather"]
        self.mask_check = QCheckBox("Show occlusion mask")
        self.mask_check.toggled.connect(lambda on: self.controller.settings.set("show_mask", on))
        tune.addRow(self.mask_check)
        self.memory_check = QCheckBox("Face memory", checked=True,
                                      toolTip="restore a covered face from how it looked uncovered moments before "
                                              "(kept in memory only, forgotten when the face leaves)")
        self.memory_check.toggled.connect(lambda on: self.controller.settings.set("face_memory", on))
        self.memory_label = QLabel("")
        tune.addRow(self.memory_check, self.memory_label)
        self.mirror_check = QCheckBox("Mirror pass", checked=True,
                                      toolTip="generate each face and its mirror image and average the two: "
                                              "a more faithful face for twice the generator's work")
        self.mirror_check.toggled.connect(lambda on: self.controller.settings.set("mirror_pass", on))
        tune.addRow(self.mirror_check)
        self.finder_check = QCheckBox("Finder", checked=True,
                                      toolTip="our own finder looks for a covered face that MediaPipe missed, and checks "
                                              "that a face MediaPipe finds anew looks like one")
        self.finder_check.toggled.connect(lambda on: self.controller.settings.set("finder", on))
        tune.addRow(self.finder_check)
        return tune_box

    def _build_hotkey(self):
        # The one binding of the hotkey (a second one, a QShortcut beside this action, made Qt
        # call the key ambiguous and do nothing).
        self.toggle_action = QAction("Toggle effect", self, shortcut=QKeySequence(HOTKEY))
        self.toggle_action.setShortcutContext(Qt.ShortcutContext.ApplicationShortcut)
        self.toggle_action.triggered.connect(self.toggle_button.toggle)
        menu = self.menuBar().addMenu("&Effect")
        menu.addAction(self.toggle_action)
        self.addAction(self.toggle_action)
        self.tray = None
        if QSystemTrayIcon.isSystemTrayAvailable():
            self.tray = QSystemTrayIcon(self.windowIcon(), self)
            from PySide6.QtWidgets import QMenu

            tray_menu = QMenu()
            tray_menu.addAction(self.toggle_action)
            self.tray.setContextMenu(tray_menu)
            self.tray.show()

    def _setting_slider(self, form: QFormLayout, label: str, name: str) -> QSlider:
        """A slider over the setting's whole range (and no further), with its value shown; it
        changes the running filter's LiveSettings, which the stages read on the next frame."""
        setting = SETTINGS[name]
        scale = setting.slider_scale
        slider = QSlider(Qt.Orientation.Horizontal, minimum=round(setting.low * scale),
                         maximum=round(setting.high * scale), toolTip=setting.help)
        shown = QLabel(minimumWidth=48)
        unit = f" {setting.unit}" if setting.unit else ""

        def changed(position: int):
            shown.setText(f"{position / scale:g}{unit}")
            self.controller.settings.set(name, position / scale)

        slider.valueChanged.connect(changed)
        slider.setValue(round(setting.default * scale))
        changed(slider.value())
        row = QHBoxLayout()
        row.addWidget(slider, 1)
        row.addWidget(shown)
        form.addRow(label, row)
        return slider

    def setting_value(self, name: str) -> float:
        return self.sliders[name].value() / SETTINGS[name].slider_scale

    def apply_options(self, values: dict) -> None:
        """Values given on the command line (already range-checked) over the remembered ones."""
        for name, slider in self.sliders.items():
            if values.get(name) is not None:
                slider.setValue(round(values[name] * SETTINGS[name].slider_scale))
        if values.get("face_memory") is not None:
            self.memory_check.setChecked(values["face_memory"])
        if values.get("mirror_pass") is not None:
            self.mirror_check.setChecked(values["mirror_pass"])
        if values.get("finder") is not None:
            self.finder_check.setChecked(values["finder"])
        if values.get("max_faces") is not None:
            self.max_faces.blockSignals(True)
            self.max_faces.setValue(values["max_faces"])
            self.max_faces.blockSignals(False)

    # Settings.
    def _restore_settings(self):
        s = self.settings
        self.engine_path = s.value("engine", "", type=str) or None
        for name, slider in self.sliders.items():
            slider.setValue(s.value(name, round(SETTINGS[name].default * SETTINGS[name].slider_scale), type=int))
        self.max_faces.blockSignals(True)
        self.max_faces.setValue(s.value("max_faces", SETTINGS["max_faces"].default, type=int))
        self.max_faces.blockSignals(False)
        self.view_picker.setCurrentText(s.value("view", "Split", type=str))
        self.memory_check.setChecked(s.value("face_memory", True, type=bool))
        self.mirror_check.setChecked(s.value("mirror_pass", True, type=bool))
        self.finder_check.setChecked(s.value("finder", True, type=bool))
        camera = s.value("camera", 0, type=int)
        self.camera_picker.setItemData(0, camera)
        self.camera_picker.setItemText(0, f"Camera {camera}")

    def save_settings(self):
        s = self.settings
        s.setValue("engine", self.engine_path or "")
        for name, slider in self.sliders.items():
            s.setValue(name, slider.value())
        s.setValue("max_faces", self.max_faces.value())
        s.setValue("view", self.view_picker.currentText())
        s.setValue("face_memory", self.memory_check.isChecked())
        s.setValue("mirror_pass", self.mirror_check.isChecked())
        s.setValue("finder", self.finder_check.isChecked())
        s.setValue("camera", self.camera_picker.currentData() if isinstance(self.camera_picker.currentData(), int) else 0)
        s.sync()

    # Actions.
    def _start(self):
        self.controller.settings.set("max_faces", self.max_faces.value())  # sliders and switches set theirs
        self.error_label.setText("")
        self.controller.start(self.source, self.engine_path)

    def _switch_source(self, source):
        self.source = source
        camera_on = self.camera_check.isChecked()
        self._start()
        if camera_on:
            self.controller.set_virtual_camera(True)

    def _set_enabled(self, on: bool):
        self.toggle_button.setText("Effect ON" if on else "Effect OFF")
        self.controller.settings.set("enabled", on)

    def _set_virtual_camera(self, on: bool):
        if self.controller.set_virtual_camera(on) != on:
            self.camera_check.blockSignals(True)
            self.camera_check.setChecked(False)
            self.camera_check.blockSignals(False)

    def _find_cameras(self):
        from deocc_live.cameras import list_cameras

        cameras = list_cameras()
        self.camera_picker.clear()
        for camera in cameras:
            self.camera_picker.addItem(camera.label(), camera.index)
        if not cameras:
            self.camera_picker.addItem("no camera found", 0)
            self._show_error("no camera found; open a video file instead")

    def _open_video(self):
        path, _ = QFileDialog.getOpenFileName(self, "Open video", "", "Videos (*.mp4 *.avi *.mov *.mkv *.webm)")
        if path:
            self._switch_source(path)

    def _pick_engine(self):
        path, _ = QFileDialog.getOpenFileName(self, "Engine file", "", "Generators (*.plan *.engine *.onnx *.pt *.ckpt)")
        if path:
            self.set_engine(path)

    def set_engine(self, path: str):
        self.error_label.setText("")
        self.engine_path = path
        self.controller.set_engine(path)

    def _record(self, on: bool):
        if on:
            path, _ = QFileDialog.getSaveFileName(self, "Record to", "deocc-recording.mp4", "Video (*.mp4 *.avi)")
            if not path or not self.controller.start_recording(path):
                self._reset_record_button()
                return
            self.record_button.setText("Stop recording")
        else:
            self.controller.stop_recording()
            self.record_button.setText("Record...")

    def _reset_record_button(self):
        self.record_button.blockSignals(True)
        self.record_button.setChecked(False)
        self.record_button.blockSignals(False)
        self.record_button.setText("Record...")

    # Display.
    def _show_frame(self, frame):
        self.controller.frame_shown()
        self.last_frame = frame
        remembered = [face.memory for face in frame.faces if face.memory > 0]
        self.memory_label.setText(f"restoring from memory ({max(remembered):.0%})" if remembered else "")
        self.shown_image = compose_view(frame.input_image(), frame.output, self.view_picker.currentText(),
                                        self.split_slider.value() / 100)
        pixmap = QPixmap.fromImage(to_qimage(self.shown_image))
        self.preview.setPixmap(pixmap.scaled(self.preview.size(), Qt.AspectRatioMode.KeepAspectRatio,
                                             Qt.TransformationMode.SmoothTransformation))

    def _show_error(self, message: str):
        self.error_label.setText(message)

    def _show_engine(self, spec):
        if spec is None:
            self.engine_label.setText("none (pass-through)")
        else:
            self.engine_label.setText(f"{spec.backend}, {spec.precision}, {spec.crop_size}px on {spec.device}\n{spec.path}")

    def _update_readout(self):
        pipeline = self.controller.pipeline
        if pipeline is None:
            self.readout.setText("")
            return
        stages = pipeline.stats.summary()
        lines = [f"FPS        {pipeline.stats.fps():6.1f}"]
        for stage in ("track", "generate", "blend", "end_to_end"):
            if stage in stages:
                lines.append(f"{stage.replace('_', ' '):10s} {stages[stage]:6.1f} ms")
        if pipeline.errors:
            self._show_error(pipeline.errors[-1])
        if self.controller.recording_failed():
            self.controller.stop_recording()
            self._reset_record_button()
        self.readout.setText("\n".join(lines))

    def closeEvent(self, event):
        self.save_settings()
        self.readout_timer.stop()
        self.controller.stop()
        if self.tray is not None:
            self.tray.hide()
        super().closeEvent(event)

