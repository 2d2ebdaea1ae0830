"""TGI's ``/generate`` contract as the emulator enforces it: request checks and response shape.

Pure (no I/O). Checks follow TGI's router (``validation.rs``) in its order and words, and its
errors are TGI's JSON ``{"error": ..., "error_type": ...}``. Sampling parameters that pass the
checks are accepted but change nothing: the emulator always answers greedily. Token counts
(``count_prompt_tokens``) are exact for prompts of the Llama 3 tokenizer's formats
(llama-guard-2, -3, -3-1b) when the ``tokens`` extra is installed, as a server with the model's
tokenizer counts, the begin-of-text token included; otherwise (llama-guard-1, or without the
extra) an estimate, ``ceil(len(inputs) / 4)``.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from devstack.emulator.completion import Completion
from worker.tokenizer import load_llama3_tokenizer

# TGI caps an unset max_new_tokens at this many tokens per scheduling round.
DEFAULT_GENERATION_LENGTH = 1024
CHARS_PER_TOKEN = 4

_SAMPLING_CHECKS: tuple[tuple[str, Callable[[float], bool], str], ...] = (
    ("temperature", lambda value: value <= 0, "`temperature` must be strictly positive"),
    (
        "repetition_penalty",
        lambda value: value <= 0,
        "`repetition_penalty` must be strictly positive",
    ),
    ("top_p", lambda value: not 0 < value < 1, "`top_p` must be > 0.0 and < 1.0"),
    ("typical_p", lambda value: not 0 < value < 1, "`typical_p` must be > 0.0 and < 1.0"),
    ("top_k", lambda value: value <= 0, "`top_k` must be strictly positive"),
)


class TgiError(Exception):
    """An error the TGI container answers with; ``outcome`` is the stats bucket it counts in."""

    def __init__(
        self, status: int, message: str, error_type: str, *, outcome: str = "validation_error"
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.error_type = error_type
        self.outcome = outcome

    def body(self) -> dict[str, object]:
        """TGI's error body."""
        return {"error": self.message, "error_type": self.error_type}

    def body_text(self) -> str:
        """The body as TGI serialises it (compact JSON), e.g. for SageMaker's OriginalMessage."""
        return json.dumps(self.body(), separators=(",", ":"), ensure_ascii=False)


def input_validation_error(detail: str, *, outcome: str = "validation_error") -> TgiError:
    """TGI's 422 for a request that fails validation."""
    return TgiError(422, f"Input validation error: {detail}", "validation", outcome=outcome)


def _deserialize_error(detail: str) -> TgiError:
    return TgiError(
        422, f"Failed to deserialize the JSON body into the target type: {detail}", "validation"
    )


@dataclass(frozen=True, slots=True)
class GenerateRequest:
    """The parts of a TGI request the emulator acts on."""

    inputs: str
    max_new_tokens: int | None = None
    return_full_text: bool | None = None
    details: bool = False
    top_n_tokens: int = 0


def estimate_tokens(text: str) -> int:
    """The emulator's token estimate for a prompt: one token per four characters, rounded up."""
    return math.ceil(len(text) / CHARS_PER_TOKEN)


_LLAMA3_PROMPT_STARTS = ("<|start_header_id|>", "<|begin_of_text|>")
# llama-guard-2 shares llama-guard-1's [INST] wrapper; its instruction, at the very end of the
# prompt, is the difference.
_LLAMA_GUARD_2_ENDING = "Provide your safety assessment for ONLY THE LAST "
_INSTRUCTION_TAIL_CHARS = 400


def _uses_llama3_tokenizer(prompt: str) -> bool:
    if prompt.startswith(_LLAMA3_PROMPT_STARTS):
        return True
    return (
        prompt.startswith("[INST]") and _LLAMA_GUARD_2_ENDING in prompt[-_INSTRUCTION_TAIL_CHARS:]
    )


def count_prompt_tokens(prompt: str) -> int:
    """The prompt's tokens as the server counts them: exact for Llama 3 prompts when possible."""
    tokenizer = load_llama3_tokenizer() if _uses_llama3_tokenizer(prompt) else None
    if tokenizer is None:
        return estimate_tokens(prompt)
    begin_of_text = 0 if prompt.startswith("<|begin_of_text|>") else 1
    return tokenizer.count(prompt) + begin_of_text


def parse_request(body: bytes, content_type: str, *, max_top_n_tokens: int) -> GenerateRequest:
    """Decode and validate a ``/generate`` body, raising ``TgiError`` as TGI would answer."""
    if content_type != "application/json":
        raise TgiError(415, "Expected request with `Content-Type: application/json`", "validation")
    document = _decode(body)
    inputs = document.get("inputs")
    if not isinstance(inputs, str):
        problem = "missing field `inputs`" if inputs is None else "inputs: expected a string"
        raise _deserialize_error(problem)
    parameters = document.get("parameters")
    if parameters is None:
        parameters = {}
    if not isinstance(parameters, dict):
        raise _deserialize_error("parameters: expected a map")
    request = GenerateRequest(
        inputs=inputs,
        max_new_tokens=_optional_u32(parameters, "max_new_tokens"),
        return_full_text=_optional_bool(parameters, "return_full_text"),
        details=bool(_optional_bool(parameters, "details")),
        top_n_tokens=_optional_u32(parameters, "top_n_tokens") or 0,
    )
    _check_semantics(request, parameters, max_top_n_tokens)
    return request


def check_token_budget(request: GenerateRequest, *, max_total_tokens: int) -> int:
    """The number of new tokens allowed, or the 422 TGI gives a prompt that is too long."""
    input_tokens = count_prompt_tokens(request.inputs)
    max_new_tokens = request.max_new_tokens
    if max_new_tokens is None:
        max_new_tokens = min(max(max_total_tokens - input_tokens, 0), DEFAULT_GENERATION_LENGTH)
    if input_tokens + max_new_tokens > max_total_tokens:
        raise input_validation_error(
            f"`inputs` tokens + `max_new_tokens` must be <= {max_total_tokens}. "
            f"Given: {input_tokens} `inputs` tokens and {max_new_tokens} `max_new_tokens`",
            outcome="prompt_too_long",
        )
    max_input_tokens = max_total_tokens - 1
    if input_tokens > max_input_tokens:
        raise input_validation_error(
            f"`inputs` must have less than {max_input_tokens} tokens. Given: {input_tokens}",
            outcome="prompt_too_long",
        )
    return max_new_tokens


def generation_payload(
    request: GenerateRequest, completion: Completion, *, max_new_tokens: int, echo_default: bool
) -> dict[str, object]:
    """TGI's success body for one request: ``generated_text`` and, when asked, ``details``."""
    generated, finish_reason = completion.truncated(max_new_tokens)
    echo = echo_default if request.return_full_text is None else request.return_full_text
    payload: dict[str, object] = {
        "generated_text": request.inputs + generated.text if echo else generated.text
    }
    if request.details:
        payload["details"] = _details(generated, finish_reason, request.top_n_tokens)
    return payload


def _details(completion: Completion, finish_reason: str, top_n_tokens: int) -> dict[str, object]:
    details: dict[str, object] = {
        "finish_reason": finish_reason,
        "generated_tokens": len(completion.candidates),
        "seed": None,
        "prefill": [],
        "tokens": [token.as_json() for token in completion.tokens],
    }
    if top_n_tokens > 0:
        # TGI leaves top_tokens out entirely when none were asked for.
        details["top_tokens"] = [
            [token.as_json() for token in position[:top_n_tokens]]
            for position in completion.candidates
        ]
    return details


def _decode(body: bytes) -> dict[str, object]:
    try:
        document = json.loads(body.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise TgiError(
            400, f"Failed to parse the request body as JSON: {exc}", "validation"
        ) from exc
    if not isinstance(document, dict):
        raise _deserialize_error("invalid type: expected struct GenerateRequest")
    return document


def _optional_bool(parameters: Mapping[str, object], name: str) -> bool | None:
    value = parameters.get(name)
    if value is None or isinstance(value, bool):
        return value
    raise _deserialize_error(f"parameters.{name}: invalid type: expected a boolean")


def _optional_u32(parameters: Mapping[str, object], name: str) -> int | None:
    value = parameters.get(name)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value < 2**32:
        raise _deserialize_error(f"parameters.{name}: invalid value: {value!r}, expected u32")
    return value


def _optional_number(parameters: Mapping[str, object], name: str) -> float | None:
    value = parameters.get(name)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise _deserialize_error(f"parameters.{name}: invalid type: expected a number")
    return float(value)


def _check_semantics(
    request: GenerateRequest, parameters: Mapping[str, object], max_top_n_tokens: int
) -> None:
    for name, is_invalid, message in _SAMPLING_CHECKS:
        value = _optional_number(parameters, name)
        if value is not None and is_invalid(value):
            raise input_validation_error(message)
    if request.max_new_tokens == 0:
        raise input_validation_error("`max_new_tokens` must be strictly positive")
    if request.top_n_tokens > max_top_n_tokens:
        raise input_validation_error(
            f"`top_n_tokens` must be >= 0 and <= {max_top_n_tokens}. Given: {request.top_n_tokens}"
        )
    if not request.inputs:
        raise input_validation_error("`inputs` cannot be empty")
