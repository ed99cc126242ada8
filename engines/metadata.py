"""Self-describing model files: the generator's metadata, carried in the ONNX model's
metadata_props (key ``deocc``) and in a length-prefixed JSON header in front of a TensorRT plan."""
from __future__ import annotations

import json
import struct

import numpy as np

# Where the five points land in a crop of side 1 (x, y). Eyes at 38% height and mouth at 70%
# leave room for the forehead above and the chin below.
TEMPLATE = np.array(
    [
        [0.340, 0.380],  # eye on the image's left
        [0.660, 0.380],  # eye on the image's right
        [0.500, 0.560],  # nose tip
        [0.365, 0.700],  # mouth corner, image left
        [0.635, 0.700],  # mouth corner, image right
    ],
    dtype=np.float64,
)
# (The app's align stage and the trainer's synth cut crops with it; a model file records it.)

KEY = "deocc"
FORMAT_VERSION = 1
INPUT_NAME = "image"
OUTPUT_NAMES = ("restored", "occlusion")
MAX_HEADER_BYTES = 1 << 20


def describe(crop_size: int, **extra) -> dict:
    """The metadata every exported generator carries."""
    return {
        "format_version": FORMAT_VERSION,
        "crop_size": int(crop_size),
        "template": TEMPLATE.round(4).tolist(),
        "normalisation": {"channels": "RGB", "layout": "NCHW", "range": [-1.0, 1.0]},
        "input": INPUT_NAME,
        "outputs": list(OUTPUT_NAMES),
        **extra,
    }


def validate(metadata: dict, where: str) -> dict:
    from engines import EngineError

    if not isinstance(metadata, dict):
        raise EngineError(f"{where}: no deocc metadata")
    size = metadata.get("crop_size")
    if not isinstance(size, int) or not 16 <= size <= 1024:
        raise EngineError(f"{where}: metadata has no valid crop_size")
    if list(metadata.get("outputs", [])) != list(OUTPUT_NAMES):
        raise EngineError(f"{where}: metadata outputs {metadata.get('outputs')} are not {list(OUTPUT_NAMES)}")
    version = metadata.get("format_version")
    if "format_version" not in metadata or isinstance(version, bool) or not isinstance(version, int) or version < 1:
        raise EngineError(f"{where}: metadata has no valid format_version")
    if version > FORMAT_VERSION:
        raise EngineError(f"{where}: model format {version}; this deocc-live reads format {FORMAT_VERSION} "
                          "(a newer deocc-train made it: update deocc-live)")
    if "template" not in metadata:
        raise EngineError(f"{where}: metadata has no face template")
    try:
        template = np.asarray(metadata["template"], dtype=np.float64)
    except (TypeError, ValueError):  # not numbers, or ragged
        template = np.zeros(0)
    if template.shape != TEMPLATE.shape or not np.allclose(template, TEMPLATE, atol=1e-3):
        # The app cuts crops with TEMPLATE: a generator trained on other crops would get the wrong ones.
        raise EngineError(f"{where}: trained on crops cut with another face template than this deocc-live's")
    expected = describe(size)["normalisation"]
    given = metadata.get("normalisation")
    if given != expected:
        shown = "no pixel normalisation" if given is None else f"pixels as {given}"
        raise EngineError(f"{where}: metadata gives {shown}; this deocc-live feeds {expected['channels']} "
                          f"{expected['layout']} in {expected['range']}")
    return metadata


def pack_plan(metadata: dict, plan: bytes) -> bytes:
    header = json.dumps(metadata).encode("utf-8")
    return struct.pack("<I", len(header)) + header + plan


def unpack_plan(data: bytes, where: str) -> tuple[dict, bytes]:
    from engines import EngineError

    if len(data) < 4:
        raise EngineError(f"{where}: too short to be a deocc TensorRT plan")
    (length,) = struct.unpack("<I", data[:4])
    if not 2 <= length <= min(MAX_HEADER_BYTES, len(data) - 4):
        raise EngineError(f"{where}: no deocc metadata header (built by `deocc-train build-engine`?)")
    try:
        metadata = json.loads(data[4:4 + length].decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise EngineError(f"{where}: corrupt metadata header") from None
    return validate(metadata, where), data[4 + length:]


def _release(version: str) -> tuple[int, ...]:
    """'10.3.0.26' -> (10, 3, 0): the part of a TensorRT version a plan is tied to."""
    parts = []
    for piece in str(version).split(".")[:3]:
        digits = "".join(ch for ch in piece if ch.isdigit())
        parts.append(int(digits) if digits else 0)
    return tuple(parts)


def plan_mismatch(metadata: dict, tensorrt_version: str, compute_capability: tuple[int, int], gpu: str) -> str | None:
    """Why a plan built as ``metadata`` records cannot run on this GPU and TensorRT, or None.
    A plan is tied to the TensorRT release that built it and to the GPU's compute capability;
    asking TensorRT to load a foreign one only gives a log line and a null engine."""
    built_version = metadata.get("tensorrt_version")
    built_capability = metadata.get("compute_capability")
    reasons = []
    if built_version and _release(built_version) != _release(tensorrt_version):
        reasons.append(f"TensorRT {built_version}, this is {tensorrt_version}")
    if built_capability and tuple(built_capability) != tuple(compute_capability):
        here = "".join(map(str, compute_capability))
        reasons.append(f"a {metadata.get('gpu', 'GPU')} (sm_{''.join(map(str, built_capability))}), "
                       f"this is a {gpu} (sm_{here})")
    if not reasons:
        return None
    return "built for " + " and ".join(reasons)
