"""The worker under test as real ``moderation-worker run`` subprocesses, and what their logs say.

Each worker is ``[sys.executable, "-m", "worker.cli", "run"]`` with an environment built from
scratch: the ``MODERATION_*`` settings of the run and the standard ``AWS_*`` variables pointing
at the local stack. Nothing is inherited from the caller's environment, so real AWS credentials
or a developer's ``MODERATION_*`` settings can never leak into a chaos run. Output (JSON logs)
goes to one file per process; the logs are read afterwards for what reached the worker.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Final

from devstack.moto_stack import local_aws_environment

ENDPOINT_NAME: Final = "llama-guard-chaos"
_PACKAGE_ROOT: Final = Path(__file__).resolve().parents[2]
_POLL_SECONDS: Final = 0.05
_KILL_WAIT_SECONDS: Final = 10.0  # a SIGKILLed process is gone at once; this only bounds it


@dataclass(frozen=True, slots=True)
class WorkerTuning:
    """The worker's settings for a chaos run: short timeouts, so faults play out in seconds.

    The retry deadline stays below the visibility timeout (the worker refuses otherwise) and the
    request timeout below the emulator's hang, so a hung request ends as a timeout.
    """

    max_in_flight: int = 16
    visibility_timeout: int = 4
    retry_attempts: int = 4
    retry_deadline: float = 3.0
    request_timeout: float = 1.0
    release_delay_base: float = 1.0
    release_delay_max: float = 2.0
    circuit_failure_threshold: int = 5
    circuit_probe_interval: float = 0.5
    drain_timeout: float = 3.0
    receive_wait_seconds: int = 1

    def environment(self) -> dict[str, str]:
        """The ``MODERATION_*`` variables for these settings."""
        values: dict[str, object] = {
            "MAX_IN_FLIGHT": self.max_in_flight,
            "VISIBILITY_TIMEOUT": self.visibility_timeout,
            "RETRY_ATTEMPTS": self.retry_attempts,
            "RETRY_DEADLINE": self.retry_deadline,
            "REQUEST_TIMEOUT": self.request_timeout,
            "RELEASE_DELAY_BASE": self.release_delay_base,
            "RELEASE_DELAY_MAX": self.release_delay_max,
            "CIRCUIT_FAILURE_THRESHOLD": self.circuit_failure_threshold,
            "CIRCUIT_PROBE_INTERVAL": self.circuit_probe_interval,
            "DRAIN_TIMEOUT": self.drain_timeout,
            "RECEIVE_WAIT_SECONDS": self.receive_wait_seconds,
        }
        return {f"MODERATION_{name}": str(value) for name, value in values.items()}


#: The worker's production defaults with short request and drain timeouts, so a long run ends
#: promptly; the hostile run and the soak differ from it only in the visibility timeout and what
#: follows from it (the retry deadline below it) and in the long poll.
PRODUCTION_LIKE: Final = WorkerTuning(
    max_in_flight=64,
    visibility_timeout=60,
    retry_attempts=5,
    retry_deadline=20.0,
    request_timeout=10.0,
    release_delay_base=5.0,
    release_delay_max=300.0,
    circuit_failure_threshold=5,
    circuit_probe_interval=5.0,
    drain_timeout=10.0,
    receive_wait_seconds=20,
)


def worker_environment(
    resources: Mapping[str, str], tuning: WorkerTuning, *, queues_url: str, model_url: str
) -> dict[str, str]:
    """The complete environment of a worker process (nothing inherited)."""
    return {
        **local_aws_environment(queues_url),
        "AWS_ENDPOINT_URL_SAGEMAKER_RUNTIME": model_url,
        # No config or credentials file, no instance metadata: only what is set here counts.
        "AWS_CONFIG_FILE": os.devnull,
        "AWS_SHARED_CREDENTIALS_FILE": os.devnull,
        "AWS_EC2_METADATA_DISABLED": "true",
        **resources,
        **tuning.environment(),
        "MODERATION_BACKEND": "sagemaker",
        "MODERATION_ENDPOINT_NAME": ENDPOINT_NAME,
        "MODERATION_METRICS_PORT": "0",
        "MODERATION_LOG_FORMAT": "json",
        "PYTHONUNBUFFERED": "1",  # a SIGKILLed worker leaves every line it logged
        "PYTHONIOENCODING": "utf-8",
    }


class WorkerProcess:
    """One ``moderation-worker run`` subprocess with its log file."""

    def __init__(self, name: str, environment: Mapping[str, str], log_path: Path) -> None:
        self.name = name
        self.log_path = log_path
        self.stopped_on_purpose = False
        self._ready = False
        with log_path.open("wb") as log:
            self._process = subprocess.Popen(
                [sys.executable, "-m", "worker.cli", "run"],
                env=dict(environment),
                cwd=_PACKAGE_ROOT,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        # The child holds its own copy of the log file; the parent's is closed on leaving ``with``.

    @property
    def pid(self) -> int:
        return self._process.pid

    @property
    def returncode(self) -> int | None:
        return self._process.poll()

    @property
    def ready(self) -> bool:
        """Whether it has logged ``worker_started`` (its poll loop is running)."""
        if not self._ready:
            self._ready = any(event.get("event") == "worker_started" for event in self.log())
        return self._ready

    async def wait_until_ready(self, *, within: float, tick: float = 0.2) -> None:
        """Until its poll loop runs; raises when it exits first or takes over ``within`` seconds."""
        deadline = time.monotonic() + within
        while not self.ready:
            if self.returncode is not None or time.monotonic() > deadline:
                raise RuntimeError(f"the worker did not start; see {self.log_path}")
            await asyncio.sleep(tick)

    @property
    def exited_unexpectedly(self) -> bool:
        """It ended on its own, before anyone stopped it."""
        return not self.stopped_on_purpose and self._process.poll() is not None

    async def kill(self) -> None:
        """SIGKILL: no drain, no release; what it held comes back after the visibility timeout."""
        self._signal(signal.SIGKILL)
        await self.wait(within=_KILL_WAIT_SECONDS)

    async def stop(self, *, grace: float) -> int:
        """SIGTERM and wait for the drain; SIGKILL if it takes longer than ``grace`` seconds.

        Returns the exit code: 0 is a clean drain, a negative one the signal that ended it.
        """
        self._signal(signal.SIGTERM)
        if not await self.wait(within=grace):
            self._process.send_signal(signal.SIGKILL)
            await self.wait(within=_KILL_WAIT_SECONDS)
        return self._process.returncode

    def _signal(self, signum: signal.Signals) -> None:
        # Only a process still running is stopped on purpose; one that already ended crashed.
        if self._process.poll() is None:
            self.stopped_on_purpose = True
            self._process.send_signal(signum)

    async def wait(self, *, within: float) -> bool:
        """Whether the process ended ``within`` seconds (polling keeps the event loop free)."""
        deadline = time.monotonic() + within
        while self._process.poll() is None:
            if time.monotonic() > deadline:
                return False
            await asyncio.sleep(_POLL_SECONDS)
        return True

    def log(self) -> list[dict[str, object]]:
        """The JSON log events it wrote (a line cut short by SIGKILL is skipped)."""
        return list(read_log(self.log_path))


def read_log(path: Path) -> Iterator[dict[str, object]]:
    """The JSON objects of a log file, one per line; other lines (tracebacks) are skipped."""
    with path.open(encoding="utf-8", errors="replace") as lines:
        for line in lines:
            try:
                event = json.loads(line)
            except ValueError:
                continue
            if isinstance(event, dict):
                yield event


def log_time(event: Mapping[str, object]) -> float | None:
    """An event's timestamp as wall-clock seconds (structlog writes ISO 8601 in UTC)."""
    stamp = event.get("timestamp")
    if not isinstance(stamp, str):
        return None
    try:
        return datetime.fromisoformat(stamp).timestamp()
    except ValueError:
        return None


@dataclass(frozen=True, slots=True)
class WorkerLogSummary:
    """What the workers' logs say happened to them, across all processes of a run."""

    events: Counter[str] = field(default_factory=Counter)
    max_receive_count: int = 0
    unexpected_errors: int = 0

    @classmethod
    def of(cls, events: Iterable[Mapping[str, object]]) -> WorkerLogSummary:
        counts: Counter[str] = Counter()
        max_receive_count = 0
        unexpected = 0
        for event in events:
            counts[str(event.get("event"))] += 1
            receive_count = event.get("receive_count")
            if isinstance(receive_count, int):
                max_receive_count = max(max_receive_count, receive_count)
            # An exception logged with a traceback is a bug, whatever the event says.
            if "exception" in event:
                unexpected += 1
        return cls(counts, max_receive_count, unexpected)


def event_times(events: Iterable[Mapping[str, object]], name: str) -> list[float]:
    """The wall-clock times of every event called ``name``, sorted."""
    times = (log_time(event) for event in events if event.get("event") == name)
    return sorted(stamp for stamp in times if stamp is not None)
