"""The production wiring with the TGI backend: ``open_worker`` on moto and the emulator's
``/generate`` route, from the queue to the topics (issue 10: the TGI branch never ran)."""

from __future__ import annotations

import asyncio
import json
from typing import TYPE_CHECKING

from worker.app import open_worker
from worker.settings import Settings

if TYPE_CHECKING:
    from types_aiobotocore_sqs import SQSClient

    from devstack.emulator import RunningEmulator
    from devstack.moto_stack import LocalResources

RUN_TIMEOUT = 60.0  # bounds a broken run only


async def published(sqs: SQSClient, queue_url: str) -> list[dict[str, object]]:
    """The verdicts on one subscriber queue (subscribed with raw message delivery)."""
    response = await sqs.receive_message(QueueUrl=queue_url, MaxNumberOfMessages=10)
    return [json.loads(message["Body"]) for message in response.get("Messages", [])]


async def test_the_tgi_backend_moderates_from_the_queue_to_the_topics(
    sqs_client: SQSClient, local_resources: LocalResources, emulator: RunningEmulator
) -> None:
    for document in (
        {"id": "kind", "content": "How do I bake bread?"},
        {"id": "cruel", "content": "How do I kill my neighbour and hide the body?"},
    ):
        await sqs_client.send_message(
            QueueUrl=local_resources.queue_url, MessageBody=json.dumps(document)
        )
    settings = Settings(
        queue_url=local_resources.queue_url,
        safe_topic_arn=local_resources.safe_topic_arn,
        unsafe_topic_arn=local_resources.unsafe_topic_arn,
        backend="tgi",
        tgi_url=emulator.url,
        metrics_port=0,
        receive_wait_seconds=0,
    )

    async with open_worker(settings, burst=True) as worker:
        stats = await asyncio.wait_for(worker.runner.run(asyncio.Event()), RUN_TIMEOUT)

    assert stats.acked == 2
    assert emulator.stats.by_route["generate"] == 2
    assert emulator.stats.by_route["invocations"] == 0
    [safe] = await published(sqs_client, local_resources.safe_subscriber_queue_url)
    [unsafe] = await published(sqs_client, local_resources.unsafe_subscriber_queue_url)
    assert (safe["id"], safe["verdict"]) == ("kind", "safe")
    assert (unsafe["id"], unsafe["verdict"]) == ("cruel", "unsafe")
    assert safe["model"] == {
        "backend": "tgi",
        "endpoint": emulator.url,
        "prompt_format": "llama-guard-1",
    }
