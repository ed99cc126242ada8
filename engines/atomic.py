"""Atomic file writes: a temporary file in the same folder, renamed over the target once
complete, so a crash or a full disk never leaves a half-written file and the earlier one stays."""
from __future__ import annotations

import os
import tempfile
from pathlib import Path


def _read_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


_UMASK = _read_umask()  # read once, at import: os.umask() cannot be read without setting it


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    """Write ``data`` through a temporary file, then rename over ``path`` (with the permissions a
    plain open() would have given it)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    temp = temp_beside(path)
    try:
        with open(temp, "wb") as out:
            out.write(data)
            out.flush()
            os.fsync(out.fileno())
        replace_from(temp, path)
    except BaseException:
        temp.unlink(missing_ok=True)
        raise


def temp_beside(path: str | Path, suffix: str = ".tmp") -> Path:
    """A new, empty temporary file in ``path``'s folder with a name of its own (``.NAME.XXXX`` +
    ``suffix``): two runs writing the same target never share one, and no other file is reused."""
    path = Path(path)
    handle, temp = tempfile.mkstemp(prefix=f".{path.stem}.", suffix=suffix, dir=path.parent)
    os.close(handle)
    return Path(temp)


def replace_from(temp: str | Path, path: str | Path) -> None:
    """Rename a finished temporary file over ``path``, with the permissions a plain open() would
    have given it (a temporary file is made readable by its owner only)."""
    os.chmod(temp, 0o666 & ~_UMASK)
    os.replace(temp, path)


def same_file(one: str | Path, other: str | Path) -> bool:
    """Whether two paths name one file or folder: by the file system where both exist (case-
    insensitive disks, hard links, symlinks), else by their resolved spelling."""
    try:
        return os.path.samefile(one, other)
    except OSError:
        return os.path.realpath(one) == os.path.realpath(other)


def inside(path: str | Path, folder: str | Path) -> bool:
    """Whether ``path`` (existing or not) lies somewhere inside ``folder``."""
    return any(same_file(parent, folder) for parent in Path(os.path.abspath(path)).parents)
