"""ONNX Runtime backend: CUDA provider when present, else CPU, all graph optimisations.

With the CUDA provider, each call goes through I/O binding: per batch size, a device-side input
and device-side outputs allocated once and bound once; a call copies the batch in with one update,
runs, and copies the two outputs out. Plain ``session.run`` would allocate device inputs and
outputs on every call instead. The CPU provider keeps the plain ``session.run``."""
from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np

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
        self._ort = ort
        self._bindings = {}  # batch size -> (IOBinding, input OrtValue, output OrtValues), CUDA only
        self._cuda_id = None
        if provider == "CUDAExecutionProvider":
            self._cuda_id = int(self._session.get_provider_options()[provider].get("device_id", 0))
        self.spec = EngineSpec(
            backend="onnxruntime", path=str(path), crop_size=size, max_batch=max_batch,
            precision=metadata.get("precision", "fp32"),
            device="cuda" if provider.startswith("CUDA") else "cpu", metadata=metadata,
        )

    def _infer(self, batch):
        if self._cuda_id is None:
            restored, occlusion = self._session.run(list(OUTPUT_NAMES), {INPUT_NAME: batch})
            return restored, occlusion
        binding, image, _outputs = self._binding_for(batch.shape[0])
        image.update_inplace(batch)  # one host->device copy into the bound input
        # That copy (a plain cudaMemcpy) may return before the data lands, and ORT's kernels run on
        # its own stream: synchronize_inputs waits for the device before the run reads the input.
        binding.synchronize_inputs()
        self._session.run_with_iobinding(binding)
        restored, occlusion = binding.copy_outputs_to_cpu()  # new numpy arrays, in bound order
        return restored, occlusion

    def _binding_for(self, count: int):
        """The I/O binding for ``count`` faces: input and outputs on the GPU, allocated on first use.
        The model's I/O is float32 whatever its inside (the FP16 export casts after its input and
        before each output), so the same buffers serve FP32 and FP16 models."""
        if count not in self._bindings:
            ort, size, device = self._ort, self.spec.crop_size, self._cuda_id
            image = ort.OrtValue.ortvalue_from_shape_and_type([count, 3, size, size], np.float32, "cuda", device)
            outputs = [ort.OrtValue.ortvalue_from_shape_and_type([count, channels, size, size], np.float32, "cuda", device)
                       for channels in (3, 1)]
            binding = self._session.io_binding()
            binding.bind_ortvalue_input(INPUT_NAME, image)
            for name, value in zip(OUTPUT_NAMES, outputs):
                binding.bind_ortvalue_output(name, value)
            self._bindings[count] = (binding, image, outputs)
        return self._bindings[count]

    def _release(self):
        self._bindings = {}
        self._session = None


def load(path: Path, threads: int = 0, providers: list[str] | None = None, **_ignored) -> OnnxEngine:
    return OnnxEngine(path, threads=threads, providers=providers)


