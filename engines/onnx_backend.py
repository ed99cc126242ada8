"""ONNX Runtime backend: CUDA provider when present, else CPU, all graph optimisations."""
from __future__ import annotations

import json
import os
from pathlib import Path

from engines import Engine, EngineError, EngineSpec
from engines.metadata import INPUT_NAME, KEY, OUTPUT_NAMES, validate

DEFAULT_MAX_BATCH = 8


class OnnxEngine(Engine):
    def __init__(self, path: Path, threads: int = 0, providers: list[str] | None = None):
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        options.intra_op_num_threads = threads or int(os.environ.get("DEOCC_ORT_THREADS", "0")) or 1
        options.inter_op_num_threads = 1
        options.log_severity_level = 3
        available = ort.get_available_providers()
        wanted = providers or [p for p in ("CUDAExecutionProvider", "CPUExecutionProvider") if p in available]
        errors = []
        self._session = None
        for index in range(len(wanted)):
            try:
                self._session = ort.InferenceSession(str(path), options, providers=wanted[index:])
                break
            except Exception as error:  # onnxruntime raises its own exception types per failure
                errors.append(f"{wanted[index]}: {str(error).splitlines()[0][:200]}")
                if "INVALID_PROTOBUF" in str(error) or "NO_SUCHFILE" in str(error) or "INVALID_GRAPH" in str(error):
                    break
        if self._session is None:
            raise EngineError(f"{path}: cannot load ONNX model ({'; '.join(errors)})")
        raw = self._session.get_modelmeta().custom_metadata_map.get(KEY)
        try:
            metadata = validate(json.loads(raw) if raw else None, str(path))
        except json.JSONDecodeError:
            raise EngineError(f"{path}: corrupt deocc metadata") from None
        inputs, outputs = self._session.get_inputs(), self._session.get_outputs()
        size = metadata["crop_size"]
        if [i.name for i in inputs] != [INPUT_NAME] or list(inputs[0].shape[1:]) != [3, size, size]:
            raise EngineError(f"{path}: input must be '{INPUT_NAME}' [N, 3, {size}, {size}], "
                              f"got {[(i.name, i.shape) for i in inputs]}")
        if [o.name for o in outputs] != list(OUTPUT_NAMES):
            raise EngineError(f"{path}: outputs must be {list(OUTPUT_NAMES)}, got {[o.name for o in outputs]}")
        batch_dim = inputs[0].shape[0]
        max_batch = batch_dim if isinstance(batch_dim, int) else DEFAULT_MAX_BATCH
        provider = self._session.get_providers()[0]
        self.spec = EngineSpec(
            backend="onnxruntime", path=str(path), crop_size=size, max_batch=max_batch,
            precision=metadata.get("precision", "fp32"),
            device="cuda" if provider.startswith("CUDA") else "cpu", metadata=metadata,
        )

    def _infer(self, batch):
        restored, occlusion = self._session.run(list(OUTPUT_NAMES), {INPUT_NAME: batch})
        return restored, occlusion

    def _release(self):
        self._session = None


def load(path: Path, threads: int = 0, providers: list[str] | None = None, **_ignored) -> OnnxEngine:
    return OnnxEngine(path, threads=threads, providers=providers)


