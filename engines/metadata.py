"""Self-describing model files: the generator's metadata, carried in the ONNX model's
metadata_props (key ``deocc``) and in a length-prefixed JSON header in front of a TensorRT plan."""
from __future__ import annotations

import json
import struct

from deocc_live.align import TEMPLATE

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
