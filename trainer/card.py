"""The model card that ships beside the generator: data, training, evaluation, how to reproduce."""
from __future__ import annotations

import json
from pathlib import Path


def _seeds_to_steps(runs: list[dict]) -> str:
    """"seed 1 to step 7, seed 2 to step 7": averaged runs, as the card's prose names them."""
    return ", ".join(f"seed {run['seed']} to step {run['step']:,}" for run in runs)


def _seed_step_pairs(runs: list[dict]) -> str:
    """"S=1 N=7, S=2 N=7": averaged runs, as the reproduce block's comments name them."""
    return ", ".join(f"S={run['seed']} N={run['step']}" for run in runs)


def _where_trained(state: dict, hours: float) -> str:
    """"N steps of batch B (S samples), H h of training time on a 2-core CPU", or, where the
    stretches differ in batch or device, each stretch's steps, batch and device."""
    from trainer.checkpoint import first_stretch

    stretches = state.get("stretches") or [first_stretch(state)]
    samples = sum((s["to_step"] - s["from_step"]) * s["batch"] * s.get("world", 1) for s in stretches)

    def on(s):
        return ("on an " if s["device"].startswith(("NVIDIA", "A", "E", "I", "O", "U")) else "on a ") + s["device"]

    def batch(s):
        return (f"batch {s['batch']}" + (f" on each of {s['world']} processes" if s.get("world", 1) > 1 else "")
                + (f", each drawn batch trained on {s['echo']} times (`--echo`)" if s.get("echo", 1) > 1 else ""))

    if len(stretches) == 1:
        return (f"{state['step']:,} steps of {batch(stretches[0])} ({samples:,} samples), {hours:.2f} h of training "
                f"time {on(stretches[0])} (bf16 autocast, channels-last)")
    return (f"{state['step']:,} steps ({samples:,} samples), {hours:.2f} h of training time (bf16 autocast, "
            "channels-last): " + ", then ".join(
                f"steps {s['from_step']:,}-{s['to_step']:,} of {batch(s)} {on(s)} "
                f"({s['elapsed_s'] / 3600:.2f} h)" for s in stretches))


def _refiner_sentence(state: dict) -> str:
    """What the refiner is and how it was trained, when the generator has one (``deocc-train refine``)."""
    shape, refine = state["model"].get("refiner"), state.get("refine")
    if not shape or not refine:
        return ""
    psnr = refine["validation_psnr_half"]
    return (f" The restored face then goes through the refiner (`deocc-train refine`): a second look at the fill at "
            f"half the crop's size (the crop, the restored face and the mask in, a correction out), "
            f"{shape.get('parameters', 0):,} parameters (width {shape['width']}, {shape['blocks']} blocks), trained "
            f"{refine['steps']:,} steps of batch {refine['batch']} ({refine['elapsed_s'] / 3600:.2f} h, lr {refine['lr']:g} "
            f"cosine, seed {refine['seed']}) with the generator frozen, on the squared error where the face was "
            f"covered"
            + (f", correcting what the generator's {refine['engine']['precision']} engine makes of each crop and its "
               f"mirror image (each pass refined, the two averaged, as the app runs it)" if refine.get("engine") else "")
            + f"; the trainer's 64 validation samples, covered PSNR at half size: {psnr['generator']:.2f} dB "
            f"without it, {psnr['refined']:.2f} with it.")


def _refine_lines(state: dict) -> list[str]:
    """The reproduce commands of the refiner, when the generator has one."""
    refine, shape = state.get("refine"), state["model"].get("refiner")
    if not refine or not shape:
        return []
    engine, lines = refine.get("engine"), []
    if engine:
        int8 = engine.get("precision") == "int8"
        engine_file = "runs/main/gen_int8.onnx" if int8 else "runs/main/gen.onnx"
        lines.append("deocc-train export --ckpt runs/main/last.ckpt --onnx runs/main/gen.onnx   # the generator alone")
        if int8:
            lines.append("deocc-train quantize --onnx runs/main/gen.onnx --data data/pairs --out runs/main/gen_int8.onnx")
    lines.append(f"deocc-train refine --ckpt runs/main/last.ckpt --data data/pairs --out runs/main/last.ckpt "
                 f"--steps {refine['steps']} --batch {refine['batch']} --lr {refine['lr']:g} "
                 f"--width {shape['width']} --blocks {shape['blocks']} --seed {refine['seed']}"
                 + (f" --engine {engine_file}" if engine else ""))
    return lines


def _data_paragraph(card: Path) -> str | None:
    """The "## Data" paragraph of an existing card, if it counts the faces (not "?")."""
    if not card.is_file():
        return None
    lines = card.read_text().splitlines()
    if "## Data" not in lines:
        return None
    at = lines.index("## Data") + 2
    paragraph = lines[at] if at < len(lines) else ""
    return paragraph if paragraph.startswith("Faces from") and " ? pictures" not in paragraph else None


def write_card(state: dict, report: dict, onnx_path: str | Path, out: str | Path, grid_name: str = "eval_grid.png",
               end_to_end: dict | None = None) -> None:
    from engines.atomic import atomic_write_bytes

    config, model, data = state["config"], state["model"], state.get("data", {})
    summary_path = Path(config["data"]) / "summary.json"
    synth = json.loads(summary_path.read_text()) if summary_path.is_file() else {}
    kept_data = None if synth else _data_paragraph(Path(out))
    counts = synth.get("counts", {})
    hours = state.get("elapsed_s", 0.0) / 3600
    sources = []  # the runs this one was grown or fine-tuned from (--init-from), nearest first
    origin = state.get("origin")
    while origin:
        sources.append(origin)
        origin = origin.get("origin")
    averaged = state.get("averaged") or []  # runs whose generators were averaged (deocc-train average)
    resumed_means = state.get("resumed_means") or []  # averaged checkpoints the runs were resumed from
    gain = report["gain_over_telea_db"]
    ours, telea = report["metrics"]["ours"], report["metrics"]["telea"]
    lines = [
        "# deocc-live generator: model card",
        "",
        f"`{Path(onnx_path).name}`: the attention U-Net generator (ResNet encoder blocks, inverted-residual decoder "
        f"blocks, skips fused by spatial attention, tanh image head and sigmoid occlusion head), "
        f"{model.get('parameters', 0):,} parameters (width {model['width']}), {model['size']} px aligned crops, "
        "ONNX opset 17, fp32. Input `image` [N, 3, S, S] RGB in [-1, 1]; outputs `restored` (same) and `occlusion` "
        "[N, 1, S, S] in [0, 1]. The metadata (`deocc` key) repeats all of this.",
        "",
        "## Data",
        "",
        f"Faces from `../shared/data/faces` (UTKFace, CelebA crops, web crops: research use only), "
        f"{synth.get('faces', '?')} pictures, aligned by the app's own alignment with MediaPipe landmarks: "
        f"{counts.get('train', '?')} train, {counts.get('validation', '?')} validation, {counts.get('test', '?')} test "
        f"(split by a hash of the file name), {synth.get('skipped', '?')} skipped (no face found or too small). "
        + (f"The last stretch trained from a training pack (`deocc-train pack`) of {synth['pack']['counts']['train']:,} "
           "of these training faces, as WebP. " if synth.get("pack", {}).get("counts", {}).get("train") else "")
        + "Occluders from `../shared/data/occluders` (MaskTheFace masks, glasses, hands, cups, phones, scarves, caps) "
        "and drawn procedurally (microphones, cups, bottles, phones, hands, scarves); a fresh occluder for every "
        f"training sample ({'online' if data.get('online_occlusion') else 'fixed pairs'})"
        + (f", {100 * config['printed']:g}% of face masks with a print on them in the last stretch (a mouth, bold shapes)"
           if config.get('printed') and data.get('online_occlusion') else "")
        + (f", {100 * config['frames']:g}% of glasses drawn as thin frames in the last stretch"
           if config.get('frames') and data.get('online_occlusion') else "")
        + ". About one cut-out or mask "
        "template in four is held back from training for the end-to-end evaluation (`trainer.occluders.held_out`). "
        "Training crops replay the crop errors measured when the landmarks come from the covered face "
        f"(`deocc-train misalign`, misalign: {config.get('misalign', 'off')})"
        + (f"; in the last stretch half the crops moved further at random (`--crop-jitter {config['crop_jitter']:g}`: "
           "shifts, scales and turns as on real photos)" if config.get('crop_jitter') else "")
        + (f"; {config['degrade']:.0%} of the samples degraded as real footage is (`--degrade`: lower resolution, "
           "noise, JPEG)" if config.get('degrade') else "")
        + (f"; {config['uncovered']:.0%} of the samples without any cover (`--uncovered`: the input is the truth, "
           "the mask empty)" if config.get('uncovered') else "")
        + (f"; {config['mono']:.0%} of the samples in black and white (`--mono`: input and truth, as an infrared "
           "webcam or a black-and-white photo gives them)" if config.get('mono') else "")
        + ".",
        "",
        "## Training",
        "",
        _where_trained(state, hours)
        + "".join(f", started (`--init-from`) from the weights of a run after its {source['step']:,} steps "
                  f"({source['elapsed_s'] / 3600:.2f} h"
                  + (f"; {source['model']['bottleneck_blocks']} bottleneck blocks, the blocks added here starting as identities"
                     if (source.get('model') or {}).get('bottleneck_blocks') not in (None, model.get('bottleneck_blocks')) else "")
                  + ")" for source in sources)
        + (f": {state['step'] + sum(source['step'] for source in sources):,} steps in all" if sources else "")
        + "".join(f". Resumed (`--resume`) at step {mean['step']:,} from the mean of {len(mean['averaged'])} runs ("
                  + _seeds_to_steps(mean['averaged']) + ")"
                  for mean in resumed_means)
        + (f". The weights are the mean (`deocc-train average`) of {len(averaged)} runs resumed from the same "
           "checkpoint with different seeds: " + _seeds_to_steps(averaged)
           if averaged else "")
        + ". Loss "
        f"{config['rec']}·L1 (×{1 + config['hole']:.0f} where covered) + {config['ssim']}·(1 − SSIM) + "
        + (f"{config['adv']}·adversarial (PatchGAN-style DCGAN discriminator from step {config['adv_start']:,}) + "
           if config['adv'] else "no adversarial term + " if config.get('feature_match')
           else "no adversarial term (the discriminator off) + ")
        + (f"{config['detail']}·(L1 of the local detail where covered) + " if config.get('detail') else "")
        + (f"{config['feature_match']}·(discriminator feature matching) + " if config.get('feature_match') else "")
        + (f"{config['colour']}·(L1 of the mean colour where covered) + " if config.get('colour') else "")
        + (f"{config['hole_mean']}·(L1 over each sample's covered pixels, samples alike) + " if config.get('hole_mean') else "")
        + (f"{config['mse']}·(squared error where covered) + " if config.get('mse') else "")
        + f"{config['mask']}·(BCE + Tversky, misses weighted {config.get('recall', 0.5)}) on the mask; Adam lr "
        f"{config['lr']} (the loss weights and rates of the last stretch of training: a run resumed with "
        "`--resume` may change them, see the README); the exported weights are the EMA "
        f"({config['ema']}). Trainer commit `{state.get('trainer_commit', 'unknown')}`."
        + _refiner_sentence(state),
        "",
        *(_end_to_end_section(end_to_end) if end_to_end else []),
        f"## Evaluation on aligned crops: {report['images']} test crops",
        "",
        "Whole crop and covered region (the true occluder mask); our row is the composite the app shows "
        "(`m·restored + (1 − m)·input`, m the predicted mask grown, feathered and faded at the crop edge as the "
        "app's blend does), Telea is given the true mask; IoU is the raw predicted mask (> 0.5) against the true one.",
        "",
        report["markdown"],
        "",
        f"Covered region: **{gain['hole_psnr']:+.2f} dB PSNR** over Telea, SSIM {ours['hole_ssim']:.3f} against "
        f"{telea['hole_ssim']:.3f}; mask IoU {ours['iou']:.3f}.",
        "",
        f"![occluded input / ours / truth / Telea]({grid_name})",
        "",
        "*Columns: occluded input, ours, truth, Telea given the true mask.*",
        "",
        "## Reproduce",
        "",
        "```sh",
        "deocc-train synth --faces ../shared/data/faces --occluders ../shared/data/occluders --out data/pairs",
        f"deocc-train fit --data data/pairs --out runs/main --steps {state['step']} --adv-start {config['adv_start']} "
        + (f"--bottleneck-blocks {model['bottleneck_blocks']} " if model.get('bottleneck_blocks', 2) != 2 else "")
        + ("--init-from SOURCE.ckpt " if sources else "")
        + f"--lr {config['lr']} --lr-d {config['lr_d']} --adv {config['adv']} --detail {config.get('detail', 0.0)} "
        f"--feature-match {config.get('feature_match', 0.0)} --printed {config.get('printed', 0.0)} --crop-jitter {config.get('crop_jitter', 0.0)} "
        f"--degrade {config.get('degrade', 0.0)} --uncovered {config.get('uncovered', 0.0)} --recall {config.get('recall', 0.7)}"
        + (f" --frames {config['frames']}" if config.get('frames') else "")
        + (f" --colour {config['colour']}" if config.get('colour') else "")
        + (f" --hole-mean {config['hole_mean']}" if config.get('hole_mean') else "")
        + (f" --mse {config['mse']}" if config.get('mse') else "")
        + (f" --mono {config['mono']}" if config.get('mono') else "")
        + (" --frozen-norm" if config.get('frozen_norm') else "") + "   # as its last stretch ran",
        *[f"# resumed at step {mean['step']} from the mean (deocc-train average) of the runs "
          + _seed_step_pairs(mean['averaged'])
          for mean in resumed_means],
        *(["# the averaged runs: the command above resumed with --resume, as --out runs/seedS --seed S --steps N for "
           + _seed_step_pairs(averaged) + "; then:",
           "deocc-train average --ckpt " + " ".join(f"runs/seed{run['seed']}/last.ckpt" for run in averaged)
           + " --out runs/main/last.ckpt"] if averaged else []),
        *_refine_lines(state),
        "deocc-train eval --data data/pairs --model runs/main/last.ckpt --out runs/main/eval",
        "deocc-train misalign --out trainer/misalignment.json   # the crop errors fit replays (shipped)",
        "deocc-train export --ckpt runs/main/last.ckpt --onnx assets/deocc_gen.onnx",
        "deocc-train quantize --onnx assets/deocc_gen.onnx --data data/pairs --out assets/deocc_gen_int8.onnx",
        "deocc-train e2e --model assets/deocc_gen_int8.onnx --out runs/main/e2e",
        "deocc-train export --ckpt runs/main/last.ckpt --onnx assets/deocc_gen.onnx --eval-report runs/main/eval/eval.json "
        "--e2e-report runs/main/e2e/e2e.json --card assets/MODEL_CARD.md",
        "```",
        "",
        "`trainer/resume/main.ckpt` is the checkpoint this model came from (copy it to `runs/main/last.ckpt` "
        "and add `--resume` to continue training)"
        + (f"; SOURCE.ckpt is the checkpoint it started from, at step {sources[0]['step']:,} (recorded as "
           f"`{sources[0]['init_from']}`"
           + (": the repository's resume checkpoint of an earlier commit"
              if sources[0]["init_from"].endswith("trainer/resume/main.ckpt") else "") + ")."
           if sources else "."),
        "",
    ]
    if kept_data is not None:  # the data folder is gone: the counts the card already gives stay
        lines[lines.index("## Data") + 2] = kept_data
    atomic_write_bytes(out, "\n".join(lines).encode())


def _end_to_end_section(report: dict) -> list[str]:
    """What `deocc-train e2e` measured: whole pictures through the app, as a user meets it."""
    overall = report["overall"]
    return [
        f"## End to end, as a user meets it: {overall['scenes']} {report['split']}-split pictures through the app",
        "",
        f"`{Path(report['model']).name}` in the app's own pipeline at {report['frame_size'][0]}x{report['frame_size'][1]}: "
        "MediaPipe (where it finds none, our finder) finds the face on the COVERED picture, the crop is aligned "
        "from those landmarks, generated, "
        "and blended. Occluders are placed by a placement the trainer never uses, about half of them cut-outs and "
        "templates held back from training (cups, phones and microphones are drawn by painters of the evaluation's "
        "own). Scores are over the covered face pixels; Telea is given the true mask; sharpness is the energy of "
        "the Laplacian over the truth's (above 1: edges the truth lacks, such as an occluder's rim), and the same "
        "over the scenes the app acted on (a face it left covered scores its occluder's edges); colour shift "
        "is the distance of the mean Lab colours. The app runs as shipped: mirror pass, colour pull, grain"
        + (" and the finder (assets/FINDER_CARD.md) on" if report.get("finder") else " on (the finder was not installed)")
        + (f"; each picture's face generated from {report['picture_views']} views (`--picture-views`), the clip's "
           "frames from one." if report.get("picture_views", 1) > 1 else "."),
        "",
        report["markdown"],
        "",
    ]
