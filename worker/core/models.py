"""Conversation turns and model completions: what prompts are made of and what comes back."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

Role = Literal["user", "assistant"]


@dataclass(frozen=True, slots=True)
class Turn:
    """One message of a conversation; ``role`` is normalised (``agent`` -> ``assistant``)."""

    role: Role
    content: str


@dataclass(frozen=True, slots=True)
class Completion:
    """What the model generated for one prompt, with its token log-probabilities when returned.

    ``details`` is kept in the server's own shape: TGI's ``details`` object or the OpenAI
    completions ``logprobs`` object (``completion.unsafe_probability`` reads both).
    """

    generated_text: str
    details: Mapping[str, Any] | None = None
