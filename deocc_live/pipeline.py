"""The pipeline: capture -> track+align -> generate+memory+smooth -> blend+outputs, on their own
threads joined by small queues. Live sources drop the oldest frame at once when a stage falls
behind (lower frame rate, never growing latency: no stage waits for a slower one downstream); file
sources never drop a frame.

The headless command, the GUI and the benchmark all run this one class."""
from __future__ import annotations

import queue
import threading
import time
from collections import deque

import cv2
import numpy as np

from deocc_live.stages.align import AlignStage
from deocc_live.stages.blend import BlendStage
from deocc_live.stages.capture import now_ms
from deocc_live.frame import Frame
from deocc_live.stages.generate import GenerateStage
from deocc_live.stages.memory import FaceMemoryStage
from deocc_live.stages.outputs import OutputError
from deocc_live.settings import LiveSettings
from deocc_live.stages.smooth import SmoothStage
from deocc_live.stages.track import TrackStage

_END = object()


def _finder(report):
    """The shipped finder (deocc_live.finder) when it is installed and loads (else ``report`` is
    told why, and faces are found by MediaPipe alone); the settings switch it."""
    from deocc_live.assets import FINDER, find_asset
    from deocc_live.finder import FaceFinder

    path = find_asset(FINDER)
    if path is None:
        return None
    try:
        return FaceFinder(path)
    except Exception as error:  # a damaged file: ONNX Runtime's own errors, or not a finder
        report(f"finder not loaded ({path.name}): {str(error).splitlines()[0][:200]}")
        return None


class DropOldestQueue:
    """A bounded queue; ``put`` on a full queue drops the oldest item (live) or waits (files)."""

    def __init__(self, maxsize: int = 2, drop: bool = True):
        self._queue: queue.Queue = queue.Queue(maxsize=maxsize)
        self.drop = drop
        self.dropped = 0

    def put(self, item, stop: threading.Event) -> bool:
        """Live: at once, the oldest item dropped if the queue is full (a stage that falls behind
        works on the newest frame, and no stage upstream waits for it). Files, and the end mark:
        wait for room (until ``stop``)."""
        if self.drop and item is not _END:
            while not stop.is_set():
                try:
                    self._queue.put_nowait(item)
                    return True
                except queue.Full:
                    try:
                        self._queue.get_nowait()
                        self.dropped += 1
                    except queue.Empty:
                        pass
            return False
        while not stop.is_set():
            try:
                self._queue.put(item, timeout=0.05)
                return True
            except queue.Full:
                continue
        return False

    def get(self, stop: threading.Event):
        while not stop.is_set():
            try:
                return self._queue.get(timeout=0.05)
            except queue.Empty:
                continue
        return _END

    def qsize(self) -> int:
        return self._queue.qsize()


class RollingStats:
    """Per-stage timings and frame rate over the last frames."""

    def __init__(self, window: int = 120):
        self._lock = threading.Lock()
        self._timings: dict[str, deque] = {}
        self._done: deque = deque(maxlen=window)
        self.window = window

    def add(self, frame: Frame, finished_ms: float) -> None:
        with self._lock:
            for stage, ms in frame.timings.items():
                self._timings.setdefault(stage, deque(maxlen=self.window)).append(ms)
            self._done.append(finished_ms)

    def fps(self) -> float:
        with self._lock:
            if len(self._done) < 2:
                return 0.0
            span = self._done[-1] - self._done[0]
            return 1000.0 * (len(self._done) - 1) / span if span > 0 else 0.0

    def summary(self) -> dict[str, float]:
        with self._lock:
            return {stage: float(np.median(values)) for stage, values in self._timings.items() if values}


class Pipeline:
    def __init__(self, source, engine, landmarker_path, outputs=(), settings: LiveSettings | None = None,
                 on_frame=None, queue_size: int | None = None):
        self.source = source
        self.outputs = list(outputs)
        self.settings = settings or LiveSettings()
        self.on_frame = on_frame
        self.stats = RollingStats()
        # News for the user, newest last (failures, camera lost and back): the last 100, and a count
        # of all, so that a reader can tell which are new.
        self.errors: deque[str] = deque(maxlen=100)
        self.reported = 0
        self._news_lock = threading.Lock()
        source.on_notice = self._report
        self.failed_outputs: list[tuple[object, str]] = []
        self._outputs_lock = threading.RLock()  # held while frames are written: removal waits for it
        self._engine_lock = threading.Lock()
        self.engine = engine
        self.track = TrackStage(landmarker_path, max_faces=self.settings.max_faces,
                                landmark_filter=self.settings.landmark_filter, finder=_finder(self._report),
                                settings=self.settings)
        self.align = AlignStage(engine.spec.crop_size) if engine is not None else None
        self.generate = GenerateStage(engine, self.settings) if engine is not None else None
        self.memory = FaceMemoryStage(self.settings)
        self.smooth = SmoothStage(self.settings)
        self.blend = BlendStage(self.settings)
        drop = source.live
        # A live source's frames wait for a stage one at a time (the newest): a frame more in each
        # queue is a frame interval more of latency when a stage falls behind the camera. A
        # file's, two: no frame is dropped, and each stage finds the next one ready.
        queue_size = queue_size or (1 if drop else 2)
        self._tracked = DropOldestQueue(queue_size, drop)
        self._captured = DropOldestQueue(queue_size, drop)
        self._generated = DropOldestQueue(queue_size, drop)
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self.frames_out = 0
        self.latest: Frame | None = None
        self.finished = threading.Event()
        self.failure: BaseException | None = None

    # Settings the app changes while running.
    def toggle(self) -> bool:
        self.settings.enabled = not self.settings.enabled
        return self.settings.enabled

    def add_output(self, output) -> None:
        with self._outputs_lock:
            self.outputs = [*self.outputs, output]

    def remove_output(self, output) -> None:
        """Once this returns the output thread is done with ``output``: it may be closed."""
        with self._outputs_lock:
            self.outputs = [o for o in self.outputs if o is not output]

    def set_engine(self, engine) -> None:
        """Swap the generator while running; the old one is closed."""
        with self._engine_lock:
            old, self.engine = self.engine, engine
            self.align = AlignStage(engine.spec.crop_size) if engine is not None else None
            self.generate = GenerateStage(engine, self.settings) if engine is not None else None
            self.smooth.reset()
            self.memory.reset()
            if old is not None and old is not engine:
                old.close()

    # Threads.
    def start(self) -> "Pipeline":
        targets = [("capture", self._capture_loop), ("track", self._track_loop),
                   ("generate", self._generate_loop), ("output", self._output_loop)]
        for name, target in targets:
            thread = threading.Thread(target=self._guard(target), name=f"deocc-{name}", daemon=True)
            thread.start()
            self._threads.append(thread)
        return self

    def _guard(self, target):
        def run():
            try:
                target()
            except BaseException as error:  # reported to the caller by wait()
                self.failure = self.failure or error
                self._stop.set()
                self.finished.set()
        return run

    def _capture_loop(self):
        try:
            self._capture_frames()
        finally:
            self.source.close()  # on this thread, after its last read: never under a running read

    def _capture_frames(self):
        frames = iter(self.source.frames())
        while True:
            start = now_ms()
            frame = next(frames, None)
            if frame is None:
                break
            if self._stop.is_set():
                return
            frame.captured_ms = now_ms()
            frame.timings = {"capture": frame.captured_ms - start}
            if not self._captured.put(frame, self._stop):
                return
        self._captured.put(_END, self._stop)

    def _track_loop(self):
        try:
            self._track_frames()
        finally:
            self.track.close()  # on this thread, after its last detect: never under a running call

    def _track_frames(self):
        while True:
            frame = self._captured.get(self._stop)
            if frame is _END:
                self._tracked.put(_END, self._stop)
                return
            start = now_ms()
            self.track(frame)
            tracked = now_ms()
            align = self.align  # one attribute read; no lock (the generator holds it while it runs)
            if align is not None:
                align(frame)
            frame.timings["track"] = tracked - start
            frame.timings["align"] = now_ms() - tracked
            self._tracked.put(frame, self._stop)

    def _generate_loop(self):
        while True:
            frame = self._tracked.get(self._stop)
            if frame is _END:
                self._generated.put(_END, self._stop)
                return
            frame.enabled = self.settings.enabled
            start = now_ms()
            # Under the lock: set_engine() never closes an engine in the middle of its run.
            with self._engine_lock:
                if frame.enabled and self.generate is not None and frame.faces:
                    try:
                        self.generate(frame)
                    except (RuntimeError, ValueError, OSError) as error:
                        self._report(f"generator failed, passing frames through: {error}")
                        frame.faces = []
            generated = now_ms()
            try:  # with the effect off (nothing generated) its tracks are forgotten in time
                self.memory(frame)
            except (cv2.error, ValueError, np.linalg.LinAlgError) as error:  # the generator's faces stay
                self.memory.reset()
                self._report(f"face memory failed, restoring without it: {error}")
            remembered = now_ms()
            self.smooth(frame)
            frame.timings["generate"] = generated - start
            frame.timings["memory"] = remembered - generated
            frame.timings["smooth"] = now_ms() - remembered
            self._generated.put(frame, self._stop)

    def _output_loop(self):
        while True:
            frame = self._generated.get(self._stop)
            if frame is _END:
                self.finished.set()
                return
            start = now_ms()
            self.blend(frame, enabled=frame.enabled)
            blended = now_ms()
            with self._outputs_lock:
                for output in self.outputs:
                    try:
                        output.write(frame)
                    except OutputError as error:  # this output is finished (a full disk): the others go on
                        self.remove_output(output)
                        self.failed_outputs.append((output, str(error)))
                        self._report(str(error))
                    except (OSError, RuntimeError, ValueError) as error:
                        self._report(f"output failed: {error}")
            done = now_ms()
            frame.timings["blend"] = blended - start
            frame.timings["output"] = done - blended
            frame.timings["end_to_end"] = done - frame.captured_ms
            self.stats.add(frame, done)
            self.latest = frame
            self.frames_out += 1
            if self.on_frame is not None:
                self.on_frame(frame)

    def _report(self, message: str) -> None:
        with self._news_lock:
            if not self.errors or self.errors[-1] != message:
                self.errors.append(message)
                self.reported += 1

    def news_since(self, seen: int) -> tuple[list[str], int]:
        """The messages reported after the first ``seen`` (as many as are kept), and the new count."""
        with self._news_lock:
            count, kept = self.reported, list(self.errors)
        return kept[max(len(kept) - (count - seen), 0):], count

    def wait(self, timeout: float | None = None) -> bool:
        """Block until the source is exhausted (True) or the timeout passes (False); re-raise a
        stage's failure."""
        finished = self.finished.wait(timeout)
        if self.failure is not None:
            raise self.failure
        return finished

    def stop(self, timeout: float = 1.0) -> None:
        self._stop.set()
        self.source.halt()
        deadline = time.monotonic() + timeout
        for thread in self._threads:
            thread.join(max(deadline - time.monotonic(), 0.01))

    def alive_threads(self) -> list[str]:
        return [t.name for t in self._threads if t.is_alive()]

    @property
    def dropped(self) -> int:
        """Frames a live source delivered that were dropped for newer ones."""
        return self._captured.dropped + self._tracked.dropped + self._generated.dropped

    def queue_depths(self) -> dict[str, int]:
        return {"captured": self._captured.qsize(), "tracked": self._tracked.qsize(), "generated": self._generated.qsize()}

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()
