"""What the commands share: option helpers, the engine the options name, and the guard that
turns known failures into one line and an exit status."""
from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from deocc_live.settings import SETTINGS


def parse_size(text: str) -> tuple[int, int]:
    try:
        width, height = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"size must look like 1280x720, got '{text}'") from None
    if not (16 <= width <= 8192 and 16 <= height <= 8192):
        raise argparse.ArgumentTypeError(f"size out of range: {text}")
    return width, height


def add_engine_options(parser: argparse.ArgumentParser, unset: bool = False) -> None:
    parser.add_argument("--engine", help="generator file: .plan/.engine (TensorRT), .onnx (ONNX Runtime), "
                        ".pt/.ckpt (PyTorch); default: the one shipped in assets/")
    parser.add_argument("--landmarker", help="path of face_landmarker.task (default: $DEOCC_MODEL_DIR, "
                        "the user cache, or a first-run download)")
    SETTINGS["threads"].add_to(parser)
    SETTINGS["max_faces"].add_to(parser, unset=unset)


def open_engine_for(args):
    from deocc_live.assets import default_generator
    from engines import open_engine

    path = Path(args.engine) if args.engine else default_generator()
    return open_engine(path, threads=args.threads)


def guarded(function, args) -> int:
    """Known failures as one line and exit 1; a traceback only with DEOCC_DEBUG=1."""
    from deocc_live.stages.capture import SourceError
    from deocc_live.landmark_model import LandmarkModelError
    from deocc_live.stages.outputs import OutputError
    from engines import EngineError

    try:
        return function(args)
    except KeyboardInterrupt:
        return 130
    except (SourceError, OutputError, EngineError, LandmarkModelError, FileNotFoundError, ValueError, OSError, RuntimeError) as error:
        if os.environ.get("DEOCC_DEBUG"):
            raise
        print(f"deocc-live: error: {error}", file=sys.stderr)
        return 1
