"""Comparing the work a step does on two inputs, for the linear-time tests (a ratio, no limit).

What is measured is this thread's CPU time (``time.thread_time``), so time spent waiting for a
core on a loaded machine does not count; each side keeps the best of several interleaved runs
with the garbage collector paused, so one slow run does not decide.
"""

from __future__ import annotations

import gc
import time
from collections.abc import Callable

RUNS = 5


def best_ratio(small: Callable[[], object], large: Callable[[], object], runs: int = RUNS) -> float:
    """The best CPU time of ``large`` over the best of ``small``, runs alternating."""
    best_small = best_large = float("inf")
    gc.collect()
    gc.disable()
    try:
        for _ in range(runs):
            start = time.thread_time()
            small()
            best_small = min(best_small, time.thread_time() - start)
            start = time.thread_time()
            large()
            best_large = min(best_large, time.thread_time() - start)
    finally:
        gc.enable()
    return best_large / max(best_small, 1e-9)
