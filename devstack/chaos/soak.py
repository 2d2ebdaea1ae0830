"""``python -m devstack.chaos.soak``: does one real worker's memory stay flat over a long run?

One ``moderation-worker run`` subprocess, moto's server (own process) and the Llama Guard emulator.
A producer keeps the source queue a few hundred messages deep (moto's ReceiveMessage slows down
with depth) until ``--messages`` distinct messages have been sent. The two verdict topics have no
subscriber: moto then delivers nothing anywhere, so neither its queues nor the harness hold 50,000
verdicts. Progress is counted from the worker's own log (one ``verdict_published`` event per
verdict, with the message's id), followed as it grows. Every ``--sample-every`` verdicts the
worker's resident set (``VmRSS`` in ``/proc/PID/status``) is sampled.

Reported: RSS after the warm-up and at the end, their difference, the least-squares slope of RSS
over messages (from the warm-up on) in MB per 10,000 messages, throughput, and any dead letters or
duplicate verdicts. The run misses the bar (exit 1) when not every message got a verdict, a
message was dead-lettered, or RSS grew by more than ``--max-growth-mb`` from the warm-up to the end
(issue 6: "flat, within a few MB, over at least 50,000 messages"); 2 is for bad options. The slope
is reported, not judged: over a short run it mostly measures the allocator settling.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import shlex
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Sequence
from contextlib import AsyncExitStack
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Final

from devstack.chaos.corpus import valid_body
from devstack.chaos.moto_process import moto_server_process
from devstack.chaos.report import write_section
from devstack.chaos.scenario import harness_clients, isolated_session, queue_depth, send_all
from devstack.chaos.workers import (
    PRODUCTION_LIKE,
    WorkerProcess,
    WorkerTuning,
    worker_environment,
)
from devstack.emulator import EmulatorConfig, run_emulator
from devstack.moto_stack import LocalResources, provision

if TYPE_CHECKING:
    from types_aiobotocore_sns import SNSClient
    from types_aiobotocore_sqs import SQSClient

SOAK_SECTION_BEGIN: Final = "<!-- soak:begin (written by `make soak`) -->"
SOAK_SECTION_END: Final = "<!-- soak:end -->"
MESSAGES_PER_SLOPE_UNIT: Final = 10_000
_KIB_PER_MB: Final = 1024.0
#: Production defaults, with a visibility timeout the retry deadline fits under.
SOAK_TUNING: Final = replace(
    PRODUCTION_LIKE, visibility_timeout=30, retry_deadline=20.0, receive_wait_seconds=5
)
_TICK_SECONDS: Final = 0.2
_READY_TIMEOUT_SECONDS: Final = 60.0
_STOP_MARGIN_SECONDS: Final = 10.0


@dataclass(frozen=True, slots=True)
class RssSample:
    """The worker's resident set after ``messages`` verdicts, ``at`` wall-clock seconds."""

    messages: int
    rss_kib: int
    at: float

    @property
    def rss_mb(self) -> float:
        return self.rss_kib / _KIB_PER_MB


def slope_mb_per_10k(samples: Sequence[RssSample]) -> float:
    """Least-squares slope of RSS (MB) over messages, scaled to 10,000 messages.

    Needs two samples at different message counts; raises ``ValueError`` otherwise.
    """
    xs = [float(sample.messages) for sample in samples]
    ys = [sample.rss_mb for sample in samples]
    if len(set(xs)) < 2:  # noqa: PLR2004 - a line needs two distinct points
        raise ValueError("a slope needs samples at two different message counts")
    mean_x, mean_y = sum(xs) / len(xs), sum(ys) / len(ys)
    covariance = sum((x - mean_x) * (y - mean_y) for x, y in zip(xs, ys, strict=True))
    variance = sum((x - mean_x) ** 2 for x in xs)
    return covariance / variance * MESSAGES_PER_SLOPE_UNIT


def read_rss_kib(pid: int) -> int | None:
    """``VmRSS`` of a running process in KiB (None once it has exited)."""
    try:
        status = Path(f"/proc/{pid}/status").read_text(encoding="ascii")
    except OSError:
        return None
    for line in status.splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return None


@dataclass(frozen=True, slots=True)
class SoakReport:
    """What a soak measured, and whether it clears the bar."""

    messages: int
    warmup: int
    published: int
    duplicates: int
    dead_lettered: int
    samples: tuple[RssSample, ...]
    wall_seconds: float
    max_growth_mb: float
    worker_events: dict[str, int] = field(default_factory=dict)

    @property
    def steady(self) -> tuple[RssSample, ...]:
        """The samples from the end of the warm-up on."""
        return tuple(sample for sample in self.samples if sample.messages >= self.warmup)

    @property
    def growth_mb(self) -> float | None:
        steady = self.steady
        return steady[-1].rss_mb - steady[0].rss_mb if len(steady) > 1 else None

    @property
    def slope(self) -> float | None:
        try:
            return slope_mb_per_10k(self.steady)
        except ValueError:
            return None

    @property
    def throughput(self) -> float | None:
        """Verdicts per second after the warm-up."""
        steady = self.steady
        if len(steady) < 2 or steady[-1].at <= steady[0].at:  # noqa: PLR2004 - two points
            return None
        return (steady[-1].messages - steady[0].messages) / (steady[-1].at - steady[0].at)

    @property
    def failures(self) -> list[str]:
        found: list[str] = []
        if self.published < self.messages:
            found.append(f"{self.messages - self.published} of {self.messages} have no verdict")
        if self.dead_lettered:
            found.append(f"{self.dead_lettered} messages dead-lettered")
        growth = self.growth_mb
        if growth is None:
            found.append("too few samples after the warm-up to measure growth")
        elif growth > self.max_growth_mb:
            found.append(f"RSS grew {growth:.1f} MB after the warm-up (bar {self.max_growth_mb:g})")
        return found

    @property
    def ok(self) -> bool:
        return not self.failures

    def figures(self) -> list[tuple[str, str]]:
        steady = self.steady
        first, last = (steady[0], steady[-1]) if steady else (None, None)
        throughput = self.throughput
        return [
            ("messages", f"{self.messages:,} (warm-up {self.warmup:,})"),
            ("verdicts", f"{self.published:,} ids (duplicates {self.duplicates})"),
            ("dead-lettered", str(self.dead_lettered)),
            ("RSS after warm-up", _rss(first)),
            ("RSS at the end", _rss(last)),
            ("growth after warm-up", _mb(self.growth_mb)),
            ("slope", _slope(self.slope)),
            (
                "throughput",
                "-" if throughput is None else f"{throughput:.0f} messages/s after warm-up",
            ),
            ("wall time", f"{self.wall_seconds:.0f} s"),
            (
                "worker log events",
                ", ".join(f"{k} {v}" for k, v in sorted(self.worker_events.items())) or "none",
            ),
        ]

    def render_text(self) -> str:
        rows = [*self.figures(), ("result", "PASS" if self.ok else "FAIL")]
        width = max(len(name) for name, _ in rows)
        lines = [f"{name.rjust(width)}  {value}" for name, value in rows]
        lines.extend(f"  - {failure}" for failure in self.failures)
        lines.append("samples (messages: RSS MB): " + _samples(self.samples))
        return "\n".join(lines) + "\n"

    def render_markdown(self, *, command: str, date: str) -> str:
        failures = [f"- {failure}" for failure in self.failures] or ["- none"]
        return "\n".join(
            [
                SOAK_SECTION_BEGIN,
                f"Run on {date} with:",
                "",
                "```",
                command,
                "```",
                "",
                f"Result: **{'PASS' if self.ok else 'FAIL'}**",
                "",
                "| figure | value |",
                "|---|---|",
                *(f"| {name} | {value} |" for name, value in self.figures()),
                "",
                f"Samples (messages: RSS MB): {_samples(self.samples)}",
                "",
                "Missed the bar:",
                "",
                *failures,
                SOAK_SECTION_END,
            ]
        )


def _rss(sample: RssSample | None) -> str:
    if sample is None:
        return "-"
    return f"{sample.rss_mb:.1f} MB (at {sample.messages:,} messages)"


def _slope(slope: float | None) -> str:
    if slope is None:
        return "-"
    per_million = slope * 1_000_000 / MESSAGES_PER_SLOPE_UNIT
    return f"{slope:.2f} MB per 10,000 messages (at that rate, {per_million:+.0f} MB per million)"


def _mb(value: float | None) -> str:
    return "-" if value is None else f"{value:+.1f} MB"


def _samples(samples: Sequence[RssSample]) -> str:
    return ", ".join(f"{sample.messages:,}: {sample.rss_mb:.1f}" for sample in samples)


class LogFollower:
    """Reads a worker's JSON log as it grows: verdicts per message id, other events by name."""

    def __init__(self, path: Path) -> None:
        self._path = path
        self._offset = 0
        self._partial = b""
        self.verdicts: Counter[str] = Counter()
        self.events: Counter[str] = Counter()

    def read(self) -> None:
        """Take in the complete lines written since the last call."""
        if not self._path.exists():
            return
        with self._path.open("rb") as log:
            log.seek(self._offset)
            chunk = log.read()
        self._offset += len(chunk)
        *lines, self._partial = (self._partial + chunk).split(b"\n")
        for line in lines:
            self._take(line)

    def _take(self, line: bytes) -> None:
        try:
            event = json.loads(line)
        except ValueError:
            return
        if not isinstance(event, dict):
            return
        name = str(event.get("event"))
        self.events[name] += 1
        message_id = event.get("request_id")
        if name == "verdict_published" and isinstance(message_id, str):
            self.verdicts[message_id] += 1

    @property
    def published(self) -> int:
        return len(self.verdicts)

    @property
    def duplicates(self) -> int:
        return sum(self.verdicts.values()) - len(self.verdicts)


@dataclass(frozen=True, slots=True)
class SoakConfig:
    """What one soak does."""

    messages: int = 50_000
    warmup: int = 5_000
    sample_every: int = 1_000
    backlog: int = 300
    max_growth_mb: float = 5.0
    deadline_seconds: float = 3_600.0
    tuning: WorkerTuning = SOAK_TUNING
    emulator: EmulatorConfig = field(default_factory=lambda: EmulatorConfig(latency_ms=5.0))
    log_dir: Path | None = None


#: Worker log events worth showing next to the figures (each would explain a slow or odd run).
_REPORTED_EVENTS: Final = (
    "message_released",
    "publish_failed",
    "delete_failed",
    "classifier_unavailable",
    "message_dead_lettered",
    "receive_failed",
    "handler_failed",
)


class Soak:
    """Feeds the queue, follows the worker's log, samples its RSS."""

    def __init__(
        self,
        config: SoakConfig,
        *,
        sqs: SQSClient,
        resources: LocalResources,
        worker: WorkerProcess,
    ) -> None:
        self._config = config
        self._sqs = sqs
        self._resources = resources
        self._worker = worker
        self._log = LogFollower(worker.log_path)
        self._sent = 0
        self.samples: list[RssSample] = []

    async def run(self) -> SoakReport:
        await self._worker.wait_until_ready(within=_READY_TIMEOUT_SECONDS, tick=_TICK_SECONDS)
        started = time.monotonic()
        deadline = started + self._config.deadline_seconds
        self._sample()  # before any message: the worker's size at rest
        while self._log.published < self._config.messages and time.monotonic() < deadline:
            if self._worker.returncode is not None:
                break
            await self._feed()
            await asyncio.sleep(_TICK_SECONDS)
            self._log.read()
            if self._log.published >= self._next_sample_at():
                self._sample()
        wall = time.monotonic() - started
        if not self.samples or self.samples[-1].messages != self._log.published:
            self._sample()
        await self._worker.stop(grace=self._config.tuning.drain_timeout + _STOP_MARGIN_SECONDS)
        self._log.read()
        dead = await queue_depth(self._sqs, self._resources.dead_letter_queue_url or "")
        events = self._log.events
        return SoakReport(
            messages=self._config.messages,
            warmup=self._config.warmup,
            published=self._log.published,
            duplicates=self._log.duplicates,
            dead_lettered=dead,
            samples=tuple(self.samples),
            wall_seconds=wall,
            max_growth_mb=self._config.max_growth_mb,
            worker_events={name: events[name] for name in _REPORTED_EVENTS if events[name]},
        )

    def _next_sample_at(self) -> int:
        every = self._config.sample_every
        last = self.samples[-1].messages if self.samples else 0
        return (last // every + 1) * every

    def _sample(self) -> None:
        rss = read_rss_kib(self._worker.pid)
        if rss is not None:
            self.samples.append(RssSample(self._log.published, rss, time.time()))

    async def _feed(self) -> None:
        """Top the queue up to ``backlog`` messages without a verdict yet."""
        room = self._config.backlog - (self._sent - self._log.published)
        count = min(room, self._config.messages - self._sent)
        if count <= 0:
            return
        bodies = [valid_body(n)[1] for n in range(self._sent, self._sent + count)]
        await send_all(self._sqs, self._resources.queue_url, bodies)
        self._sent += count


async def _without_subscribers(sns: SNSClient, resources: LocalResources) -> None:
    """Remove the subscriber queues ``provision`` made: nothing needs the verdicts delivered."""
    for topic in (resources.safe_topic_arn, resources.unsafe_topic_arn):
        listed = await sns.list_subscriptions_by_topic(TopicArn=topic)
        for subscription in listed.get("Subscriptions", []):
            await sns.unsubscribe(SubscriptionArn=subscription["SubscriptionArn"])


async def run_soak(config: SoakConfig) -> SoakReport:
    """Start everything, soak once, stop everything."""
    async with AsyncExitStack() as stack:
        moto = stack.enter_context(moto_server_process())
        log_dir = config.log_dir or Path(
            stack.enter_context(tempfile.TemporaryDirectory(prefix="soak-logs-"))
        )
        emulator = await stack.enter_async_context(run_emulator(config.emulator))
        sqs, sns = await stack.enter_async_context(harness_clients(isolated_session(), moto))
        resources = await provision(
            sqs, sns, prefix="soak", visibility_timeout=config.tuning.visibility_timeout
        )
        await _without_subscribers(sns, resources)
        environment = worker_environment(
            resources.environment(), config.tuning, queues_url=moto, model_url=emulator.url
        )
        worker = WorkerProcess("worker-1", environment, log_dir / "worker-1.log")
        stack.push_async_callback(worker.stop, grace=_STOP_MARGIN_SECONDS)
        return await Soak(config, sqs=sqs, resources=resources, worker=worker).run()


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.log_dir is not None:
        args.log_dir.mkdir(parents=True, exist_ok=True)
    config = SoakConfig(
        messages=args.messages,
        warmup=min(args.warmup, args.messages),
        sample_every=args.sample_every,
        backlog=args.backlog,
        max_growth_mb=args.max_growth_mb,
        deadline_seconds=args.deadline,
        log_dir=args.log_dir,
    )
    report = asyncio.run(run_soak(config))
    sys.stdout.write(report.render_text())
    if args.write is not None:
        command = shlex.join(
            ["python", "-m", "devstack.chaos.soak", *(sys.argv[1:] if argv is None else argv)]
        )
        date = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
        write_section(
            args.write,
            report.render_markdown(command=command, date=date),
            begin=SOAK_SECTION_BEGIN,
            end=SOAK_SECTION_END,
        )
        sys.stdout.write(f"written to {args.write}\n")
    return 0 if report.ok else 1


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m devstack.chaos.soak",
        description="One real worker through many messages; is its memory flat?",
    )
    parser.add_argument("--messages", type=_positive, default=50_000)
    parser.add_argument(
        "--warmup", type=_positive, default=5_000, help="messages before the baseline"
    )
    parser.add_argument(
        "--sample-every", type=_positive, default=1_000, help="messages per RSS sample"
    )
    parser.add_argument("--backlog", type=_positive, default=300, help="queued messages at most")
    parser.add_argument("--max-growth-mb", type=float, default=5.0, help="bar: RSS growth")
    parser.add_argument("--deadline", type=float, default=3_600.0, help="seconds before giving up")
    parser.add_argument("--write", type=Path, help="document whose soak section to rewrite")
    parser.add_argument("--log-dir", type=Path, help="keep the worker's log here")
    return parser


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError("must be at least 1")
    return value


if __name__ == "__main__":
    raise SystemExit(main())
