"""PyTorch backend: our `.pt` generator files and the trainer's `.ckpt` checkpoints, read with
weights_only=True (never unpickling code). CUDA in fp16 when a GPU is present, else CPU fp32.

On CUDA the network is replayed as a CUDA graph, one captured lazily per batch size: launched op
by op, this small network spends almost all of its time in kernel launches (3.2 ms per 128x128
crop on an H200 against 0.55 ms replayed). A graph reads and writes fixed device addresses, so
each call copies the batch into a static input buffer (pinned host memory, one host->device copy),
replays, and copies both outputs back together (one device->host copy, then one stream synchronize).
A batch size whose capture fails runs eagerly from then on; ``cuda_graph=False`` runs all eagerly."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from engines import Engine, EngineError, EngineSpec
from engines.metadata import describe, validate

GENERATOR_FORMAT = "deocc-generator-1"
MAX_BATCH = 16
GRAPH_WARMUP = 3  # eager runs before a capture: cuDNN/cuBLAS pick and cache their kernels and handles


class TorchEngine(Engine):
    def __init__(self, path: Path, device: str | None = None, half: bool | None = None, threads: int = 0,
                 cuda_graph: bool = True):
        import torch

        from engines.network import build, from_state_dict

        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as error:  # torch raises many types for a damaged or foreign file
            raise EngineError(f"{path}: cannot read PyTorch file ({type(error).__name__})") from None
        if not isinstance(state, dict):
            raise EngineError(f"{path}: not a deocc-live generator file")
        if state.get("format") == GENERATOR_FORMAT:
            shape, weights, metadata = state["model"], state["state_dict"], state.get("metadata", {})
        elif state.get("format") == "deocc-ckpt-1":
            shape, weights = state["model"], state.get("generator_ema") or state["generator"]
            metadata = describe(int(shape["size"]))  # a training checkpoint: what export would write
        else:
            raise EngineError(f"{path}: not a deocc-live generator file")
        validate(metadata, str(path))
        try:
            if state.get("format") == GENERATOR_FORMAT:
                generator = from_state_dict(shape, weights)
            else:
                generator = build(shape, weights, state.get("refiner"))
        except (RuntimeError, KeyError) as error:
            raise EngineError(f"{path}: weights do not fit the generator ({str(error).splitlines()[0][:160]})") from None
        self._torch = torch
        self._device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        self._half = self._device.type == "cuda" if half is None else half
        if threads and self._device.type == "cpu":
            torch.set_num_threads(threads)
        generator = generator.eval().to(self._device)
        self._generator = generator.half() if self._half else generator
        self.spec = EngineSpec(
            backend="pytorch", path=str(path), crop_size=int(metadata["crop_size"]), max_batch=MAX_BATCH,
            precision="fp16" if self._half else "fp32", device=str(self._device), metadata=metadata,
        )
        self._cuda_graph = cuda_graph
        self._graphs = {}  # batch size -> (graph, its static output), or None: that size runs eagerly
        self.graph_errors: dict[int, str] = {}  # batch size -> why its capture failed
        if self._device.type == "cuda":
            size = self.spec.crop_size
            # Buffers for the largest batch, allocated once; a batch of n uses their first n rows,
            # so every graph of size n reads the same device input rows on each replay.
            self._stream = torch.cuda.Stream(device=self._device)
            self._device_in = torch.zeros((MAX_BATCH, 3, size, size), dtype=torch.float32, device=self._device)
            self._host_in = torch.empty((MAX_BATCH, 3, size, size), dtype=torch.float32).pin_memory()
            self._host_out = torch.empty((MAX_BATCH, 4, size, size), dtype=torch.float32).pin_memory()

    @property
    def graph_sizes(self) -> list[int]:
        """Batch sizes replayed from a captured CUDA graph so far (none on CPU)."""
        return sorted(count for count, graph in self._graphs.items() if graph is not None)

    def _infer(self, batch):
        torch = self._torch
        if self._device.type != "cuda":
            with torch.inference_mode():
                tensor = torch.from_numpy(batch).to(self._device)
                restored, occlusion = self._generator(tensor.half() if self._half else tensor)
                return (restored.float().cpu().numpy(), occlusion.float().cpu().numpy())
        count = batch.shape[0]
        graph = self._graph_for(count)
        np.copyto(self._host_in[:count].numpy(), batch)
        self._stream.wait_stream(torch.cuda.current_stream(self._device))  # nothing pending elsewhere is read early
        with torch.inference_mode(), torch.cuda.stream(self._stream):
            self._device_in[:count].copy_(self._host_in[:count], non_blocking=True)
            if graph is None:
                output = self._forward(self._device_in[:count])
            else:
                graph[0].replay()
                output = graph[1]
            self._host_out[:count].copy_(output, non_blocking=True)
        self._stream.synchronize()
        # Fresh arrays: the caller may still hold this result while the next call refills the buffers.
        output = self._host_out[:count].numpy()
        return output[:, :3].copy(), output[:, 3:].copy()

    def _forward(self, tensor):
        """Both outputs in one float32 tensor [N, 4, S, S] (restored, then occlusion): one copy out."""
        restored, occlusion = self._generator(tensor.half() if self._half else tensor)
        return self._torch.cat((restored, occlusion), 1).float()

    def _graph_for(self, count: int):
        """The graph for ``count`` faces, captured on first use; None where it runs eagerly."""
        if count not in self._graphs:
            self._graphs[count] = self._capture(count) if self._cuda_graph else None
        return self._graphs[count]

    def _capture(self, count: int):
        """Warm up on our side stream, then capture one forward pass reading ``_device_in[:count]``.
        Any failure (an op that cannot be captured, a driver without graph support) is remembered
        and that batch size runs eagerly; the graph's outputs are its own static tensors."""
        torch = self._torch
        static_in = self._device_in[:count]
        try:
            # The weights and buffers were made on the default stream: our stream waits for them.
            self._stream.wait_stream(torch.cuda.current_stream(self._device))
            with torch.inference_mode(), torch.cuda.stream(self._stream):
                for _ in range(GRAPH_WARMUP):
                    self._forward(static_in)
                self._stream.synchronize()
                graph = torch.cuda.CUDAGraph()
                with torch.cuda.graph(graph, stream=self._stream):
                    static_out = self._forward(static_in)
            return graph, static_out
        except Exception as error:  # torch and the driver raise many types; eager still works
            self.graph_errors[count] = f"{type(error).__name__}: {str(error)[:200]}"
            return None

    def _release(self):
        self._generator = None
        self._graphs = {}
        self._stream = self._device_in = self._host_in = self._host_out = None


def shape_of(generator, size: int) -> dict:
    """The ``model`` entry of a `.pt` file: what ``engines.network.from_state_dict`` builds."""
    refiner = getattr(generator, "refiner", None)  # a Refined network: its generator and refiner
    base = generator.generator if refiner is not None else generator
    shape = {"width": base.width, "bottleneck_blocks": len(base.bottleneck), "size": size}
    if refiner is not None:
        shape["refiner"] = {"width": refiner.width, "blocks": len(refiner.middle)}
    return shape


def save_generator(path: str | Path, generator, size: int, metadata: dict) -> None:
    """Write a `.pt` generator file (weights and metadata only) atomically."""
    import io

    import torch

    from engines.atomic import atomic_write_bytes

    buffer = io.BytesIO()
    torch.save({"format": GENERATOR_FORMAT,
                "model": shape_of(generator, size),
                "state_dict": generator.state_dict(), "metadata": metadata}, buffer)
    atomic_write_bytes(path, buffer.getvalue())


def load(path: Path, device: str | None = None, half: bool | None = None, threads: int = 0, cuda_graph: bool = True,
         **_ignored) -> TorchEngine:
    return TorchEngine(path, device=device, half=half, threads=threads, cuda_graph=cuda_graph)

