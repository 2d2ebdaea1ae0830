"""The self-hosted TGI backend: the TGI protocol over the HTTP transport (``POST {base}/generate``).

Credentials in the base URL (``https://user:secret@host``) are sent as HTTP Basic auth and never
shown (see ``worker.adapters.http``).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import aiohttp

from worker.adapters.http import HttpClassifier, http_error, split_credentials
from worker.core.errors import ClassifierError
from worker.core.protocols import TgiProtocol, read_error_message

__all__ = ["TgiClassifier", "split_credentials", "tgi_error"]


class TgiClassifier(HttpClassifier):
    """A Llama Guard model served by Hugging Face TGI."""

    def __init__(
        self, session: aiohttp.ClientSession, base_url: str, parameters: Mapping[str, Any]
    ) -> None:
        super().__init__(
            session, base_url, TgiProtocol(parameters), backend="tgi", server_name="TGI"
        )


def tgi_error(status: int, payload: bytes) -> ClassifierError:
    """Translate a TGI error response into the project's error tree."""
    return http_error(status, f"TGI answered {status}: {read_error_message(payload)}")
