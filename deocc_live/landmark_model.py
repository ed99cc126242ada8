"""Where MediaPipe's face_landmarker.task comes from: an explicit path, DEOCC_MODEL_DIR, the user
cache, or a first-run download from MediaPipe's published address, checked by sha256."""
from __future__ import annotations

import hashlib
import os
import sys
import tempfile
import urllib.request
from pathlib import Path

MODEL_NAME = "face_landmarker.task"
MODEL_URL = (
    "https://storage.googleapis.com/mediapipe-models/face_landmarker/face_landmarker/"
    "float16/latest/face_landmarker.task"
)
MODEL_SHA256 = "64184e229b263107bc2b804c6625db1341ff2bb731874b0bcc2fe6544e0bc9ff"


class LandmarkModelError(RuntimeError):
    """The landmark model cannot be found, fetched or trusted."""


def cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or (Path.home() / ".cache")
    if sys.platform == "win32":
        base = os.environ.get("LOCALAPPDATA", base)
    elif sys.platform == "darwin":
        base = Path.home() / "Library" / "Caches"
    return Path(base) / "deocc-live"


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _check(path: Path, cached: bool = False) -> Path:
    if not path.is_file():
        raise LandmarkModelError(f"landmark model not found: {path}")
    digest = sha256_of(path)
    if digest != MODEL_SHA256:
        # Only the cached copy is ours to tell the user to delete (the next run downloads it again).
        advice = "delete it and run again to download it anew" if cached else f"point to MediaPipe's {MODEL_NAME}"
        raise LandmarkModelError(
            f"landmark model {path} has sha256 {digest[:12]}..., expected {MODEL_SHA256[:12]}...: "
            f"the file is corrupt or not MediaPipe's {MODEL_NAME}; {advice}"
        )
    return path


def download(dest: Path, url: str = MODEL_URL, progress: bool = True, timeout: float = 30.0) -> Path:
    """Fetch the model to ``dest`` through a temporary file, verify its sha256, then rename."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    handle, temp_name = tempfile.mkstemp(prefix=".download-", dir=dest.parent)
    temp = Path(temp_name)
    try:
        with os.fdopen(handle, "wb") as out, urllib.request.urlopen(url, timeout=timeout) as response:
            total = int(response.headers.get("Content-Length") or 0)
            done = 0
            while block := response.read(1 << 16):
                out.write(block)
                done += len(block)
                if progress and total:
                    percent = 100 * done // total
                    print(f"\rdownloading {MODEL_NAME}: {percent:3d}% of {total / 1e6:.1f} MB",
                          end="", file=sys.stderr, flush=True)
        if progress:
            print(file=sys.stderr)
        digest = sha256_of(temp)
        if digest != MODEL_SHA256:
            raise LandmarkModelError(f"downloaded {MODEL_NAME} has the wrong sha256 ({digest[:12]}...)")
        os.chmod(temp, 0o644)
        os.replace(temp, dest)
        return dest
    finally:
        temp.unlink(missing_ok=True)


def resolve(explicit: str | os.PathLike | None = None, allow_download: bool = True) -> Path:
    """The verified path of face_landmarker.task, downloading it once into the cache if need be."""
    if explicit:
        path = Path(explicit)
        return _check(path / MODEL_NAME if path.is_dir() else path)
    env_dir = os.environ.get("DEOCC_MODEL_DIR")
    if env_dir:
        return _check(Path(env_dir) / MODEL_NAME)
    cached = cache_dir() / MODEL_NAME
    if cached.is_file():
        return _check(cached, cached=True)
    if not allow_download:
        raise LandmarkModelError(f"{MODEL_NAME} is not cached; put it at {cached}")
    try:
        return download(cached)
    except LandmarkModelError:
        raise
    except OSError as error:
        raise LandmarkModelError(
            f"cannot download {MODEL_NAME} ({error}); offline? Download it from {MODEL_URL} "
            f"and put it at {cached}, or pass --landmarker PATH, or set DEOCC_MODEL_DIR"
        ) from None
