"""PyTorch backend: our `.pt` generator files and the trainer's `.ckpt` checkpoints, read with
weights_only=True (never unpickling code). CUDA in fp16 when a GPU is present, else CPU fp32."""
from __future__ import annotations

from pathlib import Path

from engines import Engine, EngineError, EngineSpec
from engines.metadata import validate

GENERATOR_FORMAT = "deocc-generator-1"
MAX_BATCH = 16


class TorchEngine(Engine):
    def __init__(self, path: Path, device: str | None = None, half: bool | None = None, threads: int = 0):
        import torch

        from engines.network import Generator

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
            metadata = {"crop_size": int(shape["size"]), "outputs": ["restored", "occlusion"]}
        else:
            raise EngineError(f"{path}: not a deocc-live generator file")
        validate(metadata, str(path))
        generator = Generator(width=shape["width"], bottleneck_blocks=shape["bottleneck_blocks"])
        try:
            generator.load_state_dict(weights)
        except RuntimeError as error:
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

    def _infer(self, batch):
        torch = self._torch
        with torch.inference_mode():
            tensor = torch.from_numpy(batch).to(self._device)
            restored, occlusion = self._generator(tensor.half() if self._half else tensor)
            return (restored.float().cpu().numpy(), occlusion.float().cpu().numpy())

    def _release(self):
        self._generator = None


def save_generator(path: str | Path, generator, size: int, metadata: dict) -> None:
    """Write a `.pt` generator file (weights and metadata only) atomically."""
    import io

    import torch

    from engines.atomic import atomic_write_bytes

    buffer = io.BytesIO()
    torch.save({"format": GENERATOR_FORMAT,
                "model": {"width": generator.width, "bottleneck_blocks": len(generator.bottleneck), "size": size},
                "state_dict": generator.state_dict(), "metadata": metadata}, buffer)
    atomic_write_bytes(path, buffer.getvalue())


def load(path: Path, device: str | None = None, half: bool | None = None, threads: int = 0, **_ignored) -> TorchEngine:
    return TorchEngine(path, device=device, half=half, threads=threads)

