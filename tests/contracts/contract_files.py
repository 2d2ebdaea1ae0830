"""The committed contract files and validators for them (a plain module: shared by the tests)."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any, Final

import yaml
from jsonschema import Draft7Validator, Draft202012Validator

ROOT: Final = Path(__file__).resolve().parents[2]
SCHEMAS: Final = ROOT / "docs" / "schemas"
ASYNCAPI: Final = ROOT / "docs" / "asyncapi.yaml"
ASYNCAPI_SPEC: Final = ROOT / "tests" / "data" / "asyncapi" / "asyncapi-3.0.0.schema.json"


def load_schema(name: str) -> dict[str, Any]:
    document: dict[str, Any] = json.loads((SCHEMAS / name).read_text(encoding="utf-8"))
    return document


def validator(name: str) -> Draft202012Validator:
    """A 2020-12 validator for a committed schema, checking ``format`` too."""
    return Draft202012Validator(
        load_schema(name), format_checker=Draft202012Validator.FORMAT_CHECKER
    )


def asyncapi() -> dict[str, Any]:
    document: dict[str, Any] = yaml.safe_load(ASYNCAPI.read_text(encoding="utf-8"))
    return document


def headers_validator(message: str) -> Draft7Validator:
    """A validator of a message's headers as the AsyncAPI document gives them (AsyncAPI Schema
    objects are a superset of draft-07)."""
    return Draft7Validator(asyncapi()["components"]["messages"][message]["headers"])


def attribute_values(attributes: dict[str, tuple[str, str]]) -> dict[str, Any]:
    """SNS/SQS message attributes as (DataType, StringValue) → the values headers describe."""
    decoders: dict[str, Callable[[str], Any]] = {
        "String": str,
        "Number": float,
        "String.Array": json.loads,
    }
    return {name: decoders[kind](value) for name, (kind, value) in attributes.items()}
