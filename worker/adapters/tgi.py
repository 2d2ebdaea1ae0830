"""The self-hosted TGI backend: ``POST {base}/generate`` through one shared aiohttp session."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

import aiohttp

from worker.core.errors import (
    ClassifierError,
    EndpointThrottled,
    EndpointUnavailable,
    PermanentClassifierError,
    PromptTooLong,
)
from worker.core.models import Completion
from worker.core.prompt import build_request_body
from worker.core.response import decode_generation

_HTTP_OK = 200
_HTTP_TOO_MANY_REQUESTS = 429
_HTTP_UNPROCESSABLE = 422
_HTTP_REQUEST_TIMEOUT = 408
_HTTP_FAILED_DEPENDENCY = 424  # TGI answers 424 when generation itself failed on the server
_HTTP_SERVER_ERROR = 500


class TgiClassifier:
    """A Llama Guard model served by Hugging Face TGI."""

    backend = "tgi"

    def __init__(
        self, session: aiohttp.ClientSession, base_url: str, parameters: Mapping[str, Any]
    ) -> None:
        self._session = session
        self._url = base_url.rstrip("/") + "/generate"
        self._base_url = base_url
        self._parameters = dict(parameters)

    @property
    def endpoint(self) -> str:
        return self._base_url

    async def classify(self, prompt: str) -> Completion:
        body = build_request_body(prompt, self._parameters)
        try:
            async with self._session.post(self._url, json=body) as response:
                payload = await response.read()
                status = response.status
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise EndpointUnavailable(f"TGI at {self._base_url} is unreachable: {exc!r}") from exc
        if status != _HTTP_OK:
            raise tgi_error(status, payload)
        return decode_generation(payload, prompt)


def tgi_error(status: int, payload: bytes) -> ClassifierError:
    """Translate a TGI error response into the project's error tree."""
    message = _error_message(payload)
    described = f"TGI answered {status}: {message}"
    if status == _HTTP_UNPROCESSABLE and is_token_budget_message(message):
        return PromptTooLong(described)
    if status == _HTTP_TOO_MANY_REQUESTS:
        return EndpointThrottled(described)
    if status in (_HTTP_REQUEST_TIMEOUT, _HTTP_FAILED_DEPENDENCY) or status >= _HTTP_SERVER_ERROR:
        return EndpointUnavailable(described)
    return PermanentClassifierError(described)


def is_token_budget_message(message: str) -> bool:
    """True for TGI's "`inputs` tokens + `max_new_tokens` must be <= N" validation error."""
    return "tokens" in message and "must be <=" in message


def _error_message(payload: bytes) -> str:
    try:
        document = json.loads(payload)
    except (json.JSONDecodeError, UnicodeDecodeError):
        return payload[:200].decode("utf-8", "replace")
    if isinstance(document, dict) and isinstance(document.get("error"), str):
        return str(document["error"])
    return str(document)[:200]
