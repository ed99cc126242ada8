"""`deocc-train memory-eval`: does the face memory put back the user's own face?

Clips built from TEST-split faces: the face is first seen uncovered, then an occluder (a hand, a
cup, a microphone, a face mask put on) comes in from below and stays. The face keeps still, or,
once covered, tilts, comes closer, or turns (a perspective squeeze of the picture: a 2-D stand-in
for a turn of the head). Each clip runs through the app's pipeline in stream mode twice, with the
face memory and without it, and is scored frame by frame where the face is covered: PSNR, SSIM
and sharpness (energy of the Laplacian over the truth's) against the truth, and the flicker
where the memory starts being used (mean change between consecutive output frames inside the
covered face, less the truth's own change)."""
from __future__ import annotations

import json
import zlib
from pathlib import Path

import cv2
import numpy as np

from engines.atomic import atomic_write_bytes
from trainer.e2e import (_box, cutouts, face_frame, face_region, occluder_layer, run_app, score, split_faces,
                         telea)
from trainer.occluders import OccluderBank

KINDS = ("hand", "cup", "microphone", "mask")
MOTIONS = ("still", "tilt", "closer", "turn")
UNCOVERED, ARRIVING = 20, 10  # frames seen uncovered, then frames the occluder takes to come in


def motion_matrix(motion: str, amount: float, centre, size) -> np.ndarray:
    """3x3 homography of the head's motion at ``amount`` (0 to 1) about the face centre."""
    cx, cy = centre
    if motion == "still" or amount <= 0:
        return np.eye(3)
    if motion in ("tilt", "closer"):
        angle, scale = (12.0 * amount, 1.0) if motion == "tilt" else (0.0, 1.0 + 0.15 * amount)
        return np.vstack([cv2.getRotationMatrix2D((float(cx), float(cy)), angle, scale), [0, 0, 1]])
    # turn: the far side of the face narrows and shortens, the whole face shifts a little
    width = 0.25 * size[0]
    squeeze = 0.12 * amount * width
    source = np.float32([[cx - width, cy - width], [cx + width, cy - width], [cx + width, cy + width], [cx - width, cy + width]])
    target = source + np.float32([[0, 0], [-2 * squeeze, squeeze], [-2 * squeeze, -squeeze], [0, 0]])
    return cv2.getPerspectiveTransform(source, target)


def make_clip(truth: np.ndarray, landmarks: np.ndarray, layer, motion: str, length: int):
    """(frames, truths, alphas) of one clip: uncovered, the occluder comes in from below, stays;
    the head moves (with the occluder on it) over the covered part."""
    rgb, alpha = layer
    height, width = truth.shape[:2]
    centre = landmarks.mean(axis=0)
    frames, truths, alphas = [], [], []
    for index in range(length):
        rise = np.clip((index - UNCOVERED) / ARRIVING, 0, 1)
        lift = np.float32([[1, 0, 0], [0, 1, (1 - rise) * 0.8 * height]])
        moved_rgb = cv2.warpAffine(rgb, lift, (width, height))
        moved_alpha = cv2.warpAffine(alpha, lift, (width, height)) if rise > 0 else np.zeros_like(alpha)
        amount = np.clip((index - UNCOVERED - ARRIVING) / max(length - UNCOVERED - ARRIVING - 1, 1), 0, 1)
        head = motion_matrix(motion, amount, centre, (width, height))
        warp = (lambda image: cv2.warpPerspective(image, head, (width, height), flags=cv2.INTER_LINEAR,
                                                  borderMode=cv2.BORDER_REFLECT))
        clean = warp(truth)
        moved_alpha = cv2.warpPerspective(moved_alpha, head, (width, height), flags=cv2.INTER_LINEAR)
        moved_rgb = warp(moved_rgb)
        over = clean.astype(np.float32) * (1 - moved_alpha[..., None]) + moved_rgb.astype(np.float32) * moved_alpha[..., None]
        frames.append(np.clip(over, 0, 255).astype(np.uint8))
        truths.append(clean)
        alphas.append(moved_alpha)
    return frames, truths, alphas, centre


def _face_at(landmarks, truth_shape, motion, amount, centre):
    head = motion_matrix(motion, amount, centre, (truth_shape[1], truth_shape[0]))
    moved = cv2.perspectiveTransform(landmarks[None].astype(np.float32), head)[0]
    return face_region(moved, truth_shape)


def score_clip(outputs, frames, truths, alphas, landmarks, motion, centre, telea_every: int = 0):
    """Per covered frame: scores against the truth, the memory weight in use and (every
    ``telea_every`` frames) Telea's PSNR given the true mask."""
    rows, previous = [], None
    length = len(frames)
    for index, (frame, picture, truth, alpha) in enumerate(zip(outputs, frames, truths, alphas)):
        amount = np.clip((index - UNCOVERED - ARRIVING) / max(length - UNCOVERED - ARRIVING - 1, 1), 0, 1)
        face = _face_at(landmarks, truth.shape, motion, amount, centre)
        covered = (alpha > 0.5) & face
        if covered.sum() < 0.03 * face.sum():
            previous = None
            continue
        ours = score(frame.output, truth, covered)
        row = {"frame": index, "psnr": ours["psnr"], "ssim": ours["ssim"], "laplacian": ours["laplacian"],
               "truth_laplacian": ours["truth_laplacian"],
               "memory": max([f.memory for f in frame.faces], default=0.0), "found": bool(frame.faces),
               "note": frame.faces[0].memory_note if frame.faces else "no face"}
        if telea_every and index % telea_every == 0:
            row["telea_psnr"] = score(telea(picture, alpha), truth, covered)["psnr"]
        if previous is not None:
            prev_output, prev_truth = previous
            change = np.abs(frame.output[covered].astype(np.float32) - prev_output[covered].astype(np.float32)).mean()
            truth_change = np.abs(truth[covered].astype(np.float32) - prev_truth[covered].astype(np.float32)).mean()
            row["flicker"] = float(max(change - truth_change, 0.0))
        previous = (frame.output, truth)
        rows.append(row)
    return rows


def _means(rows: list[dict]) -> dict:
    if not rows:
        return {}
    flicker = [r["flicker"] for r in rows if "flicker" in r]
    return {"frames": len(rows), "psnr": float(np.mean([r["psnr"] for r in rows])),
            "ssim": float(np.mean([r["ssim"] for r in rows])),
            "sharpness": float(np.sum([r["laplacian"] for r in rows]) / max(np.sum([r["truth_laplacian"] for r in rows]), 1e-9)),
            "flicker": float(np.mean(flicker)) if flicker else 0.0,
            "memory_share": float(np.mean([r["memory"] > 0 for r in rows]))}


def switch_flicker(rows_on: list[dict], rows_off: list[dict]) -> dict:
    """Flicker on the frames where the memory weight changed (fading in or out), with and without."""
    changed = {b["frame"] for a, b in zip(rows_on, rows_on[1:]) if abs(b["memory"] - a["memory"]) > 1e-6}
    on = [r["flicker"] for r in rows_on if r["frame"] in changed and "flicker" in r]
    off = [r["flicker"] for r in rows_off if r["frame"] in changed and "flicker" in r]
    return {"frames": len(on), "with": float(np.mean(on)) if on else 0.0, "without": float(np.mean(off)) if off else 0.0}


def run(config) -> dict:
    from deocc_live.landmark_model import resolve
    from deocc_live.landmarks import FaceLandmarks
    from deocc_live.settings import LiveSettings
    from engines import open_engine

    data = Path(config.data)
    size = (1280, 720)
    landmarker = str(resolve(config.landmarker))
    banks = {subset: OccluderBank.load(data / "occluders", subset) for subset in ("train", "held_out")}
    banks.update(cup=cutouts(data / "occluders", "cups"))
    faces = split_faces(data / "faces", config.split)
    if not faces:
        raise FileNotFoundError(f"no {config.split}-split faces under {data / 'faces'}")
    rng = np.random.default_rng(config.seed)
    order = rng.permutation(len(faces))
    plans = [(kind, "still") for kind in KINDS for _ in range(config.per_kind)]
    plans += [(kind, motion) for motion in MOTIONS[1:] for kind in KINDS]
    engine = open_engine(config.model)
    clips, strip, timings, cursor = [], None, [], 0
    try:
        with FaceLandmarks(landmarker) as finder:
            for kind, motion in plans:
                for _ in range(20):
                    path = faces[order[cursor % len(order)]]
                    cursor += 1
                    picture = cv2.imread(str(path))
                    clip_rng = np.random.default_rng([config.seed, zlib.crc32(f"{kind}/{motion}/{path.name}".encode())])
                    if picture is None:
                        continue
                    truth = face_frame(picture, size, clip_rng, neck=True)
                    found = finder.detect(truth)
                    if len(found) == 1:
                        break
                else:
                    raise RuntimeError(f"no {config.split}-split face was found for a {kind} clip")
                rgb, alpha, held = occluder_layer(truth, found[0], kind, banks, clip_rng)
                frames, truths, alphas, centre = make_clip(truth, found[0], (rgb, alpha), motion, config.length)
                result = {"kind": kind, "motion": motion, "face": path.name, "held_out": held}
                outputs = {}
                for memory in (True, False):
                    done, _ = run_app(frames, engine, landmarker, still=False, settings=LiveSettings(face_memory=memory))
                    outputs[memory] = done
                    rows = score_clip(done, frames, truths, alphas, found[0], motion, centre, telea_every=6 if memory else 0)
                    result["with" if memory else "without"] = {"summary": _means(rows), "frames": rows}
                    if memory:
                        timings += [f.timings.get("memory", 0.0) for f in done]
                result["switch_flicker"] = switch_flicker(result["with"]["frames"], result["without"]["frames"])
                clips.append(result)
                if strip is None and motion == "still" and kind == config.strip_kind:
                    strip = _strip(frames, truths, outputs, found[0])
    finally:
        engine.close()
    report = {"model": str(config.model), "split": config.split, "frame_size": list(size), "length": config.length,
              "memory_ms": {"median": float(np.median(timings)), "p95": float(np.percentile(timings, 95))},
              "by_kind": {}, "by_motion": {}, "clips": clips}
    for kind in KINDS:
        report["by_kind"][kind] = _compare([c for c in clips if c["kind"] == kind and c["motion"] == "still"])
    for motion in MOTIONS:
        report["by_motion"][motion] = _compare([c for c in clips if c["motion"] == motion])
    report["markdown"] = markdown(report)
    out = Path(config.out)
    atomic_write_bytes(out / "memory.json", json.dumps(report, indent=1).encode())
    atomic_write_bytes(out / "memory.md", (report["markdown"] + "\n").encode())
    if strip is not None:
        ok, encoded = cv2.imencode(".jpg", strip, [cv2.IMWRITE_JPEG_QUALITY, 90])
        if ok:
            atomic_write_bytes(out / "memory_strip.jpg", encoded.tobytes())
    return report


def _compare(clips: list[dict]) -> dict:
    """Means over the clips' covered frames, with and without the memory."""
    if not clips:
        return {}
    out = {"clips": len(clips)}
    for side in ("with", "without"):
        rows = [row for clip in clips for row in clip[side]["frames"]]
        out[side] = _means(rows)
    out["gain_db"] = out["with"].get("psnr", 0.0) - out["without"].get("psnr", 0.0)
    switches = [c["switch_flicker"] for c in clips if c["switch_flicker"]["frames"]]
    out["switch_flicker"] = {"with": float(np.mean([s["with"] for s in switches])) if switches else 0.0,
                             "without": float(np.mean([s["without"] for s in switches])) if switches else 0.0}
    telea_values = [row["telea_psnr"] for clip in clips for row in clip["with"]["frames"] if "telea_psnr" in row]
    out["telea_psnr"] = float(np.mean(telea_values)) if telea_values else None
    return out


def _strip(frames, truths, outputs, landmarks) -> np.ndarray:
    """Rows input / without memory / with memory / truth, at frames before, during and after
    the occluder comes."""
    box = _box(face_region(landmarks, truths[0].shape), 30)
    picks = [UNCOVERED - 5, UNCOVERED + ARRIVING - 2, UNCOVERED + ARRIVING + 5, len(frames) - 1]
    rows = []
    for label, pictures in (("input", frames), ("without memory", [f.output for f in outputs[False]]),
                            ("with memory", [f.output for f in outputs[True]]), ("truth", truths)):
        tiles = [cv2.resize(pictures[i][box], (160, 160), interpolation=cv2.INTER_AREA) for i in picks]
        row = np.hstack(tiles)
        cv2.putText(row, label, (6, 18), cv2.FONT_HERSHEY_SIMPLEX, 0.5, (255, 255, 255), 1, cv2.LINE_AA)
        rows.append(row)
    return np.vstack(rows)


def markdown(report: dict) -> str:
    lines = [f"Face memory on {report['split']}-split clips ({report['length']} frames at "
             f"{report['frame_size'][0]}x{report['frame_size'][1]}), covered frames only. Switch flicker: the mean "
             "change of the output inside the covered face on the frames where the memory fades in or out, less "
             "the truth's own change, without and with the memory on those same frames.", "",
             "| clips | covered frames | PSNR without | PSNR with | gain dB | SSIM without | SSIM with | "
             "sharpness without | sharpness with | memory used | switch flicker without / with |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    for group, values in (*((f"{k} (still)", v) for k, v in report["by_kind"].items()),
                          *((f"all kinds, {m}", v) for m, v in report["by_motion"].items())):
        if not values:
            continue
        w, wo = values["with"], values["without"]
        lines.append(f"| {group} ({values['clips']}) | {w.get('frames', 0)} | {wo.get('psnr', 0):.2f} | {w.get('psnr', 0):.2f} | "
                     f"{values['gain_db']:+.2f} | {wo.get('ssim', 0):.3f} | {w.get('ssim', 0):.3f} | "
                     f"{wo.get('sharpness', 0):.2f} | {w.get('sharpness', 0):.2f} | {w.get('memory_share', 0):.0%} | "
                     f"{values['switch_flicker']['without']:.2f} / {values['switch_flicker']['with']:.2f} |")
    lines += ["", f"Memory stage: median {report['memory_ms']['median']:.2f} ms, p95 {report['memory_ms']['p95']:.2f} ms a frame."]
    return "\n".join(lines)
