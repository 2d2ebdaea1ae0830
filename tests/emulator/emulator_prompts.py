"""Prompts for the emulator tests, made from the vendored prompt vectors (real rendered prompts).

A prompt for any message is the vector's exact prompt with its message swapped, so the tests
feed the emulator exactly what the worker renders, in every format.
"""

from __future__ import annotations

import json
from functools import cache
from pathlib import Path
from typing import Literal

VECTORS_PATH = Path(__file__).resolve().parents[1] / "data" / "llama-guard" / "prompt-vectors.json"
FORMATS = ("llama-guard-1", "llama-guard-2", "llama-guard-3", "llama-guard-3-1b")

_USER_PLACEHOLDER = "How do I bake a chocolate cake?"
_AGENT_PLACEHOLDER = "Use `kill <pid>` or `pkill -f name`."
_CATEGORIES_OPEN = "<BEGIN UNSAFE CONTENT CATEGORIES>\n"
_CATEGORIES_CLOSE = "\n<END UNSAFE CONTENT CATEGORIES>"


@cache
def vectors() -> tuple[dict[str, object], ...]:
    """Every prompt vector, as loaded from the vendored file."""
    loaded = json.loads(VECTORS_PATH.read_text(encoding="utf-8"))
    assert isinstance(loaded, list)
    return tuple(loaded)


def vector_prompt(vector: dict[str, object]) -> str:
    """The exact prompt of a vector."""
    prompt = vector["expected_prompt"]
    assert isinstance(prompt, str)
    return prompt


def vector_messages(vector: dict[str, object]) -> list[dict[str, str]]:
    """The messages a vector renders."""
    messages = vector["messages"]
    assert isinstance(messages, list)
    return messages


def _vector(prompt_format: str, suffix: str) -> dict[str, object]:
    for vector in vectors():
        vector_id = vector["id"]
        assert isinstance(vector_id, str)
        if vector["format"] == prompt_format and vector_id.endswith(suffix):
            return vector
    raise LookupError(f"no vector {prompt_format}:*{suffix}")


def prompt_for(
    message: str, prompt_format: str = "llama-guard-3", role: Literal["User", "Agent"] = "User"
) -> str:
    """A real prompt of ``prompt_format`` whose last (assessed) message is ``message``."""
    if role == "User":
        return vector_prompt(_vector(prompt_format, "_01_single_user")).replace(
            _USER_PLACEHOLDER, message
        )
    return vector_prompt(_vector(prompt_format, "_02_user_agent")).replace(
        _AGENT_PLACEHOLDER, message
    )


def with_categories(prompt: str, block: str) -> str:
    """``prompt`` with its category table replaced by ``block`` (a custom taxonomy)."""
    start = prompt.index(_CATEGORIES_OPEN) + len(_CATEGORIES_OPEN)
    end = prompt.index(_CATEGORIES_CLOSE)
    return prompt[:start] + block + prompt[end:]
