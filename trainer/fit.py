"""`deocc-train fit`: train the generator (L1 + SSIM + mask loss, then adversarial), with
checkpoints every few minutes, exact resume, CSV log and sample grids. Runs data-parallel under
torchrun (gloo on CPU, nccl on GPU)."""
from __future__ import annotations

import contextlib
import copy
import csv
import io
import json
import os
import signal
import subprocess
import time
from dataclasses import asdict
from pathlib import Path

import cv2
import numpy as np
import torch
from torch.utils.data import DataLoader

from trainer import checkpoint
from trainer.data import PairDataset, StepBatchSampler, fixed_batch, to_image, validation_set
from trainer.losses import LossWeights, as_floats, discriminator_loss, generator_loss
from engines.atomic import atomic_write_bytes
from engines.network import Generator, parameter_count
from trainer.model import Discriminator
from trainer.configs import FitConfig
from trainer.util import progress


def git_commit() -> str:
    try:
        return subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                              cwd=Path(__file__).resolve().parent, timeout=5).stdout.strip() or "unknown"
    except OSError:
        return "unknown"


def _loader_worker_init(_worker: int) -> None:
    """Each loader process draws with one OpenCV thread: the processes are the parallelism, and
    OpenCV's own pool in each of them (as many threads as cores) would make workers x cores.
    And it leaves stopping to the trainer: Ctrl-C in a terminal and `timeout`'s SIGTERM reach the
    whole process group, and a worker killed by them would break the batch the trainer is on
    before it saves; the trainer stops its workers itself once it has."""
    cv2.setNumThreads(1)
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, signal.SIG_IGN)


def occluders_from_summary(data) -> str | None:
    """The occluder folder synth drew from, as the pairs folder's summary names it (a pack's own copy)."""
    summary = Path(data) / "summary.json"
    if summary.is_file():
        with contextlib.suppress(ValueError, KeyError):
            written = json.loads(summary.read_text())
            if "pack" in written:  # a pack's own copy, named relative to the pack
                return str(Path(data) / written["config"]["occluders"])
            return written["config"]["occluders"]
    return None


def autocast_dtype(config: FitConfig, device: torch.device):
    """bf16 autocast where the hardware runs it natively (AVX-512 BF16/AMX on CPU, any recent
    CUDA GPU); none otherwise."""
    if config.amp == "off":
        return None
    if device.type == "cuda":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    if config.amp == "bf16":
        return torch.bfloat16
    flags = ""
    with contextlib.suppress(OSError):
        flags = Path("/proc/cpuinfo").read_text()
    return torch.bfloat16 if ("avx512_bf16" in flags or "amx_bf16" in flags) else None


def load_matching(module: torch.nn.Module, weights: dict) -> tuple[int, int]:
    """Copy the parameters whose names and shapes match (fine-tune from another run)."""
    own = module.state_dict()
    matched = {k: v for k, v in weights.items() if k in own and own[k].shape == v.shape}
    own.update(matched)
    module.load_state_dict(own)
    return len(matched), len(own)


def quiet_new_blocks(generator, weights: dict) -> None:
    """Bottleneck blocks that the source checkpoint lacks (a run grown with --bottleneck-blocks
    from a smaller one) start as identities: their last batch norm's scale is zeroed, so the grown
    generator first paints what the source painted and the new blocks learn a correction."""
    for index, block in enumerate(generator.bottleneck):
        if not any(name.startswith(f"bottleneck.{index}.") for name in weights):
            torch.nn.init.zeros_(block.body[-1].weight)
            torch.nn.init.zeros_(block.body[-1].bias)


LOG_COLUMNS = ["time", "step", "l1", "ssim", "mask", "adv", "d", "total", "samples_per_s", "eta_min",
               "val_psnr", "val_hole_psnr", "val_iou", "detail", "fm", "colour", "hole_mean", "mse"]


def _widen_log(path: Path) -> None:
    """A log begun by an older trainer (fewer columns) is rewritten once with today's columns,
    its rows kept (new columns empty), so the rows a resumed run appends line up."""
    with open(path, newline="") as handle:
        header = next(csv.reader(handle), None)
    if header is None or header == LOG_COLUMNS or not set(header) < set(LOG_COLUMNS):
        return
    with open(path, newline="") as handle:
        rows = list(csv.DictReader(handle))
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=LOG_COLUMNS, extrasaction="ignore", restval="", lineterminator="\r\n")
    writer.writeheader()
    writer.writerows(rows)
    atomic_write_bytes(path, out.getvalue().encode())


class Trainer:
    def __init__(self, config: FitConfig):
        self.config = config
        self.world = int(os.environ.get("WORLD_SIZE", "1"))
        self.rank = int(os.environ.get("RANK", "0"))
        local_rank = int(os.environ.get("LOCAL_RANK", "0"))
        if torch.cuda.is_available():
            self.device = torch.device("cuda", local_rank)
            torch.cuda.set_device(self.device)
            torch.backends.cudnn.benchmark = True  # one crop size throughout: pick each conv's fastest kernel once
        else:
            self.device = torch.device("cpu")
        if self.world > 1:
            import torch.distributed as dist

            dist.init_process_group("nccl" if self.device.type == "cuda" else "gloo")
        if config.threads:
            torch.set_num_threads(config.threads)
        self.out = Path(config.out)
        self.main = self.rank == 0
        self.stop_requested = False

    def build(self):
        config = self.config
        if config.size and (config.size % 16 or config.size < 32):
            raise ValueError(f"--size must be 0 (the pairs' own) or a multiple of 16 from 32, got {config.size}")
        bank = None
        occluders = config.occluders or occluders_from_summary(config.data)
        if config.online and occluders and Path(occluders).is_dir():
            from trainer.occluders import OccluderBank

            bank = OccluderBank.load(occluders)
            bank.printed = config.printed
            bank.frames = config.frames
        from trainer import misalign

        self.train_set = PairDataset(config.data, "train", config.size or None, bank=bank, augment=True,
                                     misalign=misalign.load(config.misalign), crop_jitter=config.crop_jitter,
                                     degrade=config.degrade, uncovered=config.uncovered,
                                     mono=config.mono)
        self.size = self.train_set.size
        if self.size % 16:  # four halvings down the U-Net and back: a side 16 does not divide cannot come back
            raise ValueError(f"the pairs are {self.size} px, which 16 does not divide: train with --size "
                             f"{max(32, self.size // 16 * 16)} (a multiple of 16)")
        self.val_set = validation_set(config.data, self.size)
        torch.manual_seed(config.seed)
        self.generator = Generator(config.width, config.bottleneck_blocks).to(self.device)
        self.discriminator = Discriminator().to(self.device)
        if config.channels_last:
            self.generator = self.generator.to(memory_format=torch.channels_last)
            self.discriminator = self.discriminator.to(memory_format=torch.channels_last)
        self.ema = copy.deepcopy(self.generator).eval()
        for p in self.ema.parameters():
            p.requires_grad_(False)
        self.opt_g = torch.optim.Adam(self.generator.parameters(), lr=config.lr, betas=(0.5, 0.999))
        self.opt_d = torch.optim.Adam(self.discriminator.parameters(), lr=config.lr_d, betas=(0.5, 0.999))
        self.step = 0
        self.elapsed = 0.0
        # Where a run grown or fine-tuned by --init-from came from (step, time, shape of its source):
        # carried by every checkpoint after it, so the model card counts all the training.
        self.origin: dict | None = None
        # Averaged checkpoints this run was resumed from (``deocc-train average``), oldest first:
        # a run resumed from a mean of runs says so on its card.
        self.resumed_means: list[dict] = []
        # Stretches of training alike in batch, processes, echo and device ({from_step, to_step,
        # batch, world, echo, device, elapsed_s}), oldest first: the card says where the steps were taken.
        self.stretches: list[dict] = []
        self._stretch_began: tuple[float, float] | None = None  # (run's, stretch's elapsed_s) when it began
        if self.main and self.out.is_dir():
            # A run killed while writing (kill -9, power loss) leaves its half-written temporary
            # files: the checkpoint it was replacing is intact, and they are of no use.
            for stale in self.out.glob(".*.tmp"):
                stale.unlink(missing_ok=True)
        if config.resume and (self.out / "last.ckpt").is_file():
            self._restore(checkpoint.load(self.out / "last.ckpt", self.device))
        elif config.resume:
            raise checkpoint.CheckpointError(f"--resume: no checkpoint at {self.out / 'last.ckpt'}")
        elif config.init_from:
            state = checkpoint.load(config.init_from, self.device)
            source = state.get("generator_ema") or state["generator"]
            matched, total = load_matching(self.generator, source)
            quiet_new_blocks(self.generator, source)
            self.origin = {"init_from": str(config.init_from), "step": int(state.get("step", 0)),
                           "elapsed_s": float(state.get("elapsed_s", 0.0)), "model": state.get("model"),
                           "origin": state.get("origin")}
            self.ema.load_state_dict(self.generator.state_dict())
            if "discriminator" in state:
                load_matching(self.discriminator, state["discriminator"])
            if self.main:
                print(f"init-from {config.init_from}: {matched}/{total} generator tensors matched")
        self.g_train = self.generator
        self.d_train = self.discriminator
        if self.world > 1:
            from torch.nn.parallel import DistributedDataParallel as DDP

            ids = [self.device.index] if self.device.type == "cuda" else None
            self.g_train = DDP(self.generator, device_ids=ids)
            self.d_train = DDP(self.discriminator, device_ids=ids)
        self.weights = LossWeights(config.rec, config.ssim, config.adv, config.mask, config.hole, config.recall, config.detail,
                                   config.feature_match, config.colour, config.hole_mean, config.mse)
        self.amp = autocast_dtype(config, self.device)

    def _restore(self, state: dict):
        if "opt_g" not in state:
            raise checkpoint.CheckpointError("--resume: OUT/last.ckpt is a snapshot (the EMA generator alone, "
                                             "`fit --snapshots`): a run resumes from a whole checkpoint")
        shape = state["model"]
        if (shape["width"], shape["bottleneck_blocks"]) != (self.config.width, self.config.bottleneck_blocks):
            raise checkpoint.CheckpointError(
                f"--resume: the checkpoint has width {shape['width']}, {shape['bottleneck_blocks']} bottleneck "
                f"blocks; this run asks for {self.config.width}, {self.config.bottleneck_blocks}")
        self.generator.load_state_dict(state["generator"])
        self.discriminator.load_state_dict(state["discriminator"])
        self.ema.load_state_dict(state["generator_ema"])
        self.opt_g.load_state_dict(state["opt_g"])
        self.opt_d.load_state_dict(state["opt_d"])
        for group in self.opt_g.param_groups:
            group["lr"] = self.config.lr
        for group in self.opt_d.param_groups:
            group["lr"] = self.config.lr_d
        torch.set_rng_state(state["rng"]["torch"].cpu())
        self.step = int(state["step"])
        self.elapsed = float(state.get("elapsed_s", 0.0))
        self.origin = state.get("origin")
        self.resumed_means = list(state.get("resumed_means") or [])
        self.stretches = [dict(stretch) for stretch in state.get("stretches") or [checkpoint.first_stretch(state)]]
        if state.get("averaged"):
            self.resumed_means.append({"step": self.step, "averaged": state["averaged"]})
        if state.get("refiner") and self.main:
            print("--resume: the checkpoint's refiner is left behind (it was trained on the generator as it was): "
                  "train one again with `deocc-train refine` once this run is done")

    def state(self) -> dict:
        return {
            "step": self.step,
            "elapsed_s": self.elapsed,
            "origin": self.origin,
            "resumed_means": self.resumed_means,
            "stretches": self._stretches_now(),
            "config": asdict(self.config),
            "model": {"width": self.config.width, "bottleneck_blocks": self.config.bottleneck_blocks,
                      "size": self.size, "parameters": parameter_count(self.generator)},
            "generator": self.generator.state_dict(),
            "generator_ema": self.ema.state_dict(),
            "discriminator": self.discriminator.state_dict(),
            "opt_g": self.opt_g.state_dict(),
            "opt_d": self.opt_d.state_dict(),
            "rng": {"torch": torch.get_rng_state()},
            "trainer_commit": git_commit(),
            "data": {"root": str(self.config.data), "train_pairs": len(self.train_set),
                     "online_occlusion": self.train_set.online},
        }

    def save(self):
        if self.main:
            state = self.state()
            checkpoint.save(self.out / "last.ckpt", state)
            if self.config.snapshots:
                checkpoint.save(self.out / "snapshots" / f"ema_{self.step:07d}.ckpt", checkpoint.slim(state))

    def _autocast(self):
        if self.amp is None:
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=self.amp)

    def _prepare(self, tensor):
        tensor = tensor.to(self.device, non_blocking=True)
        return tensor.contiguous(memory_format=torch.channels_last) if self.config.channels_last else tensor

    def train_step(self, occluded, clean, mask):
        joined = self.step >= self.config.adv_start
        adversarial = joined and self.config.adv > 0
        matching = joined and self.config.feature_match > 0
        with self._autocast():
            restored, occlusion = self.g_train(occluded)
        composite = occlusion * restored + (1 - occlusion) * occluded
        parts = {}
        fake_for_g = fake_features = real_features = None
        if adversarial or matching:
            with self._autocast():
                real_logits = self.d_train(occluded, clean)
                fake_logits = self.d_train(occluded, composite.detach())
            d_loss, parts = discriminator_loss(real_logits, fake_logits, floats=False)
            self.opt_d.zero_grad(set_to_none=True)
            d_loss.backward()
            self.opt_d.step()
            with torch.no_grad(), self._autocast():  # the truth's activations, by the updated critic
                real_features = self.d_train(occluded, clean, features=True)[1] if matching else None
            for p in self.discriminator.parameters():
                p.requires_grad_(False)
            with self._autocast():
                fake_for_g, fake_features = self.d_train(occluded, composite, features=True)
        g_loss, g_parts = generator_loss(restored, occlusion, clean, mask, self.weights,
                                         fake_for_g if adversarial else None, fake_features, real_features,
                                         floats=False)
        self.opt_g.zero_grad(set_to_none=True)
        g_loss.backward()
        self.opt_g.step()
        if adversarial or matching:
            for p in self.discriminator.parameters():
                p.requires_grad_(True)
        self._update_ema()
        return {**g_parts, **parts}

    def _train_mode(self):
        """The generator in training mode; with `--frozen-norm` its BatchNorm layers stay in evaluation mode."""
        self.generator.train()
        if self.config.frozen_norm:
            for layer in self.generator.modules():
                if isinstance(layer, torch.nn.modules.batchnorm._BatchNorm):
                    layer.eval()

    @torch.no_grad()
    def _update_ema(self):
        decay = min(self.config.ema, (1 + self.step) / (10 + self.step))
        # One fused call per list rather than a kernel per tensor (hundreds of launches on a GPU).
        torch._foreach_lerp_(list(self.ema.parameters()), [p.detach() for p in self.generator.parameters()], 1 - decay)
        torch._foreach_copy_(list(self.ema.buffers()), list(self.generator.buffers()))

    @torch.no_grad()
    def validate(self, batch) -> dict[str, float]:
        occluded, clean, mask = (t.to(self.device) for t in batch)
        restored, occlusion = self.ema(occluded)
        composite = occlusion * restored + (1 - occlusion) * occluded
        covered = (mask > 0.5).float()
        squared = ((composite - clean) / 2) ** 2
        psnr = -10 * torch.log10(squared.mean(dim=(1, 2, 3)).clamp(min=1e-10))
        hole_mse = (squared * covered).sum(dim=(1, 2, 3)) / (3 * covered.sum(dim=(1, 2, 3))).clamp(min=1)
        predicted = (occlusion > 0.5).float()
        union = ((predicted + covered) > 0).float().sum(dim=(1, 2, 3)).clamp(min=1)
        iou = (predicted * covered).sum(dim=(1, 2, 3)) / union
        self._grid(occluded, composite, occlusion, clean)
        return {"val_psnr": float(psnr.mean()), "val_hole_psnr": float((-10 * torch.log10(hole_mse.clamp(min=1e-10))).mean()),
                "val_iou": float(iou.mean())}

    def _grid(self, occluded, composite, occlusion, clean):
        rows = []
        for i in range(min(8, len(occluded))):
            mask = cv2.cvtColor((occlusion[i, 0].float().cpu().numpy() * 255).astype(np.uint8), cv2.COLOR_GRAY2BGR)
            rows.append(np.hstack([to_image(occluded[i]), to_image(composite[i]), mask, to_image(clean[i])]))
        ok, data = cv2.imencode(".png", np.vstack(rows))
        if ok:
            atomic_write_bytes(self.out / "samples" / f"step_{self.step:07d}.png", data.tobytes())

    def _log(self, row: dict):
        path = self.out / "log.csv"
        new = not path.is_file()
        with open(path, "a", newline="") as handle:
            writer = csv.DictWriter(handle, fieldnames=LOG_COLUMNS, extrasaction="ignore", restval="")
            if new:
                writer.writeheader()
            writer.writerow(row)

    def _loader(self, steps: int):
        """Batches for the steps from here to ``steps``: one drawn batch for every ``echo`` steps."""
        config = self.config
        sampler = StepBatchSampler(len(self.train_set), config.batch, config.seed, self.step // config.echo,
                                   -(-steps // config.echo), self.rank, self.world)
        # Pinned batches on a GPU: the copy to it overlaps the step (non_blocking in _prepare).
        return sampler, DataLoader(self.train_set, batch_sampler=sampler, num_workers=config.workers,
                                   persistent_workers=False, prefetch_factor=4 if config.workers else None,
                                   pin_memory=self.device.type == "cuda", worker_init_fn=_loader_worker_init)

    def time_data(self) -> dict:
        """``data_bench`` batches loaded as training loads them (after one that starts the loader
        processes), timed: what the data path gives a GPU at most. Nothing is trained or written."""
        config = self.config
        _sampler, loader = self._loader(self.step + (config.data_bench + 1) * config.echo)
        batches = iter(loader)
        next(batches)
        start, samples = time.monotonic(), 0
        for occluded, _clean, _mask in batches:
            samples += len(occluded)
        rate = samples * self.world / max(time.monotonic() - start, 1e-6)
        if self.main:
            print(f"data path: {rate:.1f} samples/s ({config.data_bench} batches of {config.batch}, "
                  f"{config.workers} loader process(es){f' per rank, {self.world} ranks' if self.world > 1 else ''}; "
                  "nothing trained)", flush=True)
        return {"data_samples_per_s": rate}

    def run(self) -> dict:
        config = self.config
        self.build()
        if config.data_bench:
            try:
                return self.time_data()
            finally:
                self._end_process_group()
        if self.main:
            self.out.mkdir(parents=True, exist_ok=True)
            if (self.out / "log.csv").is_file():
                _widen_log(self.out / "log.csv")  # a resumed run's log, perhaps an older trainer's
            atomic_write_bytes(self.out / "config.json", json.dumps(asdict(config), indent=2).encode())
            print(f"generator {parameter_count(self.generator):,} parameters, crop {self.size}px, "
                  f"{len(self.train_set)} train pairs ({'online occlusion' if self.train_set.online else 'fixed pairs'}), "
                  f"autocast {self.amp}, device {self.device}, world {self.world}, from step {self.step}")
        self._begin_stretch()
        sampler, loader = self._loader(config.steps)
        val_batch = fixed_batch(self.val_set, 16)
        handlers = self._install_signal_handlers()
        last_save = time.monotonic()
        window_start, window_samples = time.monotonic(), 0
        bar = progress(loader, total=len(sampler), desc="fit", initial=0) if self.main else loader
        stats = {}
        try:
            for occluded, clean, mask in self._echoed(bar):
                if self.step >= config.steps:
                    break
                tick = time.monotonic()
                self._train_mode()
                parts = self.train_step(occluded, clean, mask)
                self.step += 1
                self.elapsed += time.monotonic() - tick
                window_samples += len(occluded) * self.world
                if self.main and (self.step % config.log_every == 0 or self.step == config.steps):
                    now = time.monotonic()
                    rate = window_samples / max(now - window_start, 1e-6)
                    window_start, window_samples = now, 0
                    eta = (config.steps - self.step) * config.batch * self.world / max(rate, 1e-6)
                    stats = {"step": self.step, **{k: round(v, 5) for k, v in as_floats(parts).items()},
                             "samples_per_s": round(rate, 2), "eta_min": round(eta / 60, 1)}
                    if hasattr(bar, "set_postfix"):
                        bar.set_postfix({k: v for k, v in stats.items() if k != "step"}, refresh=False)
                    else:
                        print(json.dumps(stats), flush=True)
                    self._log({"time": round(time.time(), 1), **stats})
                if self.main and (self.step % config.sample_every == 0 or self.step == config.steps):
                    val = self.validate(val_batch)
                    self._log({"time": round(time.time(), 1), "step": self.step, **val})
                    stats.update(val)
                by_steps = config.checkpoint_every and self.step % config.checkpoint_every == 0
                if by_steps or time.monotonic() - last_save > config.checkpoint_minutes * 60:
                    self.save()
                    last_save = time.monotonic()
                if self.stop_requested:
                    break
        finally:
            self.save()
            self._restore_signal_handlers(handlers)
            self._end_process_group()
        return {"step": self.step, **stats}

    def _echoed(self, loader):
        """Each step's batch: every drawn batch ``echo`` times in a row, mirrored on every other
        pass (a run resumed between them picks up at its pass). With loader processes that cannot
        keep up with a GPU, the GPU takes more steps from what they draw."""
        echo, first = self.config.echo, self.step % self.config.echo
        for tensors in loader:
            batch = [self._prepare(tensor) for tensor in tensors]
            for repeat in range(first, echo):
                yield batch if repeat % 2 == 0 else [self._prepare(tensor.flip(-1)) for tensor in batch]
            first = 0

    def _device_name(self) -> str:
        if self.device.type == "cuda":
            return torch.cuda.get_device_name(self.device)
        return f"{os.cpu_count()}-core CPU"

    def _begin_stretch(self) -> None:
        """This run's steps go on the last stretch when they continue it alike, else on a new one."""
        alike = {"batch": self.config.batch, "world": self.world, "echo": self.config.echo, "device": self._device_name()}
        last = self.stretches[-1] if self.stretches else None
        if not (last and last["to_step"] == self.step and all(last.get(k, 1) == v for k, v in alike.items())):
            self.stretches.append({"from_step": self.step, "to_step": self.step, **alike, "elapsed_s": 0.0})
        self._stretch_began = (self.elapsed, self.stretches[-1]["elapsed_s"])

    def _stretches_now(self) -> list[dict]:
        stretches = [dict(stretch) for stretch in self.stretches]
        if stretches and self._stretch_began is not None:
            elapsed_then, stretch_then = self._stretch_began
            stretches[-1].update(to_step=self.step, elapsed_s=stretch_then + self.elapsed - elapsed_then)
        return stretches

    def _end_process_group(self) -> None:
        if self.world > 1:
            import torch.distributed as dist

            dist.destroy_process_group()

    def _install_signal_handlers(self):
        def request_stop(signum, frame):
            self.stop_requested = True

        previous = {}
        for sig in (signal.SIGINT, signal.SIGTERM):
            with contextlib.suppress(ValueError):
                previous[sig] = signal.signal(sig, request_stop)
        return previous

    @staticmethod
    def _restore_signal_handlers(previous):
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def run(config: FitConfig) -> dict:
    return Trainer(config).run()
