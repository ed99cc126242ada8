"""`deocc-train eval`: the test split scored for three rows in one table (the occluded input
unchanged, OpenCV Telea inpainting given the TRUE mask, our model as the app composites it),
written as JSON, Markdown and a PNG grid (occluded input / ours / truth / Telea). The mask IoU is
the raw predicted mask (> 0.5) against the true one."""
from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np

from deocc_live.stages.generate import batch_to_images, crops_to_batch
from trainer.configs import EvalConfig
from trainer.metrics import image_metrics, mask_iou
from trainer.pairs import list_pairs, read_pair
from engines.atomic import atomic_write_bytes
from trainer.util import progress

ROWS = ("input", "telea", "ours")
COLUMNS = ("mse", "psnr", "ssim", "hole_mse", "hole_psnr", "hole_ssim")


def load_model(path: str | Path):
    """A callable RGB float batch [N, 3, S, S] in [-1, 1] -> (restored, occlusion) numpy, and
    its crop size, for any file our engines load (checkpoints included)."""
    from engines import open_engine

    engine = open_engine(path)

    def run_engine(batch: np.ndarray):
        step = engine.spec.max_batch
        parts = [engine.infer(batch[i:i + step]) for i in range(0, len(batch), step)]
        return tuple(np.concatenate([p[k] for p in parts]) for k in range(2))

    return run_engine, engine.spec.crop_size


def markdown_table(summary: dict) -> str:
    header = "| method | MSE | PSNR (dB) | SSIM | covered MSE | covered PSNR (dB) | covered SSIM | mask IoU |"
    lines = [header, "|" + "---|" * 8]
    names = {"input": "occluded input (unchanged)", "telea": "OpenCV Telea, given the true mask", "ours": "deocc-live generator"}
    for row in ROWS:
        values = summary[row]
        iou = f"{values['iou']:.3f}" if "iou" in values else "n/a"
        lines.append(f"| {names[row]} | {values['mse']:.5f} | {values['psnr']:.2f} | {values['ssim']:.4f} | "
                     f"{values['hole_mse']:.5f} | {values['hole_psnr']:.2f} | {values['hole_ssim']:.4f} | {iou} |")
    return "\n".join(lines)


def run(config: EvalConfig) -> dict:
    model, size = load_model(config.model)
    pairs = list_pairs(config.data, config.split)
    if config.limit:
        pairs = pairs[: config.limit]
    if not pairs:
        raise FileNotFoundError(f"no {config.split} pairs under {config.data}")
    from deocc_live.stages.blend import BlendStage

    app_blend = BlendStage()  # "ours" is what the app shows: its mask growth, feather and edge fade
    scores = {row: [] for row in ROWS}
    ious, grid_rows, skipped = [], [], 0
    for start in progress(range(0, len(pairs), config.batch), desc="eval"):
        loaded = [read_pair(p, size) for p in pairs[start:start + config.batch]]
        skipped += sum(item is None for item in loaded)
        loaded = [item for item in loaded if item is not None]
        if not loaded:
            continue
        occluded, clean, masks = zip(*loaded)
        restored, occlusion = model(crops_to_batch(list(occluded)))
        restored_bgr = batch_to_images(restored)
        for i in range(len(loaded)):
            truth = clean[i].astype(np.float64) / 255
            covered = masks[i] > 127
            if not covered.any():
                continue
            source = occluded[i].astype(np.float64) / 255
            telea = cv2.inpaint(occluded[i], covered.astype(np.uint8) * 255, 3, cv2.INPAINT_TELEA).astype(np.float64) / 255
            alpha = app_blend.mask_for(np.ascontiguousarray(occlusion[i, 0], dtype=np.float32))[..., None].astype(np.float64)
            ours = alpha * restored_bgr[i] + (1 - alpha) * source
            for row, prediction in zip(ROWS, (source, telea, ours)):
                scores[row].append(image_metrics(prediction, truth, covered))
            ious.append(mask_iou(occlusion[i, 0] > 0.5, covered))
            if len(grid_rows) < config.grid:
                tiles = [occluded[i], (ours * 255 + 0.5).astype(np.uint8), clean[i], (telea * 255 + 0.5).astype(np.uint8)]
                grid_rows.append(np.hstack(tiles))
    summary = {row: {k: float(np.mean([s[k] for s in scores[row]])) for k in COLUMNS} for row in ROWS}
    summary["ours"]["iou"] = float(np.mean(ious))
    report = {
        "model": str(config.model), "data": str(config.data), "split": config.split,
        "images": len(scores["ours"]), "skipped": skipped, "crop_size": size, "metrics": summary,
        "gain_over_telea_db": {"psnr": summary["ours"]["psnr"] - summary["telea"]["psnr"],
                               "hole_psnr": summary["ours"]["hole_psnr"] - summary["telea"]["hole_psnr"]},
    }
    report["markdown"] = markdown_table(summary)
    out = Path(config.out) if config.out else Path(config.model).with_suffix("")
    out = out if config.out else out.parent / "eval"
    atomic_write_bytes(out / "eval.json", json.dumps(report, indent=2).encode())
    atomic_write_bytes(out / "eval.md", (report["markdown"] + "\n").encode())
    if grid_rows:
        ok, data = cv2.imencode(".png", np.vstack(grid_rows))
        if ok:
            atomic_write_bytes(out / "eval_grid.png", data.tobytes())
    report["out"] = str(out)
    return report
