"""A tiny HTTP endpoint for adapter tests: answers the model routes with a set status and body.

Used where the emulator has no fault for the answer wanted (a given error wording, a 401) and to
see the headers a request arrived with.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field

from aiohttp import web
from support.local_http import serve_locally

GENERATION = {"generated_text": "safe"}
MODEL_ROUTES = ("/generate", "/v1/completions", "/endpoints/{name}/invocations")


@dataclass
class StubEndpoint:
    """What the stub answers next, and the headers and body of every request it got."""

    url: str = ""
    status: int = 200
    body: str = json.dumps(GENERATION)
    headers: dict[str, str] = field(default_factory=dict)
    authorizations: list[str | None] = field(default_factory=list)
    received_headers: list[dict[str, str]] = field(default_factory=list)
    received_bodies: list[bytes] = field(default_factory=list)

    def answer(self, status: int, document: object, **headers: str) -> None:
        """Answer every following request with ``status`` and ``document`` as JSON."""
        self.status = status
        self.body = json.dumps(document)
        self.headers = dict(headers)

    async def handle(self, request: web.Request) -> web.Response:
        self.received_bodies.append(await request.read())
        self.authorizations.append(request.headers.get("Authorization"))
        self.received_headers.append(dict(request.headers))
        return web.Response(
            status=self.status,
            text=self.body,
            content_type="application/json",
            headers=self.headers,
        )


@asynccontextmanager
async def run_stub_endpoint() -> AsyncIterator[StubEndpoint]:
    """Serve a ``StubEndpoint`` on a free local port until the block exits."""
    stub = StubEndpoint()
    async with serve_locally(dict.fromkeys(MODEL_ROUTES, stub.handle)) as url:
        stub.url = url
        yield stub
