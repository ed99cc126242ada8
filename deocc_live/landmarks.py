"""MediaPipe FaceLandmarker wrapped for our use: frames in, (N, 478, 2) pixel landmarks out."""
from __future__ import annotations

import contextlib
import os
import sys
import threading
from pathlib import Path

import cv2
import numpy as np

os.environ.setdefault("GLOG_minloglevel", "2")

# Mesh indices outlining the lower face (jaw line up to the nose tip): where face masks,
# hands and microphones usually sit. The benchmark and the tests cover it and measure in it.
LOWER_FACE_OUTLINE = [132, 58, 172, 136, 150, 149, 176, 148, 152, 377, 400, 378, 379, 365, 397, 288, 361, 4]


_stderr_lock = threading.Lock()


def verbose() -> bool:
    """Native log lines are shown with --verbose (DEOCC_VERBOSE=1) or DEOCC_DEBUG=1."""
    return bool(os.environ.get("DEOCC_VERBOSE") or os.environ.get("DEOCC_DEBUG"))


@contextlib.contextmanager
def native_logs_silenced():
    """MediaPipe and TensorFlow Lite write about eight log lines straight to file descriptor 2
    while a landmarker is created (absl's "Logging before InitGoogle()", the XNNPACK delegate,
    the feedback manager): no setting of theirs reaches those, so the descriptor points at
    /dev/null meanwhile, unless the user asked to see them."""
    if verbose():
        yield
        return
    with _stderr_lock:
        sys.stderr.flush()
        saved = os.dup(2)
        try:
            with open(os.devnull, "w") as null:
                os.dup2(null.fileno(), 2)
            yield
        finally:
            os.dup2(saved, 2)
            os.close(saved)


class FaceLandmarks:
    """FaceLandmarker in IMAGE mode (``video=False``, still pictures) or VIDEO mode (a stream
    with monotonic millisecond timestamps). Results come back by return value.

    The confidence floors are lower than MediaPipe's defaults (0.5): covered faces score lower,
    and on 20 face-free frames no face was reported at these floors either."""

    def __init__(self, model_path: str | Path, max_faces: int = 1, video: bool = False,
                 min_detection: float = 0.2, min_presence: float = 0.3):
        from mediapipe.tasks.python.core.base_options import BaseOptions
        from mediapipe.tasks.python.vision import FaceLandmarker, FaceLandmarkerOptions, RunningMode

        options = FaceLandmarkerOptions(
            base_options=BaseOptions(model_asset_path=str(model_path)),
            running_mode=RunningMode.VIDEO if video else RunningMode.IMAGE,
            num_faces=max_faces,
            min_face_detection_confidence=min_detection,
            min_face_presence_confidence=min_presence,
            min_tracking_confidence=min_presence,
        )
        with native_logs_silenced():
            self._landmarker = FaceLandmarker.create_from_options(options)
        self._video = video
        self._last_ms = -1

    def detect(self, image_bgr: np.ndarray, timestamp_ms: int | None = None) -> np.ndarray:
        """Landmarks of every face found, (N, 478, 2) float32 in pixels of ``image_bgr``."""
        import mediapipe as mp

        height, width = image_bgr.shape[:2]
        rgb = np.ascontiguousarray(cv2.cvtColor(image_bgr, cv2.COLOR_BGR2RGB))
        picture = mp.Image(image_format=mp.ImageFormat.SRGB, data=rgb)
        if self._video:
            stamp = int(timestamp_ms if timestamp_ms is not None else self._last_ms + 33)
            stamp = max(stamp, self._last_ms + 1)
            self._last_ms = stamp
            result = self._landmarker.detect_for_video(picture, stamp)
        else:
            result = self._landmarker.detect(picture)
        faces = [
            np.array([[point.x * width, point.y * height] for point in face], dtype=np.float32)
            for face in result.face_landmarks
        ]
        return np.stack(faces) if faces else np.zeros((0, 478, 2), np.float32)

    def close(self) -> None:
        landmarker, self._landmarker = self._landmarker, None
        if landmarker is not None:
            landmarker.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
