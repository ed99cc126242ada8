"""Camera enumeration for the app's picker: index, name, and the size and rate OpenCV opens."""
from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path

import cv2

from deocc_live.stages.outputs import CAMERA_LABEL


@dataclass(frozen=True)
class CameraInfo:
    index: int
    name: str
    size: tuple[int, int]
    fps: float

    def label(self) -> str:
        return f"{self.index}: {self.name} ({self.size[0]}x{self.size[1]} @ {self.fps:.0f} fps)"


def _linux_names(sysfs: Path = Path("/sys/class/video4linux")) -> dict[int, str]:
    names = {}
    if sysfs.is_dir():
        for entry in sysfs.glob("video*"):
            try:
                names[int(entry.name[5:])] = (entry / "name").read_text().strip()
            except (OSError, ValueError):
                continue
    return names


def list_cameras(max_index: int = 6) -> list[CameraInfo]:
    """Cameras that open and deliver a frame; our own virtual camera is left out."""
    names = _linux_names() if sys.platform.startswith("linux") else {}
    indices = sorted(names) if names else range(max_index)
    found = []
    for index in indices:
        if names.get(index) == CAMERA_LABEL:
            continue
        capture = cv2.VideoCapture(index)
        try:
            ok, image = capture.read() if capture.isOpened() else (False, None)
            if ok:
                found.append(CameraInfo(index, names.get(index, f"Camera {index}"), (image.shape[1], image.shape[0]),
                                        capture.get(cv2.CAP_PROP_FPS) or 30.0))
        finally:
            capture.release()
    return found
