"""The spans of one message (imported only when the ``otel`` extra is installed: see
``worker.tracing``, which says when tracing is on and what the spans are).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from typing import TYPE_CHECKING

from opentelemetry.context import Context
from opentelemetry.trace import SpanKind, Status, StatusCode
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from worker.pipeline import Ack, DeadLetter, Outcome, RetryLater
from worker.ports import (
    Classifier,
    ClassifierInFront,
    Completion,
    Publication,
    ReceivedMessage,
    VerdictSink,
)

if TYPE_CHECKING:
    from opentelemetry.trace import Tracer

    from worker.runner import Handler


class MessageTracing:
    """Wraps the handler, the classifier and the sink so that each message gets its spans."""

    def __init__(self, tracer: Tracer) -> None:
        self.tracer = tracer
        self.propagator = TraceContextTextMapPropagator()

    def handler(self, handler: Handler) -> Handler:
        return _TracedHandler(self, handler)

    def classifier(self, classifier: Classifier) -> Classifier:
        return _TracedClassifier(self.tracer, classifier)

    def sink(self, sink: VerdictSink) -> VerdictSink:
        return _TracedSink(self, sink)


class _TracedHandler:
    def __init__(self, tracing: MessageTracing, handler: Handler) -> None:
        self._tracing = tracing
        self._handler = handler

    async def handle(self, message: ReceivedMessage) -> Outcome:
        traceparent = message.trace.traceparent
        # No traceparent: an empty context, so the span starts a trace of its own.
        parent = (
            self._tracing.propagator.extract({"traceparent": traceparent})
            if traceparent
            else Context()
        )
        with self._tracing.tracer.start_as_current_span(
            "moderate message",
            context=parent,
            kind=SpanKind.CONSUMER,
            start_time=int(message.received_at.timestamp() * 1e9),
            attributes={
                "messaging.system": "aws_sqs",
                "messaging.operation.type": "process",
                "messaging.message.id": message.message_id,
                "moderation.receive_count": message.receive_count,
            },
        ) as span:
            outcome = await self._handler.handle(message)
            if isinstance(outcome, Ack):
                span.set_attributes(
                    {"moderation.outcome": "ack", "moderation.verdict": outcome.verdict.verdict}
                )
            elif isinstance(outcome, DeadLetter):
                span.set_attributes(
                    {
                        "moderation.outcome": "dead_letter",
                        "moderation.error_code": outcome.error_code,
                    }
                )
            elif isinstance(outcome, RetryLater):
                span.set_attribute("moderation.outcome", "retry_later")
                span.set_status(Status(StatusCode.ERROR, outcome.reason))
            return outcome


class _TracedClassifier(ClassifierInFront):
    def __init__(self, tracer: Tracer, classifier: Classifier) -> None:
        super().__init__(classifier)
        self._tracer = tracer

    async def classify(self, prompt: str) -> Completion:
        with self._tracer.start_as_current_span(
            "model call",
            kind=SpanKind.CLIENT,
            attributes={
                "moderation.backend": self.backend,
                "moderation.endpoint": self.endpoint,
                "moderation.prompt_chars": len(prompt),
            },
        ):
            return await self._inner.classify(prompt)


class _TracedSink:
    def __init__(self, tracing: MessageTracing, sink: VerdictSink) -> None:
        self._tracing = tracing
        self._sink = sink

    async def publish(self, publications: Sequence[Publication]) -> Sequence[Exception | None]:
        """Publish inside a span whose context replaces each verdict's ``traceparent``."""
        with self._tracing.tracer.start_as_current_span(
            "publish verdict",
            kind=SpanKind.PRODUCER,
            attributes={"messaging.system": "aws_sns", "messaging.operation.type": "send"},
        ) as span:
            carrier: dict[str, str] = {}
            self._tracing.propagator.inject(carrier)
            traceparent = carrier.get("traceparent")
            if traceparent is not None:
                # The prebuilt SNS message carries the old traceparent: the sink builds it anew.
                publications = [
                    replace(p, trace=replace(p.trace, traceparent=traceparent), sns=None)
                    for p in publications
                ]
            results = await self._sink.publish(publications)
            failed = next((error for error in results if error is not None), None)
            if failed is not None:
                span.set_status(Status(StatusCode.ERROR, str(failed)))
            return results
