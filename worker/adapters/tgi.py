"""The self-hosted TGI backend: the TGI protocol over the HTTP transport (``POST {base}/generate``).

Credentials in the base URL (``https://user:secret@host``) are sent as HTTP Basic auth and never
shown (see ``worker.adapters.http``).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import aiohttp

from worker.adapters.http import HttpClassifier, split_credentials
from worker.core.protocols import TgiProtocol

__all__ = ["TgiClassifier", "split_credentials"]


class TgiClassifier(HttpClassifier):
    """A Llama Guard model served by Hugging Face TGI."""

    def __init__(
        self, session: aiohttp.ClientSession, base_url: str, parameters: Mapping[str, Any]
    ) -> None:
        super().__init__(
            session, base_url, TgiProtocol(parameters), backend="tgi", server_name="TGI"
        )
