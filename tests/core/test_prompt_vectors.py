"""Golden prompts: every entry of the vendored prompt-vectors.json renders byte-exactly."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from worker.core.models import Turn
from worker.core.prompt import plan_prompts, render_prompt
from worker.core.taxonomy import PromptFormat, default_taxonomy

VECTORS_DIR = Path(__file__).resolve().parents[1] / "data" / "llama-guard"
PROMPT_VECTORS = VECTORS_DIR / "prompt-vectors.json"


def _load() -> list[dict[str, Any]]:
    vectors: list[dict[str, Any]] = json.loads(PROMPT_VECTORS.read_text(encoding="utf-8"))
    return vectors


VECTORS = _load()


def _turns(vector: dict[str, Any]) -> list[Turn]:
    return [Turn(message["role"], message["content"]) for message in vector["messages"]]


@pytest.mark.parametrize("vector", VECTORS, ids=[str(vector["id"]) for vector in VECTORS])
def test_vector_renders_byte_exactly(vector: dict[str, Any]) -> None:
    fmt = PromptFormat(vector["format"])

    rendered = render_prompt(_turns(vector), fmt, default_taxonomy(fmt))

    assert rendered.text == vector["expected_prompt"]
    assert rendered.neutralized is False


@pytest.mark.parametrize("vector", VECTORS, ids=[str(vector["id"]) for vector in VECTORS])
def test_vector_fits_one_prompt_unchanged_under_a_generous_budget(vector: dict[str, Any]) -> None:
    fmt = PromptFormat(vector["format"])

    plan = plan_prompts(_turns(vector), fmt, default_taxonomy(fmt), max_prompt_size=100_000)

    assert [prompt.text for prompt in plan.prompts] == [vector["expected_prompt"]]
    assert not plan.context_truncated
    assert not plan.chunked


def test_vectors_cover_every_prompt_format() -> None:
    assert {vector["format"] for vector in VECTORS} == {str(fmt) for fmt in PromptFormat}
