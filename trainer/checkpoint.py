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


def first_stretch(state: dict) -> dict:
    """The one stretch of a checkpoint written before stretches were recorded: all of it on this
    project's 2-core CPU at the batch its last run asked for (as all such training was)."""
    return {"from_step": 0, "to_step": int(state.get("step", 0)), "batch": int(state["config"]["batch"]), "world": 1,
            "echo": 1, "device": "2-core CPU", "elapsed_s": float(state.get("elapsed_s", 0.0))}


def generator_from(state: dict, ema: bool = True):
    """The generator a checkpoint describes, in eval mode (its EMA weights by default), with its
    refiner when it has one (``deocc-train refine``)."""
    from engines.network import build

    weights = state.get("generator_ema") if ema and state.get("generator_ema") else state["generator"]
    return build(state["model"], weights, state.get("refiner")).eval()


def slim(state: dict) -> dict:
    """A checkpoint's shipped part: the EMA generator and what describes it (step, config, stretches,
    model), without the raw weights, the optimisers and the discriminator; `fit --snapshots` keeps
    one per checkpoint, and export and average read it (a run cannot resume from it)."""
    return {key: value for key, value in state.items() if key not in ("generator", "discriminator", "opt_g", "opt_d")}


def average(paths: list, out: str | Path) -> dict:
    """One checkpoint whose generator weights (raw and EMA) are the mean of those of ``paths``:
    runs fine-tuned from one checkpoint with different seeds stay in one basin, where their mean
    often scores better than either (a "model soup"). The rest (step, optimiser, discriminator, config)
    is the first checkpoint's; ``averaged`` records each run's step, seed and training time, so
    the model card can say what the weights are."""
    if len(paths) < 2:
        raise ValueError("average: give at least two checkpoints")
    states = [load(path) for path in paths]
    first = states[0]
    for path, state in zip(paths[1:], states[1:]):
        if state["model"] != first["model"]:
            raise CheckpointError(f"{path} has another shape ({state['model']}) than {paths[0]} ({first['model']})")
        if state.get("origin") != first.get("origin") or state.get("resumed_means") != first.get("resumed_means"):
            raise CheckpointError(f"{path} was not started from the same weights as {paths[0]}")
    merged = dict(first)
    for key in ("generator", "generator_ema"):
        if not all(state.get(key) for state in states):
            merged.pop(key, None)  # slim checkpoints (``slim``) carry the EMA weights alone
            continue
        weights = [state[key] for state in states]
        merged[key] = {name: (sum(w[name].double() for w in weights) / len(weights)).to(tensor.dtype)
                       if tensor.is_floating_point() else tensor.clone() for name, tensor in weights[0].items()}
    if not merged.get("generator_ema") and not merged.get("generator"):
        raise CheckpointError("average: the checkpoints share no generator weights")
    merged["averaged"] = [{"step": int(state["step"]), "seed": int(state["config"].get("seed", 0)),
                           "elapsed_s": float(state.get("elapsed_s", 0.0))} for state in states]
    merged.pop("format", None)
    save(out, merged)
    return merged
