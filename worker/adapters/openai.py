"""The OpenAI-compatible backend (vLLM): the completions protocol over the HTTP transport.

``POST {base}/v1/completions`` with ``{"model", "prompt", "max_tokens": 32, "temperature": 0,
"logprobs": 5}``. A base URL that already ends in ``/v1`` (as OpenAI clients are usually
configured) is accepted as the same server. The API key is sent as ``Authorization: Bearer``;
it is never logged or shown (see ``worker.adapters.http``).
"""

from __future__ import annotations

from collections.abc import Mapping

import aiohttp

from worker.adapters.http import HttpClassifier
from worker.core.protocols import OpenAICompletionsProtocol


class OpenAIClassifier(HttpClassifier):
    """A Llama Guard model behind an OpenAI-compatible completions server such as vLLM."""

    def __init__(
        self,
        session: aiohttp.ClientSession,
        base_url: str,
        model: str,
        *,
        api_key: str | None = None,
        overrides: Mapping[str, object] | None = None,
    ) -> None:
        super().__init__(
            session,
            server_base_url(base_url),
            OpenAICompletionsProtocol(model, overrides),
            backend="openai",
            server_name="the OpenAI-compatible server",
            api_key=api_key,
        )


def server_base_url(url: str) -> str:
    """``url`` without a trailing ``/v1`` (the protocol's path adds it)."""
    trimmed = url.rstrip("/")
    return trimmed.removesuffix("/v1") if trimmed.endswith("/v1") else url
