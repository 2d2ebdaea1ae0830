"""Prometheus metrics: what the worker counts, and the HTTP server for them and the health probes.

The server runs in threads of its own, beside the event loop, not on it: a blocked loop must
still get an answer from ``/healthz`` (a 503 saying so) rather than a timeout that says nothing.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from socketserver import ThreadingMixIn
from typing import TYPE_CHECKING, Any, Final
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

from prometheus_client import Counter, Gauge, Histogram, make_wsgi_app

from worker.core.errors import (
    EndpointRejected,
    EndpointThrottled,
    EndpointUnavailable,
    PromptTooLong,
    UnreadableResponse,
)

if TYPE_CHECKING:
    from wsgiref.types import StartResponse, WSGIEnvironment

    from worker.health import Health, Report

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


@dataclass(frozen=True, slots=True)
class HttpServer:
    """The running server: where it listens."""

    host: str
    port: int

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"


# S104: probes and Prometheus reach a container from outside its network namespace.
@contextmanager
def serving(port: int, health: Health, *, host: str = "0.0.0.0") -> Iterator[HttpServer]:  # noqa: S104
    """Serve ``/metrics``, ``/healthz`` and ``/readyz`` on ``port`` (0: any free port) until exit.

    Every other path answers the metrics too, as ``prometheus_client``'s own server does.
    """
    server = make_server(
        host, port, _routes(health), server_class=_ThreadingServer, handler_class=_QuietHandler
    )
    # A short poll interval: shutdown waits for it, and an idle worker exits within 2 s.
    thread = threading.Thread(
        target=server.serve_forever, args=(0.1,), name="metrics-http", daemon=True
    )
    thread.start()
    try:
        yield HttpServer(host, server.server_port)
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


class _ThreadingServer(ThreadingMixIn, WSGIServer):
    daemon_threads = True


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - the base's name
        """Probes every few seconds would flood stderr with access lines; stay quiet."""


WsgiApp = Callable[["WSGIEnvironment", "StartResponse"], Iterable[bytes]]


def _routes(health: Health) -> WsgiApp:
    metrics_app: WsgiApp = make_wsgi_app()
    probes: dict[str, Callable[[], Report]] = {
        "/healthz": health.liveness,
        "/readyz": health.readiness,
    }

    def app(environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
        probe = probes.get(environ.get("PATH_INFO", ""))
        if probe is None:
            return metrics_app(environ, start_response)
        report = probe()
        body = report.to_json().encode("utf-8")
        status = "200 OK" if report.ok else "503 Service Unavailable"
        start_response(
            status,
            [
                ("Content-Type", "application/json"),
                ("Content-Length", str(len(body))),
                ("Cache-Control", "no-store"),
            ],
        )
        return [body]

    return app


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


# --- the verdict cache (appended here to keep merges with other changes to this file simple) ---

CACHE_HITS = Counter(
    "moderation_cache_hits",
    "Prompts answered without a model call of their own: from the verdict cache, or by sharing "
    "a call already in flight for the same prompt.",
)
CACHE_MISSES = Counter(
    "moderation_cache_misses", "Prompts that needed a model call (the cache had no answer)."
)
CACHE_ENTRIES = Gauge("moderation_cache_entries", "Assessments held in the verdict cache.")

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
