"""Checkpoints: written through a temporary file and renamed, read with weights_only=True."""
from __future__ import annotations

import io
from pathlib import Path

import torch

from engines.atomic import atomic_write_bytes

FORMAT = "deocc-ckpt-1"


class CheckpointError(RuntimeError):
    """A checkpoint that is missing, unreadable or not ours."""


def save(path: str | Path, state: dict) -> None:
    buffer = io.BytesIO()
    torch.save({"format": FORMAT, **state}, buffer)
    atomic_write_bytes(path, buffer.getvalue())


def load(path: str | Path, map_location="cpu") -> dict:
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint not found: {path}")
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as error:  # torch raises many types for a damaged or foreign file
        raise CheckpointError(f"cannot read checkpoint {path}: {type(error).__name__}: {str(error).splitlines()[0][:200]}") from None
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        raise CheckpointError(f"{path} is not a deocc-live checkpoint")
    return state


def generator_from(state: dict, ema: bool = True):
    """The generator a checkpoint describes, in eval mode (its EMA weights by default)."""
    from engines.network import Generator

    shape = state["model"]
    generator = Generator(width=shape["width"], bottleneck_blocks=shape["bottleneck_blocks"])
    weights = state.get("generator_ema") if ema and state.get("generator_ema") else state["generator"]
    generator.load_state_dict(weights)
    return generator.eval()
