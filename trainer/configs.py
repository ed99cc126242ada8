"""Typed configurations of the trainer's commands; the CLI maps its options onto these (each
field's help and allowed range live beside its default). Kept free of heavy imports so that
`deocc-train --help` is instant."""
from __future__ import annotations

import os
from dataclasses import dataclass, field

DATA_DEFAULT = os.environ.get("DEOCC_DATA", "../shared/data")


def option(default, help: str, low=None, high=None, choices=None):
    """A config field with its help text and, for numbers, its allowed range (inclusive)."""
    return field(default=default, metadata={"help": help, "range": (low, high), "choices": choices})


def required(help: str):
    return field(metadata={"help": help, "range": (None, None), "choices": None})


@dataclass
class SynthConfig:
    faces: str = required("folder of face pictures (searched recursively)")
    occluders: str = required("folder of occluder cut-outs (../shared/data/occluders)")
    out: str = required("folder to write the pairs to ({train,validation,test}/{Mask,Unmask,Occlusion,Landmarks})")
    landmarker: str | None = option(None, "MediaPipe face_landmarker.task (default: $DEOCC_MODEL_DIR or the user cache)")
    size: int = option(128, "side of the aligned crop in pixels", 32, 1024)
    seed: int = option(0, "seed of the occluders drawn", 0)
    limit: int = option(0, "use only the first N faces (0: all)", 0)
    workers: int = option(2, "processes running MediaPipe", 1, 64)
    variants: int = option(1, "occluded versions of each training face", 1, 64)


@dataclass
class FitConfig:
    data: str = required("pairs folder written by `deocc-train synth`, or a pack of one (`deocc-train pack`)")
    out: str = required("run folder: checkpoints, log.csv, sample grids")
    occluders: str | None = option(None, "occluder folder for online occlusion (default: the one synth used)")
    steps: int = option(20000, "train until this step", 1)
    batch: int = option(8, "samples per step (per process under torchrun)", 1, 4096)
    lr: float = option(2e-4, "generator learning rate", 0.0, 1.0)
    lr_d: float = option(2e-4, "discriminator learning rate", 0.0, 1.0)
    width: float = option(1.0, "generator width multiplier (1.0: 1.3 M parameters)", 0.1, 8.0)
    bottleneck_blocks: int = option(2, "residual blocks at the bottleneck", 0, 16)
    size: int = option(0, "crop size to train at (0: the pairs' own)", 0, 1024)
    rec: float = option(1.2, "weight of the L1 reconstruction loss", 0.0)
    ssim: float = option(80.0, "weight of the SSIM loss", 0.0)
    adv: float = option(0.5, "weight of the adversarial loss (0: none)", 0.0)
    mask: float = option(10.0, "weight of the occlusion-mask loss", 0.0)
    hole: float = option(4.0, "extra L1 weight inside the covered region", 0.0)
    recall: float = option(0.7, "weight of missed covered pixels in the mask's Tversky loss (0.5: Dice)", 0.0, 1.0)
    printed: float = option(0.0, "share of online face masks with a print on them (a mouth, bold shapes; 0: none)", 0.0, 1.0)
    frames: float = option(0.0, "share of online glasses drawn as thin frames (procedural rims, bridge and temples; "
                           "0: cut-outs only)", 0.0, 1.0)
    feature_match: float = option(0.0, "weight of discriminator feature matching: the L1 between the discriminator's "
                                  "activations on the truth and on ours (0: none; trains the discriminator)", 0.0)
    detail: float = option(0.0, "weight of the local detail loss where covered: as much fine detail as the truth has nearby (0: none)", 0.0)
    colour: float = option(0.0, "weight of the covered region's mean colour error: the L1 between the mean colours "
                           "of ours and of the truth where covered (0: none)", 0.0)
    hole_mean: float = option(0.0, "weight of the L1 over each sample's own covered pixels, averaged over the covered "
                              "samples: a thin frame counts as much as a face mask (0: none)", 0.0)
    mse: float = option(0.0, "weight of the squared error over the covered pixels, which PSNR scores (L1 and SSIM "
                        "aim at the median guess of a hidden face, PSNR at the mean; 0: none)", 0.0)
    adv_start: int = option(4000, "step at which the discriminator joins", 0)
    ema: float = option(0.999, "decay of the generator's moving average (the weights shipped)", 0.0, 1.0)
    checkpoint_minutes: float = option(5.0, "minutes between checkpoints", 0.01)
    checkpoint_every: int = option(0, "also checkpoint every N steps (0: by time only)", 0)
    snapshots: bool = option(False, "also keep each checkpoint's EMA generator as OUT/snapshots/ema_STEP.ckpt (about "
                             "5 MB, no optimiser: export and average read it), to choose among a run's steps")
    sample_every: int = option(500, "steps between validation scores and sample grids", 1)
    log_every: int = option(20, "steps between log lines", 1)
    seed: int = option(0, "seed of sample order and online occluders", 0)
    workers: int = option(1, "data loader processes (0: load in the training process)", 0, 128)
    threads: int = option(0, "torch threads (0: torch's default)", 0, 1024)
    amp: str = option("auto", "mixed precision: auto (bf16 where the CPU or GPU has it), bf16, off",
                      choices=("auto", "bf16", "off"))
    channels_last: bool = option(True, "channels-last memory format (faster on CPUs and tensor cores)")
    online: bool = option(True, "draw a fresh occluder for every sample (needs the landmarks synth stores)")
    resume: bool = option(False, "continue from OUT/last.ckpt exactly where it stopped")
    init_from: str | None = option(None, "start from another checkpoint's weights (names and shapes that match)")
    misalign: str = option("auto", "replay the crop errors of landmarks found on covered faces (`deocc-train "
                           "misalign`): auto (the file shipped with the trainer), off, or a file")
    crop_jitter: float = option(0.0, "on half the samples, move the crop further than the recorded errors: up to this "
                                "share of its width each way, scale by up to e^(1.5 x it), turn by up to 60 x it "
                                "degrees (0: none)", 0.0, 0.3)
    degrade: float = option(0.0, "share of samples degraded as real footage is: the face at a lower resolution and/or "
                            "noisy (truth too), the covered input as JPEG at quality 30-85 (0: none)", 0.0, 1.0)
    uncovered: float = option(0.0, "share of samples with no cover at all (the input is the truth, the mask empty): "
                              "the mask head learns that an uncovered face, its hair and what is beside it are "
                              "not a cover (0: none)", 0.0, 0.5)
    mono: float = option(0.0, "share of samples in black and white, input and truth, as an infrared webcam or a "
                         "black-and-white photo gives them (0: none)", 0.0, 1.0)
    frozen_norm: bool = option(False, "keep the generator's BatchNorm layers at their running statistics while "
                               "training (normalised as the app runs it, the statistics not updated): for a "
                               "small batch resuming a generator trained at a large one")
    echo: int = option(1, "train on each drawn batch this many steps in a row, mirrored on every other one: for a "
                       "GPU faster than its loader processes (1: every step its own batch)", 1, 16)
    data_bench: int = option(0, "only time the data path: load this many batches as training would (the same "
                             "workers, batch and augmentation), print samples/s, train and write nothing (0: train)", 0)


@dataclass
class RefineConfig:
    ckpt: str = required("training checkpoint whose generator is refined (kept frozen; a refiner it has already "
                         "is trained on)")
    data: str = required("pairs folder written by `deocc-train synth`, or a pack of one")
    out: str = required("checkpoint to write: the given one with its refiner")
    occluders: str | None = option(None, "occluder folder for online occlusion (default: the one synth used)")
    engine: str | None = option(None, "train on what this engine (the checkpoint's own export, say its int8 file) "
                                      "makes of each crop and its mirror image, as the app runs it, instead of the "
                                      "float generator's one pass")
    steps: int = option(4000, "refiner steps", 1)
    batch: int = option(32, "samples per step", 1, 4096)
    lr: float = option(1e-3, "peak learning rate (cosine down to zero over the steps)", 0.0, 1.0)
    width: int = option(16, "refiner channels at half the crop's size (8 or more, a multiple of 8)", 8, 256)
    blocks: int = option(3, "refiner residual blocks at an eighth of the crop's size", 0, 16)
    seed: int = option(0, "seed of sample order and online occluders", 0)
    workers: int = option(1, "data loader processes (0: load in the training process)", 0, 128)
    threads: int = option(0, "torch threads (0: torch's default)", 0, 1024)
    checkpoint_minutes: float = option(10.0, "minutes between writes of OUT while training", 0.01)
    log_every: int = option(200, "steps between log lines with the validation score", 1)


@dataclass
class PackConfig:
    data: str = required("pairs folder written by `deocc-train synth`")
    out: str = required("folder to write the pack to (new or empty)")
    occluders: str | None = option(None, "occluder folder (default: the one synth used)")
    limit: int = option(0, "training faces to keep, spread over the sources (0: all)", 0)
    validation: int = option(64, "validation pairs to keep (fit scores the first 16)", 1)
    quality: int = option(85, "WebP quality of the crops", 1, 100)


@dataclass
class EvalConfig:
    data: str = required("pairs folder written by `deocc-train synth`")
    model: str = required("generator to score: .onnx, .pt or a training checkpoint")
    out: str = option("", "folder for eval.json, eval.md and the picture grid (default: an eval folder beside the model)")
    split: str = option("test", "split to score", choices=("train", "validation", "test"))
    limit: int = option(0, "score only the first N pairs (0: all)", 0)
    batch: int = option(32, "crops per generator call", 1, 4096)
    grid: int = option(8, "rows in the picture grid", 0, 64)


@dataclass
class EndToEndConfig:
    model: str = required("generator to score: .onnx, .pt or a training checkpoint")
    data: str = option(DATA_DEFAULT, "data folder with faces/, occluders/ and occluded_real/ "
                       "(only the faces of --split are used; default: $DEOCC_DATA or ../shared/data)")
    out: str = option("runs/e2e", "folder for e2e.json, e2e.md and the pictures")
    per_kind: int = option(30, "pictures per occluder kind (mask, glasses, hand, cup, microphone, phone)", 1, 10000)
    real: int = option(40, "real masked photos to run and show (no truth exists for them)", 0, 10000)
    size: str = option("1280x720", "frame size of the pictures")
    split: str = option("test", "faces of this split (choose models on validation, report on test)",
                        choices=("validation", "test"))
    seed: int = option(0, "seed of faces, placements and occluders", 0)
    jpeg: int = option(0, "pictures and clip frames as a camera's codec leaves them: JPEG at this quality before the "
                       "app sees them, the truth as drawn (0: as drawn)", 0, 100)
    mono: bool = option(False, "pictures, clip frames and their truth in black and white, as an infrared webcam or a "
                        "black-and-white photo gives them")
    landmarker: str | None = option(None, "MediaPipe face_landmarker.task (default: $DEOCC_MODEL_DIR or the user cache)")


@dataclass
class MemoryEvalConfig:
    model: str = required("generator to run: .onnx, .pt or a training checkpoint")
    data: str = option(DATA_DEFAULT, "data folder with faces/ and occluders/ (only the faces of --split are used; "
                       "default: $DEOCC_DATA or ../shared/data)")
    out: str = option("runs/memory", "folder for memory.json, memory.md and memory_strip.jpg")
    per_kind: int = option(3, "still clips per occluder kind (hand, cup, microphone, mask); one clip per kind "
                           "for each head motion (tilt, closer, turn) comes on top", 1, 1000)
    length: int = option(60, "frames a clip (20 uncovered, 10 coming in, the rest covered)", 40, 3000)
    split: str = option("test", "faces of this split", choices=("validation", "test"))
    seed: int = option(0, "seed of faces and occluders", 0)
    strip_kind: str = option("hand", "occluder of the clip shown in memory_strip.jpg",
                             choices=("hand", "cup", "microphone", "mask"))
    landmarker: str | None = option(None, "MediaPipe face_landmarker.task (default: $DEOCC_MODEL_DIR or the user cache)")


@dataclass
class MisalignConfig:
    data: str = option(DATA_DEFAULT, "data folder with faces/ and occluders/ (its training-split faces are used; "
                       "default: $DEOCC_DATA or ../shared/data)")
    out: str = option("trainer/misalignment.json", "file to write the recorded crop errors to")
    count: int = option(400, "covered faces to record", 10, 100000)
    seed: int = option(0, "seed of faces and occluders", 0)
    landmarker: str | None = option(None, "MediaPipe face_landmarker.task (default: $DEOCC_MODEL_DIR or the user cache)")


@dataclass
class FinderConfig:
    data: str = required("pairs folder written by `deocc-train synth` (faces and their landmarks)")
    occluders: str = required("occluder folder (its training subset covers the faces)")
    out: str = option("runs/finder", "folder for finder.onnx and log.json")
    real: str | None = option(None, "folder of real masked photos (../shared/data/occluded_real)")
    real_labels: str | None = option(None, "JSON of MediaPipe's five points on those photos (`deocc-train "
                                     "finder-labels`); the e2e's real photos are never trained on")
    steps: int = option(6000, "training steps", 1)
    batch: int = option(64, "windows a step", 1, 4096)
    lr: float = option(3e-3, "peak learning rate (one cycle)", 0.0, 1.0)
    width: float = option(1.0, "width multiplier", 0.1, 8.0)
    point_weight: float = option(20.0, "weight of the points' loss beside the score's", 0.0)
    cut: float = option(0.0, "share of faces shown cut by the picture's edge (a photo cut at the brows or "
                        "the lip, a face half out of the frame): only the part of the picture inside a "
                        "random box around the eyes", 0.0, 1.0)
    lone: float = option(0.0, "share of the windows without a face that show a cut-out alone (a hand, a cup, "
                         "a phone, glasses) as large as a face, near the centre and turned", 0.0, 1.0)
    validation: int = option(2000, "validation windows scored", 1, 100000)
    log_every: int = option(50, "steps between log lines", 1)
    workers: int = option(1, "window-making processes", 0, 128)
    threads: int = option(0, "torch threads (0: torch's default)", 0, 1024)
    seed: int = option(0, "seed of the windows", 0)


@dataclass
class FinderLabelsConfig:
    real: str = required("folder of real masked photos (../shared/data/occluded_real)")
    out: str = required("JSON file to write: each photo's faces, five points each")
    landmarker: str | None = option(None, "MediaPipe face_landmarker.task (default: $DEOCC_MODEL_DIR or the user cache)")
