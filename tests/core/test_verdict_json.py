"""The verdict's SNS body (DESIGN.md "Verdict out"): schema, field types and timestamps."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest
from support.builders import VERDICT_FIELDS

from worker.core.verdict import SCHEMA, CategoryRef, Flag, ModelRef, Verdict, format_timestamp


def _verdict(**overrides: Any) -> Verdict:
    """The DESIGN.md example verdict, with some fields replaced."""
    fields: dict[str, Any] = {
        "id": "post-8f2c",
        "conversation_id": "room-42",
        "verdict": "unsafe",
        "categories": (CategoryRef(code="O3", name="Criminal Planning"),),
        "unknown_codes": (),
        "score": 0.93,
        "assessed_role": "user",
        "model": ModelRef(
            backend="sagemaker", endpoint="llama-guard-7b", prompt_format="llama-guard-1"
        ),
        "flags": (),
        "attributes": {"tenant": "acme"},
        "received_at": datetime(2026, 11, 26, 14, 0, 0, 120_000, tzinfo=UTC),
        "decided_at": datetime(2026, 11, 26, 14, 0, 0, 410_000, tzinfo=UTC),
    }
    fields.update(overrides)
    return Verdict(**fields)


def _document(verdict: Verdict) -> dict[str, Any]:
    document: dict[str, Any] = json.loads(verdict.to_json())
    return document


# --- schema and fields ----------------------------------------------------------------------------


def test_schema_is_the_first_key() -> None:
    assert next(iter(_document(_verdict()))) == "schema"


def test_schema_is_moderation_verdict_v1() -> None:
    assert _document(_verdict())["schema"] == "moderation.verdict.v1"


def test_schema_constant_is_moderation_verdict_v1() -> None:
    assert SCHEMA == "moderation.verdict.v1"


def test_document_has_exactly_the_design_fields() -> None:
    assert set(_document(_verdict())) == VERDICT_FIELDS


def test_python_field_name_for_schema_does_not_leak() -> None:
    assert "schema_" not in _document(_verdict())


def test_design_example_serialises_to_the_design_document() -> None:
    assert _document(_verdict()) == {
        "schema": "moderation.verdict.v1",
        "id": "post-8f2c",
        "conversation_id": "room-42",
        "verdict": "unsafe",
        "categories": [{"code": "O3", "name": "Criminal Planning"}],
        "unknown_codes": [],
        "score": 0.93,
        "assessed_role": "user",
        "model": {
            "backend": "sagemaker",
            "endpoint": "llama-guard-7b",
            "prompt_format": "llama-guard-1",
        },
        "flags": [],
        "attributes": {"tenant": "acme"},
        "received_at": "2026-11-26T14:00:00.120Z",
        "decided_at": "2026-11-26T14:00:00.410Z",
    }


@pytest.mark.parametrize(
    ("name", "json_type"),
    [
        ("schema", str),
        ("id", str),
        ("conversation_id", str),
        ("verdict", str),
        ("categories", list),
        ("unknown_codes", list),
        ("score", float),
        ("assessed_role", str),
        ("model", dict),
        ("flags", list),
        ("attributes", dict),
        ("received_at", str),
        ("decided_at", str),
    ],
)
def test_each_field_has_its_json_type(name: str, json_type: type) -> None:
    assert type(_document(_verdict())[name]) is json_type


def test_to_json_is_a_single_line() -> None:
    assert "\n" not in _verdict(attributes={"a": {"b": [1, 2]}}).to_json()


# --- individual fields ----------------------------------------------------------------------------


def test_conversation_id_is_null_when_absent() -> None:
    assert _document(_verdict(conversation_id=None))["conversation_id"] is None


def test_score_is_null_when_unknown() -> None:
    assert _document(_verdict(score=None))["score"] is None


@pytest.mark.parametrize("score", [0.0, 0.5, 1.0, 0.123456789])
def test_score_is_a_json_number_when_known(score: float) -> None:
    assert _document(_verdict(score=score))["score"] == score


@pytest.mark.parametrize("verdict", ["safe", "unsafe"])
def test_verdict_is_serialised_as_its_word(verdict: str) -> None:
    assert _document(_verdict(verdict=verdict))["verdict"] == verdict


@pytest.mark.parametrize("role", ["user", "assistant"])
def test_assessed_role_is_serialised_as_its_word(role: str) -> None:
    assert _document(_verdict(assessed_role=role))["assessed_role"] == role


def test_categories_are_code_and_name_objects_in_order() -> None:
    categories = (
        CategoryRef(code="S10", name="Hate"),
        CategoryRef(code="S1", name="Violent Crimes"),
    )

    assert _document(_verdict(categories=categories))["categories"] == [
        {"code": "S10", "name": "Hate"},
        {"code": "S1", "name": "Violent Crimes"},
    ]


def test_unknown_codes_are_a_list_of_strings() -> None:
    assert _document(_verdict(unknown_codes=("S99", "X1")))["unknown_codes"] == ["S99", "X1"]


def test_model_is_an_object_with_backend_endpoint_and_prompt_format() -> None:
    model = ModelRef(backend="tgi", endpoint="http://tgi:8080", prompt_format="llama-guard-3")

    assert _document(_verdict(model=model))["model"] == {
        "backend": "tgi",
        "endpoint": "http://tgi:8080",
        "prompt_format": "llama-guard-3",
    }


def test_flags_are_serialised_as_their_string_values_in_order() -> None:
    flags = (Flag.CHUNKED, Flag.MODEL_OUTPUT_ANOMALY, Flag.THRESHOLD_OVERRIDE)

    assert _document(_verdict(flags=flags))["flags"] == [
        "chunked",
        "model_output_anomaly",
        "threshold_override",
    ]


def test_every_flag_serialises_as_a_plain_string() -> None:
    document = _document(_verdict(flags=tuple(Flag)))

    assert all(type(flag) is str for flag in document["flags"])
    assert document["flags"] == [flag.value for flag in Flag]


def test_empty_attributes_serialise_as_an_empty_object() -> None:
    assert _document(_verdict(attributes={}))["attributes"] == {}


def test_nested_attributes_are_echoed_verbatim() -> None:
    attributes = {
        "tenant": "acme",
        "nested": {"list": [1, 2.5, None, True, "x"], "deeper": {"empty": {}}},
        "big": 10**20,
    }

    assert _document(_verdict(attributes=attributes))["attributes"] == attributes


# --- non-ASCII ------------------------------------------------------------------------------------


def test_non_ascii_text_is_written_as_is() -> None:
    body = _verdict(id="café-日本-😀", attributes={"note": "naïve ✓"}).to_json()

    assert "café-日本-😀" in body
    assert "naïve ✓" in body


def test_non_ascii_text_is_not_escaped() -> None:
    body = _verdict(id="café", attributes={"note": "😀"}).to_json()

    assert "\\u" not in body


def test_json_special_characters_are_escaped_validly() -> None:
    tricky = 'quote " backslash \\ newline \n tab \t nul \x00'

    assert _document(_verdict(attributes={"t": tricky}))["attributes"] == {"t": tricky}


# --- timestamps -----------------------------------------------------------------------------------


def test_utc_timestamps_are_iso_8601_with_milliseconds_and_z() -> None:
    document = _document(_verdict())

    assert (document["received_at"], document["decided_at"]) == (
        "2026-11-26T14:00:00.120Z",
        "2026-11-26T14:00:00.410Z",
    )


@pytest.mark.parametrize(
    "moment",
    [
        datetime(2026, 11, 26, 15, 0, 0, 120_000, tzinfo=timezone(timedelta(hours=1))),
        datetime(2026, 11, 26, 9, 0, 0, 120_000, tzinfo=timezone(timedelta(hours=-5))),
        datetime(2026, 11, 26, 19, 30, 0, 120_000, tzinfo=timezone(timedelta(hours=5, minutes=30))),
    ],
    ids=["plus-01:00", "minus-05:00", "plus-05:30"],
)
def test_timestamps_in_other_timezones_are_converted_to_utc(moment: datetime) -> None:
    assert _document(_verdict(received_at=moment))["received_at"] == "2026-11-26T14:00:00.120Z"


@pytest.fixture
def local_zone_new_york(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """The process's local time zone is New York (UTC-5 in November) for the test."""
    monkeypatch.setenv("TZ", "America/New_York")
    time.tzset()
    yield
    monkeypatch.undo()
    time.tzset()


@pytest.mark.usefixtures("local_zone_new_york")
def test_timestamps_are_utc_whatever_the_machines_local_zone() -> None:
    moment = datetime(2026, 11, 26, 14, 0, 0, 120_000, tzinfo=UTC)

    assert format_timestamp(moment) == "2026-11-26T14:00:00.120Z"


def test_timestamp_conversion_crosses_the_date_line() -> None:
    moment = datetime(2026, 11, 27, 1, 30, 0, 0, tzinfo=timezone(timedelta(hours=11)))

    assert format_timestamp(moment) == "2026-11-26T14:30:00.000Z"


def test_decided_at_is_converted_like_received_at() -> None:
    moment = datetime(2026, 11, 26, 6, 0, 0, 410_000, tzinfo=timezone(timedelta(hours=-8)))

    assert _document(_verdict(decided_at=moment))["decided_at"] == "2026-11-26T14:00:00.410Z"


@pytest.mark.parametrize(
    ("microsecond", "millis"),
    [(0, ".000Z"), (1_000, ".001Z"), (5_000, ".005Z"), (120_000, ".120Z"), (999_000, ".999Z")],
)
def test_timestamp_always_has_three_millisecond_digits(microsecond: int, millis: str) -> None:
    moment = datetime(2026, 1, 2, 3, 4, 5, microsecond, tzinfo=UTC)

    assert format_timestamp(moment) == "2026-01-02T03:04:05" + millis


def test_timestamp_drops_sub_millisecond_digits() -> None:
    moment = datetime(2026, 11, 26, 14, 0, 0, 120_999, tzinfo=UTC)

    assert format_timestamp(moment) == "2026-11-26T14:00:00.120Z"


def test_sub_millisecond_digits_never_carry_into_the_next_second() -> None:
    moment = datetime(2026, 12, 31, 23, 59, 59, 999_999, tzinfo=UTC)

    assert format_timestamp(moment) == "2026-12-31T23:59:59.999Z"
