import cv2
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from deocc_live.stages import align
from deocc_live.stages.capture import to_bgr8
from media import LANDMARKER, face_files


def _similarity(angle, scale, tx, ty):
    c, s = np.cos(angle) * scale, np.sin(angle) * scale
    return np.array([[c, -s, tx], [s, c, ty]])


@settings(max_examples=200, deadline=None)
@given(angle=st.floats(-3.1, 3.1), scale=st.floats(0.05, 20), tx=st.floats(-1e3, 1e3), ty=st.floats(-1e3, 1e3),
       seed=st.integers(0, 2**16))
def test_similarity_recovers_a_known_transform(angle, scale, tx, ty, seed):
    points = np.random.default_rng(seed).uniform(-200, 200, (5, 2))
    if np.ptp(points, axis=0).min() < 1:
        return
    truth = _similarity(angle, scale, tx, ty)
    estimated = align.similarity(points, align.transform_points(truth, points))
    np.testing.assert_allclose(estimated, truth, atol=1e-6 * max(1.0, scale, abs(tx), abs(ty)))


@settings(max_examples=100, deadline=None)
@given(angle=st.floats(-3.1, 3.1), scale=st.floats(0.1, 10), tx=st.floats(-500, 500), ty=st.floats(-500, 500))
def test_invert_round_trips(angle, scale, tx, ty):
    matrix = _similarity(angle, scale, tx, ty)
    points = np.array([[0.0, 0.0], [10.0, 3.0], [-7.0, 40.0]])
    back = align.transform_points(align.invert(matrix), align.transform_points(matrix, points))
    np.testing.assert_allclose(back, points, atol=1e-6 * max(1.0, abs(tx), abs(ty)) / min(scale, 1.0))


def test_similarity_rejects_degenerate_points():
    with pytest.raises(ValueError):
        align.similarity(np.ones((5, 2)), np.zeros((5, 2)))
    with pytest.raises(ValueError):
        align.five_points(np.zeros((10, 2)))


def test_real_face_lands_on_the_template():
    from deocc_live.landmarks import FaceLandmarks

    image = cv2.imread(str(face_files(1)[0]))
    with FaceLandmarks(LANDMARKER) as finder:
        landmarks = finder.detect(image)[0]
    size = 128
    matrix = align.crop_matrix(landmarks, size)
    placed = align.transform_points(matrix, align.five_points(landmarks))
    # A least-squares fit of five real points: each within a few pixels of its template spot.
    assert np.abs(placed - align.TEMPLATE * size).max() < 0.06 * size
    crop = align.warp_crop(image, matrix, size)
    assert crop.shape == (size, size, 3)
    box = align.crop_box(align.invert(matrix), size, image.shape)
    x0, y0, x1, y1 = box
    assert 0 <= x0 < x1 <= image.shape[1] and 0 <= y0 < y1 <= image.shape[0]


def test_crop_box_outside_the_frame_is_none():
    inverse = _similarity(0, 1, 5000, 5000)
    assert align.crop_box(inverse, 128, (480, 640, 3)) is None


@settings(max_examples=60, deadline=None)
@given(height=st.integers(1, 40), width=st.integers(1, 40), kind=st.sampled_from(["gray", "bgr", "bgra", "u16", "f32", "one"]))
def test_frame_conversion_gives_bgr8(height, width, kind):
    rng = np.random.default_rng(height * 100 + width)
    shapes = {"gray": (height, width), "bgr": (height, width, 3), "bgra": (height, width, 4),
              "u16": (height, width, 3), "f32": (height, width, 3), "one": (height, width, 1)}
    if kind == "u16":
        image = rng.integers(0, 65535, shapes[kind], dtype=np.uint16)
    elif kind == "f32":
        image = rng.random(shapes[kind], dtype=np.float32)
    else:
        image = rng.integers(0, 255, shapes[kind], dtype=np.uint8)
    out = to_bgr8(image)
    assert out.dtype == np.uint8 and out.shape == (height, width, 3)
    if kind == "u16":
        np.testing.assert_array_equal(out, (image >> 8).astype(np.uint8))
    if kind == "gray":
        np.testing.assert_array_equal(out[..., 1], image)


def test_a_pictures_extra_views_come_back_onto_the_faces_own_crop():
    """A picture's extra views of a face (closer, wider, shifted, turned) are cut from the frame
    and, put back by ``from_view``, land on the face's own crop pixel for pixel where the view saw
    it; the views differ from the crop, and a map taken the wrong way round would not land."""
    from deocc_live.stages.generate import VIEWS, from_view, view_crop_matrix, view_matrices

    picture = cv2.GaussianBlur(cv2.imread(str(face_files(1)[0])), (0, 0), 1.5)
    size = 128
    angle, scale = np.deg2rad(12), size / (0.8 * min(picture.shape[:2]))
    matrix = _similarity(angle, scale, 0, 0)
    centre = align.transform_points(matrix, np.array([[picture.shape[1] / 2, picture.shape[0] / 2]]))[0]
    matrix[:, 2] = size / 2 - centre
    own = align.warp_crop(picture, matrix, size).astype(np.float32)
    views = view_matrices(len(VIEWS) + 1, size)
    assert len(views) == len(VIEWS) and view_matrices(1, size) == [] and len(view_matrices(3, size)) == 2
    inner = np.zeros((size, size), np.float32)
    inner[3:-3, 3:-3] = 1  # the crop's own edge repeats the picture's border
    for view in views:
        cut = align.warp_crop(picture, view_crop_matrix(view, matrix), size).astype(np.float32)
        assert np.abs(cut - own).mean() > 3  # another view of the face
        back, seen = from_view(cut, view)
        seen = cv2.erode(seen, np.ones((5, 5), np.uint8)) * inner
        assert seen.mean() > 0.75
        error = np.abs(back - own).mean(axis=2)[seen > 0].mean()
        wrong = np.abs(cv2.warpAffine(cut, view, (size, size)) - own).mean(axis=2)[seen > 0].mean()
        assert error < 1.5 < 3 < wrong, (error, wrong)
