"""Moderating one message: decode, render, classify, decide, publish; the result is an outcome.

The pipeline never touches the queue: it returns ``Ack``, ``RetryLater`` or ``DeadLetter`` and the
runner turns that into SQS calls. It never imports botocore either: adapters raise the project's
own errors.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Final

import structlog

from worker.cache import Answer, AssessmentCache
from worker.core.completion import parse_completion, unsafe_probability
from worker.core.decision import Assessment, Decision, decide, ordered_flags
from worker.core.errors import (
    EndpointFailure,
    EndpointRejected,
    InvalidMessage,
    PromptTooLong,
)
from worker.core.messages import ModerationRequest, decode_request
from worker.core.prompt import (
    LLAMA3_TOKENIZER_FORMATS,
    PromptPlan,
    RenderedPrompt,
    plan_prompts,
    prepare_conversation,
)
from worker.core.taxonomy import PromptFormat, Taxonomy
from worker.core.tokens import CHARACTERS, Llama3Tokenizer, PromptMeasure
from worker.core.verdict import (
    BackendName,
    CategoryRef,
    Flag,
    ModelRef,
    Verdict,
    sns_message,
    too_large_to_publish,
)
from worker.ports import Classifier, Publication, ReceivedMessage, VerdictSink

log = structlog.get_logger(__name__)

# After a "too many tokens" rejection the budget shrinks to this share of the longest prompt sent.
_SHRINK_FACTOR: Final = 0.75
_MAX_SHRINKS: Final = 3
# A message that needs more chunks than this is refused rather than flooding the endpoint (a
# budget shrunk close to the fixed template would otherwise leave room for a few words a chunk).
MAX_PROMPTS_PER_MESSAGE: Final = 32


@dataclass(frozen=True, slots=True)
class Ack:
    """The verdict was accepted by the sink: delete the message."""

    verdict: Verdict


@dataclass(frozen=True, slots=True)
class RetryLater:
    """Something transient failed: release the message for a later attempt, never delete it."""

    reason: str


@dataclass(frozen=True, slots=True)
class DeadLetter:
    """The message can never be moderated: move it to the dead-letter queue with the reason."""

    error_code: str
    detail: str


Outcome = Ack | RetryLater | DeadLetter


@dataclass(frozen=True, slots=True)
class ModerationPolicy:
    """What the pipeline needs to know about the model and the product's rules."""

    prompt_format: PromptFormat
    taxonomy: Taxonomy
    unsafe_threshold: float | None = None
    max_prompt_chars: int = 12_000
    max_conversation_chars: int = 100_000
    log_content: bool = False
    # With the Llama 3 tokenizer (the ``tokens`` extra), formats that use it are budgeted in
    # tokens: 4,096 of context minus the answer's 32.
    tokenizer: Llama3Tokenizer | None = None
    max_prompt_tokens: int = 4_064

    def prompt_budget(self) -> tuple[PromptMeasure, int]:
        """How prompts are measured and their budget: tokens where exact, else characters."""
        if self.tokenizer is not None and self.prompt_format in LLAMA3_TOKENIZER_FORMATS:
            return self.tokenizer.measure(), self.max_prompt_tokens
        return CHARACTERS, self.max_prompt_chars


_HTTP_BACKENDS: Final[dict[str, BackendName]] = {"tgi": "tgi", "openai": "openai"}


def _backend_name(backend: str) -> BackendName:
    """The verdict's name for a classifier's backend; SageMaker whatever protocol it speaks."""
    return _HTTP_BACKENDS.get(backend, "sagemaker")


class Moderator:
    """Handles one message from start to finish and says what should happen to it."""

    def __init__(
        self,
        classifier: Classifier,
        sink: VerdictSink,
        policy: ModerationPolicy,
        *,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
        cache: AssessmentCache | None = None,
    ) -> None:
        self._classifier = classifier
        self._sink = sink
        self._policy = policy
        self._clock = clock
        self._cache = cache
        self.handling = 0  # messages in ``handle`` now (read by the batching sink)
        self._model = ModelRef(
            backend=_backend_name(classifier.backend),
            endpoint=classifier.endpoint,
            prompt_format=str(policy.prompt_format),
        )

    async def handle(self, message: ReceivedMessage) -> Outcome:
        self.handling += 1
        try:
            return await self._handle(message)
        finally:
            self.handling -= 1

    async def _handle(self, message: ReceivedMessage) -> Outcome:
        try:
            request = decode_request(
                message.body, max_conversation_chars=self._policy.max_conversation_chars
            )
        except InvalidMessage as exc:
            content = {"body": message.body[:2000]} if self._policy.log_content else {}
            log.warning(
                "message_invalid", error_code=exc.error_code, error_detail=exc.detail, **content
            )
            return DeadLetter(exc.error_code, exc.detail)
        with structlog.contextvars.bound_contextvars(request_id=request.id):
            return await self._moderate_and_publish(request, message)

    async def _moderate_and_publish(
        self, request: ModerationRequest, message: ReceivedMessage
    ) -> Outcome:
        try:
            verdict = await self.moderate(request, received_at=message.received_at)
        except PromptTooLong as exc:
            # The only endpoint answer that is about the message itself.
            log.warning("prompt_too_long", error=str(exc))
            return DeadLetter("prompt_too_long", str(exc))
        except EndpointRejected as exc:
            # A deployment problem (not found, access denied, a 4xx, an unreadable answer):
            # someone has to act, so ERROR, with the endpoint's own words. The message waits.
            # TRY400: no traceback wanted, one line per message; the endpoint's text is `error`.
            log.error("endpoint_rejected", kind=exc.kind, error=str(exc))  # noqa: TRY400
            return RetryLater(f"endpoint {exc.kind}: {exc}")
        except EndpointFailure as exc:
            log.warning("classifier_unavailable", error_type=type(exc).__name__, error=str(exc))
            return RetryLater(f"classifier: {exc}")
        # Built once: measured here, then sent as it is by the sink.
        sns = sns_message(
            verdict,
            traceparent=message.trace.traceparent,
            aws_trace_header=message.trace.aws_trace_header,
        )
        too_large = too_large_to_publish(verdict, sns)
        if too_large is not None:
            # Publishing would fail the same way on every attempt: dead-letter it now.
            log.warning("verdict_too_large", error_code="verdict_too_large", error_detail=too_large)
            return DeadLetter("verdict_too_large", too_large)
        (error,) = await self._sink.publish([Publication(verdict, message.trace, sns)])
        if error is not None:
            log.warning("publish_failed", error=str(error))
            return RetryLater(f"publish: {error}")
        content = {"content": request.assessed.content} if self._policy.log_content else {}
        log.info(
            "verdict_published",
            **content,
            verdict=verdict.verdict,
            categories=[category.code for category in verdict.categories],
            score=verdict.score,
            flags=list(verdict.flags),
        )
        return Ack(verdict)

    async def moderate(self, request: ModerationRequest, *, received_at: datetime) -> Verdict:
        """Ask the model about a request and build its verdict (without publishing it)."""
        plan, answers = await self._assess_within_budget(request)
        decision = decide(
            [answer.assessment for answer in answers], threshold=self._policy.unsafe_threshold
        )
        cached = any(answer.cached for answer in answers)
        return self._verdict(request, plan, decision, received_at, cached=cached)

    async def _assess_within_budget(
        self, request: ModerationRequest
    ) -> tuple[PromptPlan, list[Answer]]:
        policy = self._policy
        # Neutralising reads every character: once per message, not once per budget tried.
        conversation = prepare_conversation(request.turns)
        measure, budget = policy.prompt_budget()
        shrinks = 0
        while True:
            plan = plan_prompts(
                conversation,
                policy.prompt_format,
                policy.taxonomy,
                budget,
                max_prompts=MAX_PROMPTS_PER_MESSAGE,
                measure=measure,
            )
            try:
                return plan, [await self._assess(prompt) for prompt in plan.prompts]
            except PromptTooLong:
                if shrinks == _MAX_SHRINKS:
                    raise
                shrinks += 1
                # The safety net: the endpoint counted more than we did (another tokenizer, a
                # smaller context). Measuring whole prompts happens only on this rare path.
                longest = max(measure.size(prompt.text) for prompt in plan.prompts)
                budget = int((longest + measure.server_added) * _SHRINK_FACTOR)
                log.info("prompt_budget_shrunk", max_prompt_size=budget, unit=measure.unit)

    async def _assess(self, prompt: RenderedPrompt) -> Answer:
        """One prompt's answer, from the cache when it holds one (or a call for it is in flight)."""
        if self._cache is None:
            return Answer(await self._ask(prompt), cached=False)
        return await self._cache.answer(prompt.text, lambda: self._ask(prompt), keep=_worth_keeping)

    async def _ask(self, prompt: RenderedPrompt) -> Assessment:
        """The model's answer to one prompt; unparseable output gets exactly one more call."""
        completion = await self._classifier.classify(prompt.text)
        parsed = parse_completion(completion.generated_text, self._policy.taxonomy)
        if parsed.verdict == "invalid":
            log.warning("model_output_invalid", reason=parsed.reason, attempt=1)
            completion = await self._classifier.classify(prompt.text)
            parsed = parse_completion(completion.generated_text, self._policy.taxonomy)
            if parsed.verdict == "invalid":
                log.warning("model_output_invalid", reason=parsed.reason, attempt=2)
        return Assessment(parsed, unsafe_probability(completion.details))

    def _verdict(
        self,
        request: ModerationRequest,
        plan: PromptPlan,
        decision: Decision,
        received_at: datetime,
        *,
        cached: bool,
    ) -> Verdict:
        flags = set(decision.flags)
        if cached:
            flags.add(Flag.CACHED)
        if any(prompt.neutralized for prompt in plan.prompts):
            flags.add(Flag.CONTENT_NEUTRALIZED)
        if plan.context_truncated:
            flags.add(Flag.CONTEXT_TRUNCATED)
        if plan.chunked:
            flags.add(Flag.CHUNKED)
        taxonomy = self._policy.taxonomy
        return Verdict(
            id=request.id,
            conversation_id=request.conversation_id,
            verdict=decision.verdict,
            categories=tuple(
                CategoryRef(code=code, name=taxonomy.name_of(code) or code)
                for code in decision.categories
            ),
            unknown_codes=decision.unknown_codes,
            score=decision.score,
            assessed_role=request.assessed.role,
            model=self._model,
            flags=ordered_flags(flags),
            attributes=dict(request.attributes),
            received_at=received_at,
            decided_at=self._clock(),
        )


def _worth_keeping(assessment: Assessment) -> bool:
    """A fail-closed answer (unparseable twice) is never cached: the next message asks again."""
    return assessment.parsed.verdict != "invalid"
