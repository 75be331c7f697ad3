"""What the GUI thread was doing during its longest heartbeat gaps: a sampling profiler of one thread.

A daemon thread samples the main thread's Python stack (``sys._current_frames``) every few milliseconds,
and those of the other threads at work (the segmentation worker).
`explain(t0, t1)` then names the heaviest call path among the samples taken inside a gap, with the share
of the gap's samples each frame is on, e.g. ``_show_result 95% > add_labels 90% > ... > compile 40%``.
While the main thread holds the GIL in C code without releasing it, no sample is taken: the gap then
shows few samples (said as ``n=``), and the path is the one around the C call.
"""

from __future__ import annotations

import sys
import threading
import time
from collections import Counter

#: frames of these files are the event loop's plumbing, not what ran: left out of the path
_PLUMBING = ("/qtpy/", "/threading.py", "/superqt/", "/psygnal/", "/app_model/", "benchmarks/")


class GapSampler:
    def __init__(self, interval_s: float = 0.004, thread_id: int | None = None):
        self.interval = interval_s
        self.target = thread_id if thread_id is not None else threading.main_thread().ident
        self.samples: list[tuple[float, tuple[str, ...]]] = []
        #: the other threads' stacks at the same instants (a worker holding the GIL in C code stalls the GUI too)
        self.other_samples: list[tuple[float, tuple[str, ...]]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="gap sampler", daemon=True)

    def start(self) -> "GapSampler":
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(1.0)

    def _run(self) -> None:
        me = threading.get_ident()
        while not self._stop.is_set():
            frames = sys._current_frames()
            t = time.perf_counter()
            for ident, frame in frames.items():
                if ident == me:
                    continue
                stack = []
                while frame is not None:
                    code = frame.f_code
                    stack.append(f"{code.co_filename}:{code.co_name}")
                    frame = frame.f_back
                if ident == self.target:
                    self.samples.append((t, tuple(reversed(stack))))
                elif len(stack) > 8:  # a thread at work, not one parked in a wait
                    self.other_samples.append((t, tuple(reversed(stack))))
            time.sleep(self.interval)

    def explain(self, t0: float, t1: float, depth: int = 7) -> str:
        """The heaviest call path of the GUI thread's samples in ``[t0, t1]`` (outermost first, our frames
        only) and, when other threads were at work, theirs (``worker:``)."""
        text = self._path([s for t, s in self.samples if t0 <= t <= t1], depth)
        others = [s for t, s in self.other_samples if t0 <= t <= t1]
        if others:
            text += f"; worker: {self._path(others, depth)}"
        return text

    @staticmethod
    def _path(stacks, depth: int) -> str:
        if not stacks:
            return "no sample (a thread held the GIL in C code)"
        n = len(stacks)
        path: list[str] = []
        prefix: tuple[str, ...] = ()
        current = stacks
        while True:
            nxt = Counter(s[len(prefix)] for s in current if len(s) > len(prefix))
            if not nxt:
                break
            frame, count = nxt.most_common(1)[0]
            if count < 0.2 * n:
                break
            prefix = (*prefix, frame)
            current = [s for s in current if len(s) >= len(prefix) and s[len(prefix) - 1] == frame]
            if not any(p in frame for p in _PLUMBING) and "<module>" not in frame:
                path.append(f"{_short(frame)} {100 * count // n}%")
        shown = path if len(path) <= depth else [*path[:2], "…", *path[-(depth - 3):]]
        return f"n={n}: " + " > ".join(shown)


def _short(frame: str) -> str:
    filename, _, func = frame.rpartition(":")
    for marker in ("/site-packages/", "/src/", "/lib/python"):
        if marker in filename:
            filename = filename.split(marker, 1)[1]
            break
    module = filename.removesuffix(".py").replace("/", ".")
    return f"{module.rsplit('.', 1)[-1]}.{func}"
