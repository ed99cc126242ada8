"""The settings a user can set, in one table: each with its default, range, unit and help.

The CLI options, the benchmark's options and the GUI's sliders are made from this table, so a
default is written once and an out-of-range value is refused where it comes in, with one line.
``LiveSettings`` holds the values of one running filter; the stages read them from it, so each
value lives in one place (the GUI's slider changes it there, the next frame uses it).
"""
from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass, field


@dataclass(frozen=True)
class Setting:
    name: str               # the field of LiveSettings (or the option's own name)
    kind: type              # int or float
    default: float | int | None
    low: float | int | None   # None: no bound on that side
    high: float | int | None
    help: str
    unit: str = ""
    slider_scale: int = 1   # GUI: slider value = setting value * scale (integer steps)
    option: str = ""        # the command-line option, when not --name with dashes

    @property
    def flag(self) -> str:
        return self.option or "--" + self.name.replace("_", "-")

    def _refusal(self, value) -> str | None:
        low, high = self.low, self.high
        if (low is None or value >= low) and (high is None or value <= high):
            return None
        unit = f" {self.unit}" if self.unit else ""
        bounds = (f"between {low} and {high}" if low is not None and high is not None
                  else f"at least {low}" if low is not None else f"at most {high}")
        return f"must be {bounds}{unit}, got {value}"

    def check(self, value):
        """The value, or ValueError with a one-line reason."""
        refusal = self._refusal(value)
        if refusal:
            raise ValueError(f"{self.flag} {refusal}")
        return value

    def parse(self, text: str):
        try:
            value = self.kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a number, got '{text}'") from None
        if value != value:  # NaN
            raise argparse.ArgumentTypeError(f"expected a number, got '{text}'")
        refusal = self._refusal(value)
        if refusal:
            raise argparse.ArgumentTypeError(refusal)
        return value

    def add_to(self, parser: argparse.ArgumentParser, default=None, unset: bool = False) -> None:
        """The option, range-checked. ``unset``: left None when not given (the caller tells a value
        the user chose from the default, e.g. to keep what the app remembered)."""
        default = self.default if default is None else default
        shown = f", default {default}" if default is not None else ""
        unit = f" {self.unit}" if self.unit else ""
        parser.add_argument(self.flag, dest=self.name, type=self.parse, default=None if unset else default,
                            metavar=self.name.split("_")[-1].upper(), help=f"{self.help} ({self.low}-{self.high}{unit}{shown})")


SETTINGS = {s.name: s for s in (
    Setting("face_smoothing", float, 0.8, 0.0, 0.95, "temporal smoothing of the restored face: the weight of "
            "the past frames; resets on fast motion and where a cover comes or goes", slider_scale=100, option="--smoothing"),
    Setting("feather", float, 0.015, 0.0, 0.06, "blur of the mask edge", unit="crop widths", slider_scale=1000),
    Setting("grain", float, 1.0, 0.0, 2.0, "grain on the restored part, as a share of the grain the visible "
            "face shows (0: none)", slider_scale=100),
    Setting("max_faces", int, 1, 1, 8, "faces restored per frame"),
    Setting("picture_views", int, 7, 1, 9, "views of each face in a picture (not a video or camera), each "
            "generated and the results averaged: 1 the aligned crop alone; more are steadier and slower"),
    Setting("threads", int, 1, 1, 64, "generator threads on the CPU (the other core tracks)"),
    Setting("fps", float, None, 1.0, 240.0, "camera frame rate to ask for, e.g. 30", unit="frames/s"),
    Setting("frames", int, 300, 10, 1_000_000, "frames to time"),
    Setting("soak", float, 0.0, 0.0, 7 * 24 * 3600.0, "seconds to play a looping video in real time, "
            "reporting memory, frame rate, queue depths and threads over time (0: no soak)", unit="s"),
)}


def _default(name: str):
    return field(default=SETTINGS[name].default)


LIVE = ("face_smoothing", "feather", "grain", "max_faces")  # the table's settings the desktop app takes


@dataclass
class LiveSettings:
    """The values one running filter uses; checked against the table when made and when set."""

    face_smoothing: float = _default("face_smoothing")
    feather: float = _default("feather")
    grain: float = _default("grain")
    max_faces: int = _default("max_faces")
    landmark_filter: bool = True     # One Euro filter on the landmarks of a stream
    enabled: bool = True             # the effect on or off
    show_mask: bool = False          # the occlusion mask overlaid in red
    face_memory: bool = True         # restore a covered face from how it looked uncovered (streams)
    mirror_pass: bool = True         # generate each face and its mirror image, and average the two
    finder: bool = True              # our own finder looks for a covered face MediaPipe missed
    picture_views: int = _default("picture_views")  # views of each face in a still picture, averaged

    def __post_init__(self):
        for name in self.tabled():
            SETTINGS[name].check(getattr(self, name))

    @classmethod
    def tabled(cls) -> list[str]:
        """The values that have their default and range in the table."""
        return [name for name in cls.__dataclass_fields__ if name in SETTINGS]

    @classmethod
    def given(cls, args, **others) -> "LiveSettings":
        """The table's defaults, with what the command line gave over them."""
        return cls(**{name: getattr(args, name) for name in cls.tabled() if getattr(args, name, None) is not None},
                   **others)

    def set(self, name: str, value) -> None:
        """Change one value while running (a GUI slider, a key); numbers are range-checked."""
        if name not in self.__dataclass_fields__:
            raise KeyError(f"no live setting named {name}")
        if name in SETTINGS:
            value = SETTINGS[name].kind(SETTINGS[name].check(value))
        setattr(self, name, value)


class OneLineParser(argparse.ArgumentParser):
    """An ArgumentParser whose errors are one line ("prog: error: ... (see prog --help)"), exit 2."""

    def error(self, message: str):
        sys.stderr.write(f"{self.prog}: error: {message} (see {self.prog} --help)\n")
        sys.exit(2)


def parse_camera(text: str) -> int:
    """A camera index, 0-99 (OpenCV's device numbers)."""
    try:
        index = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"camera must be an index such as 0, got '{text}'") from None
    if not 0 <= index <= 99:
        raise argparse.ArgumentTypeError(f"camera index out of range (0-99): {text}")
    return index
