"""The request protocols a Llama Guard server speaks: the body, the answer and the error's words.

A protocol is one object, independent of the transport that carries it: the same body goes to an
HTTP server's path or through SageMaker's ``invoke_endpoint``.

- ``TgiProtocol``: ``{"inputs", "parameters"}``; TGI's ``POST /generate`` and TGI endpoints on
  SageMaker (JumpStart). The answer is ``{"generated_text", "details"}`` (a list of one on
  SageMaker).
- ``OpenAICompletionsProtocol``: ``{"model", "prompt", "max_tokens", "temperature",
  "logprobs"}``; ``POST /v1/completions`` of an OpenAI-compatible server (vLLM) and SageMaker
  LMI endpoints. The answer is ``{"choices": [{"text", "logprobs"}]}``.

Pure: no I/O, no logging. Decoding turns either answer into a ``Completion`` whose ``details``
are the token log-probabilities as the server sent them (TGI's ``details`` or OpenAI's
``logprobs``); ``completion.unsafe_probability`` reads both shapes.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from types import MappingProxyType
from typing import Any, Final, Literal, Protocol

from worker.core.errors import ConfigurationError, UnreadableResponse
from worker.core.models import Completion
from worker.core.prompt import build_request_body, check_parameters
from worker.core.response import decode_generation

ProtocolName = Literal["tgi", "openai"]

_MAX_ERROR_CHARS: Final = 500


class RequestProtocol(Protocol):
    """How one request is written and its answer read, whatever carries it."""

    @property
    def name(self) -> ProtocolName:
        """``tgi`` or ``openai``."""
        ...

    @property
    def http_path(self) -> str:
        """The path of the generation route on an HTTP server, from its base URL."""
        ...

    def request_body(self, prompt: str) -> dict[str, object]:
        """The JSON body asking for ``prompt``'s completion."""
        ...

    def decode(self, payload: bytes | str, prompt: str) -> Completion:
        """A 200 answer as a ``Completion``; raises ``UnreadableResponse`` for a wrong shape."""
        ...

    def error_message(self, payload: bytes | str) -> str:
        """The server's own words from an error answer, at most 500 characters."""
        ...


class TgiProtocol:
    """Hugging Face TGI's generate body (FORMATS.md section 4)."""

    name: Final = "tgi"
    http_path: Final = "/generate"

    def __init__(self, parameters: Mapping[str, object]) -> None:
        check_parameters(parameters)
        self._parameters = dict(parameters)

    def request_body(self, prompt: str) -> dict[str, object]:
        return build_request_body(prompt, self._parameters)

    def decode(self, payload: bytes | str, prompt: str) -> Completion:
        return decode_generation(payload, prompt)

    def error_message(self, payload: bytes | str) -> str:
        return read_error_message(payload)


# Greedy decoding: vLLM's default temperature is 1.0 (sampling), so 0 must be sent; five
# alternatives per position are enough for the safe/unsafe score; 32 tokens fit the verdict line
# and the category line. No BOS in the prompt: the server adds it.
DEFAULT_OPENAI_PARAMETERS: Mapping[str, object] = MappingProxyType(
    {"max_tokens": 32, "temperature": 0, "logprobs": 5}
)
# What MODERATION_MODEL_PARAMETERS may change in the OpenAI body: the answer's length, and the
# number of alternatives (null leaves logprobs out, for a server that refuses them; the score is
# then null). Everything else would sample, cut the prompt or change what comes back.
ADJUSTABLE_OPENAI_PARAMETERS: Final = frozenset({"max_tokens", "logprobs"})


def openai_parameters(overrides: Mapping[str, object] | None) -> dict[str, object]:
    """The OpenAI body's generation fields: the defaults with ``overrides`` applied.

    Raises ``ConfigurationError`` for a key other than ``max_tokens`` and ``logprobs``.
    """
    overrides = overrides or {}
    refused = sorted(set(overrides) - ADJUSTABLE_OPENAI_PARAMETERS)
    if refused:
        raise ConfigurationError(
            f"generation parameter {refused[0]!r} cannot be set for the OpenAI protocol: only"
            " max_tokens and logprobs can (greedy decoding with temperature 0 is fixed)"
        )
    merged = {**DEFAULT_OPENAI_PARAMETERS, **overrides}
    if merged.get("max_tokens") is None:
        raise ConfigurationError("max_tokens cannot be removed for the OpenAI protocol")
    return {name: value for name, value in merged.items() if value is not None}


class OpenAICompletionsProtocol:
    """The OpenAI completions body, as vLLM's OpenAI-compatible server implements it."""

    name: Final = "openai"
    http_path: Final = "/v1/completions"

    def __init__(self, model: str | None, overrides: Mapping[str, object] | None = None) -> None:
        self._model = model
        self._parameters = openai_parameters(overrides)

    def request_body(self, prompt: str) -> dict[str, object]:
        # "model" is required by vLLM's HTTP server; an LMI endpoint serves one model and may
        # be called without it.
        head: dict[str, object] = {"model": self._model} if self._model is not None else {}
        return {**head, "prompt": prompt, **self._parameters}

    def decode(self, payload: bytes | str, prompt: str) -> Completion:
        del prompt  # vLLM echoes nothing unless asked ("echo" is never sent)
        return decode_openai_completion(payload)

    def error_message(self, payload: bytes | str) -> str:
        return read_error_message(payload)


def decode_openai_completion(payload: bytes | str) -> Completion:
    """``choices[0].text`` and ``choices[0].logprobs`` of a completions answer."""
    document = _json(payload)
    choices = document.get("choices") if isinstance(document, Mapping) else None
    if not isinstance(choices, list) or len(choices) != 1:
        raise UnreadableResponse("the endpoint's answer has no list of exactly one 'choices'")
    choice = choices[0]
    if not isinstance(choice, Mapping) or not isinstance(choice.get("text"), str):
        raise UnreadableResponse("the endpoint's answer has no string 'choices[0].text'")
    logprobs = choice.get("logprobs")
    return Completion(
        generated_text=choice["text"],
        details=logprobs if isinstance(logprobs, Mapping) else None,
    )


def _json(payload: bytes | str) -> Any:
    try:
        return json.loads(payload)
    # ValueError covers JSONDecodeError, UnicodeDecodeError and integers too long to convert.
    except (ValueError, RecursionError) as exc:
        raise UnreadableResponse(f"the endpoint answered with invalid JSON: {exc}") from exc


def read_error_message(payload: bytes | str) -> str:
    """The message of an error body, whichever server wrote it; else the body's first characters.

    TGI: ``{"error": "...", "error_type": ...}``. vLLM before 0.10 and other OpenAI-compatible
    servers: ``{"object": "error", "message": ..., "type": ..., "code": ...}``. vLLM since, and
    OpenAI: ``{"error": {"message": ..., "type": ..., "param": ..., "code": ...}}``.
    """
    try:
        document = json.loads(payload)
    except (ValueError, RecursionError):
        text = payload if isinstance(payload, str) else payload.decode("utf-8", "replace")
        return text[:_MAX_ERROR_CHARS]
    if isinstance(document, Mapping):
        error = document.get("error")
        if isinstance(error, Mapping) and isinstance(error.get("message"), str):
            return str(error["message"])[:_MAX_ERROR_CHARS]
        if isinstance(error, str):
            return error[:_MAX_ERROR_CHARS]
        if isinstance(document.get("message"), str):
            return str(document["message"])[:_MAX_ERROR_CHARS]
    return str(document)[:_MAX_ERROR_CHARS]
