"""An endpoint outage: the worker pauses behind its circuit breaker, then catches up.

One run for the module: the emulator answers every request with 503 from before the worker
starts until five seconds after it is up, while 60 messages are queued. The worker's circuit
must open, it must stop receiving and only probe (at most one request per probe interval),
nothing may be dead-lettered, and every message must be moderated once the endpoint is back.
The times compared are wall-clock: the proxies stamp each request, the worker's JSON log stamps
each event.
"""

from __future__ import annotations

import asyncio
import itertools
import sys
from typing import Final

import pytest

from devstack.chaos.scenario import Outage, ScenarioConfig, ScenarioResult, run_scenario
from devstack.chaos.workers import WorkerTuning, event_times

pytestmark = pytest.mark.timeout(120)

PROBE_INTERVAL: Final = 1.0
# A call the worker decided to make just before its circuit opened may reach a proxy just after.
SLACK: Final = 0.5


@pytest.fixture(scope="module")
def outage(tmp_path_factory: pytest.TempPathFactory) -> ScenarioResult:
    config = ScenarioConfig(
        valid_messages=60,
        invalid_messages=0,
        workers=1,
        kill_at=(),
        outage=Outage(at=0.0, seconds=5.0),
        emulator_faults={},
        proxy_rates={},
        tuning=WorkerTuning(circuit_probe_interval=PROBE_INTERVAL),
        deadline_seconds=60.0,
        log_dir=tmp_path_factory.mktemp("outage-logs"),
    )
    result = asyncio.run(run_scenario(config))
    sys.stdout.write(result.report.render_text())  # shown with -s
    return result


def open_period(result: ScenarioResult) -> tuple[float, float]:
    """When the circuit opened and when it closed again (the first of each)."""
    opened = event_times(result.worker_events, "circuit_opened")
    closed = event_times(result.worker_events, "circuit_closed")
    assert opened, "the circuit never opened"
    assert closed, "the circuit never closed"
    return opened[0], closed[0]


def test_the_circuit_opens_during_the_outage_and_closes_after_it(outage: ScenarioResult) -> None:
    assert outage.outage_window is not None
    down, up = outage.outage_window
    opened, closed = open_period(outage)
    assert down < opened < up < closed


def test_no_message_is_received_while_the_circuit_is_open(outage: ScenarioResult) -> None:
    opened, closed = open_period(outage)
    receives = [
        call.at
        for call in outage.queue_calls.calls_of("ReceiveMessage")
        if opened + SLACK < call.at < closed
    ]
    assert receives == []


def test_the_endpoint_sees_at_most_one_probe_per_interval_while_open(
    outage: ScenarioResult,
) -> None:
    assert outage.outage_window is not None
    opened, _ = open_period(outage)
    _, up = outage.outage_window
    probes = [
        call.at
        for call in outage.model_calls.calls_of("InvokeEndpoint")
        if opened + SLACK < call.at < up
    ]
    gaps = [later - earlier for earlier, later in itertools.pairwise(probes)]
    assert probes, "no probe reached the endpoint during the outage"
    assert len(probes) <= (up - opened) / PROBE_INTERVAL + 1
    assert min(gaps, default=PROBE_INTERVAL) >= 0.8 * PROBE_INTERVAL


def test_nothing_reaches_the_dead_letter_queue(outage: ScenarioResult) -> None:
    delivery = outage.report.delivery
    assert delivery.dlq_valid == delivery.dlq_invalid_copies == delivery.dlq_unknown == 0


def test_every_message_is_moderated_once_the_endpoint_is_back(outage: ScenarioResult) -> None:
    report = outage.report
    assert report.completed
    assert report.delivery.lost_ids == ()
    assert report.delivery.wrong_verdicts == 0
