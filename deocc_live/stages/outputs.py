"""Output stage: the virtual camera "Deocc Camera", video and image files, folders.

Files are written to a temporary name beside the target and renamed when complete, so an
interrupted run never leaves a half-written file and an earlier file stays intact."""
from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

import cv2
import numpy as np

from engines.atomic import atomic_write_bytes, inside, replace_from, same_file, temp_beside
from deocc_live.stages.capture import IMAGE_SUFFIXES, VIDEO_SUFFIXES, opencv_silenced

CAMERA_LABEL = "Deocc Camera"
FOURCC = {".mp4": "mp4v", ".m4v": "mp4v", ".mov": "mp4v", ".avi": "MJPG", ".mkv": "MJPG", ".webm": "VP80",
          ".wmv": "WMV2"}  # the video files written; .mpg and .mpeg are read only


class OutputError(RuntimeError):
    """An output that cannot be opened or written; raised by ``write``, it means the output is
    finished (a full disk): the pipeline drops it and goes on with the others."""


def how_to_create_camera() -> str:
    if sys.platform.startswith("linux"):
        return ('no virtual camera named "Deocc Camera": create it with '
                '`sudo modprobe v4l2loopback devices=1 exclusive_caps=1 card_label="Deocc Camera"` '
                "(package v4l2loopback-dkms), then run again")
    if sys.platform == "darwin":
        return ("no virtual camera: install OBS Studio (28 or newer), click 'Start Virtual Camera' once "
                "so macOS approves its camera extension, then run again")
    return ("no virtual camera: install OBS Studio (26 or newer, it ships 'OBS Virtual Camera') "
            "or Unity Capture, then run again")


def _check_writable(path: Path) -> None:
    folder = path.parent
    if not folder.is_dir():
        raise OutputError(f"output folder does not exist: {folder}")
    if not os.access(folder, os.W_OK):
        raise OutputError(f"cannot write to {folder} (permission denied)")


def _not_a_folder(path: Path) -> None:
    if path.is_dir():
        raise OutputError(f"output {path} is a folder: give a file name in it")


ALPHA_SUFFIXES = {".png", ".webp", ".tif", ".tiff"}  # picture formats that keep a transparency


def _atomic_image(path: Path, image: np.ndarray, alpha: np.ndarray | None = None) -> None:
    """The picture written whole or not at all; with its transparency where the format keeps one."""
    if alpha is not None and path.suffix.lower() in ALPHA_SUFFIXES:
        image = np.dstack([image, alpha])
    ok, data = cv2.imencode(path.suffix, image)
    if not ok:
        raise OutputError(f"cannot encode {path.suffix} image")
    try:
        atomic_write_bytes(path, data.tobytes())
    except OSError as error:
        raise OutputError(f"cannot write {path}: {error.strerror or error}") from None


class Output:
    def write(self, frame) -> None:
        raise NotImplementedError

    def close(self, complete: bool = True) -> None:
        pass


class VideoFileOutput(Output):
    """A video file, written under a temporary name and renamed over the target only once it is
    complete and reads back: a full disk or a crash never replaces an earlier file with a broken one.
    Writing stops (OutputError) when the disk holds less than ``reserve`` bytes, leaving room to
    finish other files; OpenCV's writer itself does not report failed writes."""

    RESERVE = 16 * 2**20

    def __init__(self, path: Path, fps: float, size: tuple[int, int], reserve: int | None = None):
        suffix = path.suffix.lower()
        _not_a_folder(path)
        if suffix not in FOURCC:
            raise OutputError(f"unsupported video output '{suffix}' (use {', '.join(FOURCC)})")
        _check_writable(path)
        self.path, self.size = path, size
        self.reserve = self.RESERVE if reserve is None else reserve
        self.failure: str | None = None
        self.kept = False  # the finished file renamed over the target
        self._check_space()
        try:
            self.partial = temp_beside(path, f".partial{path.suffix}")
        except OSError as error:  # os.access said yes (Windows, no free inodes, a read-only mount)
            raise OutputError(f"cannot write to {path.parent}: {error.strerror or error}") from None
        self._writer = cv2.VideoWriter(str(self.partial), cv2.VideoWriter_fourcc(*FOURCC[suffix]), fps, size)
        if not self._writer.isOpened():
            self.partial.unlink(missing_ok=True)
            raise OutputError(f"cannot open video writer for {path}")
        self.frames = 0

    def _check_space(self) -> None:
        try:
            free = shutil.disk_usage(self.path.parent).free
        except OSError:
            return
        if free < self.reserve:
            self.failure = f"disk full writing {self.path} ({free / 2**20:.1f} MB free): stopped{self._earlier_kept()}"
            raise OutputError(self.failure)

    def _earlier_kept(self) -> str:
        return f"; the earlier {self.path.name} is kept" if self.path.exists() else ""

    def write(self, frame) -> None:
        if self.failure:
            raise OutputError(self.failure)
        self._check_space()  # one statvfs call: microseconds
        image = frame.output
        if (image.shape[1], image.shape[0]) != self.size:
            image = cv2.resize(image, self.size, interpolation=cv2.INTER_AREA)
        self._writer.write(image)
        self.frames += 1

    def _reads_back(self) -> bool:
        """The finished file opens, holds its first frame and (where the container says) every frame."""
        with opencv_silenced():
            capture = cv2.VideoCapture(str(self.partial))
            try:
                if not capture.isOpened() or not capture.read()[0]:
                    return False
                count = int(capture.get(cv2.CAP_PROP_FRAME_COUNT))
                return count <= 0 or count >= self.frames
            finally:
                capture.release()

    def close(self, complete: bool = True) -> None:
        """Rename the finished file over the target; with ``complete`` False, or after a failure,
        drop it. Raises OutputError when the file did not come out whole (the earlier one is kept)."""
        if self._writer is None:
            return
        self._writer.release()
        self._writer = None
        keep = complete and not self.failure and self.frames and self.partial.is_file()
        if keep and self._reads_back():
            try:
                replace_from(self.partial, self.path)
            except OSError as error:
                self.partial.unlink(missing_ok=True)
                raise OutputError(f"cannot write {self.path}: {error.strerror or error}{self._earlier_kept()}") from None
            self.kept = True
            return
        self.partial.unlink(missing_ok=True)
        if keep:
            raise OutputError(f"could not finish {self.path} (disk full or a write error){self._earlier_kept()}")


class ImageFileOutput(Output):
    def __init__(self, path: Path):
        _not_a_folder(path)
        if path.suffix.lower() not in IMAGE_SUFFIXES:
            raise OutputError(f"unsupported image output '{path.suffix}'")
        _check_writable(path)
        self.path = path

    def write(self, frame) -> None:
        _atomic_image(self.path, frame.output, frame.alpha)


class FolderOutput(Output):
    """A folder of pictures, each written as it comes; a folder this output made and wrote
    nothing into (no picture could be read) is removed again."""

    def __init__(self, path: Path):
        created = not path.exists()
        try:
            path.mkdir(parents=True, exist_ok=True)
        except OSError as error:
            raise OutputError(f"cannot create output folder {path}: {error.strerror or error}") from None
        if not os.access(path, os.W_OK):
            raise OutputError(f"cannot write to {path} (permission denied)")
        self.path, self.created, self.written = path, created, 0

    def write(self, frame) -> None:
        target = self.path / frame.source_name
        target.parent.mkdir(parents=True, exist_ok=True)
        _atomic_image(target, frame.output, frame.alpha)
        self.written += 1

    def close(self, complete: bool = True) -> None:
        if self.created and not self.written:
            try:
                self.path.rmdir()
            except OSError:
                pass  # something else was put there meanwhile


def find_v4l2_device(label: str = CAMERA_LABEL, sysfs: Path = Path("/sys/class/video4linux")) -> str | None:
    """The /dev/videoN whose v4l2 name is ``label`` (v4l2loopback's card_label)."""
    if not sysfs.is_dir():
        return None
    for entry in sorted(sysfs.iterdir()):
        try:
            name = (entry / "name").read_text().strip()
        except OSError:
            continue
        if name == label:
            return f"/dev/{entry.name}"
    return None


class VirtualCameraOutput(Output):
    """Frames to "Deocc Camera" through pyvirtualcam, at a size and rate fixed for the session."""

    def __init__(self, size: tuple[int, int], fps: float, backend: str | None = None, device: str | None = None):
        import pyvirtualcam

        self.size = size
        if backend is None and device is None and sys.platform.startswith("linux"):
            device = find_v4l2_device()
            if device is None:
                raise OutputError(how_to_create_camera())
        try:
            self._camera = pyvirtualcam.Camera(width=size[0], height=size[1], fps=fps,
                                               fmt=pyvirtualcam.PixelFormat.BGR, backend=backend, device=device)
        except (RuntimeError, ValueError) as error:
            raise OutputError(f"{how_to_create_camera()} ({str(error).splitlines()[0]})") from None
        self.device = self._camera.device
        self.backend = self._camera.backend

    def write(self, frame) -> None:
        image = frame.output
        if (image.shape[1], image.shape[0]) != self.size:
            image = cv2.resize(image, self.size, interpolation=cv2.INTER_AREA)
        self._camera.send(image)

    def close(self, complete: bool = True) -> None:
        camera, self._camera = getattr(self, "_camera", None), None
        if camera is not None:
            camera.close()


def refuse_overwriting(output: str | Path, read: str | Path | None, option: str = "--output") -> None:
    """Before any work: ``output`` may not be what is ``read`` (the same file or folder by any
    path: it would be overwritten), nor lie inside a folder read (a later run would read the
    results as pictures), nor, for a folder of pictures, be named like a file."""
    if not read:
        return
    if same_file(output, read):
        raise OutputError(f"{option} is the input ({read}): it would be overwritten; choose another path")
    if Path(read).is_dir():
        if inside(output, read):
            raise OutputError(f"{option} {output} is inside the input folder {read}: choose a folder outside it")
        if Path(output).suffix.lower() in IMAGE_SUFFIXES | VIDEO_SUFFIXES and not Path(output).is_dir():
            raise OutputError(f"a folder of pictures is written to a folder: {option} {output} looks like a file name")


def open_file_output(path: str | Path, source) -> Output:
    """A video, image or folder output matching what the source is (``refuse_overwriting``
    first, where the input has a path)."""
    path = Path(path)
    from deocc_live.stages.capture import ImageSource

    if isinstance(source, ImageSource):
        return FolderOutput(path) if source.root else ImageFileOutput(path)
    return VideoFileOutput(path, source.rate, source.size)
