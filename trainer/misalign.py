"""`deocc-train misalign`: how far the app's crop lands from the clean face's crop when the
landmarks come from the COVERED face, measured on training faces; `fit` replays these errors.

At run time MediaPipe sees the occluded picture and guesses the hidden mouth and jaw, so the
aligned crop the generator gets is shifted, scaled and turned against the canonical one that
`synth` cut from the clean face. Here training-split faces are put into frames, covered by the
trainer's own occluders (drawn on a 512 px crop and warped back into the frame), tracked as the
app tracks a picture, and the error is recorded as the similarity transform taking the clean
crop to the covered one (scale, angle in degrees, shift in crop widths). Faces the tracker
misses under the occluder are counted.
"""
from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np

from deocc_live.stages import align
from trainer.e2e import composite, face_frame, split_faces
from engines.atomic import atomic_write_bytes
from trainer.util import progress

PACKAGED = Path(__file__).resolve().parent / "misalignment.json"
RENDER_SIZE = 512


def error_transform(clean_matrix: np.ndarray, covered_matrix: np.ndarray, size: int) -> dict[str, float]:
    """The similarity taking the clean crop to the covered one, in size-free terms."""
    full = np.vstack([clean_matrix, [0, 0, 1]])
    error = (np.vstack([covered_matrix, [0, 0, 1]]) @ np.linalg.inv(full))[:2]
    scale = float(np.hypot(error[0, 0], error[1, 0]))
    angle = float(np.degrees(np.arctan2(error[1, 0], error[0, 0])))
    # The shift of the crop's centre, in crop widths (independent of where the rotation pivots).
    centre = np.array([size / 2, size / 2])
    moved = error[:, :2] @ centre + error[:, 2] - centre
    return {"scale": scale, "angle": angle, "dx": float(moved[0] / size), "dy": float(moved[1] / size)}


def error_matrix(sample: dict, size: int) -> np.ndarray:
    """The 2x3 warp of a crop of side ``size`` that reproduces a recorded error."""
    centre = (size / 2, size / 2)
    matrix = cv2.getRotationMatrix2D(centre, -sample["angle"], sample["scale"])
    matrix[:, 2] += np.array([sample["dx"], sample["dy"]]) * size
    return matrix


def cover_in_frame(truth: np.ndarray, landmarks: np.ndarray, bank, rng) -> np.ndarray:
    """The trainer's occluder for this face, drawn on a large aligned crop and put into the frame."""
    matrix = align.crop_matrix(landmarks, RENDER_SIZE)
    crop = align.warp_crop(truth, matrix, RENDER_SIZE)
    crop_landmarks = align.transform_points(matrix, landmarks).astype(np.float32)
    occluded, mask = bank.render(crop, crop_landmarks, rng)
    height, width = truth.shape[:2]
    inverse = align.invert(matrix)
    layer = cv2.warpAffine(occluded, inverse, (width, height), flags=cv2.INTER_LINEAR)
    alpha = cv2.warpAffine(mask.astype(np.float32) / 255, inverse, (width, height), flags=cv2.INTER_LINEAR)
    return composite(truth, layer, alpha)


def measure(faces_root, occluders, landmarker: str, count: int = 400, seed: int = 0, size=(1280, 720),
            crop_size: int = 128) -> dict:
    from deocc_live.stages.track import TrackStage
    from deocc_live.frame import Frame
    from deocc_live.landmarks import FaceLandmarks
    from trainer.occluders import OccluderBank

    bank = OccluderBank.load(occluders, "train")
    faces = split_faces(faces_root, "train")
    rng = np.random.default_rng(seed)
    samples, missed, tried = [], 0, 0
    tracker = TrackStage(landmarker, max_faces=1)
    try:
        with FaceLandmarks(landmarker) as finder:
            for index in progress(rng.permutation(len(faces))[: count * 2], desc="misalign"):
                if len(samples) >= count:
                    break
                picture = cv2.imread(str(faces[index]))
                if picture is None:
                    continue
                truth = face_frame(picture, size, rng)
                clean = finder.detect(truth)
                if len(clean) != 1:
                    continue
                covered = cover_in_frame(truth, clean[0], bank, rng)
                tried += 1
                frame = tracker(Frame(image=covered, index=0, time_ms=0.0, still=True))  # as the app sees a picture
                if not frame.faces:
                    missed += 1
                    continue
                samples.append(error_transform(align.crop_matrix(clean[0], crop_size),
                                               align.crop_matrix(frame.faces[0].landmarks, crop_size), crop_size))
    finally:
        tracker.close()
    return {"samples": samples, "covered_faces": tried, "missed": missed, "frame_size": list(size),
            "summary": {key: {"median": float(np.median([s[key] for s in samples])),
                              "p90_abs_dev": float(np.percentile(np.abs([s[key] - (1.0 if key == "scale" else 0.0)
                                                                          for s in samples]), 90))}
                        for key in ("scale", "angle", "dx", "dy")} if samples else {}}


def load(path) -> list[dict]:
    """The recorded errors of a misalignment file ("auto": the one shipped with the trainer,
    "off" or None: none), gross failures left out."""
    if path in (None, "", "off"):
        return []
    path = PACKAGED if path == "auto" else Path(path)
    if not path.is_file():
        if path == PACKAGED:
            return []
        raise FileNotFoundError(f"misalignment file not found: {path}")
    return [sample for sample in json.loads(path.read_text())["samples"] if not gross(sample)]


def gross(sample: dict) -> bool:
    """A face found somewhere else than where it is (1% of covered faces): the generator cannot
    help there, so fit does not replay it."""
    return (abs(sample["scale"] - 1) > 0.35 or abs(sample["angle"]) > 20
            or max(abs(sample["dx"]), abs(sample["dy"])) > 0.15)


def run(config) -> dict:
    from deocc_live.landmark_model import resolve

    data = Path(config.data)
    result = measure(data / "faces", data / "occluders", str(resolve(config.landmarker)), config.count, config.seed)
    atomic_write_bytes(config.out, json.dumps(result, indent=1).encode())
    return result
