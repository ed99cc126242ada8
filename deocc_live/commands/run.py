"""The headless filter: camera or file in; virtual camera, preview or file out."""
from __future__ import annotations

import argparse
import signal
import sys
import threading
from pathlib import Path

from deocc_live.commands.options import add_engine_options, open_engine_for, parse_size
from deocc_live.settings import SETTINGS, parse_camera

EPILOG = """keys in the preview: space or t toggles the effect, m the mask overlay, q or Esc quits.
SIGUSR1 toggles the effect too (kill -USR1 PID)."""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The filter's options (they are also the top-level options of `deocc-live`)."""
    parser.add_argument("--input", help="video file, image file or folder of images (default: the camera)")
    parser.add_argument("--output", help="output file (video or image) or folder, same size and rate as the input")
    parser.add_argument("--camera", type=parse_camera, help="camera index, 0-99 (default 0)")
    parser.add_argument("--size", type=parse_size, help="camera size, e.g. 1280x720")
    SETTINGS["fps"].add_to(parser)
    add_engine_options(parser, unset=True)
    parser.add_argument("--preview", action="store_true", help="show a preview window")
    parser.add_argument("--show-mask", action="store_true", help="overlay the occlusion mask (debug)")
    parser.add_argument("--no-smoothing", action="store_true", help="no temporal smoothing of landmarks and faces")
    SETTINGS["face_smoothing"].add_to(parser, unset=True)
    SETTINGS["feather"].add_to(parser, unset=True)
    SETTINGS["grain"].add_to(parser, unset=True)
    SETTINGS["picture_views"].add_to(parser, unset=True)
    parser.add_argument("--no-face-memory", dest="face_memory", action="store_false", default=None,
                        help="restore covered faces from the generator alone, not from how the face looked "
                             "uncovered moments before (the memory is kept in memory only, never on disk)")
    parser.add_argument("--no-mirror-pass", dest="mirror_pass", action="store_false", default=None,
                        help="generate each face once, not also mirrored and averaged: half the generator's work, "
                             "a little less faithful")
    parser.add_argument("--no-finder", dest="finder", action="store_false", default=None,
                        help="only MediaPipe finds faces: our own finder does not look for a covered face it missed, "
                             "nor check that a face MediaPipe finds anew looks like one")
    parser.add_argument("--off", action="store_true", help="start with the effect off")
    parser.add_argument("--virtual-camera", action=argparse.BooleanOptionalAction, default=None,
                        help="send to 'Deocc Camera' (default: on, unless --output is given)")
    parser.add_argument("--loop", action="store_true", help="loop a video input")
    parser.add_argument("--realtime", action=argparse.BooleanOptionalAction, default=None,
                        help="play a video input at its own frame rate, like a camera "
                             "(default: on when there is no --output, e.g. a clip sent to the virtual camera)")


def run(args) -> int:
    from deocc_live.display import missing_display

    if args.preview and missing_display(qt=False):
        raise RuntimeError(f"--preview needs a display: {missing_display(qt=False)}; "
                           "write the result with --output FILE instead")
    from deocc_live.stages.capture import SourceError, open_source
    from deocc_live.landmark_model import resolve
    from deocc_live.stages.outputs import (OutputError, VideoFileOutput, VirtualCameraOutput, open_file_output,
                                           refuse_overwriting)
    from deocc_live.pipeline import Pipeline
    from deocc_live.settings import LiveSettings

    if args.input is not None and not args.input.strip():
        raise SourceError("--input is empty: give a video, a picture or a folder (or leave it out for the camera)")
    if args.virtual_camera is False and not (args.output or args.preview):
        raise ValueError("--no-virtual-camera without --output or --preview: the result would go nowhere")
    realtime = args.realtime if args.realtime is not None else not args.output
    if args.loop and args.output and not realtime:
        raise ValueError("--loop plays the input forever, so --output would never be finished: drop one of them "
                         "(or add --realtime to record it as a camera, until stopped)")
    if args.output:
        refuse_overwriting(args.output, args.input)
    landmarker = resolve(args.landmarker)
    engine = open_engine_for(args)
    source = pipeline = None
    outputs = []
    try:
        source = open_source(args.input if args.input else args.camera, size=args.size, fps=args.fps, loop=args.loop,
                             realtime=realtime)
        if args.output:
            outputs.append(open_file_output(args.output, source))
        want_camera = args.virtual_camera if args.virtual_camera is not None else not args.output
        if want_camera:
            try:
                outputs.append(VirtualCameraOutput(source.size, source.fps))
                print(f"sending to {outputs[-1].device}", file=sys.stderr)
            except OutputError as error:
                if not (args.output or args.preview):
                    raise
                print(f"deocc-live: {error}", file=sys.stderr)
        settings = LiveSettings.given(args, enabled=not args.off, show_mask=args.show_mask,
                                      face_memory=args.face_memory is not False,
                                      mirror_pass=args.mirror_pass is not False,
                                      finder=args.finder is not False)
        if args.no_smoothing:
            settings.set("face_smoothing", 0.0)
            settings.landmark_filter = False
        pipeline = Pipeline(source, engine, landmarker, outputs, settings)
        complete = _drive(pipeline, args.preview)
    except BaseException:
        for output in outputs:
            output.close(complete=False)
        raise
    finally:
        if source is not None and pipeline is None:
            source.close()  # a started pipeline's capture thread closes its source itself
        engine.close()
    for output in outputs:
        output.close(complete=complete)
    if pipeline.failed_outputs:
        raise OutputError(pipeline.failed_outputs[0][1])
    failed = getattr(source, "failed", [])
    for path, reason in failed:
        print(f"skipped {path}: {reason}", file=sys.stderr)
    video = next((output for output in outputs if isinstance(output, VideoFileOutput)), None)
    if failed and pipeline.frames_out == 0:
        print(f"deocc-live: error: no picture in {args.input} could be read", file=sys.stderr)
    elif video is not None and not video.kept:  # stopped before the end (or before a frame): dropped
        earlier = f"; the earlier {args.output} is kept" if Path(args.output).exists() else ""
        print(f"deocc-live: stopped before the end: {args.output} not written{earlier}", file=sys.stderr)
        return 1
    elif args.output:
        print(f"wrote {pipeline.frames_out} frame(s) to {args.output}", file=sys.stderr)
    return 0 if complete and not (failed and pipeline.frames_out == 0) else 1


def _drive(pipeline, preview: bool) -> bool:
    """Run until the source ends (True) or the user stops it (False for files: incomplete)."""
    stop = threading.Event()
    handlers = {}

    def on_stop(signum, frame):
        stop.set()

    def on_toggle(signum, frame):
        state = pipeline.toggle()
        print(f"effect {'on' if state else 'off'}", file=sys.stderr)

    for sig, handler in ((signal.SIGINT, on_stop), (signal.SIGTERM, on_stop), (getattr(signal, "SIGHUP", None), on_stop),
                         (getattr(signal, "SIGUSR1", None), on_toggle)):
        # A hang-up ignored already (`nohup`) stays ignored: the job outlives its terminal.
        if sig is not None and not (sig == getattr(signal, "SIGHUP", None) and signal.getsignal(sig) is signal.SIG_IGN):
            handlers[sig] = signal.signal(sig, handler)
    window = None
    try:
        pipeline.start()
        if preview:
            window = _Preview()
        shown = 0
        while not stop.is_set():
            finished = pipeline.wait(0.03)
            if pipeline.failed_outputs:  # a file output stopped (a full disk): the job cannot finish
                return False
            news, shown = pipeline.news_since(shown)
            for message in news:  # camera lost and back, generator trouble
                print(f"deocc-live: {message}", file=sys.stderr)
            if finished:
                return True
            if window is not None and pipeline.latest is not None:
                key = window.show(pipeline.latest, pipeline)
                if key in ("quit",):
                    break
        return pipeline.source.live
    finally:
        pipeline.stop()
        pipeline.set_engine(None)  # closes the engine once no inference is running
        if window is not None:
            window.close()
        for sig, handler in handlers.items():
            signal.signal(sig, handler)


class _Preview:
    NAME = "deocc-live (space: toggle, m: mask, q: quit)"

    def __init__(self):
        import cv2

        self.cv2 = cv2
        cv2.namedWindow(self.NAME, cv2.WINDOW_NORMAL)

    def show(self, frame, pipeline):
        cv2 = self.cv2
        text = f"{'ON' if pipeline.settings.enabled else 'OFF'}  {pipeline.stats.fps():.1f} FPS"
        if any(face.memory > 0 for face in frame.faces):
            text += "  memory"  # a face is being restored from how it looked uncovered
        shown = frame.output.copy()
        cv2.putText(shown, text, (10, 28), cv2.FONT_HERSHEY_SIMPLEX, 0.8, (0, 255, 0), 2, cv2.LINE_AA)
        cv2.imshow(self.NAME, shown)
        key = cv2.waitKey(1) & 0xFF
        if key in (ord("q"), 27):
            return "quit"
        if key in (ord(" "), ord("t")):
            pipeline.toggle()
        elif key == ord("m"):
            pipeline.settings.set("show_mask", not pipeline.settings.show_mask)
        return None

    def close(self):
        self.cv2.destroyAllWindows()
