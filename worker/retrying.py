"""Retrying transient classifier failures with exponential backoff and jitter (tenacity)."""

from __future__ import annotations

from dataclasses import dataclass

import structlog
from tenacity import (
    AsyncRetrying,
    RetryCallState,
    retry_if_exception_type,
    retry_if_not_exception_type,
    stop_after_attempt,
    stop_after_delay,
    wait_exponential_jitter,
)

from worker.core.errors import CircuitOpen, TransientClassifierError
from worker.core.models import Completion
from worker.ports import Classifier

log = structlog.get_logger(__name__)


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """How hard to try one prompt before the message is released for a later attempt.

    ``deadline`` bounds the whole effort so it fits inside the message's visibility window.
    """

    attempts: int = 5
    initial_backoff: float = 0.2
    max_backoff: float = 5.0
    deadline: float = 30.0


class RetryingClassifier:
    """A classifier that retries transient failures of another one; the rest pass through.

    Only ``TransientClassifierError`` is retried here. An ``EndpointRejected`` (endpoint not
    found, access denied, another 4xx, an unreadable body) is a deployment problem that will not
    change within the few hundred milliseconds of a retry: asking again would only add load and
    hold the message. It goes straight back to the pipeline, which releases the message with
    the runner's backoff (seconds to minutes), while the circuit breaker counts it.
    ``PromptTooLong`` is the pipeline's to handle (it shrinks the prompt).
    """

    def __init__(self, inner: Classifier, policy: RetryPolicy) -> None:
        self._inner = inner
        self._policy = policy

    @property
    def backend(self) -> str:
        return self._inner.backend

    @property
    def endpoint(self) -> str:
        return self._inner.endpoint

    async def classify(self, prompt: str) -> Completion:
        policy = self._policy
        retrying = AsyncRetrying(
            # An open circuit is already the verdict of many failures: no point retrying now.
            retry=retry_if_exception_type(TransientClassifierError)
            & retry_if_not_exception_type(CircuitOpen),
            stop=stop_after_attempt(policy.attempts) | stop_after_delay(policy.deadline),
            # initial * 2**n plus up to one initial of jitter, so parallel retries spread out.
            wait=wait_exponential_jitter(
                multiplier=policy.initial_backoff,
                jitter=policy.initial_backoff,
                max=policy.max_backoff,
            ),
            before_sleep=_log_retry,
            reraise=True,
        )
        return await retrying(self._inner.classify, prompt)


def _log_retry(state: RetryCallState) -> None:
    error = state.outcome.exception() if state.outcome else None
    log.warning(
        "classifier_retry",
        attempt=state.attempt_number,
        error_type=type(error).__name__,
        sleep_seconds=round(state.upcoming_sleep, 3),
    )
