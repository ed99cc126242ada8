"""Typed configurations of the trainer's commands; the CLI maps its options onto these.
Kept free of heavy imports so that `deocc-train --help` is instant."""
from __future__ import annotations

from dataclasses import dataclass


@dataclass
class SynthConfig:
    faces: str
    occluders: str
    out: str
    landmarker: str | None = None
    size: int = 128
    seed: int = 0
    limit: int = 0
    workers: int = 2
    variants: int = 1


@dataclass
class FitConfig:
    data: str
    out: str
    occluders: str | None = None
    steps: int = 20000
    batch: int = 8
    lr: float = 2e-4
    lr_d: float = 2e-4
    width: float = 1.0
    bottleneck_blocks: int = 2
    size: int = 0
    rec: float = 1.2
    ssim: float = 80.0
    adv: float = 0.5
    mask: float = 10.0
    hole: float = 4.0
    adv_start: int = 4000
    ema: float = 0.999
    checkpoint_minutes: float = 5.0
    checkpoint_every: int = 0  # steps; 0: by time only
    sample_every: int = 500
    log_every: int = 20
    seed: int = 0
    workers: int = 1
    threads: int = 0
    amp: str = "auto"
    channels_last: bool = True
    online: bool = True
    resume: bool = False
    init_from: str | None = None


@dataclass
class EvalConfig:
    data: str
    model: str
    out: str = ""
    split: str = "test"
    limit: int = 0
    batch: int = 32
    grid: int = 8
