"""Which trace headers are forwarded: W3C traceparent and X-Ray AWSTraceHeader shapes (pure)."""

from __future__ import annotations

import pytest
from support.builders import PARENT_ID, TRACE_ID, TRACEPARENT

from worker.core.tracing import (
    MAX_AWS_TRACE_HEADER_CHARS,
    MAX_TRACEPARENT_CHARS,
    aws_trace_header_problem,
    traceparent_problem,
)

# The X-Ray header with a Parent segment (support.builders' has none).
AWS_TRACE_HEADER_WITH_PARENT = (
    "Root=1-5759e988-bd862e3fe1be46a994272793;Parent=53995c3f42cd8ad8;Sampled=1"
)


def test_a_version_00_traceparent_is_forwarded() -> None:
    assert traceparent_problem(TRACEPARENT) is None


@pytest.mark.parametrize(
    "value",
    [
        "00-abc-def-01",  # too short
        TRACEPARENT.upper(),  # W3C hex is lowercase
        f"00_{TRACE_ID}-{PARENT_ID}-01",
        f"0-{TRACE_ID}-{PARENT_ID}-01",
        f"00-{TRACE_ID}-{PARENT_ID}-0g",
        f"00-{TRACE_ID[:-1]}-{PARENT_ID}-01",
        f" {TRACEPARENT}",
        "",
        "[" + " " * 5_000,
    ],
)
def test_a_traceparent_that_is_not_w3c_shaped_is_dropped(value: str) -> None:
    assert traceparent_problem(value) is not None


def test_version_ff_is_dropped() -> None:
    assert traceparent_problem(f"ff-{TRACE_ID}-{PARENT_ID}-01") == "version ff is invalid"


def test_an_all_zero_trace_id_is_dropped() -> None:
    assert traceparent_problem(f"00-{'0' * 32}-{PARENT_ID}-01") == "the trace id is all zeros"


def test_an_all_zero_parent_id_is_dropped() -> None:
    assert traceparent_problem(f"00-{TRACE_ID}-{'0' * 16}-01") == "the parent id is all zeros"


def test_version_00_with_anything_after_the_flags_is_dropped() -> None:
    assert traceparent_problem(TRACEPARENT + "-extra") == "version 00 has nothing after the flags"


def test_a_later_version_with_extra_fields_is_forwarded() -> None:
    assert traceparent_problem(f"cc-{TRACE_ID}-{PARENT_ID}-01-what-the-future-holds") is None


def test_a_later_version_whose_extra_fields_do_not_follow_a_dash_is_dropped() -> None:
    assert traceparent_problem(f"cc-{TRACE_ID}-{PARENT_ID}-01x") == (
        "a later version's extra fields must follow a '-' in visible ASCII"
    )


def test_a_later_version_longer_than_the_bound_is_dropped() -> None:
    value = f"cc-{TRACE_ID}-{PARENT_ID}-01-" + "a" * MAX_TRACEPARENT_CHARS

    assert traceparent_problem(value) == f"longer than {MAX_TRACEPARENT_CHARS} characters"


def test_a_later_version_exactly_at_the_bound_is_forwarded() -> None:
    head = f"cc-{TRACE_ID}-{PARENT_ID}-01-"

    assert traceparent_problem(head + "a" * (MAX_TRACEPARENT_CHARS - len(head))) is None


@pytest.mark.parametrize(
    "value",
    [
        AWS_TRACE_HEADER_WITH_PARENT,
        "Root=1-5759e988-bd862e3fe1be46a994272793;Sampled=1",
        "Root=1-5759e988-bd862e3fe1be46a994272793",
        "Root=1-5759e988-bd862e3fe1be46a994272793;Sampled=1;",
        "Root=1-5759e988-bd862e3fe1be46a994272793;Lineage=a87bd80c:1|68fd508a:5",
    ],
)
def test_an_x_ray_trace_header_is_forwarded(value: str) -> None:
    assert aws_trace_header_problem(value) is None


NOT_FIELDS = "not ';'-separated Key=Value fields in visible ASCII"
NO_ROOT = "no Root=1-<8 hex>-<24 hex> field"


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        ("Sampled=1", NO_ROOT),
        ("Root=1-5759e988-bd862e3fe1be46a994272793;Sampled 1", NOT_FIELDS),
        ("Root=1-5759e988-bd862e3fe1be46a994272793;Note=two words", NOT_FIELDS),
        ("Root=2-5759e988-bd862e3fe1be46a994272793", NO_ROOT),
        ("garbage", NOT_FIELDS),
        ("", NO_ROOT),
    ],
)
def test_an_aws_trace_header_that_is_not_x_ray_shaped_is_dropped_with_its_reason(
    value: str, reason: str
) -> None:
    assert aws_trace_header_problem(value) == reason


def test_an_aws_trace_header_longer_than_the_bound_is_dropped() -> None:
    value = AWS_TRACE_HEADER_WITH_PARENT + ";Pad=" + "a" * MAX_AWS_TRACE_HEADER_CHARS

    assert aws_trace_header_problem(value) == (
        f"longer than {MAX_AWS_TRACE_HEADER_CHARS} characters"
    )


def test_an_aws_trace_header_exactly_at_the_bound_is_forwarded() -> None:
    head = AWS_TRACE_HEADER_WITH_PARENT + ";Pad="
    value = head + "a" * (MAX_AWS_TRACE_HEADER_CHARS - len(head))

    assert len(value) == MAX_AWS_TRACE_HEADER_CHARS
    assert aws_trace_header_problem(value) is None
