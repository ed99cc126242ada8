"""A still face is not tracked and generated again on every frame: the tracker reuses MediaPipe's
landmarks and the generator its result while the picture does not change, and both look again
as soon as it does. Counted on the real MediaPipe and ONNX Runtime (calls are counted, not faked)."""
from __future__ import annotations

import numpy as np

from deocc_live.frame import Frame
from deocc_live.stages.align import AlignStage
from deocc_live.stages.generate import GenerateStage
from deocc_live.stages.track import TrackStage
from engines import open_engine
from media import LANDMARKER, face_files, moving_clip


def _noisy(frames, seed=0):
    rng = np.random.default_rng(seed)
    return [np.clip(f + rng.normal(0, 2.0, f.shape), 0, 255).astype(np.uint8) for f in frames]


class _Counting:
    """Wraps a real object and counts calls of one method."""

    def __init__(self, inner, method):
        self.inner, self.method, self.calls = inner, method, 0

    def __getattr__(self, name):
        attribute = getattr(self.inner, name)
        if name != self.method:
            return attribute

        def counted(*args, **kwargs):
            self.calls += 1
            return attribute(*args, **kwargs)
        return counted


def _track(frames, still_reuse):
    stage = TrackStage(LANDMARKER, still_reuse=still_reuse)
    stage.landmarker = _Counting(stage.landmarker, "detect")
    found = []
    for index, image in enumerate(frames):
        frame = stage(Frame(image=image, index=index, time_ms=index * 33.3))
        found.append(frame.faces[0].landmarks if frame.faces else None)
    calls = stage.landmarker.calls
    stage.landmarker = stage.landmarker.inner
    stage.close()
    return found, calls


def test_a_still_face_is_tracked_on_fewer_frames_and_lands_where_every_frame_tracking_does():
    still, _ = moving_clip(face_files(1)[0], count=1)
    frames = _noisy(still * 30)
    reused, calls = _track(frames, still_reuse=2)
    every, every_calls = _track(frames, still_reuse=0)
    assert every_calls == 30 and calls <= 15
    difference = max(np.linalg.norm(a - b, axis=1).mean() for a, b in zip(reused, every))
    print(f"MediaPipe ran {calls} of 30 frames; largest mean landmark difference {difference:.2f} px")
    assert difference < 2.0


def test_a_moving_face_is_tracked_on_every_frame():
    frames, _ = moving_clip(face_files(1)[0], count=20, step=(4, 2))
    _found, calls = _track(_noisy(frames), still_reuse=2)
    assert calls >= 19  # the thumbnail changes each frame: nothing is reused (the first frame settles)


def test_the_generator_runs_again_as_soon_as_the_crop_changes(generator_onnx):
    still, masks = moving_clip(face_files(1)[0], count=1)
    frames = _noisy(still * 20)
    for index in range(16, 20):  # a grey bar comes over the face in the last four frames
        top = 40 + 10 * index
        frames[index][top:top + 60, 200:440] = (128, 128, 128)
    track, align = TrackStage(LANDMARKER, still_reuse=0), AlignStage(128)
    with open_engine(generator_onnx) as engine:
        stage = GenerateStage(engine)
        stage.engine = counting = _Counting(engine, "infer")
        ran = []
        for index, image in enumerate(frames):
            frame = align(track(Frame(image=image, index=index, time_ms=index * 33.3)))
            before = counting.calls
            stage(frame)
            ran.append(counting.calls > before)
            assert frame.faces and frame.faces[0].restored is not None
    track.close()
    print("generated:", "".join("x" if r else "." for r in ran))
    # Still (once the new track's landmarks have settled): at most one frame in three.
    assert ran[0] and sum(ran[6:16]) <= 4
    assert all(ran[16:])  # the bar moves: every frame generated


def test_a_face_covered_up_to_its_eyes_is_held_while_its_eyes_stay_and_let_go_when_they_go():
    """Face 0 of the test faces, everything but the band of its eyes and brows covered: MediaPipe
    (and every second look) stops finding it on this machine. The tracker holds it where it was,
    on the same track, and lets it go on the first frame its eyes are gone too."""
    import cv2

    from deocc_live.landmarks import FaceLandmarks
    from deocc_live.stages.track import EYE_BAND
    from media import place_face

    picture, _ = place_face(cv2.imread(str(face_files(1)[0])), (640, 480), scale=1.5)
    with FaceLandmarks(LANDMARKER) as finder:
        landmarks = finder.detect(picture)[0]
    band = landmarks[list(EYE_BAND)]
    top, bottom = int(band[:, 1].min()) - 12, int(band[:, 1].max()) + 12
    x0, x1 = int(landmarks[:, 0].min()) - 30, int(landmarks[:, 0].max()) + 30
    covered = picture.copy()
    covered[max(int(landmarks[:, 1].min()) - 60, 0):top, x0:x1] = (70, 90, 120)
    covered[bottom:int(landmarks[:, 1].max()) + 40, x0:x1] = (70, 90, 120)
    gone = covered.copy()
    gone[top:bottom, x0:x1] = (70, 90, 120)
    frames = [picture] * 10 + [covered] * 20 + [gone] * 5

    def run(hold_level):
        stage = TrackStage(LANDMARKER, hold_level=hold_level)
        faces = [stage(Frame(image=image, index=i, time_ms=i * 33.3)).faces for i, image in enumerate(frames)]
        stage.close()
        return faces

    unheld = run(0.0)
    print("without the hold, faces found:", "".join(str(len(f)) for f in unheld))
    assert sum(len(f) == 0 for f in unheld[10:30]) >= 10, "MediaPipe now finds this face: pick a harder cover"
    held = run(3.0)
    assert all(len(f) == 1 for f in held[:30])
    assert len({f[0].track_id for f in held[:30]}) == 1  # one track throughout: its memory goes on
    assert all(len(f) == 0 for f in held[31:])  # the eyes are gone: so is the face


def test_the_mirror_pass_averages_the_face_and_its_mirror_image_in_one_engine_call(generator_onnx):
    """With the mirror pass (the default) each crop and its mirror image go through the engine in
    one batch: the restored face is the mean of the two (the mirrored one turned back) and the
    mask the larger of the two. Without it, the engine's own answer passes through."""
    import numpy as np

    from deocc_live.settings import LiveSettings
    from deocc_live.stages.generate import batch_to_images, crops_to_batch

    frames, _ = moving_clip(face_files(1)[0], count=1)
    track, align = TrackStage(LANDMARKER), AlignStage(128)
    frame = align(track(Frame(image=frames[0], index=0, time_ms=0.0, still=True)))
    track.close()
    crop = frame.faces[0].crop
    with open_engine(generator_onnx) as engine:
        restored, occlusion = engine.infer(crops_to_batch([crop, np.ascontiguousarray(crop[:, ::-1])]))
        images, masks = batch_to_images(restored), np.array(occlusion[:, 0])
        results = {}
        for mirror in (True, False):
            stage = GenerateStage(engine, LiveSettings(mirror_pass=mirror, picture_views=1))  # the crop alone
            stage.engine = counting = _Counting(engine, "infer")
            face = stage(Frame(image=frames[0], index=0, time_ms=0.0, faces=[frame.faces[0]], still=True)).faces[0]
            results[mirror] = (face.restored.copy(), face.occlusion.copy(), counting.calls)
    restored_on, mask_on, calls_on = results[True]
    assert calls_on == 1
    assert np.allclose(restored_on, (images[0] + images[1][:, ::-1]) / 2, atol=1e-5)
    assert np.allclose(mask_on, np.maximum(masks[0], masks[1][:, ::-1]), atol=1e-6)
    restored_off, mask_off, _ = results[False]
    assert np.allclose(restored_off, images[0], atol=1e-5) and np.allclose(mask_off, masks[0], atol=1e-6)
    assert np.abs(restored_on - restored_off).mean() > 1e-3  # the generator is not symmetric: it matters


def test_the_mirror_pass_and_grain_options_on_the_command_line(tmp_path):
    """`deocc-live --no-mirror-pass` restores a covered picture from the one pass: the covered
    part differs from the default's, the rest is the camera's in both. `--grain 0` leaves the
    fill smoother (no grain added) than the default."""
    import subprocess
    import sys
    from pathlib import Path

    import cv2

    from media import occluded_frame

    root = Path(__file__).resolve().parents[1]
    _clean, occluded, mask, box = occluded_frame(face_files(1)[0], size=(1280, 720))
    cv2.imwrite(str(tmp_path / "in.png"), occluded)
    outputs = []
    for name, extra in (("on.png", []), ("off.png", ["--no-mirror-pass"]), ("smooth.png", ["--grain", "0"])):
        result = subprocess.run([sys.executable, "-m", "deocc_live.cli", "--input", str(tmp_path / "in.png"), "--output",
                                 str(tmp_path / name), "--engine", str(root / "assets" / "deocc_gen_int8.onnx"), *extra],
                                cwd=root, capture_output=True, text=True, timeout=300)
        assert result.returncode == 0, result.stderr[-1000:]
        outputs.append(cv2.imread(str(tmp_path / name)).astype(int))
    on, off, smooth = outputs
    covered = mask > 0.5
    x0, y0, x1, y1 = box
    reach = (x1 - x0) // 2  # the aligned crop reaches beyond the face picture, not this far
    away = np.ones(mask.shape, bool)
    away[max(y0 - reach, 0):y1 + reach, max(x0 - reach, 0):x1 + reach] = False
    assert away.sum() > 1000
    assert all(np.array_equal(picture[away], occluded[away]) for picture in outputs)

    def grain(picture):
        grey = cv2.cvtColor(picture.astype(np.uint8), cv2.COLOR_BGR2GRAY).astype(np.float32)
        return float((grey - cv2.GaussianBlur(grey, (0, 0), 0.7))[covered].std())

    assert grain(on) > 1.2 * grain(smooth)
    assert np.abs(on - off)[covered].mean() > 0.5
    assert np.abs(on - occluded.astype(int))[covered].mean() > 10 and np.abs(off - occluded.astype(int))[covered].mean() > 10
    help_text = subprocess.run([sys.executable, "-m", "deocc_live.cli", "--help"], cwd=root, capture_output=True,
                               text=True).stdout
    assert "--no-mirror-pass" in help_text
