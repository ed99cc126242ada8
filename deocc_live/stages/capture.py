"""Capture stage: frames from a webcam, a video file, an image file or a folder of images."""
from __future__ import annotations

import threading
import time
from contextlib import contextmanager
from pathlib import Path

import cv2
import numpy as np

from deocc_live.frame import Frame

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".webp", ".tif", ".tiff"}
VIDEO_SUFFIXES = {".mp4", ".avi", ".mov", ".mkv", ".webm", ".m4v", ".mpg", ".mpeg", ".wmv"}


class SourceError(RuntimeError):
    """An input that cannot be opened or read."""


def now_ms() -> float:
    return time.monotonic() * 1000.0


def _to_uint8(image: np.ndarray) -> np.ndarray:
    """16-bit, float or other depths as 8 bits per channel."""
    if image.dtype == np.uint16:
        return (image >> 8).astype(np.uint8)
    if image.dtype in (np.float32, np.float64):
        return np.clip(image * 255.0 + 0.5, 0, 255).astype(np.uint8)
    if image.dtype != np.uint8:
        return np.clip(image, 0, 255).astype(np.uint8)
    return image


def to_bgr8(image: np.ndarray) -> np.ndarray:
    """Any picture OpenCV reads (grey, BGRA, 16-bit, float) as BGR uint8."""
    image = _to_uint8(image)
    if image.ndim == 2:
        return cv2.cvtColor(image, cv2.COLOR_GRAY2BGR)
    if image.shape[2] == 4:
        return cv2.cvtColor(image, cv2.COLOR_BGRA2BGR)
    if image.shape[2] == 1:
        return cv2.cvtColor(image[..., 0], cv2.COLOR_GRAY2BGR)
    return np.ascontiguousarray(image)


def alpha_of(image: np.ndarray) -> np.ndarray | None:
    """A picture's own transparency as (H, W) uint8, or None when it has none (or is opaque)."""
    if image.ndim != 3 or image.shape[2] != 4:
        return None
    alpha = np.ascontiguousarray(_to_uint8(image[..., 3]))
    return None if alpha.min() == 255 else alpha


def read_picture(path: Path) -> tuple[np.ndarray, np.ndarray | None]:
    """The picture as BGR uint8, and its transparency (``alpha_of``)."""
    if not path.is_file():
        raise SourceError(f"input not found: {path}")
    if path.stat().st_size == 0:
        raise SourceError(f"input is empty: {path}")
    image = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    if image is None or image.size == 0:
        raise SourceError(f"cannot read image: {path}")
    return to_bgr8(image), alpha_of(image)


class Source:
    """Iterates Frames; ``live`` sources may drop frames, file sources never do."""

    live = False
    fps: float = 30.0
    size: tuple[int, int] = (0, 0)
    frame_count: int | None = None

    @property
    def rate(self) -> float:
        """The frame rate a file made from this source keeps (``fps`` unless a source knows better)."""
        return self.fps

    def __init__(self):
        self._halt = threading.Event()
        self.on_notice = None  # called with a line of news (camera lost, back); the pipeline sets it

    def frames(self):
        raise NotImplementedError

    def halt(self) -> None:
        """Ask ``frames()`` to end, from any thread. Only the thread iterating the frames
        closes the source afterwards: releasing a capture under a running read aborts."""
        self._halt.set()

    def close(self) -> None:
        pass

    def _notice(self, message: str) -> None:
        if self.on_notice is not None:
            self.on_notice(message)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


@contextmanager
def opencv_silenced():
    """OpenCV's own log lines off while probing devices and files: our messages say it better."""
    level = cv2.utils.logging.getLogLevel()
    cv2.utils.logging.setLogLevel(cv2.utils.logging.LOG_LEVEL_SILENT)
    try:
        yield
    finally:
        cv2.utils.logging.setLogLevel(level)


def open_camera_device(index: int):
    """cv2.VideoCapture on a camera index, without OpenCV's own warnings."""
    with opencv_silenced():
        return cv2.VideoCapture(index)


class CameraSource(Source):
    """An OpenCV camera. When it disappears mid-stream (unplugged, taken by another app) it is
    reopened with back-off (0.25 s doubling to 4 s) until it returns or the pipeline stops; the
    outputs keep their last frame meanwhile. It may come back at another resolution: frames carry
    their own size and the outputs scale to theirs. ``opener`` turns an index into a capture
    (cv2.VideoCapture; tests give a stand-in, since no camera device can exist there)."""

    live = True

    def __init__(self, index: int = 0, size: tuple[int, int] | None = None, fps: float | None = None,
                 reconnect: bool = True, opener=open_camera_device):
        self.index, self.requested_size, self.requested_fps = index, size, fps
        self.reconnect, self.opener = reconnect, opener
        super().__init__()
        self._capture = self._open()
        if self._capture is None:
            raise SourceError(f"cannot open camera {index} (is it connected and free? try --camera N)")

    def _open(self):
        capture = self.opener(self.index)
        if capture is None:
            return None
        if not capture.isOpened():
            capture.release()
            return None
        if self.requested_size:
            capture.set(cv2.CAP_PROP_FRAME_WIDTH, self.requested_size[0])
            capture.set(cv2.CAP_PROP_FRAME_HEIGHT, self.requested_size[1])
        if self.requested_fps:
            capture.set(cv2.CAP_PROP_FPS, self.requested_fps)
        ok, image = capture.read()
        if not ok:
            capture.release()
            return None
        self.size = (image.shape[1], image.shape[0])
        self.fps = capture.get(cv2.CAP_PROP_FPS) or self.requested_fps or 30.0
        self._first = image
        return capture

    def frames(self):
        index, backoff, lost_at = 0, 0.25, None
        while not self._halt.is_set():
            if self._capture is not None:
                first, self._first = self._first, None
                ok, image = (True, first) if first is not None else self._capture.read()
            else:
                ok, image = False, None
            if ok:
                if lost_at is not None:
                    self._notice(f"camera {self.index} is back after {time.monotonic() - lost_at:.1f} s "
                                 f"({image.shape[1]}x{image.shape[0]})")
                    lost_at, backoff = None, 0.25
                yield Frame(image=to_bgr8(image), index=index, time_ms=now_ms())
                index += 1
                continue
            if not self.reconnect:
                return
            if lost_at is None:
                lost_at = time.monotonic()
                self._notice(f"camera {self.index} lost; reconnecting")
            if self._capture is not None:
                self._capture.release()
                self._capture = None
            if self._halt.wait(backoff):
                return
            backoff = min(backoff * 2, 4.0)
            self._capture = self._open()

    def close(self) -> None:
        self._halt.set()
        if self._capture is not None:
            self._capture.release()
            self._capture = None


class VideoSource(Source):
    """A video file. ``paced`` plays it at its own frame rate, as a camera would (then frames may be
    dropped downstream, like a camera's); otherwise every frame is read as fast as it is consumed."""

    def __init__(self, path: Path, loop: bool = False, paced: bool = False):
        if not path.is_file():
            raise SourceError(f"input not found: {path}")
        if path.stat().st_size == 0:
            raise SourceError(f"input is empty: {path}")
        super().__init__()
        self.path, self.loop, self.live = path, loop, paced
        self._capture = cv2.VideoCapture(str(path))
        ok, first = self._capture.read() if self._capture.isOpened() else (False, None)
        if not ok:
            self._capture.release()
            raise SourceError(f"cannot read video: {path} (not a video, or a codec OpenCV lacks)")
        self._first = to_bgr8(first)
        self.size = (first.shape[1], first.shape[0])
        fps = self._capture.get(cv2.CAP_PROP_FPS)
        self.fps = fps if fps and 1 <= fps <= 240 else 30.0  # the pace it plays at in real time
        # The rate a file made from it keeps: a time-lapse's under 1 frame/s too (a variable-rate
        # file reporting its 1000/s time base is taken as 30, as for playing it).
        self._rate = fps if fps and 0 < fps < 1 else self.fps
        count = int(self._capture.get(cv2.CAP_PROP_FRAME_COUNT))
        self.frame_count = count if count > 0 else None

    @property
    def rate(self) -> float:
        return self._rate

    def frames(self):
        index, pending, start = 0, self._first, time.monotonic()
        while True:
            while pending is not None and not self._halt.is_set():
                if self.live:
                    delay = start + index / self.fps - time.monotonic()
                    if delay > 0 and self._halt.wait(delay):
                        return
                    if delay < -1.0:  # fell far behind (a stall): catch up instead of racing
                        start = time.monotonic() - index / self.fps
                time_ms = now_ms() if self.live else index * 1000.0 / self.rate
                yield Frame(image=pending, index=index, time_ms=time_ms, source_name=self.path.name)
                index += 1
                ok, image = self._capture.read()
                pending = to_bgr8(image) if ok else None
            if not self.loop or self._halt.is_set():
                return
            self._capture.set(cv2.CAP_PROP_POS_FRAMES, 0)
            ok, image = self._capture.read()
            if not ok:
                return
            pending = to_bgr8(image)

    def close(self) -> None:
        self._capture.release()


class ImageSource(Source):
    def __init__(self, paths: list[Path], root: Path | None = None):
        super().__init__()
        self.paths, self.root = paths, root
        self.failed: list[tuple[Path, str]] = []
        self.frame_count = len(paths)
        self.fps = 30.0
        if len(paths) == 1:
            self._first = read_picture(paths[0])  # a single bad image is an error at start
            self.size = (self._first[0].shape[1], self._first[0].shape[0])
        else:
            self._first = None

    def frames(self):
        for index, path in enumerate(self.paths):
            if self._halt.is_set():
                return
            if index == 0 and self._first is not None:
                image, alpha = self._first
            else:
                try:
                    image, alpha = read_picture(path)
                except SourceError as error:
                    self.failed.append((path, str(error)))
                    continue
            name = str(path.relative_to(self.root)) if self.root else path.name
            yield Frame(image=image, index=index, time_ms=index * 1000.0 / self.fps, source_name=name, still=True,
                        alpha=alpha)


def open_source(source: str | int | None, size=None, fps=None, loop: bool = False, realtime: bool = False) -> Source:
    """A camera index (int or digits), a video file, an image file or a folder of images.
    ``realtime`` plays a video at its own frame rate, like a camera."""
    if source is None or isinstance(source, int) or str(source).isdigit():
        return CameraSource(int(source or 0), size=size, fps=fps)
    path = Path(source)
    if path.is_dir():
        images = sorted(p for p in path.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
        if not images:
            raise SourceError(f"no images in folder: {path}")
        return ImageSource(images, root=path)
    if not path.exists():
        raise SourceError(f"input not found: {path}")
    suffix = path.suffix.lower()
    if suffix in IMAGE_SUFFIXES:
        return ImageSource([path])
    if suffix in VIDEO_SUFFIXES:
        return VideoSource(path, loop=loop, paced=realtime)
    raise SourceError(f"unsupported input type '{suffix}': {path} (images: {', '.join(sorted(IMAGE_SUFFIXES))}; "
                      f"videos: {', '.join(sorted(VIDEO_SUFFIXES))})")


class MemorySource(Source):
    """Frames held in memory (benchmarks, tests, evaluation). ``paced`` releases them at ``fps``
    in real time and behaves like a camera (live: frames may be dropped); ``still`` makes each
    one a picture on its own, as an image file is."""

    def __init__(self, images: list[np.ndarray], fps: float = 30.0, paced: bool = False, repeat: int = 1,
                 still: bool = False):
        if not images:
            raise SourceError("no frames")
        self.images, self.fps, self.live, self.repeat, self.still = images, fps, paced, repeat, still
        self.size = (images[0].shape[1], images[0].shape[0])
        self.frame_count = len(images) * repeat
        super().__init__()

    def frames(self):
        start = time.monotonic()
        for index in range(self.frame_count):
            if self._halt.is_set():
                return
            if self.live:
                delay = start + index / self.fps - time.monotonic()
                if delay > 0 and self._halt.wait(delay):
                    return
            image = self.images[index % len(self.images)].copy()  # a new picture, as a camera gives
            yield Frame(image=image, index=index, time_ms=now_ms() if self.live else index * 1000.0 / self.fps,
                        still=self.still)
