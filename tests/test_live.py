"""The headless app end to end on real media: a face from ../shared/data with an occluder pasted,
written as mp4 and png, through the real MediaPipe and ONNX Runtime."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import cv2
import numpy as np
import pytest

from media import DATA, face_files, moving_clip, occluded_frame, read_video, write_video

ROOT = Path(__file__).resolve().parents[1]


def deocc(*args, timeout=300, **kwargs):
    return subprocess.run([sys.executable, "-m", "deocc_live.cli", *map(str, args)], cwd=ROOT, capture_output=True,
                          text=True, timeout=timeout, **kwargs)


def _one_line_error(result):
    assert result.returncode != 0
    assert "Traceback" not in result.stderr
    lines = [l for l in result.stderr.splitlines() if l.startswith("deocc-live")]
    assert len(lines) == 1, result.stderr[-1000:]
    return lines[0]


@pytest.fixture(scope="module")
def clip(tmp_path_factory):
    folder = tmp_path_factory.mktemp("clip")
    frames, masks = moving_clip(face_files(1)[0], count=24, size=(640, 480))
    return write_video(folder / "clip.mp4", frames), frames, masks


def _differences(source, produced, masks):
    changed, away = [], []
    for before, after, mask in zip(source, produced, masks):
        difference = np.abs(before.astype(int) - after.astype(int)).mean(axis=2)
        changed.append(difference[mask].mean())
        far = np.ones_like(mask)
        far[40:440, 80:560] = False  # the face and its surroundings
        away.append(difference[far].mean())
    return float(np.mean(changed)), float(np.mean(away))


def test_video_in_video_out(clip, generator_onnx, tmp_path):
    path, frames, masks = clip
    out, off = tmp_path / "out.mp4", tmp_path / "off.mp4"
    result = deocc("--input", path, "--output", out, "--engine", generator_onnx)
    assert result.returncode == 0, result.stderr[-2000:]
    source, produced = read_video(path), read_video(out)
    assert len(produced) == len(source) == len(frames)
    assert produced[0].shape == source[0].shape
    capture = cv2.VideoCapture(str(out))
    assert abs(capture.get(cv2.CAP_PROP_FPS) - 30.0) < 0.01
    capture.release()
    # The same clip with the effect off measures what the second encode alone changes.
    result = deocc("--input", path, "--output", off, "--engine", generator_onnx, "--off")
    assert result.returncode == 0, result.stderr[-2000:]
    changed, away = _differences(source, produced, masks)
    codec_changed, codec_away = _differences(source, read_video(off), masks)
    assert codec_changed < 3.0  # effect off: the covered face only went through the codec
    assert changed > codec_changed + 8.0, f"occluder pixels barely changed: {changed:.2f}"
    assert away < codec_away + 0.3, f"pixels away from the face changed: {away:.2f} (codec alone {codec_away:.2f})"
    assert not list(tmp_path.glob(".*partial*"))


def test_image_in_image_out(generator_onnx, tmp_path):
    _clean, occluded, mask, _box = occluded_frame(face_files(2)[1], (800, 600))
    source = tmp_path / "photo.png"
    cv2.imwrite(str(source), occluded)
    out = tmp_path / "restored.png"
    result = deocc("--input", source, "--output", out, "--engine", generator_onnx)
    assert result.returncode == 0, result.stderr[-2000:]
    restored = cv2.imread(str(out))
    assert restored.shape == occluded.shape
    difference = np.abs(restored.astype(int) - occluded.astype(int)).mean(axis=2)
    assert difference[mask].mean() > 8.0
    border = np.ones_like(mask)
    border[60:540, 100:700] = False
    assert difference[border].max() == 0  # PNG: untouched pixels are exactly the camera's


def test_a_picture_is_restored_from_several_views_and_a_video_from_one(clip, generator_onnx, tmp_path):
    """--picture-views: a picture's face goes through the generator in several views (the default)
    or in its crop alone (1), each restoring the covered face and leaving the rest exactly as it
    was; a video's frames are generated from the crop alone, whatever the option says."""
    _clean, occluded, mask, _box = occluded_frame(face_files(2)[1], (800, 600))
    source = tmp_path / "photo.png"
    cv2.imwrite(str(source), occluded)
    restored = {}
    for views in ("1", "9", None):
        out = tmp_path / f"views{views}.png"
        result = deocc("--input", source, "--output", out, "--engine", generator_onnx,
                       *(("--picture-views", views) if views else ()))
        assert result.returncode == 0, result.stderr[-2000:]
        restored[views] = cv2.imread(str(out)).astype(int)
        difference = np.abs(restored[views] - occluded.astype(int)).mean(axis=2)
        assert difference[mask].mean() > 8.0, views
        border = np.ones_like(mask)
        border[60:540, 100:700] = False
        assert difference[border].max() == 0
    for one, other, least in (("1", "9", 0.5), ("1", None, 0.5), ("9", None, 0.1)):
        assert np.abs(restored[one] - restored[other]).mean(axis=2)[mask].mean() > least, (one, other)
    path, _frames, _masks = clip
    videos = []
    for views in ("1", "9"):
        out = tmp_path / f"clip{views}.mp4"
        result = deocc("--input", path, "--output", out, "--engine", generator_onnx, "--picture-views", views)
        assert result.returncode == 0, result.stderr[-2000:]
        videos.append(read_video(out))
    assert all(np.array_equal(a, b) for a, b in zip(*videos)) and len(videos[0]) == len(videos[1]) > 0


def test_a_transparent_picture_keeps_its_transparency_where_the_format_keeps_one(generator_onnx, tmp_path):
    """A cut-out portrait (PNG with an alpha channel, 8 or 16 bits): the covered face restored,
    the transparency written back unchanged to PNG, WebP (lossless) and TIFF; a JPEG has none."""
    _clean, occluded, mask, _box = occluded_frame(face_files(2)[1], (800, 600))
    alpha = np.zeros(mask.shape, np.uint8)
    cv2.ellipse(alpha, (400, 300), (330, 280), 0, 0, 360, 255, -1)
    alpha[:40] = 128  # half transparent
    assert alpha[mask].min() == 255
    for bits, suffix in ((8, ".png"), (16, ".png"), (8, ".webp"), (8, ".tif"), (8, ".jpg")):
        picture = np.dstack([occluded, alpha])
        if bits == 16:
            picture = picture.astype(np.uint16) * 257
        source = tmp_path / f"cutout{bits}.png"
        cv2.imwrite(str(source), picture)
        out = tmp_path / f"restored{bits}{suffix}"
        result = deocc("--input", source, "--output", out, "--engine", generator_onnx,
                       *(("--picture-views", "1") if suffix != ".png" else ()))
        assert result.returncode == 0, result.stderr[-2000:]
        written = cv2.imread(str(out), cv2.IMREAD_UNCHANGED)
        assert written.dtype == np.uint8 and written.shape[:2] == occluded.shape[:2]
        if suffix == ".jpg":
            assert written.ndim == 3 and written.shape[2] == 3
            continue
        assert written.shape[2] == 4, (bits, suffix)
        assert np.array_equal(written[..., 3], alpha), (bits, suffix)
        difference = np.abs(written[..., :3].astype(int) - occluded.astype(int)).mean(axis=2)
        assert difference[mask].mean() > 8.0, (bits, suffix)


def test_a_black_and_white_photo_comes_out_black_and_white(generator_onnx, tmp_path):
    """A covered face in a black-and-white photo is restored in black and white: the generator,
    trained on colour faces, would paint it in colour."""
    _clean, occluded, mask, _box = occluded_frame(face_files(2)[1], (800, 600))
    source = tmp_path / "photo.png"
    cv2.imwrite(str(source), cv2.cvtColor(occluded, cv2.COLOR_BGR2GRAY))
    out = tmp_path / "restored.png"
    result = deocc("--input", source, "--output", out, "--engine", generator_onnx)
    assert result.returncode == 0, result.stderr[-2000:]
    restored = cv2.imread(str(out))
    grey = cv2.cvtColor(cv2.cvtColor(occluded, cv2.COLOR_BGR2GRAY), cv2.COLOR_GRAY2BGR)
    assert np.abs(restored.astype(int) - grey.astype(int)).mean(axis=2)[mask].mean() > 8.0  # restored
    assert np.ptp(restored.astype(int), axis=2).max() <= 2  # and nowhere a colour


def test_folder_in_folder_out_lists_bad_files(generator_onnx, tmp_path):
    inputs = tmp_path / "in"
    inputs.mkdir()
    for index, face in enumerate(face_files(3)[:2]):
        _clean, occluded, _mask, _box = occluded_frame(face, (480, 360))
        cv2.imwrite(str(inputs / f"face{index}.jpg"), occluded)
    (inputs / "broken.jpg").write_bytes(b"\xff\xd8 truncated")
    gray = cv2.cvtColor(cv2.imread(str(inputs / "face0.jpg")), cv2.COLOR_BGR2GRAY)
    cv2.imwrite(str(inputs / "gray.png"), gray)
    out = tmp_path / "out"
    result = deocc("--input", inputs, "--output", out, "--engine", generator_onnx)
    assert sorted(p.name for p in out.iterdir()) == ["face0.jpg", "face1.jpg", "gray.png"]
    assert "broken.jpg" in result.stderr
    assert result.returncode == 0
    assert cv2.imread(str(out / "gray.png")).shape == (360, 480, 3)


def test_photos_in_a_folder_come_out_as_each_photo_alone(generator_onnx, tmp_path):
    """Stills are independent: no landmark filter, smoothing or track carried from a neighbour."""
    inputs = tmp_path / "in"
    inputs.mkdir()
    photos = sorted((DATA / "occluded_real" / "masked_crops").glob("*.jpg"))[:6]
    for path in photos:
        (inputs / path.name).write_bytes(path.read_bytes())
    together = tmp_path / "together"
    result = deocc("--input", inputs, "--output", together, "--engine", generator_onnx)
    assert result.returncode == 0, result.stderr[-2000:]
    changed = 0
    for path in photos:
        alone = tmp_path / f"alone_{path.name}"
        result = deocc("--input", inputs / path.name, "--output", alone, "--engine", generator_onnx)
        assert result.returncode == 0, result.stderr[-2000:]
        assert (together / path.name).read_bytes() == alone.read_bytes(), f"{path.name} depends on its neighbours"
        changed += not np.array_equal(cv2.imread(str(alone)), cv2.imread(str(path)))
    assert changed >= 3  # faces were found and restored: the comparison compared something


@pytest.mark.parametrize("case", ["missing", "empty", "text_as_mp4", "truncated_mp4", "unsupported"])
def test_bad_inputs_are_one_line_errors_and_write_nothing(case, clip, generator_onnx, tmp_path):
    path = {"missing": tmp_path / "nope.mp4", "empty": tmp_path / "empty.mp4", "text_as_mp4": tmp_path / "text.mp4",
            "truncated_mp4": tmp_path / "cut.mp4", "unsupported": tmp_path / "notes.xyz"}[case]
    if case == "empty":
        path.write_bytes(b"")
    elif case == "text_as_mp4":
        path.write_text("this is not a video\n" * 20)
    elif case == "truncated_mp4":
        path.write_bytes(clip[0].read_bytes()[:2000])
    elif case == "unsupported":
        path.write_text("x")
    out = tmp_path / "out.mp4"
    result = deocc("--input", path, "--output", out, "--engine", generator_onnx)
    _one_line_error(result)
    assert not out.exists() and not list(tmp_path.glob(".*partial*"))


@pytest.mark.parametrize("case", ["missing", "random", "wrong_suffix"])
def test_bad_engine_is_an_error_at_start(case, clip, tmp_path):
    engine = {"missing": tmp_path / "gen.onnx", "random": tmp_path / "gen.onnx", "wrong_suffix": tmp_path / "gen.bin"}[case]
    if case != "missing":
        engine.write_bytes(os.urandom(2048))
    out = tmp_path / "out.mp4"
    line = _one_line_error(deocc("--input", clip[0], "--output", out, "--engine", engine))
    assert "gen." in line
    assert not out.exists()


def test_unwritable_output_is_an_error(clip, generator_onnx, tmp_path):
    line = _one_line_error(deocc("--input", clip[0], "--output", tmp_path / "no" / "such" / "dir.mp4", "--engine", generator_onnx))
    assert "does not exist" in line


@pytest.mark.parametrize("stop", ["SIGINT", "SIGHUP"])
def test_output_file_is_replaced_only_when_complete(stop, clip, generator_onnx, tmp_path):
    """A file job stopped (Ctrl-C, or its terminal closed) keeps the earlier file and says that
    nothing was written; no temporary file is left."""
    long_clip = write_video(tmp_path / "long.mp4", clip[1] * 100)  # 2,400 frames: over a minute's work here
    out = tmp_path / "out.mp4"
    out.write_bytes(b"earlier result")
    # Started as from a terminal: a test run under nohup (or in the background) would pass its
    # ignored hang-up on, and the job rightly keeps ignoring it.
    process = subprocess.Popen([sys.executable, "-m", "deocc_live.cli", "--input", str(long_clip), "--output", str(out),
                                "--engine", str(generator_onnx)], cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                               preexec_fn=lambda: signal.signal(signal.SIGHUP, signal.SIG_DFL))
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and process.poll() is None:  # stop it once frames are being written
        if any(p.stat().st_size > 20000 for p in tmp_path.glob(".out.*.partial.mp4")):
            break
        time.sleep(0.2)
    assert process.poll() is None, "the job ended before it could be stopped"
    started = time.monotonic()
    process.send_signal(getattr(signal, stop))
    _, stderr = process.communicate(timeout=30)
    assert time.monotonic() - started < 3.0, "stopping took too long"
    assert process.returncode != 0
    assert out.read_bytes() == b"earlier result"  # an interrupted file job keeps the earlier file
    assert "not written; the earlier" in stderr and "wrote" not in stderr, stderr[-500:]
    assert not list(tmp_path.glob(".*partial*"))


def test_the_input_is_never_the_output(clip, generator_onnx, tmp_path):
    """An output that would overwrite the input (the same file, by any path; the same folder), a
    folder of results inside the folder read, a file name for a folder's results, a video over a
    folder, and --loop with a file (which never ends) are refused before any work, each in one
    line, and leave every file as it was."""
    picture = tmp_path / "in" / "face.jpg"
    picture.parent.mkdir()
    cv2.imwrite(str(picture), occluded_frame(face_files(1)[0])[1])
    before = picture.read_bytes()
    video = tmp_path / "clip.mp4"
    video.write_bytes(clip[0].read_bytes())
    (tmp_path / "folder.mp4").mkdir()
    cases = [(["--input", picture, "--output", picture], "is the input"),
             (["--input", picture, "--output", tmp_path / "in" / ".." / "in" / "face.jpg"], "is the input"),
             (["--input", video, "--output", video], "is the input"),
             (["--input", picture.parent, "--output", picture.parent], "is the input"),
             (["--input", picture.parent, "--output", picture.parent / "restored"], "inside the input folder"),
             (["--input", picture.parent, "--output", tmp_path / "restored.jpg"], "looks like a file name"),
             (["--input", video, "--output", tmp_path / "folder.mp4"], "is a folder"),
             (["--input", video, "--output", tmp_path / "out.mpg"], "unsupported video output"),
             (["--input", video, "--output", tmp_path / "out.mp4", "--loop"], "--loop"),
             (["--input", "", "--output", tmp_path / "out.jpg"], "--input is empty")]
    for args, reason in cases:
        line = _one_line_error(deocc(*args, "--engine", generator_onnx, timeout=120))
        assert reason in line, line
    assert picture.read_bytes() == before and video.read_bytes() == clip[0].read_bytes()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["clip.mp4", "folder.mp4", "in"]
    assert [p.name for p in picture.parent.iterdir()] == ["face.jpg"]


def test_a_camera_index_out_of_range_is_refused():
    for index in ("-1", "100", "99999999999"):
        result = deocc("--camera", index, "--output", "never.mp4")
        assert result.returncode == 2 and "camera index out of range (0-99)" in result.stderr
        assert "Traceback" not in result.stderr and not (ROOT / "never.mp4").exists()


def test_camera_that_does_not_exist(generator_onnx, tmp_path):
    line = _one_line_error(deocc("--camera", "57", "--engine", generator_onnx, "--output", tmp_path / "o.mp4"))
    assert "camera 57" in line


def test_missing_landmark_model_says_where_to_put_it(clip, generator_onnx, tmp_path):
    env = {**os.environ, "XDG_CACHE_HOME": str(tmp_path), "DEOCC_MODEL_DIR": ""}
    env.pop("DEOCC_MODEL_DIR")
    bad = tmp_path / "face_landmarker.task"
    bad.write_bytes(b"corrupt")
    line = _one_line_error(deocc("--input", clip[0], "--output", tmp_path / "o.mp4", "--engine", generator_onnx,
                                 "--landmarker", bad, env=env))
    assert "sha256" in line


def test_sigusr1_toggles_the_effect_and_sigterm_stops(clip, generator_onnx, tmp_path):
    process = subprocess.Popen([sys.executable, "-m", "deocc_live.cli", "--input", str(clip[0]), "--loop", "--realtime",
                                "--output", str(tmp_path / "o.mp4"), "--engine", str(generator_onnx)], cwd=ROOT,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    time.sleep(5)
    process.send_signal(signal.SIGUSR1)
    time.sleep(0.5)
    process.send_signal(signal.SIGUSR1)
    time.sleep(0.5)
    started = time.monotonic()
    process.send_signal(signal.SIGTERM)
    _out, err = process.communicate(timeout=30)
    assert time.monotonic() - started < 3.0
    assert "effect off" in err and "effect on" in err
    assert err.index("effect off") < err.index("effect on")


@pytest.mark.parametrize("args", [
    ["--smoothing", "5"], ["--smoothing", "-1"], ["--smoothing", "nan"], ["--feather", "-1"], ["--feather", "0.5"],
    ["--grain", "-0.5"], ["--grain", "3"],
    ["--picture-views", "0"], ["--picture-views", "10"],
    ["--threads", "-2"], ["--threads", "0"], ["--fps", "-5"], ["--max-faces", "0"], ["--max-faces", "99"],
    ["bench", "--frames", "0"], ["bench", "--fps", "-5"], ["bench", "--threads", "-2"], ["bench", "--soak", "-1"],
    ["--gui", "--smoothing", "5"],
])
def test_options_out_of_range_are_one_line_errors(args):
    result = deocc(*args, timeout=60)
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("deocc-live") and "error: argument" in lines[0], result.stderr
    assert args[-2] in lines[0]


def test_gui_out_of_range_option_is_a_one_line_error():
    result = subprocess.run([sys.executable, "-m", "deocc_live.gui.app", "--feather", "-1"], cwd=ROOT,
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 2 and result.stderr.count("\n") == 1 and "--feather" in result.stderr


@pytest.mark.parametrize("args", [["--gui"], ["--preview", "--input", "PHOTO"]])
def test_windows_without_a_display_are_one_line_errors(args, tmp_path):
    photo = tmp_path / "photo.jpg"
    photo.write_bytes(face_files(1)[0].read_bytes())
    env = {k: v for k, v in os.environ.items() if k not in ("DISPLAY", "WAYLAND_DISPLAY", "QT_QPA_PLATFORM")}
    result = deocc(*[str(photo) if a == "PHOTO" else a for a in args], timeout=60, env=env)
    assert result.returncode == 1, result.stderr[-2000:]
    line = _one_line_error(result)
    assert "needs a display" in line
    assert result.stderr.strip() == line  # no Qt plugin noise


def test_a_run_prints_only_its_own_lines_unless_verbose(tmp_path):
    photo = tmp_path / "photo.jpg"
    photo.write_bytes(face_files(1)[0].read_bytes())
    quiet = deocc("--input", photo, "--output", tmp_path / "out.jpg", timeout=120)
    assert quiet.returncode == 0, quiet.stderr[-2000:]
    assert quiet.stderr.strip().splitlines() == [f"wrote 1 frame(s) to {tmp_path / 'out.jpg'}"]
    loud = deocc("--input", photo, "--output", tmp_path / "out.jpg", "--verbose", timeout=120)
    assert loud.returncode == 0 and len(loud.stderr.strip().splitlines()) > 3  # MediaPipe's own lines


def test_more_faces_allowed_leaves_a_single_face_as_it_was(tmp_path):
    """--max-faces 5 on photos of one face: the same pictures as --max-faces 1 (MediaPipe can
    report one face twice when more are allowed; both would be painted; and asked for several
    faces it places a face differently: 0_0_4.jpg's by 53 px, 268.jpg's by 11)."""
    inputs = tmp_path / "in"
    inputs.mkdir()
    names = ("0_0_15_copy_6.jpg", "0_0_15.jpg", "0_0_16_copy.jpg", "0_0_4.jpg", "268.jpg")
    for name in names:
        (inputs / name).write_bytes((DATA / "occluded_real" / "masked_crops" / name).read_bytes())
    outputs = {}
    for count in (1, 5):
        outputs[count] = tmp_path / f"out{count}"
        result = deocc("--input", inputs, "--output", outputs[count], "--max-faces", count)
        assert result.returncode == 0, result.stderr[-2000:]
    for name in names:
        one, five = cv2.imread(str(outputs[1] / name)), cv2.imread(str(outputs[5] / name))
        assert np.array_equal(one, five), name
        assert not np.array_equal(one, cv2.imread(str(inputs / name)))  # the face was restored


def test_one_command_shows_its_subcommands():
    top = deocc("--help", timeout=60)
    assert top.returncode == 0 and "{bench,gui}" in top.stdout and "--smoothing" in top.stdout
    for command, option in (("bench", "--frames"), ("gui", "--feather")):
        sub = deocc(command, "--help", timeout=60)
        assert sub.returncode == 0 and option in sub.stdout, sub.stderr
    gui = subprocess.run([sys.executable, "-m", "deocc_live.gui.app", "--help"], cwd=ROOT, capture_output=True, text=True,
                         timeout=60)
    assert gui.returncode == 0 and "--smoothing" in gui.stdout  # deocc-live-gui


def test_a_slow_clip_keeps_its_rate_and_two_writers_of_one_file_never_share_a_temporary(clip, generator_onnx, tmp_path):
    """The output keeps the input's frame rate, even one under 1 frame/s (a time-lapse); each
    video output writes under a temporary name of its own (two runs to one target, or an input
    that happens to bear the old fixed name, never collide), and the finished file gets the
    permissions a plain file would."""
    from types import SimpleNamespace

    from deocc_live.stages.outputs import VideoFileOutput

    slow = write_video(tmp_path / "slow.mp4", clip[1][:4], fps=0.5)
    out = tmp_path / "out.mp4"
    result = deocc("--input", slow, "--output", out, "--engine", generator_onnx, timeout=120)
    assert result.returncode == 0, result.stderr[-500:]
    capture = cv2.VideoCapture(str(out))
    assert capture.get(cv2.CAP_PROP_FPS) == pytest.approx(0.5, abs=0.01)
    capture.release()
    first, second = (VideoFileOutput(tmp_path / "same.mp4", 30.0, (64, 48)) for _ in range(2))
    assert first.partial != second.partial and first.partial.parent == tmp_path
    for value, writer in ((40, first), (200, second)):
        for _ in range(3):
            writer.write(SimpleNamespace(output=np.full((48, 64, 3), value, np.uint8)))
    first.close()
    second.close()
    frames = read_video(tmp_path / "same.mp4")
    assert len(frames) == 3 and abs(int(frames[0].mean()) - 200) < 8  # the last one to finish, whole
    umask = os.umask(0)
    os.umask(umask)
    assert (tmp_path / "same.mp4").stat().st_mode & 0o777 == 0o666 & ~umask
    assert not list(tmp_path.glob(".*partial*"))


def test_a_folder_with_no_readable_picture_is_an_error_and_leaves_no_folder(generator_onnx, tmp_path):
    pictures = tmp_path / "in"
    pictures.mkdir()
    (pictures / "a.jpg").write_bytes(b"not a picture")
    (pictures / "b.png").write_bytes(b"\x89PNG\r\n\x1a\n")
    line = _one_line_error(deocc("--input", pictures, "--output", tmp_path / "out", "--engine", generator_onnx))
    assert "no picture in" in line
    assert not (tmp_path / "out").exists()


def test_options_that_would_send_the_result_nowhere_are_refused(clip, generator_onnx):
    for args, reason in ((["--input", clip[0], "--no-virtual-camera"], "the result would go nowhere"),
                         (["--gui", "--input", clip[0], "--output", "never.mp4"], "Record writes a file")):
        line = _one_line_error(deocc(*args, "--engine", generator_onnx, timeout=120))
        assert reason in line, line
    assert not (ROOT / "never.mp4").exists()
