"""A tiny SNS endpoint for sink tests: answers every call with a set PublishBatch result.

For the answers moto never gives to what the sink sends: one entry of a batch refused while the
others are published, an entry SNS says nothing about, a result list left out.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from xml.sax.saxutils import escape

from aiohttp import web
from support.local_http import serve_locally


@dataclass(frozen=True)
class Refusal:
    """One entry of a ``Failed`` list: its id, and the code and message SNS gave."""

    entry_id: str
    code: str
    message: str


def publish_batch_answer(
    *, successful: Sequence[str] | None, failed: Sequence[Refusal] | None
) -> str:
    """A PublishBatch response; a list given as None is left out of the document altogether."""
    parts = []
    if successful is not None:
        members = "".join(
            f"<member><Id>{escape(entry_id)}</Id><MessageId>stub-{escape(entry_id)}</MessageId>"
            "</member>"
            for entry_id in successful
        )
        parts.append(f"<Successful>{members}</Successful>")
    if failed is not None:
        members = "".join(
            f"<member><Id>{escape(refusal.entry_id)}</Id><Code>{escape(refusal.code)}</Code>"
            f"<Message>{escape(refusal.message)}</Message><SenderFault>true</SenderFault></member>"
            for refusal in failed
        )
        parts.append(f"<Failed>{members}</Failed>")
    return (
        '<?xml version="1.0"?>\n'
        '<PublishBatchResponse xmlns="http://sns.amazonaws.com/doc/2010-03-31/">'
        f"<PublishBatchResult>{''.join(parts)}</PublishBatchResult>"
        "<ResponseMetadata><RequestId>stub</RequestId></ResponseMetadata>"
        "</PublishBatchResponse>"
    )


@dataclass
class SnsStub:
    """What the stub answers, and the ``Action`` of every call it got."""

    url: str = ""
    answer: str = ""
    actions: list[str] = field(default_factory=list)

    async def handle(self, request: web.Request) -> web.Response:
        form = await request.post()
        self.actions.append(str(form.get("Action")))
        return web.Response(text=self.answer, content_type="text/xml")


@asynccontextmanager
async def run_sns_stub() -> AsyncIterator[SnsStub]:
    """Serve an ``SnsStub`` on a free local port until the block exits."""
    stub = SnsStub()
    async with serve_locally({"/": stub.handle}) as url:
        stub.url = url
        yield stub
