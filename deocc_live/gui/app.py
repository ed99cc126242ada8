"""`deocc-live gui` (or --gui) and `deocc-live-gui`: the desktop app."""
from __future__ import annotations

import argparse
import signal
import sys

from deocc_live.settings import LIVE, SETTINGS, OneLineParser, parse_camera


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--input", help="start on a video file instead of the camera")
    parser.add_argument("--camera", type=parse_camera, help="camera index, 0-99")
    parser.add_argument("--engine", help="generator file (.plan, .onnx, .pt)")
    parser.add_argument("--landmarker", help="path of face_landmarker.task")
    for name in LIVE:  # start values over the remembered ones
        SETTINGS[name].add_to(parser, unset=True)
    parser.add_argument("--no-face-memory", dest="face_memory", action="store_false", default=None,
                        help="start with the face memory off")
    parser.add_argument("--no-mirror-pass", dest="mirror_pass", action="store_false", default=None,
                        help="start with the mirror pass off (half the generator's work)")
    parser.add_argument("--no-finder", dest="finder", action="store_false", default=None,
                        help="start with our own finder off (only MediaPipe finds faces)")


def main(argv=None) -> int:
    """`deocc-live-gui`."""
    parser = OneLineParser(prog="deocc-live-gui", description="deocc-live's desktop app")
    add_arguments(parser)
    return run(parser.parse_args(sys.argv[1:] if argv is None else argv))


def run(args) -> int:
    from deocc_live.display import missing_display

    reason = missing_display()
    if reason:
        print(f"deocc-live: error: the desktop app needs a display: {reason}; "
              "without one, run the headless filter (deocc-live --output FILE, or to the virtual camera)",
              file=sys.stderr)
        return 1
    from PySide6.QtCore import QSettings
    from PySide6.QtWidgets import QApplication, QMessageBox

    from deocc_live.gui.controller import PipelineController
    from deocc_live.gui.window import MainWindow
    from deocc_live.landmark_model import LandmarkModelError, resolve

    app = QApplication.instance() or QApplication([sys.argv[0]])
    app.setApplicationName("deocc-live")
    try:
        landmarker = resolve(args.landmarker)
    except LandmarkModelError as error:
        QMessageBox.critical(None, "deocc-live", str(error))
        print(f"deocc-live: error: {error}", file=sys.stderr)
        return 1
    controller = PipelineController(landmarker)
    source = args.input if args.input else args.camera
    options = {name: getattr(args, name, None) for name in (*LIVE, "face_memory", "mirror_pass", "finder")}
    window = MainWindow(controller, QSettings("deocc-live", "deocc-live"), source=source, engine=args.engine,
                        options=options)
    window.resize(1200, 720)
    window.show()
    signal.signal(signal.SIGINT, lambda *_: window.close())
    return app.exec()


if __name__ == "__main__":
    sys.exit(main())
