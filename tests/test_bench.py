"""The benchmark command's output (numbers are reported, not asserted: a benchmark, not a timed
test), and a short soak: memory, queues and threads stay flat on a looping stream."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

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
    bad = subprocess.run([sys.executable, "-m", "deocc_live.cli", "bench", "--table", str(tmp_path / "none.json")],
                         cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert bad.returncode != 0 and len(bad.stderr.strip().splitlines()) == 1


def test_short_soak_holds_memory_queues_and_threads(generator_onnx):
    result = bench("--soak", "40", "--frames", "30", "--size", "640x480", "--json", "--engine", generator_onnx,
                   "--face", face_files(1)[0])
    print(json.dumps(result))
    assert result["frames_out"] > 0.8 * 30 * (result["seconds"])
    assert result["rss_growth_pct"] < 5.0
    assert result["max_queued"] <= 6  # three queues of two: bounded
    assert result["threads"]["end"] == result["threads"]["after_warmup"]
