"""Liveness and readiness: what ``/healthz`` and ``/readyz`` answer, and the state behind them.

The HTTP server answers from its own thread (``worker.metrics``), so it still answers while the
event loop is blocked; it never calls into the loop, it only reads what the loop last wrote:

- **liveness** (``/healthz``, restart the process when it fails):
  ``event_loop``: a task on the loop writes a timestamp every ``beat_interval``; older than
  ``loop_stall_after`` means the loop is blocked (a synchronous call, a runaway computation).
  ``poll_loop``: the runner's poll loop made progress within ``poll_stall_after`` (it records
  each receive, and re-checks its capacity every second while every slot is busy). Not polling
  is expected, and counts as progress, while the endpoint circuit is open (the loop waits for a
  probe to succeed), while the worker is starting or stopping, and after it stopped.
- **readiness** (``/readyz``, informational for a worker that serves no traffic):
  ``clients``: the worker is wired and its clients are open; ``circuit``: the endpoint circuit
  is closed; ``shutdown``: no stop was requested.

Every value read across the thread boundary is a float or a bool written whole, so a reader
sees either the old value or the new one.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Callable, Iterator, Mapping
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass
from typing import Final

# How long the runner can go without polling when nothing is wrong: one long poll (at most 20 s),
# the longest back-off after failed receives (30 s), and a margin for a slow network.
_RECEIVE_ERROR_BACKOFF_MAX: Final = 30.0
_POLL_MARGIN: Final = 15.0


@dataclass(frozen=True, slots=True)
class HealthPolicy:
    """When the loop and the poll loop count as stuck."""

    loop_stall_after: float = 5.0
    poll_stall_after: float = 20 + _RECEIVE_ERROR_BACKOFF_MAX + _POLL_MARGIN
    beat_interval: float = 0.5

    @classmethod
    def for_receive_wait(cls, receive_wait_seconds: float) -> HealthPolicy:
        """The policy for a worker whose long polls last ``receive_wait_seconds``."""
        return cls(
            poll_stall_after=receive_wait_seconds + _RECEIVE_ERROR_BACKOFF_MAX + _POLL_MARGIN
        )


@dataclass(frozen=True, slots=True)
class Check:
    """One named condition and what was seen."""

    ok: bool
    detail: str


@dataclass(frozen=True, slots=True)
class Report:
    """A probe's answer: every check, passing only when all pass."""

    checks: Mapping[str, Check]

    @property
    def ok(self) -> bool:
        return all(check.ok for check in self.checks.values())

    @property
    def status_code(self) -> int:
        return 200 if self.ok else 503

    def to_json(self) -> str:
        return json.dumps(
            {
                "status": "pass" if self.ok else "fail",
                "checks": {
                    name: {"ok": check.ok, "detail": check.detail}
                    for name, check in self.checks.items()
                },
            },
            separators=(",", ":"),
        )


@dataclass(frozen=True, slots=True)
class WorkerSignals:
    """Where the running worker's state is read from (plain reads, safe from another thread)."""

    last_poll: Callable[[], float]
    circuit_open: Callable[[], bool]


class Health:
    """Timestamps and flags the event loop keeps fresh; the probes' answers computed from them."""

    def __init__(
        self, policy: HealthPolicy | None = None, *, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.policy = policy or HealthPolicy()
        self._clock = clock
        now = clock()
        self._loop_beat = now
        # The last moment at which not polling was expected (starting, circuit open, stopping).
        self._idle_expected_at = now
        self._signals: WorkerSignals | None = None
        self._stop: asyncio.Event | None = None
        self._clients = "not open yet"

    # --- written from the event loop ---

    def beat(self) -> None:
        """Record that the loop ran just now (the beating task calls this)."""
        now = self._clock()
        self._loop_beat = now
        if self._polling_excused():
            self._idle_expected_at = now

    @asynccontextmanager
    async def beating(self) -> AsyncIterator[None]:
        """Beat every ``beat_interval`` on the running loop while inside the block."""

        async def keep_beating() -> None:
            while True:
                self.beat()
                await asyncio.sleep(self.policy.beat_interval)

        task = asyncio.create_task(keep_beating())
        try:
            yield
        finally:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)

    @contextmanager
    def watching(self, signals: WorkerSignals) -> Iterator[None]:
        """Report on a wired worker while inside the block (its clients are open)."""
        self._signals = signals
        self._clients = "open"
        try:
            yield
        finally:
            self._signals = None
            self._clients = "closed"
            self._idle_expected_at = self._clock()

    def watch_stop(self, stop: asyncio.Event) -> None:
        """Know when a stop was requested: draining is not a stuck poll loop."""
        self._stop = stop

    # --- read from the HTTP server's thread ---

    def liveness(self) -> Report:
        policy = self.policy
        now = self._clock()
        loop_age = now - self._loop_beat
        signals = self._signals
        if signals is None or self._polling_excused():
            poll_age = 0.0
        else:
            poll_age = now - max(signals.last_poll(), self._idle_expected_at)
        return Report(
            {
                "event_loop": Check(
                    loop_age <= policy.loop_stall_after,
                    f"last ran {loop_age:.1f} s ago (stuck after {policy.loop_stall_after:g} s)",
                ),
                "poll_loop": Check(
                    poll_age <= policy.poll_stall_after,
                    self._poll_detail(poll_age),
                ),
            }
        )

    def readiness(self) -> Report:
        signals = self._signals
        circuit_open = signals is not None and signals.circuit_open()
        stopping = self._stop is not None and self._stop.is_set()
        return Report(
            {
                "clients": Check(signals is not None, self._clients),
                "circuit": Check(
                    not circuit_open,
                    "open: the endpoint is failing, receiving paused" if circuit_open else "closed",
                ),
                "shutdown": Check(
                    not stopping, "stopping: draining in-flight messages" if stopping else "running"
                ),
            }
        )

    def _polling_excused(self) -> bool:
        signals = self._signals
        if signals is None:
            return True
        if self._stop is not None and self._stop.is_set():
            return True
        return signals.circuit_open()

    def _poll_detail(self, poll_age: float) -> str:
        if self._signals is None:
            return f"not polling: clients {self._clients}"
        if self._polling_excused():
            return "not expected to poll: circuit open or stopping"
        return (
            f"last progress {poll_age:.1f} s ago (stuck after {self.policy.poll_stall_after:g} s)"
        )
