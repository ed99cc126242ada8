"""Bridge between the pipeline's threads and Qt: frames arrive through a signal, at most one
pending at a time (the window always paints the newest); errors become messages, never crashes."""
from __future__ import annotations

import threading
from pathlib import Path

from PySide6.QtCore import QObject, Signal

from deocc_live.stages.capture import SourceError, open_source
from deocc_live.stages.outputs import OutputError, VideoFileOutput, VirtualCameraOutput, refuse_overwriting
from deocc_live.pipeline import Pipeline
from deocc_live.settings import LiveSettings
from engines import EngineError, open_engine


class PipelineController(QObject):
    frame_ready = Signal(object)
    error = Signal(str)
    engine_changed = Signal(object)  # EngineSpec or None
    camera_status = Signal(str)

    def __init__(self, landmarker_path, parent=None):
        super().__init__(parent)
        self.landmarker_path = landmarker_path
        self.pipeline: Pipeline | None = None
        self.settings = LiveSettings()
        self.engine_path: str | None = None
        self.virtual_camera: VirtualCameraOutput | None = None
        self.recorder: VideoFileOutput | None = None
        self._pending = threading.Event()

    # Source and engine.
    def start(self, source_spec, engine_path: str | None, loop: bool = True) -> bool:
        self.stop()
        try:
            source = open_source(source_spec, loop=loop, realtime=True)  # a preview plays at its own speed
        except SourceError as error:
            self.error.emit(str(error))
            return False
        engine = self._open_engine(engine_path)
        self.pipeline = Pipeline(source, engine, self.landmarker_path, [], self.settings, on_frame=self._on_frame)
        self.pipeline.start()
        return True

    def _open_engine(self, path: str | None):
        from deocc_live.assets import default_generator

        try:
            engine = open_engine(path or default_generator())
        except (EngineError, FileNotFoundError) as error:
            self.error.emit(f"{error} - passing frames through")
            self.engine_changed.emit(None)
            return None
        self.engine_path = path
        self.engine_changed.emit(engine.spec)
        return engine

    def set_engine(self, path: str | None) -> None:
        engine = self._open_engine(path)
        if self.pipeline is not None:
            self.pipeline.set_engine(engine)
        elif engine is not None:
            engine.close()

    def _on_frame(self, frame) -> None:
        """Called on the output thread: hand over the newest frame unless one is still waiting."""
        if not self._pending.is_set():
            self._pending.set()
            self.frame_ready.emit(frame)

    def frame_shown(self) -> None:
        self._pending.clear()

    # Outputs.
    def set_virtual_camera(self, on: bool) -> bool:
        if self.pipeline is None:
            return False
        if on and self.virtual_camera is None:
            source = self.pipeline.source
            try:
                self.virtual_camera = VirtualCameraOutput(source.size, source.fps)
            except OutputError as error:
                self.camera_status.emit(str(error))
                return False
            self.pipeline.add_output(self.virtual_camera)
            self.camera_status.emit(f'"Deocc Camera" in use ({self.virtual_camera.device})')
        elif not on and self.virtual_camera is not None:
            self.pipeline.remove_output(self.virtual_camera)
            self.virtual_camera.close()
            self.virtual_camera = None
            self.camera_status.emit("virtual camera off")
        return self.virtual_camera is not None

    def start_recording(self, path: str) -> bool:
        if self.pipeline is None:
            return False
        source = self.pipeline.source
        try:
            refuse_overwriting(path, getattr(source, "path", None), option="the recording")
            self.recorder = VideoFileOutput(Path(path), source.rate, source.size)
        except OutputError as error:
            self.error.emit(str(error))
            return False
        self.pipeline.add_output(self.recorder)
        return True

    def stop_recording(self) -> None:
        recorder, self.recorder = self.recorder, None
        if recorder is None:
            return
        if self.pipeline is not None:
            self.pipeline.remove_output(recorder)  # returns once no frame is being written to it
        try:
            recorder.close()
        except OutputError as error:  # it did not come out whole: the earlier file is kept
            self.error.emit(str(error))

    def recording_failed(self) -> bool:
        """The recording stopped by itself (a full disk); its message is in the pipeline's errors."""
        return self.recorder is not None and self.recorder.failure is not None

    def stop(self) -> None:
        self.stop_recording()
        if self.virtual_camera is not None:
            self.set_virtual_camera(False)
        if self.pipeline is not None:
            pipeline, self.pipeline = self.pipeline, None
            pipeline.stop(timeout=1.0)
            pipeline.set_engine(None)  # closes the engine once no inference is running
        self._pending.clear()
