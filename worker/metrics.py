"""Prometheus metrics: what the worker counts, and the optional HTTP endpoint that serves them."""

from __future__ import annotations

from typing import Final

from prometheus_client import Counter, Gauge, Histogram, start_http_server

from worker.core.errors import (
    EndpointRejected,
    EndpointThrottled,
    EndpointUnavailable,
    PromptTooLong,
    UnreadableResponse,
)

EVENT_LOOP_LAG = Histogram(
    "moderation_event_loop_lag_seconds",
    "How much later than scheduled the event loop woke a periodic timer; high means blocked.",
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60),
)

MESSAGES_RECEIVED = Counter(
    "moderation_messages_received", "Messages received from the source queue."
)
OUTCOMES = Counter(
    "moderation_outcomes",
    "Messages settled, by outcome (ack, retry_later, dead_letter).",
    ["outcome"],
)
VERDICTS = Counter("moderation_verdicts", "Verdicts published, by verdict.", ["verdict"])
DEAD_LETTERS = Counter(
    "moderation_dead_letters", "Messages dead-lettered, by error code.", ["code"]
)
RECEIVE_ERRORS = Counter("moderation_receive_errors", "Failed receive calls.")
CONCURRENCY_LIMIT = Gauge(
    "moderation_endpoint_concurrency_limit", "Adaptive limit on concurrent endpoint requests."
)
CIRCUIT_OPEN = Gauge("moderation_endpoint_circuit_open", "1 while the endpoint circuit is open.")
CIRCUIT_OPENINGS = Counter("moderation_endpoint_circuit_openings", "Times the circuit opened.")
IN_FLIGHT = Gauge("moderation_in_flight", "Messages being moderated right now.")
HANDLE_SECONDS = Histogram(
    "moderation_handle_seconds",
    "Time from receipt to settling one message.",
    buckets=(0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 30, 60, 120),
)


def serve_metrics(port: int) -> None:
    """Serve ``/metrics`` on ``port``; 0 disables it."""
    if port:
        start_http_server(port)


# --- endpoint failures (appended here to keep merges with other changes to this file simple) ---

#: The ``kind`` label of ``moderation_endpoint_failures``: one per classifier error that comes
#: from an endpoint answer (``CircuitOpen`` is not one: the endpoint was not called).
ENDPOINT_FAILURE_KINDS: Final = tuple(
    error.kind
    for error in (
        EndpointThrottled,
        EndpointUnavailable,
        EndpointRejected,
        UnreadableResponse,
        PromptTooLong,
    )
)
ENDPOINT_FAILURES = Counter(
    "moderation_endpoint_failures",
    "Failed endpoint calls (every attempt, probes included), by kind: throttled, unavailable, "
    "rejected (not found, access denied, other 4xx), unreadable_response, too_long.",
    ["kind"],
)
for _kind in ENDPOINT_FAILURE_KINDS:
    ENDPOINT_FAILURES.labels(kind=_kind)  # every kind is exported from the start, at 0


# --- adaptive concurrency (appended here to keep merges with other changes to this file simple) ---

LATENCY_BASELINE = Gauge(
    "moderation_endpoint_latency_baseline_seconds",
    "Latency of an endpoint call without a queue, as last measured by the concurrency limiter.",
)
LATENCY_RECENT = Gauge(
    "moderation_endpoint_latency_recent_seconds",
    "Mean latency of the last window of successful endpoint calls.",
)
LATENCY_GRADIENT = Gauge(
    "moderation_endpoint_latency_gradient",
    "baseline / recent latency, clamped to [0.5, 1]: below 1 means a queue is building.",
)
