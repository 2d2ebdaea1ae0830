"""A verdict as an SNS message: its attributes and its size as SNS counts it (pure functions)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from support.builders import AWS_TRACE_HEADER, TRACEPARENT

from worker.core.verdict import (
    SNS_MAX_MESSAGE_BYTES,
    CategoryRef,
    MessageAttribute,
    ModelRef,
    SnsMessage,
    Verdict,
    largest_field,
    sns_message,
    too_large_for_sns,
)

MOMENT = datetime(2026, 11, 26, 14, 0, 0, 120_000, tzinfo=UTC)


def make_verdict(**fields: Any) -> Verdict:
    defaults: dict[str, Any] = {
        "id": "post-1",
        "conversation_id": None,
        "verdict": "safe",
        "categories": (),
        "unknown_codes": (),
        "score": None,
        "assessed_role": "user",
        "model": ModelRef(backend="tgi", endpoint="http://tgi", prompt_format="llama-guard-1"),
        "flags": (),
        "attributes": {},
        "received_at": MOMENT,
        "decided_at": MOMENT,
    }
    return Verdict(**{**defaults, **fields})


def test_size_counts_the_body_and_each_attribute_name_type_and_value() -> None:
    message = SnsMessage("abc", {"verdict": MessageAttribute("String", "safe")})

    assert message.size == len("abc") + len("verdict") + len("String") + len("safe")


def test_size_counts_utf8_bytes() -> None:
    message = SnsMessage("€", {"é": MessageAttribute("String", "✓")})

    assert message.size == 3 + 2 + len("String") + 3


def test_body_is_the_verdict_json() -> None:
    verdict = make_verdict()

    assert sns_message(verdict).body == verdict.to_json()


def test_unsafe_verdict_attributes_name_verdict_categories_score_and_format() -> None:
    verdict = make_verdict(
        verdict="unsafe", categories=(CategoryRef(code="O3", name="Criminal Planning"),), score=0.9
    )

    assert sns_message(verdict).attributes == {
        "verdict": MessageAttribute("String", "unsafe"),
        "categories": MessageAttribute("String.Array", '["O3"]'),
        "score": MessageAttribute("Number", "0.9"),
        "prompt_format": MessageAttribute("String", "llama-guard-1"),
    }


def test_trace_headers_become_string_attributes_and_count_toward_the_size() -> None:
    verdict = make_verdict()
    without = sns_message(verdict)

    with_trace = sns_message(verdict, traceparent=TRACEPARENT)

    assert with_trace.attributes["traceparent"] == MessageAttribute("String", TRACEPARENT)
    assert with_trace.size == without.size + len("traceparent") + len("String") + len(TRACEPARENT)


def test_largest_field_names_the_field_that_takes_the_most_bytes() -> None:
    verdict = make_verdict(unknown_codes=tuple(f"X{index}" for index in range(1, 2000)))

    name, size = largest_field(verdict)

    assert name == "unknown_codes"
    assert size == len(verdict.to_json().split('"unknown_codes":', 1)[1].split("]", 1)[0]) + 1


def test_largest_field_counts_utf8_bytes_of_compact_json() -> None:
    """Non-ASCII text is counted as the UTF-8 it is sent as, not as ``\\u`` escapes."""
    verdict = make_verdict(attributes={"note": "é" * 1000, "n": 1})

    assert largest_field(verdict) == ("attributes", len('{"note":"","n":1}') + 2 * 1000)


def _verdict_of_size(size: int) -> Verdict:
    """A verdict whose SNS message (no trace headers) is exactly ``size`` bytes."""
    empty = sns_message(make_verdict(attributes={"pad": ""})).size
    return make_verdict(attributes={"pad": "x" * (size - empty)})


def test_a_verdict_of_exactly_the_sns_limit_is_not_too_large() -> None:
    assert too_large_for_sns(_verdict_of_size(SNS_MAX_MESSAGE_BYTES)) is None


def test_a_verdict_one_byte_over_the_sns_limit_is_too_large_naming_size_limit_and_field() -> None:
    detail = too_large_for_sns(_verdict_of_size(SNS_MAX_MESSAGE_BYTES + 1))

    assert detail is not None
    assert detail.startswith(
        f"the verdict would be an SNS message of {SNS_MAX_MESSAGE_BYTES + 1} bytes, more than "
        f"SNS's limit of {SNS_MAX_MESSAGE_BYTES}; its largest field is 'attributes' ("
    )


def test_a_traceparent_can_tip_a_verdict_over_the_sns_limit() -> None:
    verdict = _verdict_of_size(SNS_MAX_MESSAGE_BYTES)

    assert too_large_for_sns(verdict, traceparent=TRACEPARENT) is not None


def test_an_aws_trace_header_can_tip_a_verdict_over_the_sns_limit() -> None:
    verdict = _verdict_of_size(SNS_MAX_MESSAGE_BYTES)

    assert too_large_for_sns(verdict, aws_trace_header=AWS_TRACE_HEADER) is not None
