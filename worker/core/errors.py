"""The project's one error tree; adapters translate vendor errors into it at the boundary.

    ModerationError
    ├── ConfigurationError            start-up refuses to run        not retryable
    ├── InvalidMessage                body can never be moderated    not retryable: dead-letter
    ├── ClassifierError               the model endpoint failed
    │   ├── TransientClassifierError                                 retryable
    │   │   ├── EndpointThrottled     throttling, 429, model busy
    │   │   ├── EndpointUnavailable   5xx, not ready, timeout, no connection
    │   │   └── CircuitOpen           not called: the endpoint is known to be down
    │   ├── PromptTooLong             token budget exceeded          shrink the prompt, ask again
    │   └── PermanentClassifierError  validation, 4xx, bad answer    not retryable: dead-letter
    ├── SinkError                     SNS refused a verdict          retryable: message comes back
    └── SourceError                   SQS receive/delete/visibility  retryable: logged, backed off

``retryable`` on each class says whether the same call may succeed later unchanged.
"""

from __future__ import annotations


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


class TransientClassifierError(ClassifierError):
    """A failure that may pass: the same request is worth sending again later."""

    retryable = True


class EndpointThrottled(TransientClassifierError):
    """The endpoint asked us to slow down (throttling, 429, model busy)."""


class EndpointUnavailable(TransientClassifierError):
    """The endpoint is down, not ready, timed out or unreachable."""


class CircuitOpen(TransientClassifierError):
    """The endpoint was not called because its circuit is open; retrying now would not help."""


class PromptTooLong(ClassifierError):
    """The prompt exceeded the endpoint's token budget; shrink it and ask again."""


class PermanentClassifierError(ClassifierError):
    """The endpoint rejected the request for good (validation, 4xx, unusable response)."""


class SinkError(ModerationError):
    """The verdict was not accepted by the sink; the message must come back."""

    retryable = True


class SourceError(ModerationError):
    """Receiving, deleting or changing visibility of source messages failed."""

    retryable = True
