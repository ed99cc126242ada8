"""The frame packet that travels through the stages. Plain fields; each stage fills its own."""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


@dataclass
class Face:
    track_id: int
    landmarks: np.ndarray                    # (478, 2) float32, frame pixels (smoothed)
    matrix: np.ndarray | None = None         # 2x3, frame -> aligned crop
    inverse: np.ndarray | None = None        # 2x3, aligned crop -> frame
    crop: np.ndarray | None = None           # (S, S, 3) BGR uint8, aligned
    restored: np.ndarray | None = None       # (S, S, 3) float32 BGR in [0, 1]
    occlusion: np.ndarray | None = None      # (S, S) float32 in [0, 1]
    motion: float = 0.0                      # landmark speed, crop widths per frame
    new_track: bool = False
    memory: float = 0.0                      # share of the restored face taken from the face memory
    memory_note: str = ""                    # why the memory is or is not used for this face now


@dataclass
class Frame:
    image: np.ndarray                        # (H, W, 3) BGR uint8; the blend paints into it in place
    index: int
    time_ms: float                           # media time in ms (monotonic for cameras)
    captured_ms: float = 0.0                 # wall clock (monotonic ms) when captured
    faces: list[Face] = field(default_factory=list)
    source_name: str = ""                    # file name for file and folder sources
    still: bool = False                      # a picture on its own: no state from earlier frames
    alpha: np.ndarray | None = None          # (H, W) uint8: a picture's own transparency, written back where kept
    output: np.ndarray | None = None         # the frame to show/send (the input when off)
    before: list = field(default_factory=list)  # (x, y, pixels) the blend painted over, in order
    enabled: bool = True                     # the effect's state when this frame was generated
    timings: dict[str, float] = field(default_factory=dict)  # stage -> milliseconds

    def input_image(self) -> np.ndarray:
        """The picture as captured: ``image`` with what the blend painted over put back."""
        if not self.before:
            return self.image
        image = self.image.copy()
        for x, y, pixels in reversed(self.before):
            image[y:y + pixels.shape[0], x:x + pixels.shape[1]] = pixels
        return image
