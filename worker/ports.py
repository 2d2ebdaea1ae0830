"""The three interfaces the pipeline needs: a message source, a classifier and a verdict sink.

Adapters (SQS, SNS, SageMaker, TGI) and the in-memory fakes in ``devstack.fakes`` implement them.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Protocol

from worker.core.models import Completion
from worker.core.verdict import SnsMessage, Verdict

__all__ = [
    "Classifier",
    "ClassifierInFront",
    "Completion",
    "MessageSource",
    "Publication",
    "ReceivedMessage",
    "TraceContext",
    "VerdictSink",
]


@dataclass(frozen=True, slots=True)
class TraceContext:
    """Trace headers carried from the source message onto the verdict."""

    traceparent: str | None = None
    aws_trace_header: str | None = None


@dataclass(frozen=True, slots=True)
class ReceivedMessage:
    """One message as received from the source, with what is needed to ack or release it."""

    message_id: str
    receipt_handle: str
    body: str
    receive_count: int
    received_at: datetime
    group_id: str | None = None
    trace: TraceContext = field(default_factory=TraceContext)


@dataclass(frozen=True, slots=True)
class Publication:
    """A verdict ready to publish, with the trace headers it carries.

    ``sns`` is the SNS message when the caller already built it (to measure it): a sink that
    publishes to SNS sends it as it is rather than building it again.
    """

    verdict: Verdict
    trace: TraceContext = field(default_factory=TraceContext)
    sns: SnsMessage | None = None


class MessageSource(Protocol):
    """Where messages come from and where their fate is recorded."""

    async def receive(self, max_messages: int, wait_seconds: int) -> Sequence[ReceivedMessage]:
        """Long-poll for up to ``max_messages``; an empty result means none arrived in time."""
        ...

    async def delete(self, messages: Sequence[ReceivedMessage]) -> Sequence[ReceivedMessage]:
        """Delete messages; returns the ones that could not be deleted."""
        ...

    async def change_visibility(
        self, changes: Sequence[tuple[ReceivedMessage, int]]
    ) -> Sequence[ReceivedMessage]:
        """Set each message's visibility timeout (0 releases it); returns the failures."""
        ...

    async def dead_letter(self, message: ReceivedMessage, error_code: str, detail: str) -> bool:
        """Copy the original body to the dead-letter queue with the reason.

        Returns False when no dead-letter queue is configured (the message is then left for the
        queue's redrive policy). Raises ``SourceError`` when the copy failed.
        """
        ...


class Classifier(Protocol):
    """A Llama Guard endpoint: one prompt in, one completion out."""

    @property
    def backend(self) -> str:
        """``sagemaker`` or ``tgi``."""
        ...

    @property
    def endpoint(self) -> str:
        """The endpoint name or base URL, as reported on verdicts."""
        ...

    async def classify(self, prompt: str) -> Completion:
        """Send one prompt; raises a ``ClassifierError`` subclass on failure."""
        ...


class ClassifierInFront:
    """A classifier in front of another one (retries, the endpoint guard, tracing): it reports
    the inner one's backend and endpoint and passes each call on; a subclass overrides
    ``classify`` to add its part."""

    def __init__(self, inner: Classifier) -> None:
        self._inner = inner

    @property
    def backend(self) -> str:
        return self._inner.backend

    @property
    def endpoint(self) -> str:
        return self._inner.endpoint

    async def classify(self, prompt: str) -> Completion:
        return await self._inner.classify(prompt)


class VerdictSink(Protocol):
    """Where verdicts go (the safe and unsafe topics)."""

    async def publish(self, publications: Sequence[Publication]) -> Sequence[Exception | None]:
        """Publish verdicts together; returns, per publication, None or the ``SinkError``."""
        ...
