"""The committed JSON Schemas are the ones the code generates (``make schemas`` rewrites them)."""

from __future__ import annotations

import pytest
from contract_files import SCHEMAS, load_schema
from jsonschema import Draft202012Validator

from worker.contracts import DIALECT, rendered


@pytest.mark.parametrize("name", sorted(rendered()))
def test_the_committed_schema_is_what_the_code_generates(name: str) -> None:
    committed = (SCHEMAS / name).read_text(encoding="utf-8")
    assert committed == rendered()[name], f"docs/schemas/{name} is stale: run `make schemas`"


@pytest.mark.parametrize("name", sorted(rendered()))
def test_each_schema_is_a_valid_2020_12_schema(name: str) -> None:
    schema = load_schema(name)
    assert schema["$schema"] == DIALECT
    Draft202012Validator.check_schema(schema)


def test_the_verdict_schema_names_the_published_field_schema_not_schema_() -> None:
    properties = load_schema("verdict.schema.json")["properties"]
    assert next(iter(properties)) == "schema"
    assert "schema_" not in properties
    assert properties["schema"]["const"] == "moderation.verdict.v1"
