"""`deocc-train refine`: train the generator's refiner (``engines.network.Refiner``) with the
generator frozen, on the samples `fit` draws (the same online occluders, crop errors, degrading
and uncovered share as the checkpoint's own training), on the squared error at half the crop's
size, where the face was covered (and a twentieth of it elsewhere). With ``--engine`` it corrects
what the checkpoint's own export makes of each crop and its mirror image instead (the int8 file
is what the app runs on a CPU). Writes the checkpoint again with the refiner in it: `export`,
`quantize` and every engine then run the generator and its refiner as one network."""
from __future__ import annotations

import math
import signal
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader

from engines.network import Refined, Refiner, parameter_count
from trainer import checkpoint
from trainer.configs import RefineConfig
from trainer.data import PairDataset, StepBatchSampler, fixed_batch, validation_set
from trainer.fit import _loader_worker_init, occluders_from_summary

OUTSIDE_WEIGHT = 0.05  # of an uncovered pixel's squared error against a covered one's


def _half(x: torch.Tensor) -> torch.Tensor:
    return F.avg_pool2d(x, 2)


def _generated(model: Refined, occluded):
    """The frozen generator's restored face and mask (its forward pass channels-last: about
    half the time on a CPU), back in the default layout for the refiner."""
    with torch.no_grad():
        restored, predicted = model.generator(occluded.contiguous(memory_format=torch.channels_last))
    return restored.contiguous(), predicted.contiguous()


def _passes(model: Refined, engine, occluded) -> list[tuple]:
    """What the refiner corrects: (crop, restored face, mask, mirrored) for each pass. The frozen
    generator's one pass; or, with an engine, as the app runs it (the generate stage's mirror
    pass): the crop and its mirror image through the engine, each refined in its own orientation
    and the two then averaged, as the exported network and the app do."""
    if engine is None:
        return [(occluded, *_generated(model, occluded), False)]
    both = torch.cat([occluded, occluded.flip(3)]).numpy()
    limit = engine.spec.max_batch
    answers = [engine.infer(both[start:start + limit]) for start in range(0, len(both), limit)]
    restored = torch.from_numpy(np.concatenate([a[0] for a in answers]).astype(np.float32))
    predicted = torch.from_numpy(np.concatenate([a[1] for a in answers]).astype(np.float32))
    count = len(occluded)
    return [(occluded, restored[:count], predicted[:count], False),
            (occluded.flip(3), restored[count:], predicted[count:], True)]


def _refined(refiner: Refiner | None, passes) -> torch.Tensor:
    """The restored face at half size, each pass refined by ``refiner`` (unless None), the passes
    put back in the crop's orientation and averaged."""
    faces = []
    for occluded, restored, predicted, mirrored in passes:
        face = _half(restored)
        if refiner is not None:
            face = face + refiner(_half(occluded), face, _half(predicted))
        faces.append(face.flip(3) if mirrored else face)
    return faces[0] if len(faces) == 1 else sum(faces) / len(faces)


def refined_loss(refiner: Refiner, passes, clean, mask) -> torch.Tensor:
    """Squared error of the refined face at half size, weighted to the covered pixels."""
    weight = OUTSIDE_WEIGHT + (_half(mask) > 0.5).float()
    return ((_refined(refiner, passes) - _half(clean)) ** 2 * weight).sum() / (weight.sum() * 3)


def covered_psnr(refiner: Refiner | None, passes, clean, mask) -> float:
    """Mean PSNR over the covered pixels (at half size) of samples with any, in [0, 1] units: the
    generator's restored face (``passes``), refined by ``refiner`` unless it is None."""
    with torch.no_grad():
        ours = _refined(refiner, passes)
        covered = (_half(mask) > 0.5).float()
        error = ((ours.clamp(-1, 1) - _half(clean)) ** 2 * covered).sum(dim=(1, 2, 3)) / 4
        count = covered.sum(dim=(1, 2, 3)) * 3
        keep = count > 0
        if not keep.any():
            return float("nan")
        return float((10 * torch.log10(count[keep] / error[keep].clamp_min(1e-10))).mean())


def _engine(config: RefineConfig, state: dict):
    """The engine whose outputs the refiner is trained on: the checkpoint's own generator (the
    same training steps), at its crop size, without a refiner of its own."""
    from engines import open_engine

    engine = open_engine(config.engine, threads=config.threads)
    training = engine.spec.metadata.get("training", {})
    problem = None
    if engine.spec.crop_size != int(state["model"]["size"]):
        problem = (f"{config.engine} takes {engine.spec.crop_size} px crops; {config.ckpt} makes "
                   f"{state['model']['size']} px")
    elif training.get("refiner"):
        problem = f"{config.engine} already has a refiner: give the generator's own export"
    elif training.get("steps") != state["step"]:
        problem = (f"{config.engine} is not {config.ckpt}'s generator (trained {training.get('steps')} "
                   f"steps, the checkpoint {state['step']}): export and quantise the checkpoint first")
    if problem:
        engine.close()
        raise ValueError(problem)
    return engine


def _model(state: dict, config: RefineConfig) -> Refined:
    generator = checkpoint.generator_from(state)
    if isinstance(generator, Refined):  # trained on from the refiner it has
        shape = state["model"]["refiner"]
        if (shape["width"], shape["blocks"]) != (config.width, config.blocks):
            raise ValueError(f"{config.ckpt} has a refiner of width {shape['width']} and {shape['blocks']} blocks: "
                             "give those, or a checkpoint without a refiner")
        return generator
    if config.width % 8:
        raise ValueError("--width must be a multiple of 8")
    return Refined(generator, Refiner(config.width, config.blocks))


def run(config: RefineConfig) -> dict:
    if config.threads:
        torch.set_num_threads(config.threads)
    state = checkpoint.load(config.ckpt)
    engine = _engine(config, state) if config.engine else None  # checked before the data is loaded
    try:
        return _train(config, state, engine)
    finally:
        if engine is not None:
            engine.close()


def _train(config: RefineConfig, state: dict, engine) -> dict:
    from trainer import misalign
    from trainer.occluders import OccluderBank

    trained = state.get("config", {})
    occluders = config.occluders or occluders_from_summary(config.data)
    if not occluders or not Path(occluders).is_dir():
        raise FileNotFoundError("no occluder folder: give --occluders (the refiner trains on online occlusion)")
    bank = OccluderBank.load(occluders)
    train_set = PairDataset(config.data, "train", int(state["model"]["size"]), bank=bank, augment=True,
                            misalign=misalign.load(trained.get("misalign", "auto")),
                            crop_jitter=trained.get("crop_jitter", 0.0), degrade=trained.get("degrade", 0.0),
                            uncovered=trained.get("uncovered", 0.0), mono=trained.get("mono", 0.0))
    if not train_set.online:
        raise ValueError(f"{config.data} has no landmarks for online occlusion")
    torch.manual_seed(config.seed)
    model = _model(state, config)
    earlier = int(state.get("refine", {}).get("steps", 0)) if state.get("refiner") else 0  # a refiner trained on
    model.generator.eval().requires_grad_(False).to(memory_format=torch.channels_last)
    refiner = model.refiner.train()
    optimiser = torch.optim.AdamW(refiner.parameters(), lr=config.lr, weight_decay=1e-4)
    val_occluded, val_clean, val_mask = fixed_batch(validation_set(config.data, train_set.size), 64)
    val = (_passes(model, engine, val_occluded), val_clean, val_mask)  # the frozen generator's answers, once
    before = covered_psnr(None, *val)
    print(f"refiner {parameter_count(refiner):,} parameters on a generator of {parameter_count(model.generator):,}, "
          f"{len(train_set)} train faces; validation covered PSNR at half size: generator {before:.3f} dB", flush=True)
    sampler = StepBatchSampler(len(train_set), config.batch, config.seed, 0, config.steps)
    loader = DataLoader(train_set, batch_sampler=sampler, num_workers=config.workers,
                        prefetch_factor=4 if config.workers else None, worker_init_fn=_loader_worker_init)
    stop = []
    previous = {sig: signal.signal(sig, lambda *_: stop.append(1)) for sig in (signal.SIGINT, signal.SIGTERM)}
    start = last_save = time.monotonic()
    step, after = 0, before

    def save(final: bool) -> None:
        out = dict(state)
        out["model"] = {**state["model"], "refiner": {"width": config.width, "blocks": config.blocks,
                                                      "parameters": parameter_count(refiner)}}
        out["refiner"] = {name: tensor.detach().clone() for name, tensor in refiner.state_dict().items()}
        out["refine"] = {"steps": earlier + step, "batch": config.batch, "lr": config.lr, "seed": config.seed,
                         "engine": None if engine is None else {"file": Path(config.engine).name,
                                                                "precision": engine.spec.precision,
                                                                "mirror_pass": True},
                         "elapsed_s": round(time.monotonic() - start, 1), "finished": final,
                         "validation_psnr_half": {"generator": round(before, 3), "refined": round(after, 3)}}
        out.pop("format", None)
        checkpoint.save(config.out, out)

    try:
        for occluded, clean, mask in loader:
            if stop:
                break
            for group in optimiser.param_groups:
                group["lr"] = config.lr * 0.5 * (1 + math.cos(math.pi * step / config.steps))
            loss = refined_loss(refiner, _passes(model, engine, occluded), clean, mask)
            optimiser.zero_grad(set_to_none=True)
            loss.backward()
            optimiser.step()
            step += 1
            if step % config.log_every == 0 or step == config.steps:
                refiner.eval()
                after = covered_psnr(refiner, *val)
                refiner.train()
                print(f"step {step}: loss {loss.item():.5f}, validation covered PSNR {after:.3f} dB "
                      f"(generator {before:.3f}), {time.monotonic() - start:.0f} s", flush=True)
            if time.monotonic() - last_save > config.checkpoint_minutes * 60:
                save(False)
                last_save = time.monotonic()
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    refiner.eval()
    after = covered_psnr(refiner, *val)
    save(step >= config.steps)
    return {"out": config.out, "steps": step, "validation_psnr_half": {"generator": before, "refined": after}}
