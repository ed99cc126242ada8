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
