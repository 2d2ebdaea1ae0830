"""The liveness and readiness rules, on a manual clock: what counts as stuck, and what does not."""

from __future__ import annotations

import asyncio
import json

from worker.health import Health, HealthPolicy, WorkerSignals

POLICY = HealthPolicy(loop_stall_after=5.0, poll_stall_after=30.0, beat_interval=0.5)


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class FakeWorker:
    """What health reads from a wired worker: the poll loop's last progress, the circuit."""

    def __init__(self, clock: Clock) -> None:
        self.last_poll = clock.now
        self.circuit_is_open = False

    def signals(self) -> WorkerSignals:
        return WorkerSignals(
            last_poll=lambda: self.last_poll, circuit_open=lambda: self.circuit_is_open
        )


def failing(report_json: str) -> set[str]:
    checks = json.loads(report_json)["checks"]
    return {name for name, check in checks.items() if not check["ok"]}


def test_a_running_worker_that_polls_and_beats_is_alive_and_ready() -> None:
    clock = Clock()
    health, worker = Health(POLICY, clock=clock), FakeWorker(clock)
    with health.watching(worker.signals()):
        clock.now += 10
        health.beat()
        worker.last_poll = clock.now - 1
        assert health.liveness().status_code == 200
        assert health.readiness().status_code == 200
        assert json.loads(health.readiness().to_json())["status"] == "pass"


def test_a_loop_that_has_not_beaten_for_longer_than_the_limit_is_not_alive() -> None:
    clock = Clock()
    health, worker = Health(POLICY, clock=clock), FakeWorker(clock)
    with health.watching(worker.signals()):
        health.beat()
        clock.now += POLICY.loop_stall_after + 0.1
        worker.last_poll = clock.now
        report = health.liveness()
    assert report.status_code == 503
    assert failing(report.to_json()) == {"event_loop"}


def test_a_poll_loop_without_progress_for_longer_than_the_limit_is_not_alive() -> None:
    clock = Clock()
    health, worker = Health(POLICY, clock=clock), FakeWorker(clock)
    with health.watching(worker.signals()):
        clock.now += POLICY.poll_stall_after + 1
        health.beat()
        report = health.liveness()
    assert report.status_code == 503
    assert failing(report.to_json()) == {"poll_loop"}


def test_an_open_circuit_makes_the_worker_unready_but_not_dead() -> None:
    clock = Clock()
    health, worker = Health(POLICY, clock=clock), FakeWorker(clock)
    with health.watching(worker.signals()):
        worker.circuit_is_open = True
        clock.now += POLICY.poll_stall_after * 10  # the poll loop waits for a probe meanwhile
        health.beat()
        assert health.liveness().status_code == 200
        readiness = health.readiness()
    assert readiness.status_code == 503
    assert failing(readiness.to_json()) == {"circuit"}


def test_after_the_circuit_closes_the_poll_loop_is_judged_from_then_on() -> None:
    clock = Clock()
    health, worker = Health(POLICY, clock=clock), FakeWorker(clock)
    with health.watching(worker.signals()):
        worker.circuit_is_open = True
        clock.now += 600
        health.beat()  # the last beat that saw it open
        worker.circuit_is_open = False
        clock.now += 1
        assert health.liveness().status_code == 200
        clock.now += POLICY.poll_stall_after
        health.beat()
        assert failing(health.liveness().to_json()) == {"poll_loop"}


def test_a_stopping_worker_is_unready_and_its_drain_is_not_a_stuck_poll_loop() -> None:
    clock = Clock()
    health, worker = Health(POLICY, clock=clock), FakeWorker(clock)
    stop = asyncio.Event()
    health.watch_stop(stop)
    with health.watching(worker.signals()):
        stop.set()
        clock.now += POLICY.poll_stall_after * 3
        health.beat()
        assert health.liveness().status_code == 200
        assert failing(health.readiness().to_json()) == {"shutdown"}


def test_before_its_clients_are_open_the_worker_is_alive_but_not_ready() -> None:
    clock = Clock()
    health = Health(POLICY, clock=clock)
    clock.now += POLICY.poll_stall_after * 2
    health.beat()
    assert health.liveness().status_code == 200
    readiness = json.loads(health.readiness().to_json())
    assert readiness["checks"]["clients"] == {"ok": False, "detail": "not open yet"}


def test_once_its_clients_are_closed_the_worker_is_not_ready() -> None:
    clock = Clock()
    health, worker = Health(POLICY, clock=clock), FakeWorker(clock)
    with health.watching(worker.signals()):
        pass
    readiness = json.loads(health.readiness().to_json())
    assert readiness["checks"]["clients"] == {"ok": False, "detail": "closed"}


def test_the_poll_limit_covers_a_long_poll_and_the_longest_receive_backoff() -> None:
    assert HealthPolicy.for_receive_wait(20).poll_stall_after == 65
    assert HealthPolicy.for_receive_wait(0).poll_stall_after == 45
