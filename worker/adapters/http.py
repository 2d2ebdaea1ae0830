"""The plain HTTP transport: one protocol's body POSTed to a model server through one session.

The protocol (``worker.core.protocols``) writes the body and reads the answer; this module only
carries it and translates the HTTP status into the error tree. Credentials in the base URL
(``https://user:secret@host``) are sent as HTTP Basic auth and an API key as a Bearer token, on
every request; neither is ever shown: the endpoint's name in verdicts, logs and error messages is
the URL without user-info, and the key is kept out of reprs.
"""

from __future__ import annotations

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
from worker.core.protocols import RequestProtocol

_HTTP_OK = 200
_HTTP_CLIENT_ERROR = 400
_HTTP_TOO_MANY_REQUESTS = 429
_HTTP_REQUEST_TIMEOUT = 408
_HTTP_FAILED_DEPENDENCY = 424  # TGI answers 424 when generation itself failed on the server
_HTTP_SERVER_ERROR = 500


class HttpClassifier:
    """A Llama Guard model behind an HTTP server that speaks ``protocol``."""

    def __init__(
        self,
        session: aiohttp.ClientSession,
        base_url: str,
        protocol: RequestProtocol,
        *,
        backend: str,
        server_name: str,
        api_key: str | None = None,
    ) -> None:
        self._session = session
        self._protocol = protocol
        self._backend = backend
        self._server_name = server_name
        authorization, self._base_url = split_credentials(base_url)
        if api_key:
            authorization = f"Bearer {api_key}"
        self._headers = {"Authorization": authorization} if authorization else {}
        self._url = self._base_url.rstrip("/") + protocol.http_path

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self._base_url!r}, protocol={self._protocol.name!r})"

    @property
    def backend(self) -> str:
        """The backend's name in verdicts: ``tgi`` or ``openai``."""
        return self._backend

    @property
    def endpoint(self) -> str:
        """The base URL without any credentials it was given."""
        return self._base_url

    async def classify(self, prompt: str) -> Completion:
        body = self._protocol.request_body(prompt)
        try:
            async with self._session.post(self._url, json=body, headers=self._headers) as response:
                payload = await response.read()
                status = response.status
        except (aiohttp.ClientError, TimeoutError) as exc:
            # str, not repr: the repr of some aiohttp errors carries the request's headers,
            # Authorization included. The URL aiohttp saw has no credentials in it.
            raise EndpointUnavailable(
                f"{self._server_name} at {self._base_url} is unreachable:"
                f" {type(exc).__name__}: {exc}"
            ) from exc
        if status != _HTTP_OK:
            message = self._protocol.error_message(payload)
            raise http_error(status, f"{self._server_name} answered {status}: {message}")
        return self._protocol.decode(payload, prompt)


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


def http_error(status: int, described: str) -> ClassifierError:
    """Translate a model server's error status into the project's error tree.

    429 is throttling; 408, 424 (TGI: generation failed) and 5xx are transient. A 4xx whose text
    says the prompt is too long (TGI's 422, vLLM's 400) is ``PromptTooLong``; any other 4xx is
    ``EndpointRejected``: validation of a generation parameter, 401/403 for a wrong key, 404 for
    a wrong URL or model name; never the message's fault.
    """
    if status == _HTTP_TOO_MANY_REQUESTS:
        return EndpointThrottled(described)
    if status in (_HTTP_REQUEST_TIMEOUT, _HTTP_FAILED_DEPENDENCY) or status >= _HTTP_SERVER_ERROR:
        return EndpointUnavailable(described)
    if status >= _HTTP_CLIENT_ERROR and says_prompt_too_long(described):
        return PromptTooLong(described)
    return EndpointRejected(described)
