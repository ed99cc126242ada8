"""Stand-ins for devices that cannot exist on test machines: a virtual camera device and a
webcam. Each is a thin shell over the real thing one level down (pyvirtualcam's backend
registry; cv2.VideoCapture reading a real video file), so everything above them is real."""
from __future__ import annotations

import time
from pathlib import Path

import cv2
import numpy as np
import pyvirtualcam


class RecordingBackend:
    """Stands in for a virtual camera device (none can exist here); keeps what it is sent."""

    instances: list["RecordingBackend"] = []

    def __init__(self, width, height, fps, fourcc, device, **kw):
        self.width, self.height, self.fps, self.fourcc = width, height, fps, fourcc
        self.frames: list[np.ndarray] = []
        self.closed = False
        RecordingBackend.instances.append(self)

    def close(self):
        self.closed = True

    def send(self, frame):
        # pyvirtualcam hands backends the frame flattened, in the format asked for (BGR).
        self.frames.append(frame.reshape(self.height, self.width, -1).copy())

    def device(self):
        return "stand-in:Deocc Camera"

    def native_fourcc(self):
        return None


pyvirtualcam.register_backend("deocc-test", RecordingBackend)


class _PacedCapture:
    """A real cv2.VideoCapture on a file, read at ``fps`` like a camera; after ``budget`` frames
    every read fails, as a pulled USB camera's does."""

    def __init__(self, path: Path, fps: float = 30.0, budget: int | None = None):
        self._capture = cv2.VideoCapture(str(path))
        self.fps, self.budget, self._next = fps, budget, time.monotonic()

    def isOpened(self):
        return self._capture.isOpened()

    def set(self, prop, value):
        return False  # a camera that ignores requests, as many do

    def get(self, prop):
        return self.fps if prop == cv2.CAP_PROP_FPS else self._capture.get(prop)

    def read(self):
        if self.budget is not None:
            if self.budget <= 0:
                return False, None
            self.budget -= 1
        delay = self._next - time.monotonic()
        if delay > 0:
            time.sleep(delay)
        self._next = max(self._next, time.monotonic() - 1.0) + 1.0 / self.fps
        return self._capture.read()

    def release(self):
        self._capture.release()


class UnpluggedCamera:
    """Stands in for a webcam (none can exist here) that is unplugged mid-stream and plugged
    back in: the first open plays ``first`` for ``frames_before`` frames, then reads fail; the
    next ``absent_opens`` opens find no device; later opens play ``then`` (which may have another
    resolution). Pass ``open`` as CameraSource's opener."""

    def __init__(self, first: Path, frames_before: int, absent_opens: int, then: Path):
        self.first, self.frames_before, self.absent_opens, self.then = first, frames_before, absent_opens, then
        self.open_times: list[float] = []

    def open(self, index: int):
        self.open_times.append(time.monotonic())
        count = len(self.open_times)
        if count == 1:
            return _PacedCapture(self.first, budget=self.frames_before)
        if count <= 1 + self.absent_opens:
            return cv2.VideoCapture()  # no device: a capture that is not opened
        return _PacedCapture(self.then)
