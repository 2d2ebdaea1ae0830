"""A clock that moves only when the test moves it."""

from __future__ import annotations


class ManualClock:
    """Stands in for ``time.monotonic``: returns ``now``, which the test sets or advances."""

    def __init__(self, now: float = 0.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds
