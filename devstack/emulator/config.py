"""The emulator's knobs: fixed server settings, the mutable fault plan, and its counters.

``EmulatorConfig`` is fixed for the life of a server. ``FaultPlan`` can change while it runs
(in-process through ``emu.faults``, out-of-process through ``PUT /emulator/faults``), and
``EmulatorStats`` counts what happened. Fault draws come from one ``random.Random(seed)``, so the
same sequence of requests meets the same faults on every run.
"""

from __future__ import annotations

import random
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from typing import Final, Literal, TypeGuard, get_args

FaultKind = Literal[
    "throttle",
    "not_ready",
    "server_error",
    "internal_failure",
    "model_error",
    "hang",
    "invalid_output",
    "disconnect",
    "not_found",
    "unreadable_response",
]
FAULT_KINDS: Final[frozenset[str]] = frozenset(get_args(FaultKind))
#: The model name the local tools ask the emulator's OpenAI route for (it serves any name unless
#: ``served_model_names`` says otherwise).
EMULATOR_MODEL: Final = "llama-guard-emulator"

# Order in which the single uniform draw of a request is laid over the rates.
_MIN_TOTAL_TOKENS: Final = 2
_RATE_ORDER: Final[tuple[tuple[str, FaultKind], ...]] = (
    ("throttle_rate", "throttle"),
    ("not_ready_rate", "not_ready"),
    ("server_error_rate", "server_error"),
    ("model_error_rate", "model_error"),
    ("hang_rate", "hang"),
    ("invalid_output_rate", "invalid_output"),
    ("not_found_rate", "not_found"),
    ("unreadable_response_rate", "unreadable_response"),
)


@dataclass(frozen=True, slots=True)
class EmulatorConfig:
    """Settings fixed for the life of one emulator server.

    ``capacity`` is the number of requests served at once (None: unlimited). What happens to one
    more depends on ``queue_size``: 0 (a hard cap) answers it as throttled straight away; above 0
    (a queueing server, as TGI and vLLM are) it waits its turn, first come first served, behind at
    most ``queue_size - 1`` others, and only a call that finds the queue full is throttled; its
    latency grows with the queue. ``served_model_names`` restricts the ``model`` of an OpenAI
    completions request to those names (None: any name; vLLM answers 404 for another).
    ``endpoint_names`` restricts the SageMaker route to those
    endpoint names (None: any name). ``echo_prompt_by_default`` is what a request without
    ``return_full_text`` gets (TGI >= 1.4.2 echoes for models without a pipeline tag).
    """

    latency_ms: float = 0.0
    latency_jitter_ms: float = 0.0
    capacity: int | None = None
    queue_size: int = 0
    max_total_tokens: int = 4096
    echo_prompt_by_default: bool = False
    seed: int = 0
    endpoint_names: frozenset[str] | None = None
    model_id: str = "meta-llama/LlamaGuard-7b"
    served_model_names: frozenset[str] | None = None
    max_top_n_tokens: int = 5

    def __post_init__(self) -> None:
        if self.latency_ms < 0 or self.latency_jitter_ms < 0:
            raise ValueError("latency_ms and latency_jitter_ms must be >= 0")
        if self.capacity is not None and self.capacity < 1:
            raise ValueError("capacity must be >= 1 (or None for unlimited)")
        if self.queue_size < 0:
            raise ValueError("queue_size must be >= 0")
        if self.max_total_tokens < _MIN_TOTAL_TOKENS:
            raise ValueError(f"max_total_tokens must be >= {_MIN_TOTAL_TOKENS}")
        if self.max_top_n_tokens < 0:
            raise ValueError("max_top_n_tokens must be >= 0")


@dataclass(slots=True)
class FaultPlan:
    """Faults to inject, changeable while the server runs.

    Each request first takes the next entry of ``fail_next`` (if any); otherwise one uniform draw
    in [0, 1) is laid over the rates in the order throttle, not_ready, server_error, model_error,
    hang, invalid_output, not_found, unreadable_response (rates summing past 1 simply leave the
    later kinds less room). ``not_found`` answers as a missing endpoint does (SageMaker: 400
    ``ValidationError`` "Endpoint NAME of account N not found."; TGI: 404), as during a
    blue/green swap: ``not_found_rate=1`` for a while, then 0. ``unreadable_response`` answers
    200 with an HTML page instead of the generation JSON, as a misrouted proxy does.
    ``down`` answers every inference and health request with 503 until cleared.
    """

    throttle_rate: float = 0.0
    not_ready_rate: float = 0.0
    server_error_rate: float = 0.0
    model_error_rate: float = 0.0
    hang_rate: float = 0.0
    invalid_output_rate: float = 0.0
    not_found_rate: float = 0.0
    unreadable_response_rate: float = 0.0
    hang_seconds: float = 30.0
    down: bool = False
    fail_next: list[FaultKind] = field(default_factory=list)

    def draw(self, rng: random.Random) -> FaultKind | None:
        """The fault for the next request, or None to serve it normally."""
        if self.fail_next:
            return self.fail_next.pop(0)
        roll = rng.random()
        threshold = 0.0
        for rate_name, kind in _RATE_ORDER:
            threshold += float(getattr(self, rate_name))
            if roll < threshold:
                return kind
        return None

    def update(self, changes: Mapping[str, object]) -> None:
        """Apply a partial update (the body of ``PUT /emulator/faults``); all-or-nothing.

        Raises ``TypeError`` for a value of the wrong type, ``ValueError`` for an unknown setting,
        an out-of-range number or an unknown fault kind.
        """
        validated = {name: _validated(name, value) for name, value in changes.items()}
        for name, value in validated.items():
            setattr(self, name, value)

    def as_json(self) -> dict[str, object]:
        """The plan as a JSON object."""
        plan: dict[str, object] = {item.name: getattr(self, item.name) for item in fields(self)}
        plan["fail_next"] = list(self.fail_next)
        return plan


def _validated(name: str, value: object) -> object:
    if name == "down":
        if not isinstance(value, bool):
            raise TypeError("down must be a boolean")
        return value
    if name == "fail_next":
        return _validated_queue(value)
    if name == "hang_seconds" or name in dict(_RATE_ORDER):
        return _validated_number(name, value)
    raise ValueError(f"unknown fault setting {name!r}")


def _validated_number(name: str, value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise TypeError(f"{name} must be a number")
    number = float(value)
    if number < 0 or (name.endswith("_rate") and number > 1):
        raise ValueError(f"{name} must be >= 0" + (" and <= 1" if name.endswith("_rate") else ""))
    return number


def _validated_queue(value: object) -> list[FaultKind]:
    if not isinstance(value, list) or not all(isinstance(kind, str) for kind in value):
        raise TypeError("fail_next must be a list of fault kinds")
    unknown = sorted({kind for kind in value if kind not in FAULT_KINDS})
    if unknown:
        raise ValueError(
            f"fail_next has unknown fault kinds {unknown}; known: {sorted(FAULT_KINDS)}"
        )
    return [kind for kind in value if _is_fault_kind(kind)]


def _is_fault_kind(kind: object) -> TypeGuard[FaultKind]:
    return isinstance(kind, str) and kind in FAULT_KINDS


@dataclass(slots=True)
class EmulatorStats:
    """Counters of inference requests (admin and health routes are not counted).

    ``by_outcome`` keys: safe, unsafe, invalid_output (a completion no parser accepts), throttled,
    not_ready, server_error (including ``down``), internal_failure, model_error, disconnected,
    validation_error, prompt_too_long, endpoint_not_found, unreadable_response, cancelled (the
    client went away).
    ``faults_injected`` counts the fault plan's kinds as they were applied (``hang`` included,
    though a hung request still answers). ``admitted`` counts requests that got a serving slot;
    ``queued`` those of them that waited for it, ``queue_wait_seconds`` the time they waited in
    all, and ``max_queue_length`` the longest the queue was. ``slot_seconds`` is how long serving
    slots were held in all: divided by capacity x elapsed time, how busy the endpoint was.
    """

    requests: int = 0
    in_flight: int = 0
    max_in_flight: int = 0
    admitted: int = 0
    queued: int = 0
    queue_length: int = 0
    max_queue_length: int = 0
    queue_wait_seconds: float = 0.0
    slot_seconds: float = 0.0
    by_route: Counter[str] = field(default_factory=Counter)
    by_outcome: Counter[str] = field(default_factory=Counter)
    faults_injected: Counter[str] = field(default_factory=Counter)

    def started(self, route: str) -> None:
        """A request entered the server."""
        self.requests += 1
        self.by_route[route] += 1
        self.in_flight += 1
        self.max_in_flight = max(self.max_in_flight, self.in_flight)

    def finished(self, outcome: str) -> None:
        """A request left the server with ``outcome``."""
        self.in_flight -= 1
        self.by_outcome[outcome] += 1

    def admitted_after(self, waited_seconds: float | None) -> None:
        """A request got a serving slot, after waiting ``waited_seconds`` (None: at once)."""
        self.admitted += 1
        if waited_seconds is not None:
            self.queued += 1
            self.queue_wait_seconds += waited_seconds

    def queue_changed(self, length: int) -> None:
        """The queue of requests waiting for a slot is now ``length`` long."""
        self.queue_length = length
        self.max_queue_length = max(self.max_queue_length, length)

    def reset(self) -> None:
        """Zero every counter except the requests still in flight and the queue's length."""
        self.requests = 0
        self.max_in_flight = self.in_flight
        self.admitted = 0
        self.queued = 0
        self.max_queue_length = self.queue_length
        self.queue_wait_seconds = 0.0
        self.slot_seconds = 0.0
        self.by_route.clear()
        self.by_outcome.clear()
        self.faults_injected.clear()

    def as_json(self) -> dict[str, object]:
        """The counters as a JSON object (``GET /emulator/stats``)."""
        return {
            "requests": self.requests,
            "in_flight": self.in_flight,
            "max_in_flight": self.max_in_flight,
            "admitted": self.admitted,
            "queued": self.queued,
            "queue_length": self.queue_length,
            "max_queue_length": self.max_queue_length,
            "queue_wait_seconds": self.queue_wait_seconds,
            "slot_seconds": self.slot_seconds,
            "by_route": dict(self.by_route),
            "by_outcome": dict(self.by_outcome),
            "faults_injected": dict(self.faults_injected),
        }
