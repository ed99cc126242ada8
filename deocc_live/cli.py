"""`deocc-live`: one command. With no subcommand it runs the filter (camera or file in; virtual
camera, preview or file out); `deocc-live bench` and `deocc-live gui` (or --gui) are the others.
Each lives in its own module under deocc_live/commands (the GUI in deocc_live/gui); this file
only builds the parser and picks one. Errors print one line and exit non-zero."""
from __future__ import annotations

import argparse
import os
import sys

from deocc_live.commands import bench, run
from deocc_live.commands.options import guarded
from deocc_live.settings import OneLineParser


def build_parser() -> OneLineParser:
    parser = OneLineParser(prog="deocc-live", epilog=run.EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter,
                           description="Removes what covers a face in live video and sends the result to the "
                                       "virtual camera 'Deocc Camera', a preview, or a file.")
    run.add_arguments(parser)
    parser.add_argument("--gui", action="store_true", help="open the desktop app (the same as `deocc-live gui`)")
    parser.add_argument("--verbose", action="store_true", help="show MediaPipe's and TensorFlow Lite's own log lines")
    parser.add_argument("--version", action="version", version=_version())
    commands = parser.add_subparsers(dest="command", title="other commands", metavar="{bench,gui}")
    bench.add_arguments(commands.add_parser("bench", help="frame rate, latency, stage times and flicker; "
                                            "--soak for an hour-long run", description=bench.__doc__))
    from deocc_live.gui import app

    app.add_arguments(commands.add_parser("gui", help="the desktop app", description="deocc-live's desktop app"))
    return parser


def _version() -> str:
    from deocc_live import __version__

    return f"deocc-live {__version__}"


def main(argv=None) -> int:
    parser = build_parser()
    args = parser.parse_args(sys.argv[1:] if argv is None else argv)
    if (args.gui or args.command == "gui") and args.output:
        parser.error("--output is for the filter without the app; in the app, Record writes a file")
    if args.verbose:
        os.environ["DEOCC_VERBOSE"] = "1"
    if args.command == "gui" or args.gui:
        from deocc_live.gui import app

        return app.run(args)
    if args.command == "bench":
        return guarded(bench.run, args)
    return guarded(run.run, args)


if __name__ == "__main__":
    sys.exit(main())
