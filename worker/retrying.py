"""Retrying transient classifier failures with exponential backoff and jitter (tenacity).

The first attempt is a plain call: the retry machinery is built only once it failed with an
error worth retrying, so the usual, successful call costs nothing extra. A throttle is retried
after a short jittered wait (``throttle_backoff``, doubling, full jitter): the call gave its
endpoint slot back when it was refused, the limiter has already lowered the limit, and waiting
for a free slot again is the real back-off; a long sleep would only leave capacity unused.
"""

from __future__ import annotations

import random
import time
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

from worker.core.errors import CircuitOpen, EndpointThrottled, TransientClassifierError
from worker.core.models import Completion
from worker.ports import Classifier, ClassifierInFront

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
    throttle_backoff: float = 0.01


class RetryingClassifier(ClassifierInFront):
    """A classifier that retries transient failures of another one; the rest pass through.

    Only ``TransientClassifierError`` is retried here. An ``EndpointRejected`` (endpoint not
    found, access denied, another 4xx, an unreadable body) is a deployment problem that will not
    change within the few hundred milliseconds of a retry: asking again would only add load and
    hold the message. It goes straight back to the pipeline, which releases the message with
    the runner's backoff (seconds to minutes), while the circuit breaker counts it.
    ``PromptTooLong`` is the pipeline's to handle (it shrinks the prompt).
    """

    def __init__(self, inner: Classifier, policy: RetryPolicy) -> None:
        super().__init__(inner)
        self._policy = policy
        #: How many calls needed the retry machinery (their first attempt failed and was retryable).
        self.retry_loops = 0

    async def classify(self, prompt: str) -> Completion:
        started = time.monotonic()
        try:
            return await self._inner.classify(prompt)
        except CircuitOpen:
            raise  # an open circuit is already the verdict of many failures
        except TransientClassifierError as exc:
            if self._policy.attempts <= 1:
                raise
            first_failure: TransientClassifierError | None = exc
        self.retry_loops += 1

        async def attempt() -> Completion:
            # Tenacity's first attempt replays the failure already seen, so attempts, waits and
            # logs count exactly as if it had made that call itself.
            nonlocal first_failure
            if first_failure is not None:
                failure, first_failure = first_failure, None
                raise failure
            return await self._inner.classify(prompt)

        policy = self._policy
        retrying = AsyncRetrying(
            retry=retry_if_exception_type(TransientClassifierError)
            & retry_if_not_exception_type(CircuitOpen),
            stop=stop_after_attempt(policy.attempts)
            | stop_after_delay(max(policy.deadline - (time.monotonic() - started), 0.0)),
            wait=_Backoff(policy),
            before_sleep=_log_retry,
            reraise=True,
        )
        return await retrying(attempt)


class _Backoff:
    """Short waits after a throttle; otherwise initial * 2**n plus up to one initial of jitter,
    so parallel retries spread out."""

    def __init__(self, policy: RetryPolicy) -> None:
        self._policy = policy
        self._exponential = wait_exponential_jitter(
            multiplier=policy.initial_backoff,
            jitter=policy.initial_backoff,
            max=policy.max_backoff,
        )

    def __call__(self, state: RetryCallState) -> float:
        error = state.outcome.exception() if state.outcome else None
        if isinstance(error, EndpointThrottled):
            ceiling = self._policy.throttle_backoff * 2 ** (state.attempt_number - 1)
            return random.uniform(0, min(ceiling, self._policy.max_backoff))  # noqa: S311 - jitter
        return self._exponential(state)


def _log_retry(state: RetryCallState) -> None:
    error = state.outcome.exception() if state.outcome else None
    log.warning(
        "classifier_retry",
        attempt=state.attempt_number,
        error_type=type(error).__name__,
        sleep_seconds=round(state.upcoming_sleep, 3),
    )
