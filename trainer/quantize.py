"""`deocc-train quantize`: static int8 quantisation of an exported generator (ONNX Runtime, QDQ,
per-channel weights), calibrated on real aligned face crops from the validation split.

Activation ranges are read at a percentile of the absolute values the calibration crops give
(99.99 by default; ONNX Runtime keeps them within the values seen), not their extremes, and the convolutions that make the outputs stay in float. On 64 validation
crops of a generator (step 43,235), the PSNR of the int8 restored crop against FP32's was 32.5 dB
with the extremes (min/max), 37.5 dB at the percentile, 40.6 dB with the output convolutions in
float too (higher: closer).

Weights are int8 in 7 bits by default (ONNX Runtime's ``reduce_range``). x86 CPUs without VNNI
(AVX2 or AVX-512 alone: AMD Zen 2 and 3, Intel before Ice Lake) sum pairs of uint8 x int8
products in 16 bits, which saturates with 8-bit weights: on an AMD EPYC (Zen 3) the 8-bit file
restored crops at about 21 dB from the float one's and flagged 3% of an uncovered crop's pixels
as covered; 7-bit weights 36 dB and none (uint8 weights 38 dB, but slower where VNNI is)."""
from __future__ import annotations

import contextlib
import json
import os
import tempfile
from pathlib import Path

WEIGHTS = ("s7", "s8", "u8")  # int8 in 7 bits, int8 in 8 bits, uint8 (see the module's note)


class _CropReader:
    def __init__(self, batches):
        self._batches = iter(batches)

    def get_next(self):
        batch = next(self._batches, None)
        return None if batch is None else {"image": batch}


def calibration_batches(data: str | Path, size: int, count: int = 256, split: str = "validation"):
    from deocc_live.stages.generate import crops_to_batch
    from trainer.pairs import list_pairs, read_pair

    pairs = list_pairs(data, split)[:count]
    if not pairs:
        raise FileNotFoundError(f"no {split} pairs under {data} to calibrate on")
    images = [loaded[0] for loaded in (read_pair(p, size) for p in pairs) if loaded is not None]
    return [crops_to_batch(images[i:i + 1]) for i in range(len(images))]


def output_convolutions(model) -> list[str]:
    """The names of the Conv nodes nearest each graph output (through activations and the like)."""
    producers = {name: node for node in model.graph.node for name in node.output}
    found = []
    for output in model.graph.output:
        stack, seen = [output.name], set()
        while stack:
            node = producers.get(stack.pop())
            if node is None or id(node) in seen:
                continue
            seen.add(id(node))
            if node.op_type == "Conv":
                found.append(node.name)
            else:
                stack.extend(node.input)
    return sorted(set(found))


def quantize(onnx_path: str | Path, data: str | Path, out: str | Path, count: int = 256,
             percentile: float = 99.99, float_outputs: bool = True, weights: str = "s7") -> dict:
    import onnx
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    from engines import EngineError
    from engines.metadata import KEY, validate
    from engines.atomic import atomic_write_bytes

    if weights not in WEIGHTS:
        raise ValueError(f"weights must be one of {', '.join(WEIGHTS)}, got {weights!r}")
    onnx_path, out = Path(onnx_path).resolve(), Path(out).resolve()
    if not onnx_path.is_file():
        raise FileNotFoundError(f"no such file: {onnx_path}")
    try:
        model = onnx.load(str(onnx_path))
    except Exception as error:  # onnx raises protobuf's DecodeError, among others
        raise ValueError(f"{onnx_path}: not a readable ONNX model ({type(error).__name__})") from None
    described = {p.key: p.value for p in model.metadata_props}.get(KEY)
    if described is None:
        raise ValueError(f"{onnx_path}: no generator metadata (export it with `deocc-train export`)")
    try:
        metadata = validate(json.loads(described), str(onnx_path))
    except json.JSONDecodeError:
        raise ValueError(f"{onnx_path}: corrupt metadata") from None
    except EngineError as error:
        raise ValueError(str(error)) from None
    if metadata.get("precision", "fp32") != "fp32":
        raise ValueError(f"{onnx_path} is {metadata['precision']}: quantise the fp32 file `deocc-train export` wrote")
    size = metadata["crop_size"]
    batches = calibration_batches(data, size, count)
    # ONNX Runtime's quantiser writes scratch files (sym_shape_infer_temp.onnx, <uuid>.data) into
    # the working directory: run it in a temporary one, removed with everything in it.
    with tempfile.TemporaryDirectory(prefix="deocc-quantize-") as scratch, _working_directory(scratch):
        prepared, quantized = Path(scratch) / "prepared.onnx", Path(scratch) / "quantized.onnx"
        quant_pre_process(str(onnx_path), str(prepared), skip_symbolic_shape=True)
        kept = output_convolutions(onnx.load(str(prepared))) if float_outputs else []
        method = CalibrationMethod.MinMax if percentile >= 100 else CalibrationMethod.Percentile
        quantize_static(str(prepared), str(quantized), _CropReader(batches),
                        quant_format=QuantFormat.QDQ, per_channel=True, activation_type=QuantType.QUInt8,
                        weight_type=QuantType.QUInt8 if weights == "u8" else QuantType.QInt8,
                        reduce_range=weights == "s7", calibrate_method=method,
                        op_types_to_quantize=["Conv"], nodes_to_exclude=kept,
                        extra_options={"CalibPercentile": percentile, "CalibTensorRangeSymmetric": True}
                        if percentile < 100 else {})
        result = onnx.load(str(quantized))
    del result.metadata_props[:]
    entry = result.metadata_props.add()
    entry.key, entry.value = KEY, json.dumps({**metadata, "precision": "int8",
                                              "quantization": {"percentile": percentile, "float": kept, "weights": weights}})
    atomic_write_bytes(out, result.SerializeToString())
    return {"out": str(out), "calibration_crops": len(batches), "percentile": percentile, "float": kept, "weights": weights}


@contextlib.contextmanager
def _working_directory(path):
    previous = os.getcwd()
    os.chdir(path)
    try:
        yield
    finally:
        os.chdir(previous)
