"""ONNX -> TensorRT plan (FP16 by default) with an optimisation profile for 1..max_batch faces,
written with our metadata header through a temporary file.

One code path for TensorRT 10.12+ and 11.x: the network is strongly typed, so its precision is
the ONNX graph's. TensorRT 11 removed the FP16 builder flag and ``platform_has_fast_fp16``; an
FP32 graph is converted to FP16 inside with FP32 inputs and outputs (engines.fp16) first.
``STRONGLY_TYPED`` is required for that on 10.x and accepted but ignored on 11.x; its enum value
differs between the two, hence ``int(...)`` rather than a number."""
from __future__ import annotations

import json
from pathlib import Path

from engines import EngineError
from engines.fp16 import convert, graph_precision
from engines.metadata import INPUT_NAME, KEY, pack_plan, validate


def build_engine(onnx_path: str | Path, out: str | Path, fp16: bool = True, max_batch: int = 4,
                 workspace_gb: float = 2.0) -> dict:
    if not 1 <= max_batch <= 64:
        raise ValueError(f"--max-batch must be between 1 and 64, got {max_batch}")
    if not 0.25 <= workspace_gb <= 256:
        raise ValueError(f"the workspace must be between 0.25 and 256 GB, got {workspace_gb}")
    try:
        import tensorrt as trt
    except ImportError:
        raise EngineError("TensorRT is not installed here (pip install tensorrt on a machine with an NVIDIA GPU)") from None
    import onnx
    import torch

    if not torch.cuda.is_available():
        raise EngineError("building a TensorRT plan needs an NVIDIA GPU (torch sees no CUDA device here)")
    from engines.atomic import atomic_write_bytes

    onnx_path = Path(onnx_path)
    model = onnx.load(str(onnx_path))
    raw = {p.key: p.value for p in model.metadata_props}.get(KEY)
    metadata = validate(json.loads(raw) if raw else None, str(onnx_path))
    size = metadata["crop_size"]
    precision = graph_precision(model)
    if fp16 and precision == "fp32":
        model, precision = convert(model), "fp16"
    elif not fp16 and precision == "fp16":
        raise EngineError(f"{onnx_path} computes in FP16: for an FP32 plan give the FP32 graph")
    flag = getattr(trt.NetworkDefinitionCreationFlag, "STRONGLY_TYPED", None)
    if flag is None:
        raise EngineError(f"TensorRT {trt.__version__} cannot build strongly typed networks: use 10.12 or newer")
    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    network = builder.create_network(1 << int(flag))
    parser = trt.OnnxParser(network, logger)
    if not parser.parse(model.SerializeToString()):
        errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise EngineError(f"TensorRT cannot parse {onnx_path}: {errors}")
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, int(workspace_gb * (1 << 30)))
    profile = builder.create_optimization_profile()
    # Tuned for two crops a call: one face and its mirror image (the app's mirror pass).
    optimal = min(2, max_batch)
    profile.set_shape(INPUT_NAME, (1, 3, size, size), (optimal, 3, size, size), (max_batch, 3, size, size))
    config.add_optimization_profile(profile)
    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        raise EngineError("TensorRT failed to build the engine")
    metadata = {**metadata, "precision": precision, "tensorrt_version": trt.__version__,
                "max_batch": max_batch, "gpu": torch.cuda.get_device_name(0),
                "compute_capability": list(torch.cuda.get_device_capability(0))}  # what the plan is tied to
    atomic_write_bytes(out, pack_plan(metadata, bytes(serialized)))
    return {"crop_size": size, "precision": metadata["precision"], "max_batch": max_batch, "tensorrt": trt.__version__}
