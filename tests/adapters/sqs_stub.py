"""A tiny SQS endpoint for source tests: answers each action with a set JSON document.

For answers moto never gives: a batch call whose entries all failed with the empty
``Successful`` list left out (real SQS leaves it out; moto always sends both lists), and a
received message without the members the API marks optional (moto always sends them).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass, field

from aiohttp import web
from support.local_http import serve_locally

# The JSON protocol's action header: "AmazonSQS.ReceiveMessage".
_TARGET_PREFIX = "AmazonSQS."


@dataclass
class SqsStub:
    """What the stub answers, by action, and the action of every call it got."""

    url: str = ""
    answers: dict[str, Mapping[str, object]] = field(default_factory=dict)
    actions: list[str] = field(default_factory=list)

    async def handle(self, request: web.Request) -> web.Response:
        await request.read()
        action = request.headers.get("X-Amz-Target", "").removeprefix(_TARGET_PREFIX)
        self.actions.append(action)
        return web.json_response(self.answers[action], content_type="application/x-amz-json-1.0")


@asynccontextmanager
async def run_sqs_stub() -> AsyncIterator[SqsStub]:
    """Serve an ``SqsStub`` on a free local port until the block exits."""
    stub = SqsStub()
    async with serve_locally({"/": stub.handle}) as url:
        stub.url = url
        yield stub
