"""Track stage: MediaPipe FaceLandmarker in VIDEO mode, several faces, track ids kept by nearest
face centre, landmarks smoothed by a One Euro filter per track."""
from __future__ import annotations

import cv2
import numpy as np

from deocc_live.frame import Face, Frame
from deocc_live.landmarks import FaceLandmarks, unmirrored
from deocc_live.one_euro import OneEuroFilter
from deocc_live.stages.align import five_points, thumbnail


class _Track:
    def __init__(self, track_id: int, landmarks: np.ndarray, min_cutoff: float, beta: float):
        self.id = track_id
        self.filter = OneEuroFilter(min_cutoff=min_cutoff, beta=beta)
        self.centre = landmarks.mean(axis=0)
        self.previous: np.ndarray | None = None


# Windows that a covered face missed by every whole-picture look is searched in, largest and
# most central first: (side as a share of the shorter side, centre x, centre y). MediaPipe's
# detector finds a masked face in a window around it that it misses in the whole frame: on 12
# masked faces missed at 720p (validation split), some window found each of them.
SCAN = tuple((side, fx, fy) for side in (0.8, 0.5, 0.65) for fy in (0.5, 0.3, 0.7) for fx in (0.5, 0.25, 0.75))

# A face of MediaPipe's this many times narrower than one the finder sees is taken for a part of
# a face (an ear, an eye) in a still.
PART_OF_FACE = 1.67
# A new face of MediaPipe's that our finder, in windows centred on it, scores below this is taken
# for texture, not a face (MediaPipe's zoomed looks and its second look sometimes agree on a face
# in background noise, and the generator then paints a whole face there). Validation scenes at
# 720p, six seeds: the 7 faces reported off the face scored 0.001-0.048, the 1,032 on it 0.275 or
# more; MediaPipe's faces on the e2e's 240 real photos 0.057 or more (the lowest, 22 px wide,
# beside a face the finder found), the faces the app ends with there 0.40 or more. At 0.25
# instead of 0.1: face-free stills (noise, one hand, cup, phone or other cut-out alone) with a
# face 36 -> 21 of 462; 360 validation scenes: a face beside the face (0.14) dropped, none lost.
FACE_FLOOR = 0.25
VERIFY_SPANS = (3.0, 4.0, 5.5)  # the verifying windows, in eye distances
RECHECK_EVERY = 30  # frames between the finder's looks at a face a stream follows


def _width(landmarks: np.ndarray) -> float:
    return float(np.ptp(landmarks[:, 0]))


def _farther_than(one: np.ndarray, other: np.ndarray, widths: float) -> bool:
    """Two faces' centres are more than ``widths`` of the wider one's width apart."""
    return float(np.linalg.norm(one.mean(axis=0) - other.mean(axis=0))) > widths * max(_width(one), _width(other))


def _part_of(part: np.ndarray, face: np.ndarray, anywhere: bool) -> bool:
    """``part`` gives way to ``face``: under 1 / PART_OF_FACE of its width, and (unless
    ``anywhere``) centred within 1.5 of its widths, where it is likely a part of it (an ear,
    an eye) or something beside it. Looking for one face, the larger one wins wherever the
    smaller is; looking for several, a smaller face further off is another person."""
    width = _width(face)
    return (_width(part) * PART_OF_FACE < width
            and (anywhere or float(np.linalg.norm(part.mean(axis=0) - face.mean(axis=0))) < 1.5 * width))


def _same_face(one: np.ndarray, other: np.ndarray) -> bool:
    """Two landmark sets on the same face: centres within half a face width, widths within
    PART_OF_FACE of each other."""
    wide, narrow = max(_width(one), _width(other)), min(_width(one), _width(other))
    return (narrow * PART_OF_FACE >= wide
            and float(np.linalg.norm(one.mean(axis=0) - other.mean(axis=0))) < 0.5 * wide)


# Eye corners, brows and the nose bridge: what a mask, a hand at the chin, a cup or a microphone
# leave visible. While they have not changed, a face MediaPipe stops finding is still there.
EYE_BAND = (33, 133, 362, 263, 70, 105, 107, 336, 334, 300, 168, 6)


class TrackStage:
    """Frame in, frame with ``faces`` (id, smoothed landmarks, motion) out. A stream is tracked
    in VIDEO mode with smoothing; a still (``frame.still``) is looked at on its own in IMAGE mode,
    and neither reads nor changes the stream's state.

    While the picture around the faces does not change, MediaPipe runs on one frame in
    ``still_reuse + 1`` and the others reuse its landmarks. A face MediaPipe stops finding (a
    cover came) is held where it was while the band of its eyes and brows does not change.

    A covered face the whole frame misses is looked for closer (where it was, else the centre),
    further (a grey border), larger (small pictures) and in the windows of SCAN (a still: all of
    them, then all of them again in the picture mirrored; a stream: one a frame). A face
    reported twice is kept once, and a new face is kept only if a second look in place finds it
    again. When MediaPipe found nothing at all, our own finder (``finder``) looks: its faces
    come with the mean face's landmarks placed on the five points it found. In a still, the
    finder also checks MediaPipe's faces: one much narrower than a face it sees is taken for a
    part of a face (an ear, an eye) and gives way to it."""

    def __init__(self, model_path, max_faces: int = 1, landmark_filter: bool = True,
                 min_cutoff: float = 1.5, beta: float = 0.08, second_look: bool = True,
                 still_reuse: int = 2, still_level: float = 1.0, hold_level: float = 3.0, finder=None,
                 settings=None):
        self.model_path, self.max_faces = model_path, max_faces
        # Our own finder (deocc_live.finder.FaceFinder), asked when every MediaPipe look found
        # nothing (and on every still), while ``settings.finder`` (read each frame; no settings:
        # always) is on.
        self._finder, self.settings = finder, settings
        self._by_finder = False  # the faces last found came from the finder
        self._checked_at = 0  # the frame a followed face was last looked at by the finder
        self.landmarker = FaceLandmarks(model_path, max_faces=max_faces, video=True)
        # Covered faces are easy to miss in a whole frame: a second look at a closer region
        # (where the face was last seen, else the frame's centre) finds about half of those misses.
        self.second_look = FaceLandmarks(model_path, max_faces=max_faces) if second_look else None
        # A still is looked at for one face first (``_wanted`` 1), then for max_faces: MediaPipe
        # for one face, made when first needed.
        self._wanted, self._single = max_faces, None
        self._last_box: tuple[float, float, float] | None = None  # centre x, centre y, face width
        self._since_seen = 10**6
        self._scan = 0  # the next window of SCAN a stream looks in
        self.landmark_filter = landmark_filter
        self.min_cutoff, self.beta = min_cutoff, beta
        self._tracks: list[_Track] = []
        self._next_id = 0
        # A still face is not looked at again every frame: while the picture around the faces is
        # what it was when MediaPipe last found them (mean change of a small grey thumbnail below
        # ``still_level``), their landmarks are reused, for at most ``still_reuse`` frames in a row.
        self.still_reuse, self.still_level = still_reuse, still_level
        self._key: tuple[np.ndarray, tuple[int, int, int, int], np.ndarray] | None = None
        self._last_found: np.ndarray | None = None
        self._reused = 0
        # The faces last found and their eyes' band, held while MediaPipe misses them under a cover.
        self.hold_level = hold_level
        self._hold: tuple[np.ndarray, tuple[int, int, int, int], np.ndarray] | None = None

    def __call__(self, frame: Frame) -> Frame:
        if frame.still:
            return self._still(frame)
        if self._unchanged(frame.image):
            self._reused += 1
            frame.faces = self._associate(self._key[0], frame.time_ms / 1000.0)
            return frame
        found = self.landmarker.detect(frame.image, int(frame.time_ms))
        held = len(found) == 0 and self._still_there(frame.image)
        if held:
            found = self._hold[0]  # covered where MediaPipe looks, unchanged around the eyes
        if len(found) == 0 and self.second_look is not None:
            found = self._look_closer(frame.image)
            if len(found) == 0 and (self._since_seen < 60 or self._since_seen % 5 == 0):
                found = self._look_further(frame.image)
                if len(found) == 0:  # one window of the scan a frame: a covered face is found within a second
                    found = self._look_at(frame.image, SCAN[self._scan % len(SCAN)])
                    self._scan += 1
        found = self._distinct(found)
        if len(found) and self._since_seen > 0:
            found = self._confirmed(frame.image, found)  # a face not seen in the last frame: a new track
            self._checked_at = frame.index
        elif len(found) and self.finder is not None and abs(frame.index - self._checked_at) >= RECHECK_EVERY:
            # A face followed (or held) from the last frame. MediaPipe's video mode goes on
            # following a face it took on texture (a fist, then the background after a cut): our
            # finder looks at the faces followed again every RECHECK_EVERY frames (and at once when
            # the frame count starts again, as with another source).
            self._checked_at = frame.index
            looks = [self._looks_like_a_face(frame.image, face) for face in found]
            if not all(looks):
                found = found[looks]
                if held:
                    held, self._hold = False, None
        by_finder = False
        if (len(found) == 0 and not held and self.finder is not None
                and (self._since_seen % 5 == 4 or (self._by_finder and self._since_seen == 0))):
            # Our finder (about 25 ms at 720p): on every fifth frame without a face, and on every
            # frame after it found one that MediaPipe still misses. Its windows agreeing are its
            # confirmation.
            found = self.finder.find(frame.image, self.max_faces, SCAN)
            by_finder = len(found) > 0
        if not held:
            self._by_finder = by_finder
        if len(found):
            xy = found[0]
            self._last_box = (float(xy[:, 0].mean()), float(xy[:, 1].mean()), _width(xy))
            self._since_seen = 0
        else:
            self._since_seen += 1
        self._keep_key(frame.image, found)
        if not held:
            self._keep_hold(frame.image, found)
        frame.faces = self._associate(found, frame.time_ms / 1000.0)
        return frame

    @staticmethod
    def _box_around(points: np.ndarray, shape, margin: float, least: tuple[int, int]):
        """The box (x0, y0, x1, y1) around points, ``margin`` of its size out, inside the picture;
        None when smaller than ``least`` (width, height)."""
        low, high = points.min(axis=0), points.max(axis=0)
        pad = margin * (high - low)
        x0, y0 = np.maximum(np.floor(low - pad), 0).astype(int)
        x1, y1 = np.minimum(np.ceil(high + pad), (shape[1], shape[0])).astype(int)
        return (int(x0), int(y0), int(x1), int(y1)) if x1 - x0 >= least[0] and y1 - y0 >= least[1] else None

    def _keep_hold(self, image: np.ndarray, found: np.ndarray) -> None:
        box = self._box_around(found[:, list(EYE_BAND)].reshape(-1, 2), image.shape, 0.3, (16, 8)) if len(found) else None
        self._hold = (found, box, self._thumbnail(image, box)) if box is not None else None

    def _still_there(self, image: np.ndarray) -> bool:
        """The faces last found may be held: the band of their eyes is as it was then."""
        return self._hold is not None and self._looks_the_same(image, self._hold, self.hold_level)

    def _keep_key(self, image: np.ndarray, found: np.ndarray) -> None:
        """Remember the faces MediaPipe found and the picture around them, for ``_unchanged``;
        only once MediaPipe itself has settled (its last two answers within a pixel of each other:
        a new track is refined over its first frames)."""
        previous, self._last_found = self._last_found, found
        self._reused = 0
        self._key = None
        if self.still_reuse <= 0 or len(found) == 0 or previous is None or previous.shape != found.shape:
            return
        if float(np.linalg.norm(previous - found, axis=2).mean()) > 1.0:
            return
        box = self._box_around(found.reshape(-1, 2), image.shape, 0.25, (16, 16))
        if box is not None:
            self._key = (found, box, self._thumbnail(image, box))

    @staticmethod
    def _thumbnail(image: np.ndarray, box: tuple[int, int, int, int]) -> np.ndarray:
        x0, y0, x1, y1 = box
        return thumbnail(image[y0:y1, x0:x1], 48)

    def _unchanged(self, image: np.ndarray) -> bool:
        """True when the faces MediaPipe last found may be reused for this frame: fewer than
        ``still_reuse`` reuses in a row, and the picture around them has not changed."""
        if self._key is None or self._reused >= self.still_reuse:
            return False
        return self._looks_the_same(image, self._key, self.still_level)

    def _looks_the_same(self, image: np.ndarray, key, level: float) -> bool:
        """The box of ``key`` (found, box, thumbnail) in ``image`` differs from its thumbnail by
        less than ``level`` grey levels on average."""
        _, box, thumbnail = key
        if box[2] > image.shape[1] or box[3] > image.shape[0]:
            return False
        return float(np.abs(self._thumbnail(image, box) - thumbnail).mean()) < level

    def _still(self, frame: Frame) -> Frame:
        found = self._still_faces(frame.image)
        frame.faces = [Face(track_id=-1 - i, landmarks=landmarks.astype(np.float32), new_track=True)
                       for i, landmarks in enumerate(found)]
        return frame

    def _still_faces(self, image: np.ndarray) -> np.ndarray:
        """A still's faces. With more than one face allowed, the faces found when one is allowed
        come first, as they are, and the other faces found are added: MediaPipe asked for
        several faces places a face differently (on 90 validation scenes and 120 real masked
        photos, 9 single faces moved by 3 to 53 px between --max-faces 1 and 5), and a single
        face's result must not depend on how many more are allowed. Twice the looks."""
        if self.max_faces == 1:
            return self._first_confirmed(image)
        self._wanted = 1
        try:
            first = self._first_confirmed(image)
        finally:
            self._wanted = self.max_faces
        more = self._first_confirmed(image)
        if len(first) == 0:
            return more
        # Another face: its centre further from each of the first faces than 0.8 of the wider's
        # width (the same face found again can be shifted by half its width).
        others = [face for face in more if all(_farther_than(face, one, 0.8) for one in first)]
        return np.concatenate([first, np.asarray(others, np.float32).reshape(-1, *first.shape[1:])])[:self.max_faces]

    def _still_looks(self, image: np.ndarray):
        """The looks at a picture on its own, in turn: whole, closer, further, larger (a small
        picture) and each window of SCAN."""
        yield self.still_landmarker.detect(image)
        yield self._look_closer(image, recent=False)
        yield self._look_further(image)
        if max(image.shape[:2]) < 640:
            yield self._look_larger(image)
        for window in SCAN:
            yield self._look_at(image, window)

    def _first_confirmed(self, image: np.ndarray) -> np.ndarray:
        """The faces of the first look that a second look confirms, looking on past a look whose
        faces are not confirmed, then at the picture mirrored (MediaPipe's detector is not
        symmetric: a masked face it misses is sometimes found mirrored). On 180 covered
        validation scenes at 720p: 169 found in place and 1 elsewhere, against 165 and 0 when
        the first look with a face ended the search; on 120 real masked photos, 109 found
        against 101 (of the 8 more, 6 on the masked face and 2 elsewhere, which the generator
        then left unchanged). A picture without a face now costs about twice the looks."""
        width = image.shape[1]
        for mirror in (False, True):
            picture = np.ascontiguousarray(image[:, ::-1]) if mirror else image
            for found in self._still_looks(picture):
                if len(found) == 0:
                    continue
                kept = self._confirmed(image, self._distinct(unmirrored(found, width) if mirror else found),
                                       mirrored=True)
                if len(kept):
                    return self._checked_by_finder(image, kept)
        if self.finder is not None:
            return self.finder.find(image, self._wanted, SCAN)
        return np.zeros((0, 478, 2), np.float32)

    def _checked_by_finder(self, image: np.ndarray, kept: np.ndarray) -> np.ndarray:
        """A still's faces from MediaPipe, less those that are part of a face the finder sees
        (an ear, an eye): a face of MediaPipe's that is not one of the finder's faces and is
        under 1 / PART_OF_FACE of the width of one of them gives way to the finder's faces
        (looking for several faces, only when it is close to that face).
        On 180 covered validation scenes this took 2 faces found beside the face (an eye, the
        background) to the face, and on 120 real masked photos an ear to the face, changing
        nothing else; about 25 ms a still."""
        if self.finder is None:
            return kept
        theirs = self.finder.find(image, self._wanted, SCAN)
        if not len(theirs):
            return kept
        anywhere = self._wanted == 1
        mine = [face for face in kept if any(_same_face(face, other) for other in theirs)
                or not any(_part_of(face, other, anywhere) for other in theirs)]
        added = [face for face in theirs if not any(_same_face(face, other) for other in mine)]
        return np.stack((mine + added)[:self._wanted]).astype(np.float32)

    @property
    def finder(self):
        return self._finder if self.settings is None or self.settings.finder else None

    @property
    def still_landmarker(self) -> FaceLandmarks:
        """MediaPipe in IMAGE mode for as many faces as the look wants (``_wanted``)."""
        if self._wanted == 1 and self.max_faces > 1:
            if self._single is None:
                self._single = FaceLandmarks(self.model_path, max_faces=1)
            return self._single
        if self.second_look is None:
            self.second_look = FaceLandmarks(self.model_path, max_faces=self.max_faces)
        return self.second_look

    def _look_further(self, image: np.ndarray) -> np.ndarray:
        """A face that fills the picture leaves the detector no context: look again with a grey
        border of half the picture's size around it. With the larger look below, this found 12
        more of 120 real masked photos (94 -> 106) than the whole picture and the closer look."""
        pad = max(image.shape[:2]) // 2
        padded = cv2.copyMakeBorder(image, pad, pad, pad, pad, cv2.BORDER_CONSTANT, value=(127, 127, 127))
        found = self.still_landmarker.detect(padded)
        return found - np.float32(pad) if len(found) else found

    @staticmethod
    def _distinct(found: np.ndarray) -> np.ndarray:
        """One face per face: with several faces allowed, MediaPipe sometimes reports one face
        twice, shifted and smaller, and both would be painted over each other."""
        kept = []
        for landmarks in found:
            if all(_farther_than(landmarks, other, 0.5) for other in kept):
                kept.append(landmarks)
        return np.stack(kept) if kept else found

    def _confirmed(self, image: np.ndarray, found: np.ndarray, mirrored: bool = False) -> np.ndarray:
        """The faces that a second look centred on each (2.4, 1.8 or 3.2 face widths, grey beyond
        the picture, at least 256 px) finds again in the same place; with ``mirrored`` (a still
        picture), also a look at that square mirrored. At low confidence MediaPipe sometimes puts
        a face on background texture: on 297 covered faces at 720p (validation split) such a face
        was reported 13 times and none of them was confirmed (without the mirrored look), while
        269 of the 273 real ones were. A face our finder sees no face at also goes (FACE_FLOOR)."""
        kept = [landmarks for landmarks in found
                if self._looks_like_a_face(image, landmarks)  # a few ms: before MediaPipe's second looks
                and any(self._found_again(image, landmarks, span, mirrored) for span in (2.4, 1.8, 3.2))]
        return np.stack(kept).astype(np.float32) if kept else np.zeros((0, 478, 2), np.float32)

    def _looks_like_a_face(self, image: np.ndarray, landmarks: np.ndarray) -> bool:
        """Our finder (when it is on) scores a face in windows centred on these landmarks (see
        FACE_FLOOR); without the finder every face passes."""
        if self.finder is None:
            return True
        return self.finder.face_score(image, five_points(landmarks), VERIFY_SPANS) >= FACE_FLOOR

    def _found_again(self, image: np.ndarray, landmarks: np.ndarray, span: float, mirrored: bool) -> bool:
        width = _width(landmarks)
        if width < 4:
            return False
        side = span * width
        scale = max(1.0, 256.0 / side)
        x0, y0 = landmarks.mean(axis=0) - side / 2
        matrix = np.float32([[scale, 0, -scale * x0], [0, scale, -scale * y0]])
        crop = cv2.warpAffine(image, matrix, (int(side * scale), int(side * scale)), flags=cv2.INTER_LINEAR,
                              borderMode=cv2.BORDER_CONSTANT, borderValue=(127, 127, 127))
        for mirror in (False, True) if mirrored else (False,):  # the crop as it is, then mirrored
            again = self.still_landmarker.detect(np.ascontiguousarray(crop[:, ::-1]) if mirror else crop)
            again = unmirrored(again, crop.shape[1]) if mirror else again
            again = again / np.float32(scale) + np.float32([x0, y0])
            if any(np.linalg.norm(other - landmarks, axis=1).mean() < 0.15 * width for other in again):
                return True
        return False

    def _look_at(self, image: np.ndarray, window: tuple[float, float, float]) -> np.ndarray:
        """One window of the scan: (side as a share of the shorter side, centre x, centre y as
        shares of the frame)."""
        height, width = image.shape[:2]
        share, fx, fy = window
        return self._look_in_square(image, fx * width, fy * height, int(share * min(height, width)))

    def _look_larger(self, image: np.ndarray) -> np.ndarray:
        """A small picture, twice as large (MediaPipe's detector works on 128 px of it)."""
        found = self.still_landmarker.detect(cv2.resize(image, None, fx=2, fy=2, interpolation=cv2.INTER_CUBIC))
        return found / np.float32(2) if len(found) else found

    def _look_closer(self, image: np.ndarray, recent: bool = True) -> np.ndarray:
        nothing = np.zeros((0, 478, 2), np.float32)
        if recent and self._since_seen >= 60 and self._since_seen % 5:
            return nothing  # a face-free scene: look closer only on every fifth frame
        height, width = image.shape[:2]
        if recent and self._last_box is not None and self._since_seen < 60:
            cx, cy, face_width = self._last_box
            side = 2.4 * face_width
        else:
            cx, cy, side = width / 2, height / 2, 0.75 * min(width, height)
        return self._look_in_square(image, cx, cy, side)

    def _look_in_square(self, image: np.ndarray, cx: float, cy: float, side: float) -> np.ndarray:
        """Landmarks found in the square of ``side`` around (cx, cy), kept inside the picture, in
        the picture's pixels."""
        height, width = image.shape[:2]
        side = min(side, width, height)
        if side < 32:
            return np.zeros((0, 478, 2), np.float32)
        x0 = int(np.clip(cx - side / 2, 0, width - side))
        y0 = int(np.clip(cy - side / 2, 0, height - side))
        found = self.still_landmarker.detect(np.ascontiguousarray(image[y0:y0 + int(side), x0:x0 + int(side)]))
        return found + np.array([x0, y0], np.float32) if len(found) else found

    def _associate(self, found: np.ndarray, time_s: float) -> list[Face]:
        faces, unused = [], list(self._tracks)
        kept = []
        for landmarks in found:
            centre = landmarks.mean(axis=0)
            scale = _width(landmarks) or 1.0
            best = min(unused, key=lambda t: np.linalg.norm(t.centre - centre), default=None)
            new = best is None or np.linalg.norm(best.centre - centre) > 0.5 * scale
            if new:
                best = _Track(self._next_id, landmarks, self.min_cutoff, self.beta)
                self._next_id += 1
            else:
                unused.remove(best)
            smoothed = best.filter(landmarks, time_s) if self.landmark_filter else landmarks.astype(np.float64)
            motion = 0.0
            if best.previous is not None:
                motion = float(np.abs(smoothed - best.previous).mean()) / scale
            best.previous, best.centre = smoothed, centre
            kept.append(best)
            faces.append(Face(track_id=best.id, landmarks=smoothed.astype(np.float32), motion=motion, new_track=new))
        self._tracks = kept  # a track not found in this frame ends
        return faces

    def close(self) -> None:
        self.landmarker.close()
        if self._finder is not None:
            self._finder.close()
        for landmarker in (self.second_look, self._single):
            if landmarker is not None:
                landmarker.close()
