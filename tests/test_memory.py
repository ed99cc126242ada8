"""The face memory: a face seen uncovered and then covered comes back as it was, in the app's own
pipeline, with the shipped generator; stills, the switch and the command line leave it out."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

from deocc_live.frame import Face, Frame
from deocc_live.landmarks import LOWER_FACE_OUTLINE, FaceLandmarks
from deocc_live.pipeline import Pipeline
from deocc_live.settings import LiveSettings
from deocc_live.stages.align import crop_matrix, warp_crop
from deocc_live.stages.capture import MemorySource
from deocc_live.stages.memory import FaceMemoryStage, LOWER_LIP
from engines import open_engine
from media import LANDMARKER, face_files, place_face

ROOT = Path(__file__).resolve().parents[1]
SHIPPED = ROOT / "assets" / "deocc_gen_int8.onnx"


def _psnr(a, b, region):
    error = ((a[region].astype(np.float64) - b[region].astype(np.float64)) ** 2).mean()
    return 10 * np.log10(255.0 ** 2 / max(error, 1e-9))


@pytest.fixture(scope="module")
def covered_clip():
    """A still face, uncovered for 15 frames, then a skin-free grey patch rises over its lower
    face and stays: (frames, truth, covered region of the last frame)."""
    face = cv2.imread(str(face_files(3)[2]))
    truth, _ = place_face(face, (640, 480), scale=1.5, seed=3)
    with FaceLandmarks(LANDMARKER) as finder:
        landmarks = finder.detect(truth)[0]
    patch = np.zeros(truth.shape[:2], np.uint8)
    cv2.fillPoly(patch, [landmarks[LOWER_FACE_OUTLINE].astype(np.int32)], 1)
    frames = []
    for index in range(40):
        rise = np.clip((index - 15) / 6, 0, 1)
        shift = np.float32([[1, 0, 0], [0, 1, (1 - rise) * 300]])
        moved = cv2.warpAffine(patch, shift, (truth.shape[1], truth.shape[0])).astype(bool)
        frame = truth.copy()
        frame[moved] = (90, 110, 150)
        frames.append(frame)
    return frames, truth, moved


def _run(frames, face_memory: bool):
    done = []
    with open_engine(SHIPPED) as engine:
        pipeline = Pipeline(MemorySource(frames), engine, LANDMARKER, [], LiveSettings(face_memory=face_memory),
                            on_frame=done.append)
        with pipeline:
            pipeline.wait()
        notes = pipeline.memory.notes()
    return done, notes


def test_the_memory_brings_back_the_face_it_saw(covered_clip):
    frames, truth, covered = covered_clip
    with_memory, notes = _run(frames, True)
    without, _ = _run(frames, False)
    last = slice(30, 40)  # covered, the fade done
    gain = np.mean([_psnr(a.output, truth, covered) - _psnr(b.output, truth, covered)
                    for a, b in zip(with_memory[last], without[last])])
    print(f"covered PSNR gain from the memory: {gain:+.2f} dB; notes {notes}")
    assert gain > 3.0
    assert all(f.faces and f.faces[0].memory == 1.0 for f in with_memory[last])
    assert not any(face.memory for f in without for face in f.faces)
    assert not any(face.memory for f in with_memory[:15] for face in f.faces)  # uncovered: nothing to do
    # The cover arrives over a face seen uncovered the frame before: the memory takes over at
    # once, with no frame of the generator's guess (fading in) in between.
    weights = [f.faces[0].memory for f in with_memory if f.faces]
    first = next(i for i, w in enumerate(weights) if w > 0)
    assert weights[first] == 1.0 and weights[first - 1] == 0.0


def test_stills_have_no_memory(covered_clip):
    frames, _truth, _ = covered_clip
    done = []
    with open_engine(SHIPPED) as engine:
        pipeline = Pipeline(MemorySource(frames[:16] + frames[-3:], still=True), engine, LANDMARKER, [], LiveSettings(),
                            on_frame=done.append)
        with pipeline:
            pipeline.wait()
    assert not any(face.memory for f in done for face in f.faces) and not pipeline.memory.notes()


# The stage alone, on one real face's crop and landmarks.
@pytest.fixture(scope="module")
def face_parts():
    picture, _ = place_face(cv2.imread(str(face_files(1)[0])), (640, 480), scale=1.5)
    with FaceLandmarks(LANDMARKER) as finder:
        landmarks = finder.detect(picture)[0]
    matrix = crop_matrix(landmarks, 128)
    return picture, landmarks, matrix


def _face(parts, covered: bool, track_id=0, mouth_open=0.0, new=False) -> Face:
    picture, landmarks, matrix = parts
    landmarks = landmarks.copy()
    landmarks[LOWER_LIP] += (0, mouth_open * np.ptp(landmarks[:, 0]))
    crop = warp_crop(picture, matrix, 128)
    occlusion = np.zeros((128, 128), np.float32)
    if covered:
        occlusion[80:120, 30:98] = 1.0
        crop = crop.copy()
        crop[80:120, 30:98] = (90, 110, 150)
    return Face(track_id=track_id, landmarks=landmarks, matrix=matrix, crop=crop, occlusion=occlusion,
                restored=np.full((128, 128, 3), 0.5, np.float32), new_track=new)


_CLOCK = [0.0]


def _frame(faces, still=False):
    _CLOCK[0] += 1000 / 30
    return Frame(image=np.zeros((4, 4, 3), np.uint8), index=0, time_ms=_CLOCK[0], faces=faces, still=still)


def _remembering(face_parts, **options) -> FaceMemoryStage:
    """A memory stage (``options`` passed on) that has seen the face uncovered for four frames."""
    stage = FaceMemoryStage(LiveSettings(), **options)
    for index in range(4):
        stage(_frame([_face(face_parts, False, new=index == 0)]))
    return stage


def test_a_remembered_face_fills_the_cover_and_the_switch_turns_it_off(face_parts):
    """Covered right after it was seen uncovered, the face comes from the memory at once (with
    ``start_at_once`` off, it fades in over ``fade_frames``); uncovered again, it fades out."""
    for at_once, expected in ((False, [0.2, 0.4, 0.6, 0.8, 1.0, 1.0, 1.0]), (True, [1.0] * 7)):
        stage = _remembering(face_parts, fade_frames=5, start_at_once=at_once)
        weights = []
        for _ in range(7):
            face = _face(face_parts, True)
            stage(_frame([face]))
            weights.append(face.memory)
        assert weights == pytest.approx(expected)
    leaving = []
    for _ in range(2):
        uncovered = _face(face_parts, False)
        stage(_frame([uncovered]))
        leaving.append(uncovered.memory)
    assert leaving == pytest.approx([0.8, 0.6])  # fading out
    stage(_frame([_face(face_parts, False)]))
    face = _face(face_parts, True)
    stage(_frame([face]))
    assert face.memory == 1.0  # covered again right after an uncovered frame: at once
    truth = warp_crop(face_parts[0], face_parts[2], 128)[80:120, 30:98].astype(np.float32) / 255
    assert np.abs(face.restored[80:120, 30:98] - truth).mean() < 0.03  # the face, not the generator's grey
    stage.settings.set("face_memory", False)
    face = _face(face_parts, True)
    stage(_frame([face]))
    assert face.memory == 0 and np.all(face.restored == 0.5) and not stage.notes()  # off: forgotten


def test_a_frame_is_not_restored_from_itself(face_parts):
    """The memory is asked before the frame is kept: a face a little covered (under the level
    that keeps it from being remembered) is not restored from its own pixels, where the rim of a
    cover the mask head missed would stay; the frames after it are restored from it."""
    stage = FaceMemoryStage(LiveSettings(), fade_frames=1)
    stage(_frame([_face(face_parts, False, new=True)]))  # a new track is not kept

    def a_little_covered():
        face = _face(face_parts, False)
        face.occlusion[100:112, 50:78] = 1.0
        face.crop[100:112, 50:78] = (90, 110, 150)
        return face

    first = a_little_covered()
    stage(_frame([first]))
    assert first.memory == 0 and stage.notes()[0] == "nothing remembered" and np.all(first.restored == 0.5)
    second = a_little_covered()
    stage(_frame([second]))
    assert second.memory == 1.0 and stage.notes()[0].startswith("used")


def test_what_the_memory_did_not_see_is_painted_in_near_its_edge(face_parts):
    """The mask head took a strip at the chin for a cover while the face was clean (a collar, a
    shadow): the memory has a hole there. Covered later, the hole comes from the memory painted
    in from around it, not from the generator (its grey here); with no reach it is the grey."""
    hole, inside = (slice(101, 115), slice(46, 82)), (slice(104, 112), slice(49, 79))  # inside: 3 px in
    truth = warp_crop(face_parts[0], face_parts[2], 128)[inside].astype(np.float32) / 255
    results = {}
    for reach in (0.2, 1e-6):
        stage = FaceMemoryStage(LiveSettings(), fade_frames=1, hole_reach=reach)
        for index in range(4):
            face = _face(face_parts, False, new=index == 0)
            face.occlusion[hole] = 1.0  # mistaken for a cover; the crop is the face there
            stage(_frame([face]))
        face = _face(face_parts, True)
        stage(_frame([face]))
        assert face.memory == 1.0
        results[reach] = face.restored[inside]
    painted, grey = np.abs(results[0.2] - truth).mean(), np.abs(0.5 - truth).mean()
    assert painted < 0.75 * grey  # a lip and chin painted in from around them, not a copy
    assert np.allclose(results[1e-6], 0.5, atol=0.01)


def test_a_cover_held_still_since_the_memory_was_kept_is_left_to_the_generator(face_parts):
    """A small cover (a finger at the chin) held still from the first frame: the face is
    remembered with it, and its hole still shows the same cover, so the memory knows nothing
    there and the generator (its grey here) fills it; the face around it comes from memory."""
    patch, inside = (slice(98, 114), slice(50, 78)), (slice(101, 111), slice(53, 75))  # inside: 3 px in

    def finger(new=False):
        face = _face(face_parts, False, new=new)
        face.crop = face.crop.copy()
        face.crop[patch] = (60, 80, 120)
        face.occlusion[patch] = 1.0
        return face

    stage = FaceMemoryStage(LiveSettings(), fade_frames=1)
    for index in range(5):
        face = finger(new=index == 0)
        stage(_frame([face]))
    assert face.memory == 1.0  # the memory is in use
    assert np.allclose(face.restored[inside], 0.5, atol=0.01)


def test_what_the_mask_head_missed_of_a_cover_beside_it_comes_from_the_memory_too(face_parts):
    """A cover whose top edge the mask head missed (4 px of it, like fingertips): with the memory
    in use that edge is taken for the cover and restored from the memory; a change far from the
    cover (the brows) is not; with ``rim_level`` 0 the edge is left as the mask head saw it."""
    cover, flagged = (slice(80, 120), slice(30, 98)), (slice(84, 120), slice(30, 98))
    rim = np.zeros((128, 128), bool)
    rim[cover] = True
    rim[flagged] = False
    brows = (slice(30, 38), slice(44, 84))
    truth = warp_crop(face_parts[0], face_parts[2], 128).astype(np.float32) / 255
    for level in (0.08, 0.0):
        stage = _remembering(face_parts, fade_frames=1, rim_level=level)
        face = _face(face_parts, False)
        face.crop = face.crop.copy()
        face.crop[cover] = (90, 110, 150)
        face.crop[brows] = (40, 40, 40)
        face.occlusion[flagged] = 1.0
        stage(_frame([face]))
        assert face.memory == 1.0
        if level:
            assert (face.occlusion[rim] > 0.99).mean() > 0.9
            assert np.abs(face.restored[rim] - truth[rim]).mean() < 0.04  # the face, not the cover's colour
            assert not face.occlusion[brows].any()
        else:
            assert not face.occlusion[rim].any()


def test_a_finger_the_mask_head_missed_is_taken_along_its_length(face_parts):
    """A hand whose palm the mask head flagged and whose finger, reaching 30 px up over the cheek,
    it did not (as a generator resumed for more steps did on the e2e's clip of a hand): beside the
    palm only the finger's first pixels are within reach; grown along what differs from the
    memory, the whole finger is taken for the cover and restored from the memory. A change as
    far away that does not touch the cover (the brows) is not."""
    palm, finger = (slice(96, 124), slice(30, 98)), (slice(66, 96), slice(40, 48))
    brows = (slice(30, 38), slice(44, 84))
    truth = warp_crop(face_parts[0], face_parts[2], 128).astype(np.float32) / 255
    tip = (slice(66, 80), slice(40, 48))  # beyond rim_reach (10 px) of the palm
    for grow in (0.3, 0.0):
        stage = _remembering(face_parts, fade_frames=1, rim_grow=grow)
        face = _face(face_parts, False)
        face.crop = face.crop.copy()
        face.crop[palm] = face.crop[finger] = (90, 110, 150)
        face.crop[brows] = (40, 40, 40)
        face.occlusion[palm] = 1.0
        stage(_frame([face]))
        assert face.memory == 1.0
        assert (face.occlusion[finger][-8:] > 0.99).all()  # the finger's root: within reach either way
        assert not face.occlusion[brows].any()
        if grow:
            assert (face.occlusion[finger] > 0.99).mean() > 0.95
            cover_colour = np.float32([90, 110, 150]) / 255  # the cheek (in this frame's light), not the finger
            assert np.abs(face.restored[tip] - truth[tip]).mean() < 0.2 * np.abs(cover_colour - truth[tip]).mean()
        else:
            assert not face.occlusion[tip].any()


def test_the_memory_is_registered_to_the_face_visible_around_the_cover(face_parts):
    """The head turned a little while covered (the picture squeezed 6% across and moved 3 px
    about the face), and the landmarks did not follow (MediaPipe re-guesses the mesh under a
    cover): registered to the visible face, the remembered face lands where the face is; fitted
    by the landmarks alone (``register=False``) it lands where it was."""
    picture, landmarks, matrix = face_parts
    centre = landmarks.mean(axis=0)
    turn = np.float64([[0.94, 0.0, 0.06 * centre[0] + 3], [0.0, 1.0, 0.0]])
    turned = cv2.warpAffine(picture, turn, picture.shape[1::-1], flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT)
    truth = warp_crop(turned, matrix, 128).astype(np.float32) / 255
    cover, inside = (slice(80, 120), slice(30, 98)), (slice(84, 116), slice(34, 94))
    errors = {}
    for register in (True, False):
        stage = _remembering(face_parts, fade_frames=1, register=register)
        face = _face(face_parts, True)
        face.crop = warp_crop(turned, matrix, 128)
        face.crop[cover] = (90, 110, 150)
        stage(_frame([face]))
        assert face.memory == 1.0
        errors[register] = float(np.abs(face.restored[inside] - truth[inside]).mean())
    assert errors[True] < 0.6 * errors[False] and errors[True] < 0.02, errors


def test_talking_and_a_new_mouth_fall_back_to_the_generator(face_parts):
    stage = _remembering(face_parts)
    face = _face(face_parts, True, mouth_open=0.2)  # the landmarks say the mouth is wide open now
    stage(_frame([face]))
    assert face.memory == 0 and stage.notes()[0].startswith("mouth")
    talking = _remembering(face_parts)
    for index in range(10):  # opening and closing under the cover
        face = _face(face_parts, True, mouth_open=0.04 * (index % 2))
        talking(_frame([face]))
    assert face.memory == 0 and talking.notes()[0].startswith("talking")


def test_memories_end_with_their_track_unless_it_comes_back_in_place(face_parts):
    stage = FaceMemoryStage(LiveSettings(), keep_lost_ms=100)  # three frames
    for index in range(3):
        stage(_frame([_face(face_parts, False, track_id=0, new=index == 0)]))
    stage(_frame([]))
    face = _face(face_parts, True, track_id=1, new=True)  # lost for a frame, found again in place
    stage(_frame([face]))
    assert face.memory > 0 and list(stage.notes()) == [1]
    for _ in range(5):
        stage(_frame([]))
    assert not stage.notes()  # gone for longer than keep_lost_ms: forgotten


def test_another_person_in_the_same_place_does_not_get_the_memory(face_parts):
    picture, _ = place_face(cv2.imread(str(face_files(5)[4])), (640, 480), scale=1.5)
    with FaceLandmarks(LANDMARKER) as finder:
        landmarks = finder.detect(picture)[0]
    other = (picture, landmarks, crop_matrix(landmarks, 128))
    stage = FaceMemoryStage(LiveSettings())
    for index in range(3):
        stage(_frame([_face(face_parts, False, track_id=0, new=index == 0)]))
    stage(_frame([]))
    face = _face(other, True, track_id=1, new=True)  # someone else, where the first one was
    assert np.linalg.norm(face.landmarks.mean(axis=0) - face_parts[1].mean(axis=0)) < 0.5 * np.ptp(face_parts[1][:, 0])
    stage(_frame([face]))
    assert face.memory == 0 and stage.notes()[1] == "nothing remembered"


def test_the_command_line_switch(tmp_path, covered_clip):
    from media import read_video, write_video

    video = write_video(tmp_path / "clip.mp4", covered_clip[0][:30])
    outputs = []
    for name, extra in (("on.mp4", []), ("off.mp4", ["--no-face-memory"])):
        result = subprocess.run([sys.executable, "-m", "deocc_live.cli", "--input", str(video), "--output",
                                 str(tmp_path / name), "--engine", str(SHIPPED), *extra],
                                cwd=ROOT, capture_output=True, text=True, timeout=300)
        assert result.returncode == 0, result.stderr[-1000:]
        outputs.append(read_video(tmp_path / name))
    on, off = outputs
    assert len(on) == len(off) == 30
    assert all(np.array_equal(a, b) for a, b in zip(on[:10], off[:10]))  # uncovered: the same
    assert np.abs(on[-1].astype(int) - off[-1].astype(int)).mean() > 0.5  # covered: the memory's face
    help_text = subprocess.run([sys.executable, "-m", "deocc_live.cli", "--help"], cwd=ROOT, capture_output=True,
                               text=True).stdout
    assert "--no-face-memory" in help_text


def test_memory_eval_reports_the_gain_per_kind_and_motion(tmp_path):
    from trainer.configs import MemoryEvalConfig
    from trainer.memory_eval import KINDS, MOTIONS, run
    from media import DATA

    report = run(MemoryEvalConfig(model=str(SHIPPED), data=str(DATA), out=str(tmp_path), per_kind=1, length=40))
    assert set(report["by_kind"]) == set(KINDS) and set(report["by_motion"]) == set(MOTIONS)
    still = report["by_motion"]["still"]
    print(report["markdown"])
    assert still["clips"] == len(KINDS) and still["with"]["frames"] > 20
    assert still["gain_db"] > 0.5  # the memory puts back more of the face than the generator alone
    assert (tmp_path / "memory.json").is_file() and (tmp_path / "memory_strip.jpg").stat().st_size > 10_000
    assert "| hand (still) (1) |" in (tmp_path / "memory.md").read_text()
