"""`deocc-train export`: checkpoint -> ONNX (TorchScript exporter, opset 17+, dynamic batch) with
our metadata, then checked against torch on real-looking input."""
from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np

from engines.metadata import INPUT_NAME, KEY, OUTPUT_NAMES, describe
from trainer import checkpoint
from engines.atomic import atomic_write_bytes

PARITY_TOLERANCE = 1e-3
FP16_TOLERANCE = 0.03  # [-1, 1] outputs: about 4 grey levels at worst, measured 0.004-0.017


def metadata_for(state: dict, evaluation: dict | None = None) -> dict:
    data = state.get("data", {})
    return describe(
        state["model"]["size"],
        precision="fp32",
        trainer_commit=state.get("trainer_commit", "unknown"),
        training={"steps": state["step"], "wall_time_s": round(state.get("elapsed_s", 0.0)),
                  "parameters": state["model"].get("parameters"), "width": state["model"]["width"],
                  "train_pairs": data.get("train_pairs"), "online_occlusion": data.get("online_occlusion"),
                  **({"refiner": state["model"]["refiner"]} if state["model"].get("refiner") else {})},
        evaluation=evaluation or {},
    )


def export_onnx(ckpt: str | Path, onnx_path: str | Path, opset: int = 17, check: bool = True,
                evaluation: dict | None = None) -> dict:
    import onnx
    import torch

    if opset < 17:
        raise ValueError("opset must be 17 or newer")
    state = checkpoint.load(ckpt)
    generator = checkpoint.generator_from(state)
    size = int(state["model"]["size"])
    example = torch.rand(1, 3, size, size) * 2 - 1
    buffer = io.BytesIO()
    torch.onnx.export(
        generator, (example,), buffer, input_names=[INPUT_NAME], output_names=list(OUTPUT_NAMES),
        dynamic_axes={INPUT_NAME: {0: "faces"}, OUTPUT_NAMES[0]: {0: "faces"}, OUTPUT_NAMES[1]: {0: "faces"}},
        opset_version=opset, dynamo=False,
    )
    model = onnx.load_from_string(buffer.getvalue())
    metadata = metadata_for(state, evaluation)
    del model.metadata_props[:]
    entry = model.metadata_props.add()
    entry.key, entry.value = KEY, json.dumps(metadata)
    model.producer_name = "deocc-train"
    onnx.checker.check_model(model)
    atomic_write_bytes(onnx_path, model.SerializeToString())
    result = {"crop_size": size, "max_abs_diff": float("nan"), "opset": opset}
    if check:
        result["max_abs_diff"] = parity(generator, onnx_path, size)
        if not result["max_abs_diff"] <= PARITY_TOLERANCE:
            Path(onnx_path).unlink(missing_ok=True)
            raise RuntimeError(f"ONNX output differs from torch by {result['max_abs_diff']:.2e} "
                               f"(tolerance {PARITY_TOLERANCE}); nothing written")
    return result


def _parity_batch(size: int, batch: int = 3, seed: int = 0) -> np.ndarray:
    """Smooth random pictures in [-1, 1]: like images, unlike white noise."""
    import torch

    rng = np.random.default_rng(seed)
    smooth = rng.random((batch, 3, size // 8, size // 8)).astype(np.float32)
    images = torch.nn.functional.interpolate(torch.from_numpy(smooth), size=(size, size), mode="bilinear")
    return (images * 2 - 1).clamp(-1, 1).numpy()


def parity(generator, onnx_path, size: int) -> float:
    """Largest absolute difference between torch and ONNX Runtime outputs on the same batch."""
    import torch

    from engines import open_engine

    images = _parity_batch(size)
    with torch.no_grad():
        expected = [t.numpy() for t in generator(torch.from_numpy(images))]
    with open_engine(onnx_path) as engine:
        actual = engine.infer(images)
    return float(max(np.abs(a - e).max() for a, e in zip(actual, expected)))


def export_fp16(onnx_path, fp16_path) -> float:
    """The FP32 graph's FP16 twin (FP32 I/O, for TensorRT's strongly typed build), checked
    against the FP32 graph in ONNX Runtime; returns the largest absolute difference."""
    from engines import open_engine
    from engines.fp16 import convert_file

    convert_file(onnx_path, fp16_path)
    with open_engine(onnx_path) as reference, open_engine(fp16_path) as half:
        images = _parity_batch(reference.spec.crop_size)
        difference = float(max(np.abs(a - b).max() for a, b in zip(reference.infer(images), half.infer(images))))
    if not difference <= FP16_TOLERANCE:
        Path(fp16_path).unlink(missing_ok=True)
        raise RuntimeError(f"the FP16 graph differs from FP32 by {difference:.2e} (tolerance {FP16_TOLERANCE}); "
                           "nothing written")
    return difference
