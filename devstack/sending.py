"""``moderation-worker send``: enqueue a JSON Lines file on the source queue, ten at a time."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Final

from rich.console import Console
from rich.progress import Progress

from worker.adapters.aws import SQS_ONLY, open_aws_clients
from worker.core.errors import ConfigurationError
from worker.settings import load_queue_settings

if TYPE_CHECKING:
    from types_aiobotocore_sqs.type_defs import SendMessageBatchRequestEntryTypeDef

BATCH: Final = 10


async def send_file(path: Path) -> int:
    """Send every non-blank line of ``path`` as one message body; returns the exit code."""
    settings = load_queue_settings()
    lines = read_lines(path)
    fifo = settings.queue_url.endswith(".fifo")
    console = Console(stderr=True)
    failed = 0
    async with open_aws_clients(services=SQS_ONLY) as aws:
        with Progress(console=console) as progress:
            task = progress.add_task(f"sending to {settings.queue_url}", total=len(lines))
            for offset, batch in _batches(lines):
                response = await aws.sqs.send_message_batch(
                    QueueUrl=settings.queue_url, Entries=_entries(offset, batch, fifo=fifo)
                )
                for failure in response.get("Failed", []):
                    failed += 1
                    console.print(f"line {int(failure['Id']) + 1}: {failure.get('Message', '')}")
                progress.advance(task, len(batch))
    console.print(f"sent {len(lines) - failed} of {len(lines)} messages")
    return 0 if failed == 0 else 1


def read_lines(path: Path) -> list[str]:
    """The non-blank lines of a small input file (read before any connection is opened)."""
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigurationError(f"cannot read {path}: {exc}") from exc
    return [line for line in text.splitlines() if line.strip()]


def _batches(lines: Sequence[str]) -> Iterator[tuple[int, Sequence[str]]]:
    for offset in range(0, len(lines), BATCH):
        yield offset, lines[offset : offset + BATCH]


def _entries(
    offset: int, batch: Sequence[str], *, fifo: bool
) -> list[SendMessageBatchRequestEntryTypeDef]:
    entries: list[SendMessageBatchRequestEntryTypeDef] = []
    for index, body in enumerate(batch, start=offset):
        entry: SendMessageBatchRequestEntryTypeDef = {"Id": str(index), "MessageBody": body}
        if fifo:
            entry["MessageGroupId"] = _group_of(body)
            entry["MessageDeduplicationId"] = hashlib.sha256(body.encode()).hexdigest()
        entries.append(entry)
    return entries


def _group_of(body: str) -> str:
    """A FIFO group: the conversation, else the item id, else one shared group."""
    try:
        document = json.loads(body)
    except ValueError:
        return "default"
    if isinstance(document, dict):
        for key in ("conversation_id", "id"):
            value = document.get(key)
            if isinstance(value, str) and value:
                return hashlib.sha256(value.encode()).hexdigest()[:64]
    return "default"
