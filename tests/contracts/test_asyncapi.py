"""``docs/asyncapi.yaml`` is a valid AsyncAPI 3.0 document that describes what the worker does.

Validated against the official AsyncAPI 3.0.0 JSON Schema, vendored in tests/data/asyncapi/
(see its README for where it comes from).
"""

from __future__ import annotations

import json
from typing import Any, Final

import pytest
from contract_files import ASYNCAPI, ASYNCAPI_SPEC, asyncapi, validator
from jsonschema import Draft7Validator

from worker.core.taxonomy import PromptFormat

SPEC: Final = Draft7Validator(json.loads(ASYNCAPI_SPEC.read_text(encoding="utf-8")))


def test_the_document_is_valid_against_the_asyncapi_3_0_0_schema() -> None:
    errors = [f"{list(e.absolute_path)}: {e.message}" for e in SPEC.iter_errors(asyncapi())]
    assert errors == []


def test_the_official_schema_refuses_an_asyncapi_2_style_operation() -> None:
    """The check can fail: v2's ``publish`` is no v3 action."""
    document = asyncapi()
    document["operations"]["sendSafeVerdict"]["action"] = "publish"
    assert not SPEC.is_valid(document)


def test_the_queue_is_received_from_and_the_topics_and_dead_letter_queue_are_sent_to() -> None:
    operations = asyncapi()["operations"]
    actions = {
        operation["channel"]["$ref"].removeprefix("#/channels/"): operation["action"]
        for operation in operations.values()
    }
    assert actions == {
        "moderationRequests": "receive",
        "safeVerdicts": "send",
        "unsafeVerdicts": "send",
        "invalidMessages": "send",
    }


@pytest.mark.parametrize(
    ("message", "schema_file"),
    [("moderationRequest", "moderation-request.schema.json"), ("verdict", "verdict.schema.json")],
)
def test_a_payload_refers_to_its_committed_schema(message: str, schema_file: str) -> None:
    payload = asyncapi()["components"]["messages"][message]["payload"]
    assert payload["schemaFormat"] == "application/schema+json;version=draft-2020-12"
    reference = payload["schema"]["$ref"]
    assert reference == f"./schemas/{schema_file}"
    assert (ASYNCAPI.parent / reference).is_file()


@pytest.mark.parametrize(
    ("message", "schema_file"),
    [("moderationRequest", "moderation-request.schema.json"), ("verdict", "verdict.schema.json")],
)
def test_the_documents_examples_match_the_payload_schemas(message: str, schema_file: str) -> None:
    examples: list[dict[str, Any]] = asyncapi()["components"]["messages"][message]["examples"]
    schema = validator(schema_file)
    assert examples
    for example in examples:
        schema.validate(example["payload"])


def test_the_verdict_headers_list_every_prompt_format_the_worker_knows() -> None:
    headers = asyncapi()["components"]["messages"]["verdict"]["headers"]
    assert headers["properties"]["prompt_format"]["enum"] == [str(f) for f in PromptFormat]


def test_the_verdict_headers_are_the_sns_attributes_subscribers_filter_on() -> None:
    headers = asyncapi()["components"]["messages"]["verdict"]["headers"]
    assert set(headers["properties"]) == {
        "verdict",
        "categories",
        "score",
        "prompt_format",
        "traceparent",
        "AWSTraceHeader",
    }
