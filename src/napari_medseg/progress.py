"""Progress reporting and cancellation for long work, with no GUI dependency.

Long computations are written as *step generators*: they ``yield`` `Progress` objects and ``return`` their
result. :func:`run_steps` drives such a generator from plain Python (CLI, API) with an optional progress
callback and a cancel predicate checked at every yield; a napari ``thread_worker`` drives the very same
generator from the GUI.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Generator, Optional

from napari_medseg.errors import CancelledError


@dataclass(frozen=True)
class Progress:
    done: int
    total: int
    stage: str = ""
    message: str = ""
    unit: str = ""  # of done/total, e.g. "s" when a time budget measures the progress ("" = steps/items)

    @property
    def fraction(self) -> float:
        return 0.0 if self.total <= 0 else min(1.0, self.done / self.total)


Steps = Generator[Progress, None, Any]
ProgressCallback = Optional[Callable[[Progress], None]]
CancelCheck = Optional[Callable[[], bool]]


def run_steps(steps: Steps, progress: ProgressCallback = None, cancel: CancelCheck = None) -> Any:
    """Run a step generator to completion and return its result.

    ``progress`` is called with each `Progress`; ``cancel`` is polled at each step and, when it returns
    True, the generator is closed (its ``finally`` blocks run) and `CancelledError` is raised.
    """
    try:
        while True:
            p = next(steps)
            if progress is not None and isinstance(p, Progress):
                progress(p)
            if cancel is not None and cancel():
                steps.close()
                raise CancelledError("cancelled by the user; nothing was written")
    except StopIteration as stop:
        return stop.value
