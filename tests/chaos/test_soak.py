"""The memory soak's measuring parts: the RSS slope, the bar, the log follower, the RSS reader;
and one short soak of a real worker process, to show the tool runs end to end."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from devstack.chaos.soak import (
    LogFollower,
    RssSample,
    SoakConfig,
    SoakReport,
    read_rss_kib,
    run_soak,
    slope_mb_per_10k,
)

MIB = 1024  # KiB


def samples(*points: tuple[int, float]) -> tuple[RssSample, ...]:
    """(messages, RSS in MB) pairs as samples, one second apart."""
    return tuple(
        RssSample(messages, round(mb * MIB), float(index))
        for index, (messages, mb) in enumerate(points)
    )


def report(points: tuple[RssSample, ...], *, published: int = 12_000) -> SoakReport:
    return SoakReport(
        messages=12_000,
        warmup=4_000,
        published=published,
        duplicates=0,
        dead_lettered=0,
        samples=points,
        wall_seconds=100.0,
        max_growth_mb=5.0,
    )


def test_slope_of_a_steady_climb_is_its_rate_per_ten_thousand_messages() -> None:
    climb = samples((4_000, 100.0), (8_000, 110.24), (12_000, 120.48))

    assert slope_mb_per_10k(climb) == pytest.approx(25.6, abs=0.01)


def test_slope_is_fitted_to_every_sample_not_just_the_first_and_last() -> None:
    """First-to-last would say 3.33 MB per 10,000; the fitted line through all four says 2."""
    noisy = samples((0, 100.0), (1_000, 101.0), (2_000, 100.0), (3_000, 101.0))

    assert slope_mb_per_10k(noisy) == pytest.approx(2.0)


def test_slope_needs_two_message_counts() -> None:
    with pytest.raises(ValueError, match="two different"):
        slope_mb_per_10k(samples((5_000, 100.0), (5_000, 101.0)))


def test_flat_memory_clears_the_bar_and_ignores_the_warm_up() -> None:
    """Growth during the warm-up (imports, caches, pools) is not counted."""
    result = report(samples((0, 60.0), (2_000, 80.0), (4_000, 90.0), (8_000, 90.5), (12_000, 90.2)))

    assert result.ok, result.failures
    assert result.growth_mb == pytest.approx(0.2, abs=0.01)


def test_growing_memory_misses_the_bar() -> None:
    result = report(samples((4_000, 100.0), (8_000, 110.24), (12_000, 120.48)))

    assert result.failures == ["RSS grew 20.5 MB after the warm-up (bar 5)"]


def test_a_slow_climb_within_the_growth_bar_is_reported_not_failed() -> None:
    """The issue's bar is the growth; the slope is there to read, not to judge."""
    result = report(samples((4_000, 100.0), (8_000, 100.5), (12_000, 101.0)))

    assert result.ok
    assert dict(result.figures())["slope"] == (
        "1.25 MB per 10,000 messages (at that rate, +125 MB per million)"
    )


def test_missing_verdicts_miss_the_bar() -> None:
    result = report(samples((4_000, 100.0), (12_000, 100.0)), published=11_990)

    assert result.failures == ["10 of 12000 have no verdict"]


def test_throughput_is_measured_after_the_warm_up() -> None:
    result = report(samples((0, 50.0), (4_000, 100.0), (8_000, 100.0), (12_000, 100.0)))

    assert result.throughput == pytest.approx(4_000.0)  # 8,000 messages in 2 s


def _line(event: str, request_id: str) -> bytes:
    return json.dumps({"event": event, "request_id": request_id}).encode() + b"\n"


def test_log_follower_counts_each_verdict_once_across_partial_writes(tmp_path: Path) -> None:
    """A line cut in the middle by a read is taken whole on the next read."""
    log = tmp_path / "worker.log"
    first, second = _line("verdict_published", "a"), _line("verdict_published", "b")
    log.write_bytes(first + second[:10])
    follower = LogFollower(log)

    follower.read()
    assert follower.published == 1
    with log.open("ab") as append:
        append.write(second[10:] + b"Traceback: not json\n" + _line("verdict_published", "a"))
    follower.read()

    assert (follower.published, follower.duplicates) == (2, 1)
    assert follower.events["verdict_published"] == 3


def test_rss_of_a_running_process_is_read_from_proc() -> None:
    rss = read_rss_kib(os.getpid())

    assert rss is not None
    assert rss > 0


def test_rss_of_an_ended_process_is_none() -> None:
    ended = subprocess.Popen([sys.executable, "-c", "pass"])
    ended.wait()

    assert read_rss_kib(ended.pid) is None


@pytest.mark.timeout(90)
async def test_a_short_soak_of_a_real_worker_moderates_every_message_and_samples_rss() -> None:
    """300 messages through a real worker process: every one published once, RSS sampled."""
    config = SoakConfig(messages=300, warmup=100, sample_every=100, backlog=100)

    result = await run_soak(config)

    assert (result.published, result.duplicates, result.dead_lettered) == (300, 0, 0)
    assert [sample.messages for sample in result.steady][-1] == 300
    assert len(result.steady) >= 2
    assert all(sample.rss_kib > 0 for sample in result.samples)
