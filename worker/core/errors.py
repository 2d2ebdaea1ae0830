"""The project's one error tree, and the one detector of "prompt too long" every backend uses.

Adapters translate vendor errors into this tree at the boundary::

    ModerationError
    ├── ConfigurationError          start-up refuses to run          not retryable
    ├── InvalidMessage              body can never be moderated      dead-letter
    ├── ClassifierError             the model endpoint gave no usable answer
    │   ├── EndpointFailure         the endpoint's fault, not the message's: release, back off
    │   │   ├── TransientClassifierError                             retried inside the call
    │   │   │   ├── EndpointThrottled     throttling, 429, model busy
    │   │   │   ├── EndpointUnavailable   5xx, not ready, timeout, no connection
    │   │   │   └── CircuitOpen           not called: the endpoint is known to be down
    │   │   └── EndpointRejected    not found, access denied, 4xx    not retried inside the call
    │   │       └── UnreadableResponse    body not JSON or of the wrong shape
    │   └── PromptTooLong           over the token budget: shrink and ask again, then dead-letter
    ├── SinkError                   SNS refused a verdict            retryable: message comes back
    └── SourceError                 SQS receive/delete/visibility    retryable: logged, backed off

``retryable`` on each class says whether the same call may succeed if sent again at once.
``kind`` on each classifier error is its stable label in logs and in the
``moderation_endpoint_failures`` metric.
"""

from __future__ import annotations

import re
from typing import ClassVar, Final


class ModerationError(Exception):
    """Root of every error this project raises on purpose."""

    retryable: bool = False


class ConfigurationError(ModerationError):
    """A setting is missing or malformed; the message names the variable."""


class InvalidMessage(ModerationError):
    """A message body that can never be moderated; it is dead-lettered with the code and detail."""

    def __init__(self, error_code: str, detail: str) -> None:
        super().__init__(f"{error_code}: {detail}")
        self.error_code = error_code
        self.detail = detail


class ClassifierError(ModerationError):
    """The model endpoint did not give a usable answer."""

    kind: ClassVar[str] = "classifier_error"


class EndpointFailure(ClassifierError):
    """Something is wrong with the endpoint, not with the message: release it and try later.

    Every failure below counts towards the circuit breaker except throttling (the endpoint is up,
    only busy) and ``CircuitOpen`` (it was not called). The queue's redrive policy is the final
    stop for a message that fails for ever.
    """


class TransientClassifierError(EndpointFailure):
    """A failure that may pass within seconds: the same request is worth sending again."""

    retryable = True


class EndpointThrottled(TransientClassifierError):
    """The endpoint asked us to slow down (throttling, 429, model busy)."""

    kind = "throttled"


class EndpointUnavailable(TransientClassifierError):
    """The endpoint is down, not ready, timed out or unreachable."""

    kind = "unavailable"


class CircuitOpen(TransientClassifierError):
    """The endpoint was not called because its circuit is open; retrying now would not help."""

    kind = "circuit_open"


class EndpointRejected(EndpointFailure):
    """The endpoint refused the request: not found, access denied, another 4xx, a bad request.

    A deployment or configuration problem (a blue/green swap, a typo in the name, IAM, a
    generation parameter the server does not allow), never the message's fault.
    """

    kind = "rejected"


class UnreadableResponse(EndpointRejected):
    """The endpoint answered 200 with a body that is not the generation JSON we expect."""

    kind = "unreadable_response"


class PromptTooLong(ClassifierError):
    """The prompt exceeded the endpoint's token budget; shrink it and ask again."""

    kind = "too_long"


class SinkError(ModerationError):
    """The verdict was not accepted by the sink; the message must come back."""

    retryable = True


class SourceError(ModerationError):
    """Receiving, deleting or changing visibility of source messages failed."""

    retryable = True


# Each pattern starts with a literal and has one quantifier over digits followed by a non-digit,
# so ``search`` is linear in the message whatever the endpoint sends back.
_TOO_LONG_WORDINGS: Final = (
    # TGI: "`inputs` tokens + `max_new_tokens` must be <= 4096. Given: 4500 `inputs` tokens ..."
    re.compile(r"`inputs` tokens \+ `max_new_tokens` must be <= \d+", re.IGNORECASE),
    # TGI: "`inputs` must have less than 4000 tokens. Given: 4500"
    re.compile(r"`inputs` must have less than \d+ tokens", re.IGNORECASE),
    # vLLM (OpenAI-compatible): "This model's maximum context length is 4096 tokens. However,
    # you requested 5000 tokens (...)" and the newer "... However, your request has 5000 ..."
    re.compile(r"maximum context length is \d+ tokens", re.IGNORECASE),
    # newer vLLM (vllm/renderers/params.py): "You passed 5000 input tokens and requested 32 output
    # tokens. However, the model's context length is only 4096 tokens, resulting in ..." (and
    # the same with "input characters" when it refuses before tokenising).
    re.compile(r"the model's context length is only \d+ tokens", re.IGNORECASE),
)


def says_prompt_too_long(message: str) -> bool:
    """Whether an endpoint's error message says the prompt exceeded its token budget."""
    return any(wording.search(message) for wording in _TOO_LONG_WORDINGS)
