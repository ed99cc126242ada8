"""The benchmark command's output (numbers are reported, not asserted: a benchmark, not a timed
test), and a short soak: memory, queues and threads stay flat on a looping stream."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np

from media import face_files

ROOT = Path(__file__).resolve().parents[1]


def bench(*args, timeout=600):
    result = subprocess.run([sys.executable, "-m", "deocc_live.cli", "bench", *map(str, args)], cwd=ROOT,
                            capture_output=True, text=True, timeout=timeout)
    assert result.returncode == 0, result.stderr[-2000:]
    return json.loads(result.stdout.strip().splitlines()[-1])


def test_bench_json_has_every_key(generator_onnx, tmp_path):
    result = bench("--frames", "40", "--size", "640x480", "--json", "--engine", generator_onnx, "--face", face_files(1)[0])
    for key in ("end_to_end_fps", "tracking_only_fps", "ratio_to_tracking", "latency_ms", "stages_ms", "flicker",
                "machine", "engine", "generator_alone_ms", "end_to_end_fps_by_part"):
        assert key in result
    assert set(result["latency_ms"]) == {"median", "p95"}
    assert set(result["stages_ms"]) == {"capture", "track", "align", "generate", "memory", "smooth", "blend",
                                         "output"}
    assert set(result["flicker"]) == {"smoothed", "unsmoothed"}
    assert result["frames"] == 40 and result["faces_found"] > 0.9
    assert result["end_to_end_fps"] > 0 and result["latency_ms"]["median"] > 0
    assert result["stages_ms"]["generate"]["median"] > 0
    assert 0 < result["generator_alone_ms"]["median"] <= result["generator_alone_ms"]["p95"]
    assert result["machine"]["cpu"] and result["machine"]["cores"] >= 1 and result["machine"]["gpu"]
    print(json.dumps(result))
    # The README's table is made from such results.
    saved = tmp_path / "result.json"
    saved.write_text(json.dumps(result))
    table = subprocess.run([sys.executable, "-m", "deocc_live.cli", "bench", "--table", str(saved), str(saved)],
                           cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert table.returncode == 0, table.stderr
    assert f"**{result['end_to_end_fps']:.1f}**" in table.stdout and result["machine"]["cpu"] in table.stdout
    assert table.stdout.count("|---|---|---|") == 1  # two columns
    partial = tmp_path / "partial.json"
    partial.write_text(json.dumps({key: value for key, value in result.items() if key != "generator_alone_ms"}))
    for wrong in (tmp_path / "none.json", partial):
        bad = subprocess.run([sys.executable, "-m", "deocc_live.cli", "bench", "--table", str(wrong)],
                             cwd=ROOT, capture_output=True, text=True, timeout=60)
        assert bad.returncode != 0 and len(bad.stderr.strip().splitlines()) == 1, bad.stderr


def test_bench_recorder_keeps_a_face_half_outside_the_frame():
    from deocc_live.commands.bench import Recorder, flicker
    from deocc_live.frame import Face, Frame

    recorder = Recorder(keep_region=5)
    landmarks = np.random.default_rng(0).uniform([500, 300], [760, 560], (478, 2)).astype(np.float32)
    for index in range(5):  # the face's lower half is below a 640x480 frame
        image = np.full((480, 640, 3), index, np.uint8)
        recorder(Frame(image=image, index=index, time_ms=0.0, output=image,
                       faces=[Face(track_id=0, landmarks=landmarks)]))
    x0, y0, x1, y1 = recorder.box
    assert x1 <= 640 and y1 <= 480 and len(recorder.regions) == 5
    assert flicker(recorder) == 1.0  # each frame one level above the last


def test_short_soak_holds_memory_queues_and_threads(generator_onnx):
    result = bench("--soak", "40", "--frames", "30", "--size", "640x480", "--json", "--engine", generator_onnx,
                   "--face", face_files(1)[0])
    print(json.dumps(result))
    # Alive, not fast (speed is the bench's to report): frames kept coming out in every tenth of
    # the run. This shared 2-core machine sometimes stalls for seconds, and a live source then
    # drops frames rather than queueing them, so no frame rate is asserted.
    assert result["frames_out"] > 0.25 * 30 * result["seconds"]
    assert len(result["fps_by_tenth"]) >= 8 and all(rate > 0 for rate in result["fps_by_tenth"])
    assert result["rss_growth_pct"] < 5.0
    assert result["max_queued"] <= 6  # three queues of two: bounded
    assert result["threads"]["end"] == result["threads"]["after_warmup"]
