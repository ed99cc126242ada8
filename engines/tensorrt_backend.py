"""TensorRT backend (the name-based tensor API of TensorRT 10 and 11): our plan files, a JSON metadata header
in front of the serialized engine, device buffers allocated once for the largest batch.

Device memory and the CUDA stream come from torch (CUDA build). Outputs are views of buffers
this engine reuses on the next call: the generate stage copies what it keeps."""
from __future__ import annotations

from pathlib import Path

from engines import Engine, EngineError, EngineSpec
from engines.metadata import INPUT_NAME, OUTPUT_NAMES, plan_mismatch, unpack_plan


class TensorRTEngine(Engine):
    def __init__(self, path: Path, device: int = 0):
        metadata, plan = unpack_plan(path.read_bytes(), str(path))  # a foreign file is named as such first
        try:
            import tensorrt as trt
        except ImportError:
            raise EngineError(f"{path}: TensorRT is not installed (pip install tensorrt) - or use an .onnx engine") from None
        try:
            import torch
        except ImportError:
            raise EngineError(f"{path}: the TensorRT backend needs torch with CUDA for its buffers") from None
        if not torch.cuda.is_available():
            raise EngineError(f"{path}: no CUDA GPU available for TensorRT")
        rebuild = f"rebuild it here with `deocc-train build-engine --onnx assets/deocc_gen.onnx --out {path}`"
        mismatch = plan_mismatch(metadata, trt.__version__, torch.cuda.get_device_capability(device),
                                 torch.cuda.get_device_name(device))
        if mismatch:
            raise EngineError(f"{path}: {mismatch}: {rebuild}")
        self._torch = torch
        self._device = torch.device("cuda", device)
        self._logger = trt.Logger(trt.Logger.WARNING)
        self._runtime = trt.Runtime(self._logger)
        self._engine = self._runtime.deserialize_cuda_engine(plan)
        if self._engine is None:
            raise EngineError(f"{path}: TensorRT {trt.__version__} cannot load this plan (corrupt, or built for "
                              f"another GPU or TensorRT): {rebuild}")
        names = [self._engine.get_tensor_name(i) for i in range(self._engine.num_io_tensors)]
        if sorted(names) != sorted([INPUT_NAME, *OUTPUT_NAMES]):
            raise EngineError(f"{path}: tensors {names} do not match the generator contract")
        size = metadata["crop_size"]
        profile_max = self._engine.get_tensor_profile_shape(INPUT_NAME, 0)[2]
        max_batch = int(profile_max[0])
        self._context = self._engine.create_execution_context()
        self._stream = torch.cuda.Stream(device=self._device)
        # Buffers for the largest batch, allocated once; their owner is this engine.
        self._input = torch.empty((max_batch, 3, size, size), dtype=torch.float32, device=self._device)
        self._outputs = {
            OUTPUT_NAMES[0]: torch.empty((max_batch, 3, size, size), dtype=torch.float32, device=self._device),
            OUTPUT_NAMES[1]: torch.empty((max_batch, 1, size, size), dtype=torch.float32, device=self._device),
        }
        self._host = {name: torch.empty(tuple(t.shape), dtype=torch.float32).pin_memory() for name, t in self._outputs.items()}
        for name, tensor in ((INPUT_NAME, self._input), *self._outputs.items()):
            dtype = self._engine.get_tensor_dtype(name)
            if dtype != trt.DataType.FLOAT:
                raise EngineError(f"{path}: tensor {name} is {dtype}, expected float32 I/O (fp16 inside)")
            self._context.set_tensor_address(name, tensor.data_ptr())
        self.spec = EngineSpec(backend="tensorrt", path=str(path), crop_size=size, max_batch=max_batch,
                               precision=metadata.get("precision", "fp16"), device=f"cuda:{device}", metadata=metadata)

    def _infer(self, batch):
        torch = self._torch
        count = batch.shape[0]
        with torch.cuda.stream(self._stream):
            self._input[:count].copy_(torch.from_numpy(batch), non_blocking=True)
            self._context.set_input_shape(INPUT_NAME, tuple(batch.shape))
            if not self._context.execute_async_v3(self._stream.cuda_stream):
                raise RuntimeError("TensorRT execution failed")
            for name, tensor in self._outputs.items():
                self._host[name][:count].copy_(tensor[:count], non_blocking=True)
        self._stream.synchronize()
        return tuple(self._host[name][:count].numpy() for name in OUTPUT_NAMES)

    def _release(self):
        self._context = self._engine = self._runtime = None
        self._input = self._outputs = self._host = None


def load(path: Path, device: int = 0, **_ignored) -> TensorRTEngine:
    return TensorRTEngine(path, device=device)
