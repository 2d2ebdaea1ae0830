"""vLLM's OpenAI-compatible ``/v1/completions`` as the emulator speaks it: checks and shapes.

Pure (no I/O). The request is ``{"model", "prompt", "max_tokens", "temperature", "logprobs",
...}``; other fields are accepted and ignored, and the emulator always answers greedily, as it
does for TGI. The answer is vLLM's ``CompletionResponse``: ``choices[0].text`` and
``choices[0].logprobs`` (``tokens``, ``token_logprobs``, ``top_logprobs`` as one
``{token_text: logprob}`` object per position, ``text_offset``). Special tokens are left out of
the text and reported with empty text in the log-probabilities (the server skips special
tokens). Errors are vLLM's current shape ``{"error": {"message", "type", "param", "code"}}``,
with its words for an over-long prompt and an unknown model.

Token counts come from ``devstack.emulator.tgi.count_prompt_tokens``: exact for Llama 3 prompts
when the ``tokens`` extra is installed, else an estimate.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Final

from devstack.emulator.completion import Completion
from devstack.emulator.tgi import TgiError

# vLLM's defaults: 16 new tokens when max_tokens is not sent, at most 20 log-probabilities.
DEFAULT_MAX_TOKENS: Final = 16
MAX_LOGPROBS: Final = 20
_HTTP_BAD_REQUEST: Final = 400


class VllmError(TgiError):
    """An error vLLM's OpenAI-compatible server answers with, in its JSON shape."""

    def __init__(
        self,
        status: int,
        message: str,
        error_type: str = "BadRequestError",
        *,
        param: str | None = None,
        outcome: str = "validation_error",
    ) -> None:
        super().__init__(status, message, error_type, outcome=outcome)
        self.param = param

    def body(self) -> dict[str, object]:
        """vLLM's error body."""
        return {
            "error": {
                "message": self.message,
                "type": self.error_type,
                "param": self.param,
                "code": self.status,
            }
        }


def bad_request(message: str, *, param: str | None = None) -> VllmError:
    """vLLM's 400 for a request that fails validation."""
    return VllmError(_HTTP_BAD_REQUEST, message, param=param)


def unknown_model(model: str | None) -> VllmError:
    """vLLM's 404 for a model name it does not serve."""
    return VllmError(
        404,
        f"The model `{model}` does not exist.",
        "NotFoundError",
        param="model",
        outcome="endpoint_not_found",
    )


@dataclass(frozen=True, slots=True)
class CompletionsRequest:
    """The parts of a completions request the emulator acts on."""

    prompt: str
    model: str | None = None
    max_tokens: int = DEFAULT_MAX_TOKENS
    logprobs: int | None = None


def is_completions_body(body: bytes) -> bool:
    """Whether a body sent to the SageMaker route is an OpenAI completions body (else TGI's)."""
    try:
        document = json.loads(body.decode("utf-8"))
    except (UnicodeDecodeError, ValueError):
        return False
    return isinstance(document, dict) and "prompt" in document and "inputs" not in document


def parse_completions_request(
    body: bytes, content_type: str, *, served_models: frozenset[str] | None
) -> CompletionsRequest:
    """Decode and validate a completions body, raising ``VllmError`` as vLLM would answer."""
    if content_type != "application/json":
        raise bad_request("Expected request with `Content-Type: application/json`")
    try:
        document = json.loads(body.decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as exc:
        raise bad_request(f"JSON decode error: {exc}") from exc
    if not isinstance(document, dict):
        raise bad_request("The request body must be a JSON object")
    model = document.get("model")
    if model is not None and not isinstance(model, str):
        raise bad_request("model: Input should be a valid string", param="model")
    if served_models is not None and model is not None and model not in served_models:
        raise unknown_model(model)
    prompt = document.get("prompt")
    if not isinstance(prompt, str) or not prompt:
        raise bad_request(
            "Either prompt or prompt_embeds must be provided and non-empty.", param="prompt"
        )
    return CompletionsRequest(
        prompt=prompt,
        model=model,
        max_tokens=_max_tokens(document),
        logprobs=_logprobs(document),
    )


def _max_tokens(document: Mapping[str, object]) -> int:
    value = document.get("max_tokens")
    if value is None:
        return DEFAULT_MAX_TOKENS
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise bad_request(f"max_tokens must be at least 1, got {value}.", param="max_tokens")
    return value


def _logprobs(document: Mapping[str, object]) -> int | None:
    value = document.get("logprobs")
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise bad_request("`logprobs` must be a positive value or -1.", param="logprobs")
    if value > MAX_LOGPROBS:
        raise bad_request(
            f"Requested sample logprobs of {value}, which is greater than max allowed:"
            f" {MAX_LOGPROBS}",
            param="logprobs",
        )
    return value


def check_context_length(
    request: CompletionsRequest, prompt_tokens: int, *, max_model_len: int
) -> None:
    """vLLM's 400 for a prompt that leaves no room for ``max_tokens`` in the model's context."""
    max_input_tokens = max_model_len - request.max_tokens
    if prompt_tokens > max_input_tokens:
        raise VllmError(
            _HTTP_BAD_REQUEST,
            f"You passed {prompt_tokens} input tokens and requested {request.max_tokens} output"
            f" tokens. However, the model's context length is only {max_model_len} tokens,"
            f" resulting in a maximum input length of {max(max_input_tokens, 0)} tokens."
            " Please reduce the length of the input prompt.",
            param="input_tokens",
            outcome="prompt_too_long",
        )


def completions_payload(
    request: CompletionsRequest, completion: Completion, *, prompt_tokens: int, model: str
) -> dict[str, object]:
    """vLLM's success body for one request."""
    generated, finish = completion.truncated(request.max_tokens)
    choice: dict[str, object] = {
        "index": 0,
        "text": generated.text,
        "logprobs": None,
        "finish_reason": "stop" if finish == "eos_token" else "length",
        "stop_reason": None,
    }
    if request.logprobs is not None:
        choice["logprobs"] = _logprobs_object(generated, request.logprobs)
    return {
        "id": f"cmpl-{uuid.uuid4().hex}",
        "object": "text_completion",
        "created": int(time.time()),
        "model": request.model or model,
        "choices": [choice],
        "usage": {
            "prompt_tokens": prompt_tokens,
            "total_tokens": prompt_tokens + len(generated.candidates),
            "completion_tokens": len(generated.candidates),
        },
    }


def _logprobs_object(completion: Completion, top: int) -> dict[str, object]:
    tokens: list[str] = []
    offsets: list[int] = []
    offset = 0
    for token in completion.tokens:
        text = "" if token.special else token.text
        tokens.append(text)
        offsets.append(offset)
        offset += len(text)
    return {
        "text_offset": offsets,
        "token_logprobs": [token.logprob for token in completion.tokens],
        "tokens": tokens,
        "top_logprobs": [
            {("" if alt.special else alt.text): alt.logprob for alt in position[: max(top, 1)]}
            for position in completion.candidates
        ],
    }
