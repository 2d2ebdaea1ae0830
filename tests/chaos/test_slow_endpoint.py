"""A slow endpoint never lets a second worker take a message that is still being moderated.

The source queue's own visibility timeout (2 s) is far shorter than the worker's setting (12 s,
so the first heartbeat comes after 4 s) and every model call takes 3.5 s. The worker must
receive with its own visibility timeout: before it did, most of these messages reappeared
mid-call and the other worker published them a second time.
"""

from __future__ import annotations

import asyncio
from typing import Final

import pytest

from devstack.chaos.scenario import ScenarioConfig, run_scenario
from devstack.chaos.workers import WorkerTuning
from devstack.emulator import EmulatorConfig

MODEL_LATENCY_MS: Final = 3_500.0


@pytest.mark.timeout(90)
def test_a_slow_endpoint_never_lets_a_second_worker_take_a_message() -> None:
    config = ScenarioConfig(
        valid_messages=20,
        invalid_messages=0,
        workers=2,
        kill_at=(),
        emulator=EmulatorConfig(latency_ms=MODEL_LATENCY_MS),
        emulator_faults={},
        proxy_rates={},
        queue_visibility_timeout=2,
        tuning=WorkerTuning(visibility_timeout=12, request_timeout=6.0, retry_deadline=10.0),
        deadline_seconds=45.0,
    )

    report = asyncio.run(run_scenario(config)).report

    assert report.delivery.lost_ids == ()
    assert report.max_receive_count == 1
    assert report.delivery.duplicates == 0
