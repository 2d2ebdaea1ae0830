"""The reference consumer: the least a Python consumer on aiobotocore can do for the same job.

It makes exactly the worker's calls for each message, and nothing else: ``ReceiveMessage`` of
ten (long poll), one ``invoke_endpoint`` per message with the same request body the worker sends
(the prompt rendered by the worker's own pure ``render_prompt``, so the endpoint sees the same
bytes), ``PublishBatch`` per topic with the four verdict attributes (``verdict``, ``categories``,
``score``, ``prompt_format``), and ``DeleteMessageBatch`` of what was published. No retries, no
adaptive limits, no logs, no metrics: it is the CPU floor the worker's CPU is divided by, and it
assumes the happy path (any failure leaves the message for its visibility timeout).

With ``--in-flight K`` it is instead the goodput scenarios' oracle: a client told the endpoint's
capacity, which never has more than K model calls out and sends a throttled call again at once
(botocore's own retries are off, so nothing sleeps). No adaptive limit can beat it on the same
machine, so the worker's goodput is judged against the capacity and against this.

Run as ``python -m bench.reference`` with the standard ``AWS_*`` variables pointing at the
stack; it prints ``ready`` once its clients are open, stops after ``--messages`` settled
messages (or at SIGTERM) and prints a JSON summary line.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import signal
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Final

from aiobotocore.config import AioConfig
from aiobotocore.session import get_session
from botocore.exceptions import ClientError

from worker.core.models import Turn
from worker.core.prompt import DEFAULT_PARAMETERS, build_request_body, render_prompt
from worker.core.taxonomy import PromptFormat, default_taxonomy

if TYPE_CHECKING:
    from types_aiobotocore_sagemaker_runtime import SageMakerRuntimeClient
    from types_aiobotocore_sns import SNSClient
    from types_aiobotocore_sns.type_defs import (
        MessageAttributeValueTypeDef,
        PublishBatchRequestEntryTypeDef,
    )
    from types_aiobotocore_sqs import SQSClient
    from types_aiobotocore_sqs.type_defs import MessageTypeDef

BATCH: Final = 10
WAIT_SECONDS: Final = 1
FORMAT: Final = PromptFormat.LLAMA_GUARD_1
_TAXONOMY: Final = default_taxonomy(FORMAT)


@dataclass(frozen=True, slots=True)
class Targets:
    """Where the reference consumer reads, invokes and publishes."""

    queue_url: str
    safe_topic_arn: str
    unsafe_topic_arn: str
    endpoint_name: str


@dataclass(frozen=True, slots=True)
class Answer:
    """One message's verdict, ready to publish."""

    receipt_handle: str
    unsafe: bool
    body: str
    attributes: dict[str, MessageAttributeValueTypeDef]


class ReferenceConsumer:
    """``loops`` receive loops sharing one set of clients; stops after ``messages`` settled."""

    def __init__(
        self,
        targets: Targets,
        sqs: SQSClient,
        sns: SNSClient,
        model: SageMakerRuntimeClient,
        *,
        messages: int,
        in_flight: int = 0,
    ) -> None:
        self._targets = targets
        self._sqs = sqs
        self._sns = sns
        self._model = model
        self._wanted = messages
        self._slots = asyncio.Semaphore(in_flight) if in_flight > 0 else None
        self.settled = 0

    async def run(self, loops: int) -> None:
        """Run the loops until enough messages are settled."""
        await asyncio.gather(*(self._loop() for _ in range(loops)))

    async def _loop(self) -> None:
        while self.settled < self._wanted:
            response = await self._sqs.receive_message(
                QueueUrl=self._targets.queue_url,
                MaxNumberOfMessages=BATCH,
                WaitTimeSeconds=WAIT_SECONDS,
                MessageSystemAttributeNames=["All"],
                MessageAttributeNames=["All"],
            )
            messages = response.get("Messages", [])
            if messages:
                # Awaited first: ``self.settled += await ...`` would read the count before the
                # await and lose what the other loops added meanwhile.
                settled = await self._settle(messages)
                self.settled += settled

    async def _settle(self, messages: Sequence[MessageTypeDef]) -> int:
        answers = await asyncio.gather(*(self._answer(message) for message in messages))
        published = await asyncio.gather(
            self._publish(self._targets.safe_topic_arn, [a for a in answers if not a.unsafe]),
            self._publish(self._targets.unsafe_topic_arn, [a for a in answers if a.unsafe]),
        )
        handles = [handle for batch in published for handle in batch]
        if handles:
            await self._sqs.delete_message_batch(
                QueueUrl=self._targets.queue_url,
                Entries=[{"Id": str(i), "ReceiptHandle": h} for i, h in enumerate(handles)],
            )
        return len(handles)

    async def _answer(self, message: MessageTypeDef) -> Answer:
        received_at = datetime.now(UTC)
        document = json.loads(message["Body"])
        prompt = render_prompt([Turn("user", document["content"])], FORMAT, _TAXONOMY).text
        body = json.dumps(build_request_body(prompt, DEFAULT_PARAMETERS)).encode()
        if self._slots is None:
            generation = await self._invoke(body)
        else:
            async with self._slots:
                generation = await self._invoke_until_admitted(body)
        return _verdict(message["ReceiptHandle"], document, generation, received_at)

    async def _invoke(self, body: bytes) -> dict[str, Any]:
        response = await self._model.invoke_endpoint(
            EndpointName=self._targets.endpoint_name,
            Body=body,
            ContentType="application/json",
            Accept="application/json",
        )
        generations: list[dict[str, Any]] = json.loads(await response["Body"].read())
        (generation,) = generations
        return generation

    async def _invoke_until_admitted(self, body: bytes) -> dict[str, Any]:
        """Send until the endpoint admits the call (the emulator counts the throttled ones)."""
        while True:
            try:
                return await self._invoke(body)
            except ClientError as error:
                if error.response.get("Error", {}).get("Code") != "ThrottlingException":
                    raise

    async def _publish(self, topic_arn: str, answers: Sequence[Answer]) -> list[str]:
        if not answers:
            return []
        entries: list[PublishBatchRequestEntryTypeDef] = [
            {"Id": str(i), "Message": answer.body, "MessageAttributes": answer.attributes}
            for i, answer in enumerate(answers)
        ]
        result = await self._sns.publish_batch(
            TopicArn=topic_arn, PublishBatchRequestEntries=entries
        )
        return [answers[int(ok["Id"])].receipt_handle for ok in result.get("Successful", [])]


def _verdict(
    receipt_handle: str, document: dict[str, Any], generation: dict[str, Any], received: datetime
) -> Answer:
    first, _, rest = generation["generated_text"].strip().partition("\n")
    unsafe = first.strip() == "unsafe"
    codes = [code.strip() for code in rest.split(",") if code.strip()] if unsafe else []
    score = _unsafe_probability(generation.get("details"))
    verdict = {
        "schema": "moderation.verdict.v1",
        "id": document["id"],
        "conversation_id": None,
        "verdict": "unsafe" if unsafe else "safe",
        "categories": [{"code": code, "name": code} for code in codes],
        "unknown_codes": [],
        "score": score,
        "assessed_role": "user",
        "model": {"backend": "sagemaker", "endpoint": "bench", "prompt_format": str(FORMAT)},
        "flags": [],
        "attributes": {},
        "received_at": received.isoformat(),
        "decided_at": datetime.now(UTC).isoformat(),
    }
    attributes: dict[str, MessageAttributeValueTypeDef] = {
        "verdict": {"DataType": "String", "StringValue": verdict["verdict"]},
        "categories": {"DataType": "String.Array", "StringValue": json.dumps(codes)},
        "prompt_format": {"DataType": "String", "StringValue": str(FORMAT)},
    }
    if score is not None:
        attributes["score"] = {"DataType": "Number", "StringValue": f"{score:.4f}"}
    return Answer(receipt_handle, unsafe, json.dumps(verdict), attributes)


def _unsafe_probability(details: object) -> float | None:
    """P(unsafe) from the first token's alternatives, the plainest way."""
    if not isinstance(details, dict):
        return None
    top = details.get("top_tokens") or []
    logprobs = {entry["text"].strip(): entry["logprob"] for entry in (top[0] if top else [])}
    if "unsafe" not in logprobs or "safe" not in logprobs:
        return None
    unsafe, safe = math.exp(logprobs["unsafe"]), math.exp(logprobs["safe"])
    return unsafe / (unsafe + safe)


def model_config(in_flight: int) -> AioConfig | None:
    """The model client's settings: the oracle (``in_flight`` > 0) resends throttled calls itself,
    at once, so botocore's retries (which sleep) are off."""
    return AioConfig(retries={"total_max_attempts": 1}) if in_flight > 0 else None


async def consume(targets: Targets, *, messages: int, loops: int, in_flight: int = 0) -> int:
    """Open the clients, say ``ready``, settle ``messages`` (or stop at SIGTERM)."""
    session = get_session()
    async with (
        session.create_client("sqs") as sqs,
        session.create_client("sns") as sns,
        session.create_client("sagemaker-runtime", config=model_config(in_flight)) as model,
    ):
        consumer = ReferenceConsumer(
            targets, sqs, sns, model, messages=messages, in_flight=in_flight
        )
        sys.stdout.write("ready\n")
        sys.stdout.flush()
        work = asyncio.create_task(consumer.run(loops))
        asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, work.cancel)
        await asyncio.gather(work, return_exceptions=True)
        return consumer.settled


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.reference")
    parser.add_argument("--queue-url", required=True)
    parser.add_argument("--safe-topic-arn", required=True)
    parser.add_argument("--unsafe-topic-arn", required=True)
    parser.add_argument("--endpoint-name", required=True)
    parser.add_argument("--messages", type=int, required=True)
    parser.add_argument("--loops", type=int, default=8, help="receive loops (10 messages each)")
    parser.add_argument(
        "--in-flight",
        type=int,
        default=0,
        help="at most this many model calls at once, throttles sent again (0: no limit)",
    )
    args = parser.parse_args(argv)
    targets = Targets(
        args.queue_url, args.safe_topic_arn, args.unsafe_topic_arn, args.endpoint_name
    )
    settled = asyncio.run(
        consume(targets, messages=args.messages, loops=args.loops, in_flight=args.in_flight)
    )
    sys.stdout.write(json.dumps({"settled": settled}) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
