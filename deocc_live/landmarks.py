"""MediaPipe FaceLandmarker wrapped for our use: frames in, (N, 478, 2) pixel landmarks out."""
from __future__ import annotations

import contextlib
import os
import sys
import threading
from pathlib import Path

import cv2
import numpy as np

os.environ.setdefault("GLOG_minloglevel", "2")

# Mesh indices outlining the lower face (jaw line up to the nose tip): where face masks,
# hands and microphones usually sit. The benchmark and the tests cover it and measure in it.
LOWER_FACE_OUTLINE = [132, 58, 172, 136, 150, 149, 176, 148, 152, 377, 400, 378, 379, 365, 397, 288, 361, 4]


_stderr_lock = threading.Lock()


def verbose() -> bool:
    """Native log lines are shown with --verbose (DEOCC_VERBOSE=1) or DEOCC_DEBUG=1."""
    return bool(os.environ.get("DEOCC_VERBOSE") or os.environ.get("DEOCC_DEBUG"))


@contextlib.contextmanager
def native_logs_silenced():
    """MediaPipe and TensorFlow Lite write about eight log lines straight to file descriptor 2
    while a landmarker is created (absl's "Logging before InitGoogle()", the XNNPACK delegate,
    the feedback manager): no setting of theirs reaches those, so the descriptor points at
    /dev/null meanwhile, unless the user asked to see them."""
    if verbose():
        yield
        return
    with _stderr_lock:
        sys.stderr.flush()
        saved = os.dup(2)
        try:
            with open(os.devnull, "w") as null:
                os.dup2(null.fileno(), 2)
            yield
        finally:
            os.dup2(saved, 2)
            os.close(saved)


# The face's outline in the mesh, going round.
FACE_OVAL = [10, 338, 297, 332, 284, 251, 389, 356, 454, 323, 361, 288, 397, 365, 379, 378, 400,
             377, 152, 148, 176, 149, 150, 136, 172, 58, 132, 93, 234, 127, 162, 21, 54, 103, 67, 109]


def face_outline_region(landmarks: np.ndarray, shape, matrix: np.ndarray | None = None) -> np.ndarray:
    """(H, W) uint8, 1 inside the face's outline (the hull of FACE_OVAL) of one face's landmarks
    in pixels, mapped by the 2x3 ``matrix`` first when given (e.g. into the aligned crop)."""
    outline = np.asarray(landmarks, np.float32)[FACE_OVAL, :2]
    if matrix is not None:
        outline = cv2.transform(outline[None], np.asarray(matrix, np.float32))[0]
    region = np.zeros(shape[:2], np.uint8)
    cv2.fillConvexPoly(region, cv2.convexHull(np.round(outline).astype(np.int32)), 1)
    return region


# The mesh's left-right pairs (the other 28 points lie on the middle line): MediaPipe's canonical
# face model mirrored onto itself (its 468 vertices, from the model's geometry metadata), and the
# two irises (centre, then the four points around it). A face found in a mirrored picture is
# given back with each point's index swapped for its pair's.
MIRROR_PAIRS = (
    (3, 248), (7, 249), (20, 250), (21, 251), (22, 252), (23, 253), (24, 254), (25, 255), (26, 256),
    (27, 257), (28, 258), (29, 259), (30, 260), (31, 261), (32, 262), (33, 263), (34, 264), (35, 265),
    (36, 266), (37, 267), (38, 268), (39, 269), (40, 270), (41, 271), (42, 272), (43, 273), (44, 274),
    (45, 275), (46, 276), (47, 277), (48, 278), (49, 279), (50, 280), (51, 281), (52, 282), (53, 283),
    (54, 284), (55, 285), (56, 286), (57, 287), (58, 288), (59, 289), (60, 290), (61, 291), (62, 292),
    (63, 293), (64, 294), (65, 295), (66, 296), (67, 297), (68, 298), (69, 299), (70, 300), (71, 301),
    (72, 302), (73, 303), (74, 304), (75, 305), (76, 306), (77, 307), (78, 308), (79, 309), (80, 310),
    (81, 311), (82, 312), (83, 313), (84, 314), (85, 315), (86, 316), (87, 317), (88, 318), (89, 319),
    (90, 320), (91, 321), (92, 322), (93, 323), (95, 324), (96, 325), (97, 326), (98, 327), (99, 328),
    (100, 329), (101, 330), (102, 331), (103, 332), (104, 333), (105, 334), (106, 335), (107, 336),
    (108, 337), (109, 338), (110, 339), (111, 340), (112, 341), (113, 342), (114, 343), (115, 344),
    (116, 345), (117, 346), (118, 347), (119, 348), (120, 349), (121, 350), (122, 351), (123, 352),
    (124, 353), (125, 354), (126, 355), (127, 356), (128, 357), (129, 358), (130, 359), (131, 360),
    (132, 361), (133, 362), (134, 363), (135, 364), (136, 365), (137, 366), (138, 367), (139, 368),
    (140, 369), (141, 370), (142, 371), (143, 372), (144, 373), (145, 374), (146, 375), (147, 376),
    (148, 377), (149, 378), (150, 379), (153, 380), (154, 381), (155, 382), (156, 383), (157, 384),
    (158, 385), (159, 386), (160, 387), (161, 388), (162, 389), (163, 390), (165, 391), (166, 392),
    (167, 393), (169, 394), (170, 395), (171, 396), (172, 397), (173, 398), (174, 399), (176, 400),
    (177, 401), (178, 402), (179, 403), (180, 404), (181, 405), (182, 406), (183, 407), (184, 408),
    (185, 409), (186, 410), (187, 411), (188, 412), (189, 413), (190, 414), (191, 415), (192, 416),
    (193, 417), (194, 418), (196, 419), (198, 420), (201, 421), (202, 422), (203, 423), (204, 424),
    (205, 425), (206, 426), (207, 427), (208, 428), (209, 429), (210, 430), (211, 431), (212, 432),
    (213, 433), (214, 434), (215, 435), (216, 436), (217, 437), (218, 438), (219, 439), (220, 440),
    (221, 441), (222, 442), (223, 443), (224, 444), (225, 445), (226, 446), (227, 447), (228, 448),
    (229, 449), (230, 450), (231, 451), (232, 452), (233, 453), (234, 454), (235, 455), (236, 456),
    (237, 457), (238, 458), (239, 459), (240, 460), (241, 461), (242, 462), (243, 463), (244, 464),
    (245, 465), (246, 466), (247, 467), (468, 473), (469, 476), (470, 475), (471, 474), (472, 477)
)
MIRROR = list(range(478))
for _a, _b in MIRROR_PAIRS:
    MIRROR[_a], MIRROR[_b] = _b, _a
del _a, _b


def unmirrored(found: np.ndarray, width: int) -> np.ndarray:
    """Landmarks (N, 478, 2) found in a picture mirrored left to right, for the picture itself:
    x mirrored back and each point in its own index."""
    if len(found) == 0:
        return found
    out = found[:, MIRROR]  # a new array
    out[..., 0] = np.float32(width) - out[..., 0]
    return out


class FaceLandmarks:
    """FaceLandmarker in IMAGE mode (``video=False``, still pictures) or VIDEO mode (a stream
    with monotonic millisecond timestamps). Results come back by return value.

    The confidence floors are lower than MediaPipe's defaults (0.5): covered faces score lower,
    and on 20 face-free frames no face was reported at these floors either."""

    def __init__(self, model_path: str | Path, max_faces: int = 1, video: bool = False,
                 min_detection: float = 0.2, min_presence: float = 0.3):
        from mediapipe.tasks.python.core.base_options import BaseOptions
        from mediapipe.tasks.python.vision import FaceLandmarker, FaceLandmarkerOptions, RunningMode

        options = FaceLandmarkerOptions(
            base_options=BaseOptions(model_asset_path=str(model_path)),
            running_mode=RunningMode.VIDEO if video else RunningMode.IMAGE,
            num_faces=max_faces,
            min_face_detection_confidence=min_detection,
            min_face_presence_confidence=min_presence,
            min_tracking_confidence=min_presence,
        )
        with native_logs_silenced():
            self._landmarker = FaceLandmarker.create_from_options(options)
        self._video = video
        self._last_ms = -1

    def detect(self, image_bgr: np.ndarray, timestamp_ms: int | None = None) -> np.ndarray:
        """Landmarks of every face found, (N, 478, 2) float32 in pixels of ``image_bgr``."""
        import mediapipe as mp

        height, width = image_bgr.shape[:2]
        rgb = np.ascontiguousarray(cv2.cvtColor(image_bgr, cv2.COLOR_BGR2RGB))
        picture = mp.Image(image_format=mp.ImageFormat.SRGB, data=rgb)
        if self._video:
            stamp = int(timestamp_ms if timestamp_ms is not None else self._last_ms + 33)
            stamp = max(stamp, self._last_ms + 1)
            self._last_ms = stamp
            result = self._landmarker.detect_for_video(picture, stamp)
        else:
            result = self._landmarker.detect(picture)
        faces = [
            np.array([[point.x * width, point.y * height] for point in face], dtype=np.float32)
            for face in result.face_landmarks
        ]
        return np.stack(faces) if faces else np.zeros((0, 478, 2), np.float32)

    def close(self) -> None:
        landmarker, self._landmarker = self._landmarker, None
        if landmarker is not None:
            landmarker.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
