"""``moderation-worker send FILE.jsonl``: every non-blank line becomes one message, unchanged."""

from __future__ import annotations

import json
from collections import Counter, defaultdict
from pathlib import Path
from typing import TYPE_CHECKING

from cli_helpers import Invocation, cli_environment, run_cli_async

from devstack.moto_stack import take_messages

if TYPE_CHECKING:
    from types_aiobotocore_sqs import SQSClient
    from types_aiobotocore_sqs.type_defs import MessageTypeDef

    from devstack.moto_stack import LocalResources

LINES = 25


def _bodies(count: int) -> list[str]:
    """Message bodies as a platform writes them: ids, conversations, non-ASCII text."""
    return [
        json.dumps(
            {
                "id": f"post-{index:03d}",
                "conversation_id": f"room-{index % 4}",
                "content": f"Message {index}: café, 東京, 🙂 — is this fine?",
                "attributes": {"line": index},
            },
            ensure_ascii=False,
        )
        for index in range(count)
    ]


def _write_with_blank_lines(path: Path, bodies: list[str]) -> None:
    """One body per line, with empty and whitespace-only lines in between and at the end."""
    lines: list[str] = []
    for index, body in enumerate(bodies):
        lines.append(body)
        if index % 7 == 0:
            lines.append("")
        if index % 9 == 0:
            lines.append("   \t")
    path.write_text("\n".join(["", *lines, "", ""]), encoding="utf-8")


async def _receive_and_delete(
    sqs: SQSClient, queue_url: str, *, wait_seconds: int
) -> list[MessageTypeDef]:
    """One receive of up to ten; deleted at once so that later FIFO messages become visible."""
    return await take_messages(sqs, queue_url, wait_seconds=wait_seconds)


async def _drain(sqs: SQSClient, queue_url: str, expected: int) -> list[MessageTypeDef]:
    """Every message on the queue: ``expected`` of them, then a last look finds no more."""
    received: list[MessageTypeDef] = []
    while len(received) < expected:
        messages = await _receive_and_delete(sqs, queue_url, wait_seconds=1)
        if not messages:
            break
        received.extend(messages)
    received.extend(await _receive_and_delete(sqs, queue_url, wait_seconds=0))
    return received


async def test_send_enqueues_every_non_blank_line_with_its_body_unchanged(
    tmp_path: Path, local_resources: LocalResources, sqs_client: SQSClient
) -> None:
    bodies = _bodies(LINES)
    path = tmp_path / "messages.jsonl"
    _write_with_blank_lines(path, bodies)
    environment = cli_environment({"MODERATION_QUEUE_URL": local_resources.queue_url})

    result = await run_cli_async(Invocation(["send", str(path)], environment=environment))

    assert result.returncode == 0, result.err
    received = await _drain(sqs_client, local_resources.queue_url, LINES)
    assert Counter(message["Body"] for message in received) == Counter(bodies)


async def test_send_to_a_fifo_queue_groups_messages_by_conversation_in_file_order(
    tmp_path: Path, fifo_resources: LocalResources, sqs_client: SQSClient
) -> None:
    bodies = _bodies(12)
    path = tmp_path / "messages.jsonl"
    path.write_text("\n".join(bodies) + "\n", encoding="utf-8")
    environment = cli_environment({"MODERATION_QUEUE_URL": fifo_resources.queue_url})

    result = await run_cli_async(Invocation(["send", str(path)], environment=environment))

    assert result.returncode == 0, result.err
    received = await _drain(sqs_client, fifo_resources.queue_url, len(bodies))
    assert sorted(message["Body"] for message in received) == sorted(bodies)
    groups: defaultdict[str, set[str]] = defaultdict(set)
    order: defaultdict[str, list[str]] = defaultdict(list)
    for message in received:
        document = json.loads(message["Body"])
        groups[document["conversation_id"]].add(message["Attributes"]["MessageGroupId"])
        order[document["conversation_id"]].append(document["id"])
    assert all(len(group_ids) == 1 for group_ids in groups.values()), groups
    assert len(set.union(*groups.values())) == len(groups)  # one group per conversation
    assert all(ids == sorted(ids) for ids in order.values()), order  # FIFO within a group
