"""The bench's scenarios: each one provisions fresh queues, runs processes, and returns figures.

Every scenario watches from outside on a fixed tick: the source queue's depth (LocalStack), the
endpoint's counters (``/emulator/stats``), the workers' ``/metrics`` (concurrency limit, in
flight) and their CPU and RSS (/proc). It ends when the queue is empty, or at its deadline, which
is then reported as unfinished. Sizes come from ``Sizes`` (full or short).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import io
import itertools
import pstats
import time
from collections import Counter
from collections.abc import Callable, Coroutine, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Final, TypeVar

from bench import corpus
from bench.processes import endpoint_server
from bench.procfs import cpu_seconds, rss_bytes
from bench.prometheus import sample_value, scrape
from bench.stack import (
    PRODUCTION_TUNING,
    SNS_OPERATIONS,
    ProfiledWorker,
    ReferenceProcess,
    Stack,
    start_workers,
    stop_workers,
    wait_ready,
    without,
    worker_pids,
)
from devstack.chaos.workers import WorkerTuning, read_log
from devstack.emulator import EmulatorConfig
from devstack.moto_stack import LocalResources, take_messages

#: The endpoint of the goodput scenarios: 8 at once, 50 ms each, so 160 calls a second.
CAPACITY: Final = 8
SERVICE_MS: Final = 50.0
CAPACITY_PER_SECOND: Final = CAPACITY * 1000.0 / SERVICE_MS
#: A queueing endpoint's queue: long enough that only a runaway client fills it.
QUEUE_SIZE: Final = 1024
#: The endpoint of the CPU, calls and memory scenarios: never the bottleneck.
FAST_ENDPOINT: Final = EmulatorConfig(latency_ms=20.0)
TICK_SECONDS: Final = 0.25
_SUCCESS_OUTCOMES: Final = ("safe", "unsafe", "invalid_output")
_STEADY_FROM, _STEADY_TO = 0.1, 0.9
_VERDICT_WAIT_SECONDS: Final = 15.0
_FEED_BATCH: Final = 10
_T = TypeVar("_T")


@dataclass(frozen=True, slots=True)
class Sizes:
    """How much each scenario does; ``short`` is for quick checks (a few minutes)."""

    cpu_messages: int = 20_000
    goodput_seconds: float = 60.0
    latency_seconds: float = 60.0
    repeat_messages: int = 5_000
    in_flight_messages: int = 2_048
    long_run_messages: int = 50_000
    scaling_messages: int = 6_000
    scaling_workers: tuple[int, ...] = (1, 2, 4)

    @classmethod
    def short(cls) -> Sizes:
        return cls(
            cpu_messages=1_500,
            goodput_seconds=12.0,
            latency_seconds=8.0,
            repeat_messages=1_000,
            in_flight_messages=768,
            long_run_messages=3_000,
            scaling_messages=1_000,
        )


@dataclass(frozen=True, slots=True)
class Sample:
    """What the bench saw at one tick; ``at`` is seconds since the processes were ready."""

    at: float
    remaining: int
    successes: int
    throttled: int
    limit: float | None
    in_flight: float | None
    rss_bytes: int
    cpu_seconds: float
    # The worker's own view of an endpoint call (seconds), from its concurrency limiter.
    latency_recent: float | None = None
    latency_baseline: float | None = None


@dataclass(frozen=True, slots=True)
class Drain:
    """One run of processes over a queue, from ready to empty."""

    samples: tuple[Sample, ...]
    messages: int
    seconds: float
    cpu_seconds: float
    calls: Counter[str]
    endpoint: dict[str, object]
    finished: bool
    verdicts: int

    @property
    def cpu_ms_per_message(self) -> float:
        return 1000.0 * self.cpu_seconds / max(self.messages, 1)

    @property
    def throughput(self) -> float:
        return self.messages / self.seconds if self.seconds > 0 else 0.0

    def calls_per_message(self, operations: Callable[[str], bool]) -> float:
        total = sum(count for name, count in self.calls.items() if operations(name))
        return total / max(self.messages, 1)

    @property
    def sqs_calls_per_message(self) -> float:
        return self.calls_per_message(lambda name: name not in SNS_OPERATIONS)

    @property
    def sns_calls_per_message(self) -> float:
        return self.calls_per_message(lambda name: name in SNS_OPERATIONS)

    @property
    def peak_rss_bytes(self) -> int:
        return max((sample.rss_bytes for sample in self.samples), default=0)


def deadline_for(messages: int) -> float:
    """Seconds a drain of ``messages`` may take before it is called unfinished."""
    return 120.0 + messages / 20.0


class Watch:
    """Samples a running scenario on each tick until the queue is empty (or the deadline)."""

    def __init__(
        self,
        stack: Stack,
        queue_url: str,
        endpoint_url: str,
        pids: Sequence[int],
        metrics_urls: Sequence[str] = (),
    ) -> None:
        self._stack = stack
        self._queue_url = queue_url
        self._endpoint_url = endpoint_url
        self._pids = list(pids)
        self._metrics_urls = list(metrics_urls)
        self.samples: list[Sample] = []
        self.endpoint: dict[str, object] = {}
        self._started = time.monotonic()

    async def until_empty(
        self, *, deadline_seconds: float, feeding: asyncio.Task[None] | None = None
    ) -> bool:
        """Sample until the queue is empty and nothing more is fed; False at the deadline."""
        self._started = time.monotonic()
        deadline = self._started + deadline_seconds
        while time.monotonic() < deadline:
            sample = await self.sample()
            if sample.remaining == 0 and (feeding is None or feeding.done()):
                return True
            await asyncio.sleep(TICK_SECONDS)
        return False

    async def sample(self) -> Sample:
        remaining, endpoint, metrics = await asyncio.gather(
            self._stack.depth(self._queue_url),
            self._endpoint_stats(),
            asyncio.gather(*(scrape(self._stack.http, url) for url in self._metrics_urls)),
        )
        self.endpoint = endpoint
        outcomes = endpoint.get("by_outcome", {})
        counts = outcomes if isinstance(outcomes, dict) else {}
        sample = Sample(
            at=time.monotonic() - self._started,
            remaining=remaining,
            successes=sum(int(counts.get(name, 0)) for name in _SUCCESS_OUTCOMES),
            throttled=int(counts.get("throttled", 0)),
            limit=_summed(metrics, "moderation_endpoint_concurrency_limit"),
            in_flight=_summed(metrics, "moderation_in_flight"),
            rss_bytes=sum(_alive(rss_bytes, pid, 0) for pid in self._pids),
            cpu_seconds=sum(_alive(cpu_seconds, pid, 0.0) for pid in self._pids),
            latency_recent=_summed(metrics, "moderation_endpoint_latency_recent_seconds"),
            latency_baseline=_summed(metrics, "moderation_endpoint_latency_baseline_seconds"),
        )
        self.samples.append(sample)
        return sample

    async def _endpoint_stats(self) -> dict[str, object]:
        async with self._stack.http.get(f"{self._endpoint_url}/emulator/stats") as response:
            stats = await response.json()
        return stats if isinstance(stats, dict) else {}


def _summed(texts: Sequence[str | None], name: str) -> float | None:
    values = [sample_value(text, name) for text in texts if text is not None]
    present = [value for value in values if value is not None]
    return sum(present) if present else None


def _alive(read: Callable[[int], _T], pid: int, gone: _T) -> _T:
    try:
        return read(pid)
    except (FileNotFoundError, ProcessLookupError):
        return gone


async def drain_with_workers(
    stack: Stack,
    resources: LocalResources,
    endpoint_url: str,
    *,
    name: str,
    workers: int = 1,
    tuning: WorkerTuning = PRODUCTION_TUNING,
    feed: Callable[[], Coroutine[None, None, None]] | None = None,
    expected: int | None = None,
    settings: Mapping[str, str] | None = None,
) -> Drain:
    """Start workers on a filled (or fed) queue, watch until it is empty, stop them."""
    fleet = start_workers(
        stack, resources, endpoint_url, count=workers, name=name, tuning=tuning, settings=settings
    )
    try:
        await wait_ready(fleet)
        return await _watch_drain(
            stack,
            resources,
            endpoint_url,
            worker_pids(fleet),
            [worker.metrics_url for worker in fleet],
            feed=feed,
            expected=expected,
        )
    finally:
        await stop_workers(fleet, tuning)


async def _watch_drain(
    stack: Stack,
    resources: LocalResources,
    endpoint_url: str,
    pids: Sequence[int],
    metrics_urls: Sequence[str],
    *,
    feed: Callable[[], Coroutine[None, None, None]] | None = None,
    expected: int | None = None,
) -> Drain:
    """Watch a drain by the given processes (and, if given, feed the queue meanwhile)."""
    watch = Watch(stack, resources.queue_url, endpoint_url, pids, metrics_urls)
    before_calls = stack.calls()
    first = await watch.sample()
    feeding = asyncio.create_task(feed()) if feed is not None else None
    messages = expected if expected is not None else first.remaining
    finished = await watch.until_empty(deadline_seconds=deadline_for(messages), feeding=feeding)
    if feeding is not None and not feeding.done():
        feeding.cancel()
        await asyncio.gather(feeding, return_exceptions=True)
    last = watch.samples[-1]
    calls = without(stack.calls(), before_calls)
    verdicts = await _verdicts_delivered(stack, resources, messages)
    return Drain(
        samples=tuple(watch.samples),
        messages=messages - last.remaining,
        seconds=last.at,
        cpu_seconds=last.cpu_seconds - first.cpu_seconds,
        calls=calls,
        endpoint=watch.endpoint,
        finished=finished,
        verdicts=verdicts,
    )


async def _verdicts_delivered(stack: Stack, resources: LocalResources, expected: int) -> int:
    """Verdicts in the subscriber queues, waiting (bounded) for SNS's deliveries to land."""
    deadline = time.monotonic() + _VERDICT_WAIT_SECONDS
    delivered = await stack.verdicts(resources)
    while delivered < expected and time.monotonic() < deadline:
        await asyncio.sleep(TICK_SECONDS)
        delivered = await stack.verdicts(resources)
    return delivered


# --- the scenarios -------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class CpuResult:
    """The worker and the reference consumer on the same messages, one after the other."""

    worker: Drain
    reference: Drain

    @property
    def ratio(self) -> float:
        return self.worker.cpu_ms_per_message / max(self.reference.cpu_ms_per_message, 1e-9)


async def cpu_and_calls(stack: Stack, sizes: Sizes) -> CpuResult:
    """CPU per message of the worker and of the reference; their SQS and SNS calls."""
    count = sizes.cpu_messages
    with endpoint_server(FAST_ENDPOINT) as endpoint_url:
        reference_resources = await stack.resources("bench-cpu-reference")
        await stack.fill(reference_resources.queue_url, corpus.bodies(count, prefix="ref"))
        reference = await _drain_with_reference(stack, reference_resources, endpoint_url, count)
        worker_resources = await stack.resources("bench-cpu-worker")
        await stack.fill(worker_resources.queue_url, corpus.bodies(count, prefix="cpu"))
        worker = await drain_with_workers(stack, worker_resources, endpoint_url, name="cpu")
    return CpuResult(worker=worker, reference=reference)


async def _drain_with_reference(
    stack: Stack,
    resources: LocalResources,
    endpoint_url: str,
    count: int,
    *,
    in_flight: int = 0,
    feed: Callable[[], Coroutine[None, None, None]] | None = None,
) -> Drain:
    """The reference consumer settles ``count`` messages, from a filled queue or while fed."""
    process = ReferenceProcess(stack, resources, endpoint_url, messages=count, in_flight=in_flight)
    try:
        await process.wait_ready()
        return await _watch_drain(
            stack,
            resources,
            endpoint_url,
            [process.pid],
            [],
            feed=feed,
            expected=count if feed is not None else None,
        )
    finally:
        await process.stop()


PROFILE_LINES: Final = 25


async def profile_worker(stack: Stack, sizes: Sizes) -> str:
    """The CPU scenario's worker run again under cProfile: its top functions by own time."""
    count = sizes.cpu_messages
    profile_path = stack.run_dir / "worker.prof"
    with endpoint_server(FAST_ENDPOINT) as endpoint_url:
        resources = await stack.resources("bench-profile")
        await stack.fill(resources.queue_url, corpus.bodies(count, prefix="profile"))
        worker = ProfiledWorker(stack, resources, endpoint_url, profile_path)
        try:
            await worker.wait_ready()
            watch = Watch(stack, resources.queue_url, endpoint_url, [])
            await watch.until_empty(deadline_seconds=deadline_for(count))
        finally:
            await worker.stop()
    report = io.StringIO()
    stats = pstats.Stats(str(profile_path), stream=report)
    stats.strip_dirs().sort_stats(pstats.SortKey.TIME).print_stats(PROFILE_LINES)
    return report.getvalue()


@dataclass(frozen=True, slots=True)
class GoodputResult:
    """The worker against an endpoint of fixed capacity, hard-capped or queueing; ``oracle`` is
    the reference consumer told the capacity (``--in-flight``) on an endpoint of its own, same
    model, same messages: the most a client gets on this machine without adapting."""

    model: str
    drain: Drain
    oracle: Drain

    @property
    def goodput_per_second(self) -> float:
        return goodput_of(self.drain)

    @property
    def goodput_share(self) -> float:
        return self.goodput_per_second / CAPACITY_PER_SECOND

    @property
    def oracle_goodput_per_second(self) -> float:
        return goodput_of(self.oracle)

    @property
    def oracle_throttled_share(self) -> float:
        return throttled_share(self.oracle)

    @property
    def throttled_share(self) -> float:
        return throttled_share(self.drain)

    @property
    def mean_slot_ms(self) -> float:
        """How long the emulator held a slot per admitted call: its service time as achieved
        (the configured 50 ms plus its own lateness on a busy machine)."""
        admitted = _number(self.drain.endpoint.get("admitted"))
        held = _number(self.drain.endpoint.get("slot_seconds"))
        return 1000.0 * held / admitted if admitted else 0.0

    @property
    def busy_share(self) -> float:
        """The share of the endpoint's slot time in use over the whole run (start-up included)."""
        held = _number(self.drain.endpoint.get("slot_seconds"))
        return held / (CAPACITY * self.drain.seconds) if self.drain.seconds > 0 else 0.0

    @property
    def mean_queue_wait_ms(self) -> float:
        admitted = _number(self.drain.endpoint.get("admitted"))
        waited = _number(self.drain.endpoint.get("queue_wait_seconds"))
        return 1000.0 * waited / admitted if admitted else 0.0


def goodput_of(drain: Drain) -> float:
    """Successful endpoint calls per second in the steady part of one drain."""
    return steady_rate(drain.samples, total=drain.messages)


def throttled_share(drain: Drain) -> float:
    """The endpoint's throttled answers over all its requests in one drain."""
    requests = _number(drain.endpoint.get("requests"))
    outcomes = drain.endpoint.get("by_outcome")
    throttled = _number(outcomes.get("throttled")) if isinstance(outcomes, dict) else 0.0
    return throttled / requests if requests else 0.0


def _number(value: object) -> float:
    return float(value) if isinstance(value, int | float) else 0.0


def steady_rate(samples: Sequence[Sample], *, total: int) -> float:
    """Successful endpoint calls per second between 10 % and 90 % of ``total`` (warm-up and
    tail left out), interpolated between samples."""
    start = _time_at(samples, _STEADY_FROM * total)
    end = _time_at(samples, _STEADY_TO * total)
    if start is None or end is None or end <= start:
        return 0.0
    return (_STEADY_TO - _STEADY_FROM) * total / (end - start)


def _time_at(samples: Sequence[Sample], successes: float) -> float | None:
    for earlier, later in itertools.pairwise(samples):
        if (
            earlier.successes <= successes <= later.successes
            and later.successes > earlier.successes
        ):
            share = (successes - earlier.successes) / (later.successes - earlier.successes)
            return earlier.at + share * (later.at - earlier.at)
    return None


async def goodput(stack: Stack, sizes: Sizes, *, queueing: bool) -> GoodputResult:
    """Fill the queue with ``goodput_seconds`` of capacity's work and let one worker drain it;
    then the same for the oracle (the reference consumer with ``CAPACITY`` calls in flight),
    on a fresh endpoint of the same model so the two counts stay apart."""
    model = "queueing" if queueing else "hard cap"
    config = EmulatorConfig(
        latency_ms=SERVICE_MS, capacity=CAPACITY, queue_size=QUEUE_SIZE if queueing else 0
    )
    count = int(CAPACITY_PER_SECOND * sizes.goodput_seconds)
    prefix = "bench-queueing" if queueing else "bench-hard-cap"
    with endpoint_server(config) as endpoint_url:
        resources = await stack.resources(prefix)
        await stack.fill(resources.queue_url, corpus.bodies(count, prefix=prefix))
        drain = await drain_with_workers(stack, resources, endpoint_url, name=prefix)
    with endpoint_server(config) as endpoint_url:
        resources = await stack.resources(f"{prefix}-oracle")
        await stack.fill(resources.queue_url, corpus.bodies(count, prefix=f"{prefix}-oracle"))
        oracle = await _drain_with_reference(
            stack, resources, endpoint_url, count, in_flight=CAPACITY
        )
    return GoodputResult(model, drain, oracle)


@dataclass(frozen=True, slots=True)
class LatencyResult:
    """Added latency per message at half the endpoint's capacity (queueing endpoint)."""

    added_ms: tuple[float, ...]
    drain: Drain
    # Per message, where the time went (ms): sent -> received by the worker, received ->
    # decided less the service time, decided -> published (the worker's log: its publish
    # batching and the SNS call), published -> delivered to the subscriber's queue.
    stages_ms: tuple[tuple[float, float, float, float], ...] = ()

    def percentile(self, share: float) -> float:
        return _percentile(self.added_ms, share)

    def stage_medians(self) -> tuple[float, float, float, float]:
        """The median of each stage."""
        if not self.stages_ms:
            return (float("nan"),) * 4
        waited, worked, published, delivered = zip(*self.stages_ms, strict=True)
        return (
            _percentile(waited, 0.5),
            _percentile(worked, 0.5),
            _percentile(published, 0.5),
            _percentile(delivered, 0.5),
        )


def _percentile(values: Sequence[float], share: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(share * len(ordered)))]


#: The worker's settings with no publish batching: the latency it costs, measured beside.
NO_PUBLISH_LINGER: Final = {"MODERATION_PUBLISH_LINGER": "0"}


async def latency_at_half_capacity(
    stack: Stack,
    sizes: Sizes,
    *,
    name: str = "latency",
    settings: Mapping[str, str] | None = None,
    reference: bool = False,
) -> LatencyResult:
    """Feed at half the capacity; added latency = verdict published - sent - service time.

    With ``reference`` the reference consumer drains the same feed instead of the worker: the
    added latency of a client that does nothing but the calls (its stages are not measured).
    """
    config = EmulatorConfig(latency_ms=SERVICE_MS, capacity=CAPACITY, queue_size=QUEUE_SIZE)
    rate = CAPACITY_PER_SECOND / 2
    count = int(rate * sizes.latency_seconds)
    bodies = corpus.bodies(count, prefix="latency")
    sent_at: dict[str, float] = {}

    async def feed() -> None:
        interval = _FEED_BATCH / rate
        started = time.monotonic()
        for batch_number, start in enumerate(range(0, count, _FEED_BATCH)):
            await _sleep_until(started + batch_number * interval)
            batch = bodies[start : start + _FEED_BATCH]
            now = time.time()
            sent_at.update((f"latency-{start + i}", now) for i in range(len(batch)))
            await stack.fill(resources.queue_url, batch)

    with endpoint_server(config) as endpoint_url:
        resources = await stack.resources(f"bench-{name}")
        if reference:
            drain = await _drain_with_reference(stack, resources, endpoint_url, count, feed=feed)
        else:
            drain = await drain_with_workers(
                stack,
                resources,
                endpoint_url,
                name=name,
                feed=feed,
                expected=count,
                settings=settings,
            )
    published = await _verdict_times(stack, resources)
    added = tuple(
        1000.0 * (published[message_id].delivered - sent) - SERVICE_MS
        for message_id, sent in sent_at.items()
        if message_id in published
    )
    if reference:
        return LatencyResult(added, drain)
    logged = _published_in_log(stack.run_dir / f"{name}-worker-0.log")
    stages = tuple(
        (
            1000.0 * (times.received - sent),
            1000.0 * (times.decided - times.received) - SERVICE_MS,
            1000.0 * (logged[message_id] - times.decided),
            1000.0 * (times.delivered - logged[message_id]),
        )
        for message_id, sent in sent_at.items()
        if (times := published.get(message_id)) is not None and message_id in logged
    )
    return LatencyResult(added, drain, stages)


def _published_in_log(path: Path) -> dict[str, float]:
    """When the worker logged each verdict as published (epoch seconds), by message id."""
    moments = {}
    for event in read_log(path):
        request_id, stamp = event.get("request_id"), event.get("timestamp")
        if event.get("event") == "verdict_published" and isinstance(request_id, str):
            with contextlib.suppress(TypeError, ValueError):
                moments[request_id] = datetime.fromisoformat(str(stamp)).timestamp()
    return moments


async def _sleep_until(moment: float) -> None:
    delay = moment - time.monotonic()
    if delay > 0:
        await asyncio.sleep(delay)


@dataclass(frozen=True, slots=True)
class VerdictTimes:
    """When the worker received the message and decided it (from the verdict), and when SNS
    delivered the verdict (its SentTimestamp in the subscriber queue); epoch seconds."""

    received: float
    decided: float
    delivered: float


async def _verdict_times(stack: Stack, resources: LocalResources) -> dict[str, VerdictTimes]:
    """Each verdict's id and its times."""
    times: dict[str, VerdictTimes] = {}
    for queue_url in (resources.safe_subscriber_queue_url, resources.unsafe_subscriber_queue_url):
        for _ in range(100_000):  # bounded: far more batches than any run delivers
            messages = await take_messages(stack.sqs, queue_url)
            if not messages:
                break
            for message in messages:
                body = message.get("Body", "")
                verdict_id = corpus.verdict_id(body)
                sent = message.get("Attributes", {}).get("SentTimestamp")
                if verdict_id is not None and sent is not None:
                    received, decided = corpus.verdict_moments(body)
                    times[verdict_id] = VerdictTimes(received, decided, int(sent) / 1000.0)
    return times


@dataclass(frozen=True, slots=True)
class RepeatResult:
    """Endpoint calls per message on a stream where texts repeat earlier ones."""

    messages: int
    distinct_texts: int
    drain: Drain

    @property
    def endpoint_calls_per_message(self) -> float:
        return _number(self.drain.endpoint.get("requests")) / max(self.messages, 1)


async def repeats(stack: Stack, sizes: Sizes, *, repeat_share: float = 0.3) -> RepeatResult:
    count = sizes.repeat_messages
    texts = corpus.texts(count, repeat_share=repeat_share, seed=1)
    bodies = corpus.bodies(count, prefix="repeat", repeat_share=repeat_share, seed=1)
    with endpoint_server(FAST_ENDPOINT) as endpoint_url:
        resources = await stack.resources("bench-repeats")
        await stack.fill(resources.queue_url, bodies)
        drain = await drain_with_workers(stack, resources, endpoint_url, name="repeats")
    return RepeatResult(count, len(set(texts)), drain)


@dataclass(frozen=True, slots=True)
class InFlightResult:
    """Memory with MODERATION_MAX_IN_FLIGHT=256 and a slow endpoint, so all 256 are held."""

    drain: Drain

    @property
    def peak_in_flight(self) -> float:
        return max((sample.in_flight or 0.0 for sample in self.drain.samples), default=0.0)


IN_FLIGHT: Final = 256


async def rss_in_flight(stack: Stack, sizes: Sizes) -> InFlightResult:
    tuning = dataclasses.replace(PRODUCTION_TUNING, max_in_flight=IN_FLIGHT)
    with endpoint_server(EmulatorConfig(latency_ms=1000.0)) as endpoint_url:
        resources = await stack.resources("bench-in-flight")
        bodies = corpus.bodies(sizes.in_flight_messages, prefix="in-flight")
        await stack.fill(resources.queue_url, bodies)
        drain = await drain_with_workers(
            stack, resources, endpoint_url, name="in-flight", tuning=tuning
        )
    return InFlightResult(drain)


@dataclass(frozen=True, slots=True)
class LongRunResult:
    """RSS over a long run fed as a stream (the queue topped up to a backlog)."""

    drain: Drain
    rss_progress: tuple[tuple[int, int], ...] = field(default=())  # (messages done, RSS bytes)

    def rss_at(self, share: float) -> int:
        """RSS when ``share`` of the messages were done (the first sample at or past it)."""
        goal = share * self.drain.messages
        for done, rss in self.rss_progress:
            if done >= goal:
                return rss
        return self.rss_progress[-1][1] if self.rss_progress else 0


LONG_RUN_BACKLOG: Final = 2_000


async def long_run(stack: Stack, sizes: Sizes) -> LongRunResult:
    count = sizes.long_run_messages
    sent = 0

    async def feed() -> None:
        nonlocal sent
        while sent < count:
            room = LONG_RUN_BACKLOG - await stack.depth(resources.queue_url)
            if room >= _FEED_BATCH * 10:
                batch = min(room, count - sent)
                await stack.fill(
                    resources.queue_url,
                    [
                        corpus.body(f"long-{sent + i}", corpus.fresh_text(sent + i))
                        for i in range(batch)
                    ],
                )
                sent += batch
            await asyncio.sleep(TICK_SECONDS)

    with endpoint_server(FAST_ENDPOINT) as endpoint_url:
        resources = await stack.resources("bench-long-run")
        drain = await drain_with_workers(
            stack, resources, endpoint_url, name="long-run", feed=feed, expected=count
        )
    progress = _rss_progress(drain.samples, count)
    return LongRunResult(drain, progress)


def _rss_progress(samples: Sequence[Sample], total: int) -> tuple[tuple[int, int], ...]:
    """(messages done, RSS) per sample; done is measured by verdicts' successful endpoint calls."""
    return tuple((min(sample.successes, total), sample.rss_bytes) for sample in samples)


@dataclass(frozen=True, slots=True)
class ScalingResult:
    """Throughput with 1, 2, 4 worker processes (an endpoint that is never the bottleneck)."""

    by_workers: tuple[tuple[int, Drain], ...]


async def scaling(stack: Stack, sizes: Sizes) -> ScalingResult:
    results = []
    with endpoint_server(FAST_ENDPOINT) as endpoint_url:
        for count in sizes.scaling_workers:
            resources = await stack.resources(f"bench-scaling-{count}")
            bodies = corpus.bodies(sizes.scaling_messages, prefix=f"scaling-{count}")
            await stack.fill(resources.queue_url, bodies)
            drain = await drain_with_workers(
                stack, resources, endpoint_url, name=f"scaling-{count}", workers=count
            )
            results.append((count, drain))
    return ScalingResult(tuple(results))
