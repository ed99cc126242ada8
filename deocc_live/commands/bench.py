"""`deocc-live bench`: end-to-end frame rate and latency, per-stage times, temporal flicker and
MediaPipe-tracking-alone frame rate, on a given video or one made from a face picture."""
from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path

import cv2
import numpy as np

from deocc_live.commands.options import add_engine_options, open_engine_for, parse_size
from deocc_live.settings import SETTINGS

STAGES = ("capture", "track", "align", "generate", "memory", "smooth", "blend", "output")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--input", help="video with a face (default: one made from --face)")
    parser.add_argument("--face", help="face picture to build the default video from "
                        "(default: the first of $DEOCC_DATA/faces/utkface or ../shared/data/faces/utkface)")
    SETTINGS["frames"].add_to(parser)
    parser.add_argument("--size", type=parse_size, default=(1280, 720), help="frame size of the made video (default 1280x720)")
    SETTINGS["fps"].add_to(parser, default=30.0)
    add_engine_options(parser)
    SETTINGS["soak"].add_to(parser)
    parser.add_argument("--soak-log", metavar="FILE", help="with --soak: write each once-a-second sample as a JSON line")
    parser.add_argument("--no-mirror-pass", dest="mirror_pass", action="store_false",
                        help="generate each face once, not also mirrored (as deocc-live --no-mirror-pass)")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument("--table", nargs="+", metavar="JSON", help="print the README's Performance table (Markdown) "
                        "from results saved with --json, one column each, and run nothing")


def default_face() -> Path:
    roots = [Path(os.environ["DEOCC_DATA"])] if os.environ.get("DEOCC_DATA") else []
    roots += [Path("../shared/data"), Path(__file__).resolve().parents[2] / "shared" / "data"]
    for root in roots:
        faces = sorted((root / "faces" / "utkface").glob("*.jpg"))
        if faces:
            return faces[0]
    raise FileNotFoundError("no face picture for the benchmark video: pass --input VIDEO or --face PICTURE")


def make_frames(face_path: Path, size: tuple[int, int], count: int, landmarker: Path) -> list[np.ndarray]:
    return list(iter_frames(face_path, size, count, landmarker))


def iter_frames(face_path: Path, size: tuple[int, int], count: int, landmarker: Path):
    """A clip of an occluded face: still for the first half (with sensor noise), then moving."""
    from deocc_live.landmarks import LOWER_FACE_OUTLINE, FaceLandmarks

    face = cv2.imread(str(face_path))
    if face is None:
        raise FileNotFoundError(f"cannot read face picture {face_path}")
    width, height = size
    scale = 0.55 * height / face.shape[0]
    big = cv2.resize(face, None, fx=scale, fy=scale, interpolation=cv2.INTER_CUBIC)
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    backdrop = np.stack([60 + 80 * xx / width, 90 + 60 * yy / height, 140 - 50 * xx / width], axis=2).astype(np.uint8)
    with FaceLandmarks(landmarker) as finder:
        rng = np.random.default_rng(0)
        for index in range(count):
            moving = max(0, index - count // 2)
            dx = int(width * 0.15 * np.sin(moving / 12.0))
            frame = backdrop.copy()
            h, w = big.shape[:2]
            x0, y0 = (width - w) // 2 + dx, (height - h) // 2
            frame[y0:y0 + h, x0:x0 + w] = big
            if index == 0 or moving:
                found = finder.detect(frame)
                if len(found) == 0:
                    raise RuntimeError(f"no face found in {face_path}")
                outline = found[0][LOWER_FACE_OUTLINE]
            cv2.fillPoly(frame, [outline.astype(np.int32)], (200, 170, 120), cv2.LINE_AA)
            noise = rng.normal(0, 2.0, frame.shape)
            yield np.clip(frame + noise, 0, 255).astype(np.uint8)


def load_frames(path: Path, count: int) -> list[np.ndarray]:
    from deocc_live.stages.capture import VideoSource

    frames = []
    with VideoSource(path) as source:
        for frame in source.frames():
            frames.append(frame.image)
            if len(frames) >= count:
                break
    return frames


def percentiles(values) -> dict[str, float]:
    values = np.asarray(values, dtype=np.float64)
    if values.size == 0:
        return {"median": float("nan"), "p95": float("nan")}
    return {"median": round(float(np.median(values)), 2), "p95": round(float(np.percentile(values, 95)), 2)}


class Recorder:
    """What the benchmark keeps of each frame: its stage times, its faces' landmarks and, for the
    flicker, the output inside the lower face of the first face found (a small copy: keeping
    whole frames would make the run allocate and fault in fresh memory for every frame)."""

    def __init__(self, keep_region: int):
        self.keep_region = keep_region  # frames whose region is kept (the still part of the clip)
        self.records: list[tuple[dict, list]] = []
        self.inside: np.ndarray | None = None  # bool mask of the region, inside its box
        self.box: tuple[int, int, int, int] | None = None
        self.regions: list[np.ndarray] = []
        self.done: list[float] = []  # when each frame came out

    def fps(self, first: int, last: int) -> float:
        """Frames out per second between frame ``first`` and frame ``last`` (exclusive)."""
        times = self.done[first:last]
        return round((len(times) - 1) / (times[-1] - times[0]), 2) if len(times) > 2 and times[-1] > times[0] else 0.0

    def __call__(self, frame) -> None:
        from deocc_live.landmarks import LOWER_FACE_OUTLINE

        landmarks = [face.landmarks for face in frame.faces]
        self.records.append((dict(frame.timings), landmarks))
        self.done.append(time.perf_counter())
        if len(self.records) > self.keep_region or not landmarks:
            return
        if self.box is None:
            height, width = frame.output.shape[:2]
            outline = landmarks[0][LOWER_FACE_OUTLINE].astype(np.int32)
            x0, y0 = np.clip(outline.min(axis=0), 0, (width - 1, height - 1))
            x1, y1 = np.clip(outline.max(axis=0) + 1, (x0 + 1, y0 + 1), (width, height))  # inside the frame
            self.box = (int(x0), int(y0), int(x1), int(y1))
            region = np.zeros((y1 - y0, x1 - x0), np.uint8)
            cv2.fillPoly(region, [outline - (x0, y0)], 1)
            self.inside = region.astype(bool)
        x0, y0, x1, y1 = self.box
        self.regions.append(frame.output[y0:y1, x0:x1][self.inside].astype(np.float32))


def run_pipeline(frames, engine, landmarker, paced: bool, fps: float, smoothing: float | None = None,
                 max_faces: int = 1, keep_region: int = 0, mirror_pass: bool = True) -> tuple[Recorder, float]:
    from deocc_live.stages.capture import MemorySource
    from deocc_live.pipeline import Pipeline
    from deocc_live.settings import LiveSettings

    recorder = Recorder(keep_region)
    source = MemorySource(frames, fps=fps, paced=paced)
    settings = LiveSettings(max_faces=max_faces, mirror_pass=mirror_pass)
    if smoothing is not None:
        settings.face_smoothing, settings.landmark_filter = smoothing, smoothing > 0
    pipeline = Pipeline(source, engine, landmarker, [], settings, on_frame=recorder)
    start = time.perf_counter()
    with pipeline:
        pipeline.wait()
    wall = time.perf_counter() - start
    return recorder, wall


def tracking_only(frames, landmarker, max_faces: int = 1) -> float:
    from deocc_live.landmarks import FaceLandmarks

    with FaceLandmarks(landmarker, max_faces=max_faces, video=True) as finder:
        start = time.perf_counter()
        for index, frame in enumerate(frames):
            finder.detect(frame, index * 33)
        return len(frames) / (time.perf_counter() - start)


def flicker(recorder: Recorder) -> float:
    """Mean absolute change between consecutive output frames inside the lower face (where the
    generator paints), over the still part of the clip (its first two frames left out)."""
    regions = recorder.regions[2:]
    if len(regions) < 2:
        return float("nan")
    return round(float(np.mean([np.abs(a - b).mean() for a, b in zip(regions, regions[1:])])), 3)


def machine() -> dict:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {"cpu": cpu, "cores": os.cpu_count(), "gpu": gpu_names(), "python": platform.python_version(),
            "os": platform.platform()}


def gpu_names() -> str:
    """The NVIDIA GPUs nvidia-smi lists, or "none" (read without importing torch or CUDA)."""
    import shutil
    import subprocess

    if shutil.which("nvidia-smi") is None:
        return "none"
    try:
        listed = subprocess.run(["nvidia-smi", "--query-gpu=name", "--format=csv,noheader"], capture_output=True,
                                text=True, timeout=10).stdout.split("\n")
    except (OSError, subprocess.SubprocessError):
        return "none"
    return ", ".join(name.strip() for name in listed if name.strip()) or "none"


def generator_alone(engine, runs: int = 200) -> dict[str, float]:
    """The engine on one crop, copies in and out included, after a warm-up."""
    size = engine.spec.crop_size
    crop = np.random.default_rng(0).uniform(-1, 1, (1, 3, size, size)).astype(np.float32)
    for _ in range(10):
        engine.infer(crop)
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        engine.infer(crop)
        times.append((time.perf_counter() - start) * 1000)
    return percentiles(times)


def rss_mb() -> float:
    try:
        with open("/proc/self/statm") as handle:
            return int(handle.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20
    except OSError:
        import resource

        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def write_clip(frames, fps: float, path: Path, size: tuple[int, int]) -> Path:
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), fps, size)
    if not writer.isOpened():
        raise OSError(f"cannot write the soak clip {path}")
    try:
        for image in frames:
            writer.write(image)
    finally:
        writer.release()
    return path


def soak(video: Path, engine, landmarker, seconds: float, max_faces: int = 1, log=None, mirror_pass: bool = True) -> dict:
    """A looping video played at its own rate, like a camera, for ``seconds``: memory after
    warm-up, frame rate per window, queue depths and thread count, sampled once a second
    (each sample also written to ``log`` as a JSON line when given)."""
    import threading

    from deocc_live.stages.capture import VideoSource
    from deocc_live.pipeline import Pipeline
    from deocc_live.settings import LiveSettings

    warmup = min(60.0, seconds / 4)
    source = VideoSource(video, loop=True, paced=True)
    pipeline = Pipeline(source, engine, landmarker, [], LiveSettings(max_faces=max_faces, mirror_pass=mirror_pass))
    samples = []
    start = time.monotonic()
    with pipeline:
        while time.monotonic() - start < seconds:
            time.sleep(min(1.0, seconds / 20))
            sample = {"t": round(time.monotonic() - start, 1), "rss_mb": round(rss_mb(), 1),
                      "frames": pipeline.frames_out, "dropped": pipeline.dropped, "fps": round(pipeline.stats.fps(), 1),
                      "queued": sum(pipeline.queue_depths().values()), "threads": threading.active_count()}
            samples.append(sample)
            if log is not None:
                log.write(json.dumps(sample) + "\n")
                log.flush()
    steady = [s for s in samples if s["t"] >= warmup] or samples
    first, last = steady[0], steady[-1]
    rates = [s["fps"] for s in steady]
    span = (last["t"] - first["t"]) or 1.0
    windows = []  # mean frame rate over each tenth of the steady part, from frames delivered
    for k in range(10):
        lo, hi = first["t"] + span * k / 10, first["t"] + span * (k + 1) / 10
        part = [s for s in steady if lo <= s["t"] <= hi]
        if len(part) >= 2:
            windows.append(round((part[-1]["frames"] - part[0]["frames"]) / ((part[-1]["t"] - part[0]["t"]) or 1.0), 2))
    return {
        "seconds": round(samples[-1]["t"], 1), "warmup_s": warmup, "video_fps": source.fps,
        "video": f"{video.name} {source.size[0]}x{source.size[1]}, looped",
        "rss_mb": {"after_warmup": first["rss_mb"], "end": last["rss_mb"], "max": max(s["rss_mb"] for s in steady)},
        "rss_growth_pct": round(100 * (last["rss_mb"] - first["rss_mb"]) / first["rss_mb"], 2),
        "fps": {"min": min(rates), "median": float(np.median(rates)), "max": max(rates)},
        "fps_by_tenth": windows,
        "frames_out": last["frames"], "frames_dropped": pipeline.dropped,
        "max_queued": max(s["queued"] for s in steady),
        "threads": {"after_warmup": first["threads"], "end": last["threads"], "max": max(s["threads"] for s in steady)},
        "machine": machine(),
    }


def markdown_table(results: list[dict]) -> str:
    """The README's Performance table: one column per bench result."""
    def column(result):
        engine, stages = result["engine"], result["stages_ms"]
        parts = result.get("end_to_end_fps_by_part", {})
        return {
            "": f"{result['frame_size']}, {engine['precision']} {engine['backend']} on {engine['device']}"
                + ("" if result.get("mirror_pass", True) else ", no mirror pass"),
            "end-to-end FPS (every frame processed)": f"**{result['end_to_end_fps']:.1f}**",
            "... on the clip's still / moving part": " / ".join(f"{parts[k]:.1f}" for k in ("still", "moving") if k in parts),
            "MediaPipe tracking alone, same frames (the floor)": f"{result['tracking_only_fps']:.1f}",
            "ratio to tracking alone": f"{result['ratio_to_tracking']:.2f}",
            "latency, capture to output, 30 FPS camera: median / p95 ms":
                f"{result['latency_ms']['median']:.1f} / {result['latency_ms']['p95']:.1f}",
            "stage medians, ms: track / generate / memory / blend": " / ".join(
                f"{stages.get(k, {}).get('median', 0.0):.1f}" for k in ("track", "generate", "memory", "blend")),
            "generator alone, one crop, median ms": f"{result['generator_alone_ms']['median']:.1f}",
            "flicker on a still face, smoothed / unsmoothed":
                f"{result['flicker']['smoothed']:.2f} / {result['flicker']['unsmoothed']:.2f}",
        }
    columns = [column(result) for result in results]
    rows = list(columns[0])
    lines = ["| " + " | ".join([rows[0], *(c[rows[0]] for c in columns)]) + " |",
             "|---|" + "---|" * len(columns)]
    lines += ["| " + " | ".join([row, *(c[row] for c in columns)]) + " |" for row in rows[1:]]
    machines = sorted({f"{r['machine']['cpu']}, {r['machine']['cores']} cores, GPU {r['machine'].get('gpu', 'none')}"
                       for r in results})
    lines += ["", "Machine: " + "; ".join(machines) + "."]
    return "\n".join(lines)


def run(args) -> int:
    if args.table:
        results = []
        for path in args.table:
            try:
                results.append(json.loads(Path(path).read_text().strip().splitlines()[-1]))
            except (OSError, ValueError, IndexError) as error:
                raise ValueError(f"--table: cannot read a bench result from {path} ({error})") from None
            needed = ("end_to_end_fps", "tracking_only_fps", "ratio_to_tracking", "latency_ms", "stages_ms",
                      "generator_alone_ms", "flicker", "engine", "machine", "frame_size")
            if not isinstance(results[-1], dict) or any(key not in results[-1] for key in needed):
                raise ValueError(f"--table: {path} is not a `deocc-live bench --json` result of this version")
        print(markdown_table(results))
        return 0
    from deocc_live.landmark_model import resolve

    landmarker = resolve(args.landmarker)
    face = Path(args.face) if args.face else None
    if args.soak:
        import tempfile

        engine = open_engine_for(args)
        try:
            with tempfile.TemporaryDirectory() as scratch:
                # Played from a file, made frame by frame: memory figures are the pipeline's alone.
                video = Path(args.input) if args.input else write_clip(
                    iter_frames(face or default_face(), args.size, args.frames, landmarker), args.fps,
                    Path(scratch) / "soak.mp4", args.size)
                log = open(args.soak_log, "w") if args.soak_log else None
                try:
                    result = soak(video, engine, landmarker, args.soak, args.max_faces, log, args.mirror_pass)
                finally:
                    if log is not None:
                        log.close()
        finally:
            engine.close()
        print(json.dumps(result) if args.json else "\n".join(f"{k}: {v}" for k, v in result.items()))
        return 0
    if args.input:
        frames = load_frames(Path(args.input), args.frames)
    else:
        frames = make_frames(face or default_face(), args.size, args.frames, landmarker)
    if len(frames) < 10:
        raise ValueError(f"need at least 10 frames, got {len(frames)}")
    engine = open_engine_for(args)
    try:
        spec = engine.spec
        generator_ms = generator_alone(engine)
        still = len(frames) // 2 if not args.input else len(frames)
        common = {"fps": args.fps, "max_faces": args.max_faces, "mirror_pass": args.mirror_pass}
        run, wall = run_pipeline(frames, engine, landmarker, paced=False, keep_region=still, **common)
        latency_run, _ = run_pipeline(frames, engine, landmarker, paced=True, **common)
        raw_run, _ = run_pipeline(frames[:still], engine, landmarker, paced=False, smoothing=0.0, keep_region=still,
                                  **common)
        tracking_fps = tracking_only(frames, landmarker, args.max_faces)
    finally:
        engine.close()
    records, latency_records = run.records, latency_run.records
    end_to_end_fps = len(records) / wall
    result = {
        "frames": len(records),
        "frame_size": f"{frames[0].shape[1]}x{frames[0].shape[0]}",
        "faces_found": round(float(np.mean([len(r[1]) > 0 for r in records])), 3),
        "end_to_end_fps": round(end_to_end_fps, 2),
        "tracking_only_fps": round(tracking_fps, 2),
        "ratio_to_tracking": round(end_to_end_fps / tracking_fps, 3),
        # A still face costs the tracker and generator less (they reuse their last result while
        # the picture does not change): the clip's still and moving parts, apart.
        "end_to_end_fps_by_part": {"still": run.fps(0, still), "moving": run.fps(still, len(records))}
        if still < len(records) else {"still": run.fps(0, len(records))},
        "latency_ms": percentiles([r[0]["end_to_end"] for r in latency_records]),
        "latency_run": {"camera_fps": args.fps, "frames_shown": len(latency_records), "frames_sent": len(frames)},
        "stages_ms": {stage: percentiles([r[0].get(stage, 0.0) for r in records]) for stage in STAGES},
        "generator_alone_ms": generator_ms,
        "flicker": {"smoothed": flicker(run), "unsmoothed": flicker(raw_run)},
        "engine": {"backend": spec.backend, "path": spec.path, "precision": spec.precision, "device": spec.device,
                   "crop_size": spec.crop_size},
        "mirror_pass": args.mirror_pass,
        "machine": machine(),
    }
    if args.json:
        print(json.dumps(result))
    else:
        print_table(result)
    return 0


def print_table(result: dict) -> None:
    print(f"frames {result['frames']} at {result['frame_size']}, face found in {result['faces_found']:.0%}")
    print(f"end to end     {result['end_to_end_fps']:7.1f} FPS")
    parts = ", ".join(f"{part} {fps:.1f}" for part, fps in result["end_to_end_fps_by_part"].items())
    print(f"               ({parts} FPS)")
    print(f"tracking alone {result['tracking_only_fps']:7.1f} FPS   (ratio {result['ratio_to_tracking']:.2f})")
    latency = result["latency_ms"]
    print(f"latency at {result['latency_run']['camera_fps']:.0f} FPS camera: median {latency['median']} ms, p95 {latency['p95']} ms")
    print("stage          median ms   p95 ms")
    for stage, values in result["stages_ms"].items():
        print(f"  {stage:12s} {values['median']:9.2f} {values['p95']:8.2f}")
    print(f"flicker (mean abs change on a still face): smoothed {result['flicker']['smoothed']}, "
          f"unsmoothed {result['flicker']['unsmoothed']}")
    alone = result["generator_alone_ms"]
    print(f"generator alone, one crop: median {alone['median']} ms, p95 {alone['p95']} ms")
    engine = result["engine"]
    print(f"engine {engine['backend']} {engine['precision']} on {engine['device']}: {engine['path']}")
    machine = result["machine"]
    print(f"machine {machine['cpu']}, {machine['cores']} cores, GPU {machine['gpu']}")
