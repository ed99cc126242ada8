"""Whether a window can be opened here: without a display Qt and OpenCV abort the process with
plugin noise, so the app says so in one line before trying."""
from __future__ import annotations

import os
import sys


def missing_display(qt: bool = True) -> str | None:
    """Why no window can be shown here, or None. ``qt``: Qt's own platforms (offscreen, vnc, ...)
    chosen with QT_QPA_PLATFORM count as a display."""
    if not sys.platform.startswith("linux"):
        return None
    if os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY"):
        return None
    platform = os.environ.get("QT_QPA_PLATFORM", "")
    if qt and platform and platform.split(":")[0] not in ("xcb", "wayland"):
        return None
    return "no display found (DISPLAY and WAYLAND_DISPLAY are unset)"
