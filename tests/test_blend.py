"""The blend stage: it paints only the covered part of each face, in place, in 8 bits, and the
result is the float blend of the design (occlusion * restored + (1 - occlusion) * camera) to
within rounding. The reference here is that formula computed over the whole frame in float."""
from __future__ import annotations

import cv2
import numpy as np
import pytest

from deocc_live.frame import Face, Frame
from deocc_live.landmarks import FACE_OVAL
from deocc_live.settings import LiveSettings
from deocc_live.stages.align import crop_box
from deocc_live.stages.blend import BlendStage, _merged

SIZE = 128


def _face(rng, centre, scale, angle, specks=True) -> Face:
    """A face whose crop maps to the frame by a rotation and scale about ``centre``, with a
    covered lower half and (optionally) a small speck of occlusion at the top corner."""
    rotation = cv2.getRotationMatrix2D((SIZE / 2, SIZE / 2), angle, scale)
    inverse = rotation.copy()
    inverse[:, 2] += np.array(centre) - SIZE / 2
    occlusion = np.zeros((SIZE, SIZE), np.float32)
    cv2.ellipse(occlusion, (64, 92), (44, 26), 0, 0, 360, 1.0, -1)
    if specks:
        occlusion[12:16, 10:14] = 0.8
    restored = rng.uniform(0, 1, (SIZE, SIZE, 3)).astype(np.float32)
    crop = rng.integers(0, 256, (SIZE, SIZE, 3), dtype=np.uint8)
    # The face's outline: an ellipse round the crop's middle, in frame pixels.
    turn = np.linspace(0, 2 * np.pi, len(FACE_OVAL), endpoint=False)
    outline = np.stack([64 + 50 * np.sin(turn), 64 - 58 * np.cos(turn)], axis=1).astype(np.float32)
    landmarks = np.zeros((478, 2), np.float32)
    landmarks[FACE_OVAL] = cv2.transform(outline[None], inverse)[0]
    return Face(track_id=0, landmarks=landmarks, matrix=cv2.invertAffineTransform(inverse),
                inverse=inverse, crop=crop, restored=restored, occlusion=occlusion)


def _reference(image, faces, blend: BlendStage) -> np.ndarray:
    """The float blend over the whole frame, face after face (colour match as the stage does)."""
    out = image.astype(np.float32)
    height, width = image.shape[:2]
    for face in faces:
        mask = blend.mask_for(face.occlusion)
        colour = blend._colour_matched(face) * 255  # the colour match is tested on its own below
        alpha = cv2.warpAffine(mask, face.inverse, (width, height), flags=cv2.INTER_LINEAR)[..., None]
        warped = cv2.warpAffine(colour, face.inverse, (width, height), flags=cv2.INTER_LINEAR,
                                borderMode=cv2.BORDER_REPLICATE)
        out = warped * alpha + out * (1 - alpha)
    return out


@pytest.mark.parametrize("scale,angle", [(1.0, 0.0), (2.6, 12.0), (4.1, -25.0), (0.7, 40.0)])
def test_blend_is_the_float_blend_and_leaves_uncovered_pixels_exact(scale, angle):
    rng = np.random.default_rng(int(scale * 10))
    image = rng.integers(0, 256, (720, 1280, 3), dtype=np.uint8)
    face = _face(rng, (640, 360), scale, angle)
    blend = BlendStage(LiveSettings(grain=0.0))  # no grain (its own test): the exact blend
    frame = blend(Frame(image=image.copy(), index=0, time_ms=0.0, faces=[face]))
    reference = _reference(image, [face], blend)
    difference = np.abs(frame.output.astype(np.float32) - reference).max(axis=2)
    assert difference.max() <= 2.0  # 8-bit weight and colour: rounding only
    # Where the float weight is 0, the camera's pixel is there bit for bit.
    height, width = image.shape[:2]
    alpha = cv2.warpAffine(blend.mask_for(face.occlusion), face.inverse, (width, height), flags=cv2.INTER_LINEAR)
    untouched = alpha == 0
    assert np.array_equal(frame.output[untouched], image[untouched])
    painted = np.abs(frame.output.astype(int) - image.astype(int)).max(axis=2) > 0
    assert painted.sum() > 0.5 * (alpha > 0.5).sum()  # the covered part did change
    # Only small boxes were touched: the mask and the speck, not the face's whole square.
    touched = sum(pixels.shape[0] * pixels.shape[1] for _, _, pixels in frame.before)
    x0, y0, x1, y1 = crop_box(face.inverse, SIZE, image.shape)
    assert touched < 0.6 * (x1 - x0) * (y1 - y0)


def test_input_image_puts_back_what_was_painted_over_with_overlapping_faces():
    rng = np.random.default_rng(3)
    image = rng.integers(0, 256, (480, 640, 3), dtype=np.uint8)
    faces = [_face(rng, (300, 240), 2.0, 5.0), _face(rng, (360, 260), 1.8, -10.0)]
    blend = BlendStage(LiveSettings(grain=0.0))  # no grain (its own test): the exact blend
    frame = blend(Frame(image=image.copy(), index=0, time_ms=0.0, faces=faces))
    assert not np.array_equal(frame.output, image)
    assert np.array_equal(frame.input_image(), image)
    difference = np.abs(frame.output.astype(np.float32) - _reference(image, faces, blend)).max()
    assert difference <= 3.0


def test_disabled_and_face_free_frames_are_passed_through_untouched():
    rng = np.random.default_rng(4)
    image = rng.integers(0, 256, (240, 320, 3), dtype=np.uint8)
    blend = BlendStage(LiveSettings(grain=0.0))  # no grain (its own test): the exact blend
    off = blend(Frame(image=image.copy(), index=0, time_ms=0.0, faces=[_face(rng, (160, 120), 1.0, 0.0)]),
                enabled=False)
    assert np.array_equal(off.output, image) and not off.before
    empty = blend(Frame(image=image.copy(), index=0, time_ms=0.0))
    assert np.array_equal(empty.output, image) and not empty.before


def test_a_face_half_outside_the_frame_is_clipped():
    rng = np.random.default_rng(5)
    image = rng.integers(0, 256, (240, 320, 3), dtype=np.uint8)
    face = _face(rng, (300, 230), 2.0, 0.0)  # the lower half is beyond the bottom right corner
    blend = BlendStage(LiveSettings(grain=0.0))  # no grain (its own test): the exact blend
    frame = blend(Frame(image=image.copy(), index=0, time_ms=0.0, faces=[face]))
    assert np.abs(frame.output.astype(np.float32) - _reference(image, [face], blend)).max() <= 2.0


def test_overlapping_boxes_are_merged_once():
    assert _merged([(0, 0, 10, 10), (20, 20, 30, 30)]) == [(0, 0, 10, 10), (20, 20, 30, 30)]
    assert _merged([(0, 0, 10, 10), (5, 5, 30, 30), (28, 0, 40, 6)]) == [(0, 0, 40, 30)]


def test_the_fill_takes_the_visible_face_colour_not_the_occluder():
    """A fill tinted blue (the colour of a mask it replaced) on a face whose visible skin is warm:
    the blended fill's colour moves toward the skin's, and the visible face is not touched."""
    rng = np.random.default_rng(3)
    face = _face(rng, (320, 180), 2.0, 0.0, specks=False)
    skin = np.array([120, 150, 200], np.float32)  # BGR
    face.crop = np.clip(skin + rng.normal(0, 6, (SIZE, SIZE, 3)), 0, 255).astype(np.uint8)
    face.restored = np.clip((skin + np.array([60, 10, -40], np.float32)) / 255 + rng.normal(0, 0.02, (SIZE, SIZE, 3)),
                            0, 1).astype(np.float32)
    image = np.zeros((360, 640, 3), np.uint8)
    image[:] = face.crop[64, 64]
    frame = BlendStage(LiveSettings())(Frame(image=image.copy(), index=0, time_ms=0.0, faces=[face]))
    no_pull = BlendStage(LiveSettings(), colour_match=False)(Frame(image=image.copy(), index=0, time_ms=0.0, faces=[face]))
    covered = cv2.warpAffine(face.occlusion, face.inverse, (640, 360)) > 0.9
    lab = lambda picture: cv2.cvtColor(picture, cv2.COLOR_BGR2LAB).astype(np.float32)[covered].mean(axis=0)
    target = lab(np.full((1, 1, 3), skin, np.uint8).repeat(360, 0).repeat(640, 1))
    before, after = np.linalg.norm(lab(no_pull.output) - target), np.linalg.norm(lab(frame.output) - target)
    assert after < 0.6 * before
    # Where the blend's mask is 0 (the visible face, inside the crop too) the camera's pixels stay.
    alpha = cv2.warpAffine(BlendStage(LiveSettings()).mask_for(face.occlusion), face.inverse, (640, 360),
                           flags=cv2.INTER_LINEAR)
    footprint = cv2.warpAffine(np.ones((SIZE, SIZE), np.float32), face.inverse, (640, 360)) > 0.999
    untouched = footprint & (alpha == 0)
    assert untouched.sum() > 0.3 * footprint.sum()
    assert np.array_equal(frame.output[untouched], image[untouched])


def _grain_of(picture: np.ndarray, where: np.ndarray) -> float:
    grey = cv2.cvtColor(picture, cv2.COLOR_BGR2GRAY).astype(np.float32)
    return float((grey - cv2.GaussianBlur(grey, (0, 0), 0.7))[where].std())


def test_the_fill_gets_the_grain_of_the_visible_face_and_nothing_else_changes():
    """A smooth fill on a face whose camera picture is grainy: with the grain setting at 1 the
    blended fill shows about the visible face's grain, at 0 it stays smooth; the visible face is
    not touched either way; the grain stays put on a still face and moves with a moving one."""
    rng = np.random.default_rng(7)
    face = _face(rng, (320, 180), 2.0, 0.0, specks=False)
    face.restored = np.full((SIZE, SIZE, 3), 0.55, np.float32)  # smooth: no grain of its own
    image = np.clip(140 + rng.normal(0, 5, (360, 640, 1)), 0, 255).astype(np.uint8).repeat(3, axis=2)
    face.crop = cv2.warpAffine(image, face.matrix, (SIZE, SIZE))
    alpha = cv2.warpAffine(BlendStage(LiveSettings()).mask_for(face.occlusion), face.inverse, (640, 360),
                           flags=cv2.INTER_LINEAR)
    covered, untouched = alpha > 0.99, alpha == 0
    seen = _grain_of(image, untouched)
    outputs = {}
    for grain in (0.0, 1.0, 2.0):
        blend = BlendStage(LiveSettings(grain=grain))
        first = blend(Frame(image=image.copy(), index=0, time_ms=0.0, faces=[face])).output
        second = blend(Frame(image=image.copy(), index=1, time_ms=33.0, faces=[face])).output
        assert np.array_equal(first[untouched], image[untouched])
        assert np.array_equal(first, second)  # a still face: no shimmer
        outputs[grain] = (first, second)
    assert _grain_of(outputs[0.0][0], covered) < 0.2 * seen
    assert 0.75 * seen < _grain_of(outputs[1.0][0], covered) < 1.25 * seen
    assert 1.6 * seen < _grain_of(outputs[2.0][0], covered) < 2.4 * seen
    assert abs(float(outputs[1.0][0][covered].mean()) - float(outputs[0.0][0][covered].mean())) < 1.0  # no shift
    # The grain moves with the face: the face and its picture moved 5 px right, the grain too.
    moved = _face(np.random.default_rng(7), (325, 180), 2.0, 0.0, specks=False)
    moved.restored, moved.crop = face.restored, face.crop
    shifted = np.roll(image, 5, axis=1)
    again = BlendStage(LiveSettings(grain=1.0))(Frame(image=shifted, index=2, time_ms=66.0, faces=[moved])).output
    inner = covered & np.roll(covered, 5, axis=1)
    differs = lambda a, b: float(np.abs(a[inner].astype(int) - b[inner].astype(int)).mean())
    assert differs(np.roll(outputs[1.0][0], 5, axis=1), again) < 0.5 < 2 * 0.5 < differs(outputs[1.0][0], again)


def test_grain_on_a_face_half_outside_the_frame_and_two_overlapping_faces():
    """Grain on (the default): a face half beyond the corner is clipped, and pixels the blend's
    mask leaves at 0 are the camera's; two overlapping faces are both painted."""
    rng = np.random.default_rng(11)
    image = np.clip(120 + rng.normal(0, 6, (240, 320, 3)), 0, 255).astype(np.uint8)
    for faces in ([_face(rng, (300, 230), 2.0, 0.0)], [_face(rng, (150, 120), 1.6, 5.0), _face(rng, (190, 130), 1.4, -8.0)]):
        for face in faces:
            face.crop = cv2.warpAffine(image, face.matrix, (SIZE, SIZE))
        blend = BlendStage(LiveSettings())
        out = blend(Frame(image=image.copy(), index=0, time_ms=0.0, faces=faces)).output
        alpha = np.zeros(image.shape[:2], np.float32)
        for face in faces:
            alpha = np.maximum(alpha, cv2.warpAffine(blend.mask_for(face.occlusion), face.inverse, (320, 240)))
        assert np.array_equal(out[alpha == 0], image[alpha == 0])
        assert (np.abs(out.astype(int) - image.astype(int)).max(axis=2) > 0)[alpha > 0.9].mean() > 0.5


def test_the_fill_takes_the_colour_of_the_skin_beside_it_not_of_the_whole_face():
    """The visible face is cool and light, except a band of warm, darker skin right beside the
    covered part (cheeks in shade beside a mask): the fill moves toward the band's colour. Pulled
    toward the whole visible face, it would move away from it."""
    from deocc_live.stages.blend import COLOUR_RING

    rng = np.random.default_rng(4)
    face = _face(rng, (320, 180), 2.0, 0.0, specks=False)
    far, beside, fill = (np.array(c, np.float32) for c in ([190, 200, 185], [90, 110, 170], [140, 150, 160]))  # BGR
    filled = (face.occlusion > 0.5).astype(np.uint8)
    reach = int(round(COLOUR_RING * SIZE))
    band = (cv2.dilate(filled, cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * reach + 1,) * 2)) > 0) & (filled == 0)
    crop = np.where(band[..., None], beside, far) + rng.normal(0, 3, (SIZE, SIZE, 3))
    face.crop = np.clip(crop, 0, 255).astype(np.uint8)
    face.restored = np.clip(fill / 255 + rng.normal(0, 0.01, (SIZE, SIZE, 3)), 0, 1).astype(np.float32)
    pulled = BlendStage(LiveSettings())._colour_matched(face)
    lab = lambda picture: cv2.cvtColor(np.ascontiguousarray(picture, np.float32), cv2.COLOR_BGR2LAB)[filled > 0].mean(axis=0)
    colour = lambda bgr: cv2.cvtColor(np.full((1, 1, 3), bgr / 255, np.float32), cv2.COLOR_BGR2LAB)[0, 0]
    before, after = lab(face.restored), lab(pulled)
    assert np.linalg.norm(after - colour(beside)) < np.linalg.norm(before - colour(beside)) - 5
    assert np.linalg.norm(after - colour(far)) > np.linalg.norm(before - colour(far))
    # Even skin all round: the fill moves toward it.
    face.crop = np.clip(np.broadcast_to(far, crop.shape) + rng.normal(0, 3, crop.shape), 0, 255).astype(np.uint8)
    toward_far = lab(BlendStage(LiveSettings())._colour_matched(face))
    assert np.linalg.norm(toward_far - colour(far)) < np.linalg.norm(before - colour(far)) - 5


def test_a_black_and_white_picture_gets_a_black_and_white_fill():
    """In a monochrome picture (grey, or one tint all over: an infrared webcam, an old photo) the
    fill takes the picture's tint, whatever colour the generator painted; in a colour picture the
    tint is not asked for and the fill keeps its colours."""
    from deocc_live.stages.blend import picture_tint

    rng = np.random.default_rng(9)
    grey = np.repeat(rng.integers(0, 256, (360, 640, 1), dtype=np.uint8), 3, axis=2)
    lightness = cv2.GaussianBlur(rng.uniform(20, 90, (360, 640)).astype(np.float32), (0, 0), 3)
    tinted = np.dstack([lightness, np.full_like(lightness, 3.0), np.full_like(lightness, 12.0)])  # L, a, b
    sepia = np.clip(cv2.cvtColor(tinted, cv2.COLOR_LAB2BGR) * 255 + 0.5, 0, 255).astype(np.uint8)
    colour = rng.integers(0, 256, (360, 640, 3), dtype=np.uint8)
    assert picture_tint(colour) is None
    assert np.abs(picture_tint(grey)).max() < 0.5
    lab = lambda picture: cv2.cvtColor(picture.astype(np.float32) / 255, cv2.COLOR_BGR2LAB)
    sepia_ab = lab(sepia)[..., 1:].reshape(-1, 2).mean(axis=0)
    assert np.abs(picture_tint(sepia) - sepia_ab).max() < 0.5 and sepia_ab.max() > 4
    for picture in (grey, sepia, colour):
        face = _face(rng, (320, 180), 2.0, 0.0, specks=False)  # a colourful (random) fill
        face.crop = cv2.warpAffine(picture, face.matrix, (SIZE, SIZE))
        frame = BlendStage(LiveSettings(grain=0.0))(Frame(image=picture.copy(), index=0, time_ms=0.0, faces=[face]))
        covered = cv2.warpAffine(face.occlusion, face.inverse, (640, 360)) > 0.99
        ab = lab(frame.output)[..., 1:][covered]
        if picture is colour:
            assert ab.std(axis=0).min() > 10  # its own colours, not one tint
        else:
            # One tint, the picture's (8-bit rounding and the gamut's edge, at the darkest and
            # lightest of the random fill, move a few pixels by more).
            tint = lab(picture)[..., 1:].reshape(-1, 2).mean(axis=0)
            assert np.abs(np.median(ab, axis=0) - tint).max() < 1 and ab.std(axis=0).max() < 2
