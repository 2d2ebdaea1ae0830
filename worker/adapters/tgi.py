"""The self-hosted TGI backend: ``POST {base}/generate`` through one shared aiohttp session.

Credentials in the base URL (``https://user:secret@host``) are sent as HTTP Basic auth (an
``Authorization`` header on every request) and never shown: the endpoint's name in verdicts,
logs and error messages is the URL without them.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any
from urllib.parse import SplitResult, unquote, urlsplit

import aiohttp

from worker.core.errors import (
    ClassifierError,
    EndpointRejected,
    EndpointThrottled,
    EndpointUnavailable,
    PromptTooLong,
    says_prompt_too_long,
)
from worker.core.models import Completion
from worker.core.prompt import build_request_body
from worker.core.response import decode_generation

_HTTP_OK = 200
_HTTP_CLIENT_ERROR = 400
_HTTP_TOO_MANY_REQUESTS = 429
_HTTP_REQUEST_TIMEOUT = 408
_HTTP_FAILED_DEPENDENCY = 424  # TGI answers 424 when generation itself failed on the server
_HTTP_SERVER_ERROR = 500
_MAX_ERROR_CHARS = 500


class TgiClassifier:
    """A Llama Guard model served by Hugging Face TGI."""

    backend = "tgi"

    def __init__(
        self, session: aiohttp.ClientSession, base_url: str, parameters: Mapping[str, Any]
    ) -> None:
        self._session = session
        authorization, self._base_url = split_credentials(base_url)
        self._headers = {"Authorization": authorization} if authorization else {}
        self._url = self._base_url.rstrip("/") + "/generate"
        self._parameters = dict(parameters)

    @property
    def endpoint(self) -> str:
        """The base URL without any credentials it was given."""
        return self._base_url

    async def classify(self, prompt: str) -> Completion:
        body = build_request_body(prompt, self._parameters)
        try:
            async with self._session.post(self._url, json=body, headers=self._headers) as response:
                payload = await response.read()
                status = response.status
        except (aiohttp.ClientError, TimeoutError) as exc:
            # str, not repr: the repr of some aiohttp errors carries the request's headers,
            # Authorization included. The URL aiohttp saw has no credentials in it.
            raise EndpointUnavailable(
                f"TGI at {self._base_url} is unreachable: {type(exc).__name__}: {exc}"
            ) from exc
        if status != _HTTP_OK:
            raise tgi_error(status, payload)
        return decode_generation(payload, prompt)


def split_credentials(url: str) -> tuple[str | None, str]:
    """``url``'s user-info as a Basic ``Authorization`` value (or None), and the URL without it."""
    parts = urlsplit(url)
    if parts.username is None and parts.password is None:
        return None, url
    authorization = aiohttp.encode_basic_auth(
        unquote(parts.username or ""), unquote(parts.password or "")
    )
    return authorization, _without_user_info(parts).geturl()


def _without_user_info(parts: SplitResult) -> SplitResult:
    host = parts.hostname or ""
    if ":" in host:  # an IPv6 literal keeps its brackets
        host = f"[{host}]"
    netloc = f"{host}:{parts.port}" if parts.port is not None else host
    return parts._replace(netloc=netloc)


def tgi_error(status: int, payload: bytes) -> ClassifierError:
    """Translate a TGI error response into the project's error tree.

    A 4xx other than 429 is ``EndpointRejected`` unless its text says the prompt is too long:
    TGI answers 422 for validation (a generation parameter above the server's limits, such as
    ``top_n_tokens`` above ``--max-top-n-tokens``) and 401/403/404 for a wrong URL or token.
    """
    message = _error_message(payload)
    described = f"TGI answered {status}: {message}"
    if status == _HTTP_TOO_MANY_REQUESTS:
        return EndpointThrottled(described)
    if status in (_HTTP_REQUEST_TIMEOUT, _HTTP_FAILED_DEPENDENCY) or status >= _HTTP_SERVER_ERROR:
        return EndpointUnavailable(described)
    if status >= _HTTP_CLIENT_ERROR and says_prompt_too_long(message):
        return PromptTooLong(described)
    return EndpointRejected(described)


def _error_message(payload: bytes) -> str:
    try:
        document = json.loads(payload)
    except (json.JSONDecodeError, UnicodeDecodeError):
        return payload[:_MAX_ERROR_CHARS].decode("utf-8", "replace")
    if isinstance(document, dict) and isinstance(document.get("error"), str):
        return str(document["error"])[:_MAX_ERROR_CHARS]
    if isinstance(document, dict) and isinstance(document.get("message"), str):
        # vLLM's OpenAI-compatible server: {"object": "error", "message": ..., "code": 400}
        return str(document["message"])[:_MAX_ERROR_CHARS]
    return str(document)[:_MAX_ERROR_CHARS]
