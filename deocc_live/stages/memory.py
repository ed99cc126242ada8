"""Face memory stage: the user's own face, seen uncovered moments ago, puts back what now covers it.

Per track, while the face is uncovered (little predicted occlusion over the lower face), steady
and frontal enough, its aligned camera crop is kept, a few of them for different poses and mouth
openings. When the face is covered, the remembered crop closest in pose and mouth is fitted to the
current landmarks (a similarity in aligned space), registered to the face visible around the cover
(an affine warp, by ECC), and fitted to the current light (a smooth per-channel
gain read where the face is visible now), and it restores the face where it agrees with what is
visible around the cover; the generator's face is used where it does not, and the switch between
the two fades over a few frames (a cover arriving over a face seen uncovered the frame before takes
the memory at once). What a memory did not see is painted in from what it saw around
it, and used near the edge of what it saw where the picture has changed since; deeper in, and
under a cover held still since, the generator's face is used. Beside what the mask head took for
covered, what differs from the memory is taken for the cover too (fingertips, a rim). Memories live
in memory only, and end with their track (a track lost for a moment and found again at the same
place keeps them)."""
from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field

import cv2
import numpy as np

from deocc_live.frame import Face, Frame
from deocc_live.settings import LiveSettings
from deocc_live.stages import align

# Landmarks that tell the pose: the upper face (eye corners, brows, nose bridge, the cheeks at the
# ears, the forehead), which masks, hands, cups and microphones leave visible; under a cover
# MediaPipe only guesses the jaw, the nose tip and the lips.
POSE_POINTS = (33, 133, 362, 263, 70, 105, 107, 336, 334, 300, 168, 6, 197, 234, 454, 10, 151)
UPPER_LIP, LOWER_LIP = 13, 14
# Mean difference (0-1) above which a memory's unseen part counts as changed since it was kept.
CHANGED = 0.08


@dataclass
class Memory:
    crop: np.ndarray        # (S, S, 3) float32 BGR in [0, 1], the camera's face
    valid: np.ndarray       # (S, S) float32: 1 where the face was seen uncovered, 0 where not
    covered: float          # share of the lower face predicted covered then (less is better)
    points: np.ndarray      # (P, 2) POSE_POINTS in aligned crop pixels
    mouth: float            # inner-lip gap over the crop size
    filled: np.ndarray | None = None  # crop with its unseen parts painted in from around them (made when first used)
    usable: np.ndarray | None = None  # (S, S) float32: how far the filled crop may be trusted
    grey: np.ndarray | None = None    # the crop in grey, for the registration (made when first used)


@dataclass
class _TrackMemory:
    memories: list[Memory] = field(default_factory=list)
    weight: float = 0.0     # how much of the restored face comes from memory now (fades)
    last: Memory | None = None  # the memory last used (a fade-out fits it to the current frame)
    mouths: deque = field(default_factory=lambda: deque(maxlen=15))  # recent mouth openings
    note: str = ""          # why the memory is or is not used now
    uncovered: bool = False  # the face was seen uncovered in the last frame stepped
    centre: np.ndarray | None = None
    last_seen: float = 0.0  # ms


class FaceMemoryStage:
    """Frame in, frame out: covered faces' ``restored`` mixed with their remembered face, and
    ``face.memory`` set to the share that came from memory (0 to 1)."""

    def __init__(self, settings: LiveSettings | None = None, slots: int = 4, fade_frames: int = 5,
                 uncovered_level: float = 0.3, covered_level: float = 0.02, steady: float = 0.01,
                 pose_limit: float = 0.035, mouth_limit: float = 0.12, talking: float = 0.04,
                 agreement: float = 0.07, keep_lost_ms: float = 1000.0, hole_reach: float = 0.2,
                 rim_level: float = 0.08, rim_reach: float = 0.08, rim_grow: float = 0.25,
                 rim_grow_level: float = 0.12, start_at_once: bool = True, register: bool = True,
                 register_steps: int = 30):
        self.settings = settings or LiveSettings()
        self.slots = slots                      # memories per track
        self.fade_step = 1.0 / max(fade_frames, 1)
        self.uncovered_level = uncovered_level  # share of the lower face predicted covered to remember a face
        self.covered_level = covered_level      # share of the face predicted covered to recall one
        self.steady = steady                    # landmark speed (crop widths a frame) to remember a face
        self.pose_limit = pose_limit            # mean landmark distance (crop widths) a memory may be from the pose
        self.mouth_limit = mouth_limit          # mouth opening difference (crop widths) it may have
        self.talking = talking                  # back-and-forth of the mouth opening (crop widths, 15 frames) that means talking
        self.agreement = agreement              # median difference from the visible face around the cover
        self.keep_lost_ms = keep_lost_ms        # how long a lost track's memories wait for it to come back
        self.hole_reach = hole_reach            # how far (crop widths) into what it did not see a memory's painted-in face is trusted
        self.rim_level = rim_level              # difference from the memory (0-1) that makes a pixel beside a cover part of it (0: off)
        self.rim_reach = rim_reach              # how far (crop widths) beside what the mask head took for covered that is looked for
        self.rim_grow = rim_grow                # how far (crop widths) from the cover a missed part found beside it is followed (0: off)
        self.rim_grow_level = rim_grow_level    # the difference from the memory (0-1) it is followed through
        self.start_at_once = start_at_once      # no fade in when the face was uncovered the frame before
        self.register = register                # refine the memory's fit by image registration (see _registered)
        self.register_steps = register_steps    # its most iterations
        self._tracks: dict[int, _TrackMemory] = {}
        self._regions: dict[int, tuple[np.ndarray, np.ndarray]] = {}
        self._now = 0.0  # the frame's time, ms
        self._forget = False

    def reset(self) -> None:
        """Forget everything, from any thread: the stage's own thread does it on its next frame."""
        self._forget = True

    def __call__(self, frame: Frame) -> Frame:
        self._now = frame.time_ms
        if self._forget:
            self._tracks, self._forget = {}, False
        if not self.settings.face_memory:
            self._tracks = {}  # off means forgotten, not paused
            return frame
        if frame.still:
            return frame  # a picture on its own has no past
        seen = set()
        present = {face.track_id for face in frame.faces}
        for face in frame.faces:
            if face.restored is None or face.crop is None or face.matrix is None:
                continue
            state = self._state_for(face, present)
            seen.add(face.track_id)
            self._step(face, state)
        for track_id in [t for t in self._tracks if t not in seen]:
            if self._now - self._tracks[track_id].last_seen > self.keep_lost_ms:
                del self._tracks[track_id]  # forgotten: the track ended
        return frame

    def notes(self) -> dict[int, str]:
        """Per track: why its memory is or is not in use on the last frame."""
        return {track_id: state.note for track_id, state in self._tracks.items()}

    def _state_for(self, face: Face, present: set) -> _TrackMemory:
        centre = face.landmarks.mean(axis=0)
        state = self._tracks.get(face.track_id)
        if state is None and face.new_track:
            # A track lost for a moment and found again in the same place, with the same eyes and
            # brows as its memory: the same person (another one sitting down there is not).
            width = float(np.ptp(face.landmarks[:, 0])) or 1.0
            lost = [(t, s) for t, s in self._tracks.items() if t not in present and s.centre is not None
                    and s.memories and np.linalg.norm(s.centre - centre) < 0.5 * width]
            if lost:
                track_id, candidate = min(lost, key=lambda item: np.linalg.norm(item[1].centre - centre))
                if self._same_upper_face(face, candidate.memories[-1]):
                    state = self._tracks.pop(track_id)
        if state is None:
            state = _TrackMemory()
        self._tracks[face.track_id] = state
        state.centre, state.last_seen = centre, self._now
        return state

    def _same_upper_face(self, face: Face, memory: Memory) -> bool:
        """The band of the eyes and brows of ``face`` looks like the memory's (median difference
        of the aligned pixels, after their mean colours are matched)."""
        size = face.crop.shape[0]
        band = slice(int(0.22 * size), int(0.48 * size)), slice(int(0.2 * size), int(0.8 * size))
        now = face.crop[band].astype(np.float32) * (1 / 255)
        then = memory.crop[band]
        difference = np.abs((now - now.mean(axis=(0, 1))) - (then - then.mean(axis=(0, 1)))).max(axis=2)
        return float(np.median(difference)) < self.agreement

    def _regions_for(self, size: int) -> tuple[np.ndarray, np.ndarray]:
        """(face, lower face) boolean regions of the aligned crop."""
        regions = self._regions.get(size)
        if regions is None:
            yy, xx = np.mgrid[0:size, 0:size] / size
            # The aligned face (eyes at 0.38, mouth at 0.70 of the crop), less the neck and the hair.
            face = ((xx - 0.5) / 0.30) ** 2 + ((yy - 0.55) / 0.36) ** 2 < 1
            lower = face & (yy > 0.6)
            regions = self._regions[size] = (face, lower)
        return regions

    def _step(self, face: Face, state: _TrackMemory) -> None:
        size = face.crop.shape[0]
        face_region, lower = self._regions_for(size)
        covered = face.occlusion > 0.5
        points = align.transform_points(face.matrix, face.landmarks[list(POSE_POINTS)])
        lips = align.transform_points(face.matrix, face.landmarks[[UPPER_LIP, LOWER_LIP]])
        mouth = float(np.linalg.norm(lips[0] - lips[1])) / size
        state.mouths.append(mouth)
        lower_covered = float(covered[lower].mean())
        target, recalled = 0.0, None
        was_uncovered = state.uncovered  # the frame before
        state.uncovered = bool(covered[face_region].mean() <= self.covered_level)
        if state.uncovered:
            state.note = "uncovered"
        elif not state.memories:
            state.note = "nothing remembered"
        else:
            recalled, state.note = self._recall(face, state, points, mouth, covered)
            target = 1.0 if recalled is not None else 0.0
        # Fade towards the target over a few frames; while fading out, the memory last used is
        # fitted to this frame (no stale pose shows). A cover arriving over a face seen uncovered
        # the frame before takes the memory at once: it is the face the camera has just shown,
        # and fading in would show the generator's guess for a few frames in between.
        if target == 1.0 and was_uncovered and self.start_at_once:
            state.weight = 1.0
        else:
            state.weight = float(np.clip(state.weight + np.clip(target - state.weight, -self.fade_step, self.fade_step), 0, 1))
        if recalled is not None:
            state.last, (lit, usable) = recalled
            if self.rim_level > 0:
                face.occlusion = self._with_missed_rims(face, lit, usable, covered)
        elif state.weight > 0 and state.last is not None:
            lit, usable, _visible = self._fit(face, state.last, points)
        if state.weight > 0 and state.last is not None:
            share = (state.weight * usable)[..., None]
            face.restored = (share * lit + (1 - share) * face.restored).astype(np.float32)
        else:
            state.last = None
        face.memory = state.weight if state.last is not None else 0.0
        face.memory_note = state.note
        # Kept after it was asked: a frame a little covered (a hand reaching the chin, under
        # ``uncovered_level``) that kept itself first was then restored from itself, the rim of
        # the cover the mask head missed and all (a clip where a hand comes and goes: 20.65 ->
        # 20.94 dB inside the hand; memory-eval's validation stills 23.08 -> 23.14 dB).
        if lower_covered < self.uncovered_level and face.motion < self.steady and not face.new_track:
            self._remember(state, face, points, mouth, lower_covered)

    def _remember(self, state: _TrackMemory, face: Face, points, mouth: float, lower_covered: float) -> None:
        size = face.crop.shape[0]
        # Where the face was seen: not predicted covered, with a margin for rims the mask missed.
        seen = (face.occlusion < 0.1).astype(np.uint8)
        valid = cv2.GaussianBlur(cv2.erode(seen, self._kernel(size)).astype(np.float32), (0, 0), 0.02 * size)
        memory = Memory(face.crop.astype(np.float32) * (1 / 255), valid, lower_covered, points, mouth)
        if state.memories:
            distances = [self._distance(m, points, mouth, size) for m in state.memories]
            nearest = int(np.argmin(distances))
            if distances[nearest] < 0.5 * self.pose_limit:
                # The same pose seen again: the newer light wins, unless it is more covered.
                if lower_covered <= state.memories[nearest].covered + 0.01:
                    state.memories[nearest] = memory
                return
        state.memories.append(memory)
        if len(state.memories) > self.slots:
            state.memories.pop(0)

    def _with_missed_rims(self, face: Face, lit, usable, covered) -> np.ndarray:
        """The occlusion and what the mask head missed of the cover: beside what it took for
        covered (within ``rim_reach`` crop widths), where the memory saw the crop and the picture
        differs from it (lit as now) by more than ``rim_level``. The memory knows what the face,
        and what was beside it, looked like there; fingertips over the lips, a cover's rim and a
        cover where it leaves the face at the jaw do not look like it.
        A clip where a hand comes and goes (validation, seed 1), whose fingertips the mask head
        missed and the picture kept: 27.66 -> 30.09 dB inside the hand (a generator trained on
        degraded pictures, whose mask head missed more of them: 24.49 -> 28.24); memory-eval's validation
        clips unchanged (stills 23.14 -> 23.13 dB, tilting, coming closer and turning +0.01 to
        +0.09), their switch flicker lower (stills 5.63 -> 5.52). At a level of 0.12: 30.00 dB, and
        memory-eval as at 0.08; reaching 0.04 or 0.12 crop widths: 30.04 / 30.09 dB. Looked for
        on the face only (an ellipse), the part of a cover beside the jaw stayed: memory-eval's
        turning clips 21.51 dB against 22.23 now, the rest within 0.01 dB.
        A part found there is followed on (``rim_grow``) through what differs from the memory by
        more than ``rim_grow_level``: a hand whose palm the mask head took and whose fingers over
        the cheek it did not (a generator resumed for more steps, on the e2e's validation clip at
        seed 1) had its fingertips left in the picture, half seen through: 24.76 -> 31.80 dB
        inside the hand (session 14's generator: 31.59 -> 32.95). Memory-eval's validation clips
        score the same where covered (every clip within 0.05 dB); on the visible face beside the
        cover the output's squared error against the truth went 10.94 -> 13.03 (still), 13.44 ->
        14.26 (tilting), 10.37 -> 11.36 (coming closer), 2.97 (turning, the same), almost all in a
        face mask's clip where the memory's face paints a little more of the skin at the mask's
        edge (by eye the same). Followed through 0.08 instead of 0.12: 31.90 / 33.01 dB, the
        visible face's error 14.83 / 14.64 / 13.01 / 3.75; 0.15: 29.74 / 32.40 dB."""
        size = face.crop.shape[0]
        current = face.crop.astype(np.float32) * (1 / 255)
        difference = cv2.GaussianBlur(np.abs(lit - current).max(axis=2), (0, 0), max(0.01 * size, 0.5))
        beside = cv2.dilate(covered.astype(np.uint8), self._kernel(size, self.rim_reach)).astype(bool)
        missed = beside & (usable > 0.5) & (difference > self.rim_level)
        if self.rim_grow > 0 and missed.any():
            # Each missed part followed on through what differs more, within rim_grow of the
            # cover: a finger from its root to its tip.
            reach = cv2.distanceTransform((~covered).astype(np.uint8), cv2.DIST_L2, 3) <= self.rim_grow * size
            grows = reach & (usable > 0.5) & (difference > self.rim_grow_level)
            _, labels = cv2.connectedComponents((grows | missed).astype(np.uint8), connectivity=8)
            touching = np.unique(labels[missed])
            missed = np.isin(labels, touching[touching > 0])
        return np.maximum(face.occlusion, missed.astype(np.float32))

    @staticmethod
    def _talking(mouths) -> float:
        """How much the mouth opening went back and forth over the recent frames: its total
        change less its net change (a cover arriving shifts the landmarks' guess once; talking
        opens and closes it again and again)."""
        if len(mouths) < 5:
            return 0.0
        values = np.asarray(mouths)
        return float(np.abs(np.diff(values)).sum() - abs(values[-1] - values[0]))

    @staticmethod
    def _kernel(size: int, reach: float = 0.03) -> np.ndarray:
        """A disc ``reach`` crop widths in radius (at least one pixel)."""
        radius = max(1, round(reach * size))
        return cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * radius + 1, 2 * radius + 1))

    @staticmethod
    def _distance(memory: Memory, points: np.ndarray, mouth: float, size: int) -> float:
        return float(np.linalg.norm(memory.points - points, axis=1).mean()) / size + abs(memory.mouth - mouth)

    def _recall(self, face: Face, state: _TrackMemory, points, mouth, covered):
        """((the memory, (it fitted to this frame, where it may be used)), note), or (None, the
        reason) when none fits: the pose, the mouth, talking, or what is visible around the cover
        disagrees with it."""
        size = face.crop.shape[0]
        memory = min(state.memories, key=lambda m: self._distance(m, points, mouth, size))
        pose = float(np.linalg.norm(memory.points - points, axis=1).mean()) / size
        if pose > self.pose_limit:
            return None, f"pose {pose:.3f}"
        if abs(memory.mouth - mouth) > self.mouth_limit:
            return None, f"mouth {abs(memory.mouth - mouth):.3f}"
        talking = self._talking(state.mouths)
        if talking > self.talking:
            return None, f"talking {talking:.3f}"
        lit, usable, visible = self._fit(face, memory, points)
        if visible.mean() < 0.05:
            return None, "too little visible"
        # Agreement where the face is visible just around the cover (the median: a rim the mask
        # missed must not decide it).
        current = face.crop.astype(np.float32) * (1 / 255)
        ring = cv2.dilate(covered.astype(np.uint8), self._kernel(size * 2)).astype(bool) & (visible > 0)
        if ring.sum() < 0.01 * size * size:
            return None, "no visible face around the cover"
        error = float(np.median(np.abs(lit[ring] - current[ring]).max(axis=1)))
        if error > self.agreement:
            return None, f"disagrees ({error:.3f})"
        return (memory, (lit, usable)), f"used (pose {pose:.3f}, difference {error:.3f})"

    def _visible(self, face: Face, valid: np.ndarray) -> np.ndarray:
        """Where the face is visible now (not predicted covered, on the face) and the memory,
        warped to this frame (``valid``), saw it: a boolean crop."""
        return (face.occlusion < 0.1) & self._regions_for(face.crop.shape[0])[0] & (valid > 0.5)

    def _registered(self, face: Face, memory: Memory, matrix: np.ndarray) -> np.ndarray:
        """The memory-to-crop warp (2x3) refined by image registration: ECC (OpenCV's enhanced
        correlation coefficient, insensitive to brightness and contrast) fits an affine warp of
        the remembered face onto the face visible now, starting from the landmarks' similarity.
        Under a cover MediaPipe re-guesses the whole mesh, its upper points included (they move by
        about 2% of the crop as a mask goes on), and a turning head is not a similarity; the
        pixels around the cover tell where the remembered face belongs. Keeps ``matrix`` where too
        little is visible, ECC does not converge, or its answer strays more than 10% of the crop."""
        size = face.crop.shape[0]
        if memory.grey is None:
            memory.grey = cv2.cvtColor(memory.crop, cv2.COLOR_BGR2GRAY)
        valid = cv2.warpAffine(memory.valid, matrix, (size, size), flags=cv2.INTER_LINEAR)
        visible = self._visible(face, valid).astype(np.uint8)
        if visible.mean() < 0.05:
            return matrix
        current = cv2.cvtColor(face.crop, cv2.COLOR_BGR2GRAY).astype(np.float32) * (1 / 255)
        # ECC's warp maps the current crop's pixels to the memory's.
        warp = cv2.invertAffineTransform(matrix).astype(np.float32)
        try:
            _, warp = cv2.findTransformECC(current, memory.grey, warp, cv2.MOTION_AFFINE,
                                           (cv2.TERM_CRITERIA_EPS | cv2.TERM_CRITERIA_COUNT, self.register_steps, 1e-4),
                                           visible, 3)
        except cv2.error:  # did not converge (or nothing to correlate)
            return matrix
        refined = cv2.invertAffineTransform(warp.astype(np.float64))
        corners = np.float64([[0, 0, 1], [size, 0, 1], [size, size, 1], [0, size, 1]])
        moved = np.abs(corners @ refined.T - corners @ matrix.T).max()
        return refined if moved < 0.1 * size else matrix

    def _filled(self, memory: Memory) -> tuple[np.ndarray, np.ndarray]:
        """(the memory with what it did not see painted in from what it saw around it, how far
        that may be used: fully where it was seen, fading to nothing ``hole_reach`` crop widths
        into what it did not see). A clean face's memory has holes too, where the mask head
        mistook a collar or a shadow for a cover; the generator's guess there, next to a hand
        covering it now, keeps the hand's colour, and the painted-in memory does not."""
        if memory.filled is None:
            size = memory.crop.shape[0]
            hole = (memory.valid < 0.5).astype(np.uint8)
            image = (memory.crop * 255).astype(np.uint8)
            memory.filled = cv2.inpaint(image, hole, 3, cv2.INPAINT_TELEA).astype(np.float32) * (1 / 255)
            distance = cv2.distanceTransform(hole, cv2.DIST_L2, 3)
            memory.usable = np.clip(1 - distance / max(self.hole_reach * size, 1e-6), 0, 1).astype(np.float32)
        return memory.filled, memory.usable

    def _fit(self, face: Face, memory: Memory, points: np.ndarray):
        """(the memory warped to this frame's landmarks and lit like it, where it may be used,
        where the face is visible now)."""
        size = face.crop.shape[0]
        matrix = align.similarity(memory.points, points)
        if self.register:
            matrix = self._registered(face, memory, matrix)
        filled, usable = self._filled(memory)

        def warp(image, border):
            return cv2.warpAffine(image, matrix, (size, size), flags=cv2.INTER_LINEAR, borderMode=border)
        warped = warp(filled, cv2.BORDER_REPLICATE)
        valid = warp(memory.valid, cv2.BORDER_CONSTANT)
        usable = warp(usable, cv2.BORDER_CONSTANT)
        current = face.crop.astype(np.float32) * (1 / 255)
        visible = self._visible(face, valid).astype(np.float32)
        # Light: a smooth per-channel gain, current over remembered, read where the face is visible
        # (a normalised blur, at a quarter of the size: the gain has no detail to lose).
        small = (size // 4, size // 4)
        weight = cv2.resize(visible, small, interpolation=cv2.INTER_AREA)
        now = cv2.resize(current * visible[..., None], small, interpolation=cv2.INTER_AREA)
        then = cv2.resize(warped * visible[..., None], small, interpolation=cv2.INTER_AREA)
        sigma = 0.15 * small[0]
        weight = cv2.GaussianBlur(weight, (0, 0), sigma)[..., None] + 1e-4
        gain = (cv2.GaussianBlur(now, (0, 0), sigma) / weight + 1e-3) / (cv2.GaussianBlur(then, (0, 0), sigma) / weight + 1e-3)
        gain = cv2.resize(np.clip(gain, 0.5, 2.0), (size, size), interpolation=cv2.INTER_LINEAR)
        lit = np.clip(warped * gain, 0, 1).astype(np.float32)
        if float(usable.min()) < 1.0:
            # Painted in only where the picture changed since: where the memory's hole still shows
            # what it showed then (the same cover, held still), it knows nothing the generator
            # does not, and the generator fills it.
            then = warp(memory.crop, cv2.BORDER_REPLICATE)
            change = cv2.GaussianBlur(np.abs(current - then * gain).max(axis=2), (0, 0), 0.02 * size)
            usable = np.maximum(valid, usable * np.clip((change - CHANGED / 2) / (CHANGED / 2), 0, 1))
        return lit, usable, visible
