"""Traces with OpenTelemetry (the optional ``otel`` extra): one span per message, continuing the
producer's trace and handed on to the verdict's consumers.

Per message, on the runner's task:

    moderate message (CONSUMER; parent: the source message's ``traceparent``; starts at receipt)
    ├── model call   (CLIENT, one per prompt sent, retries inside it)
    └── publish verdict (PRODUCER; its context becomes the verdict's ``traceparent`` attribute)

So a trace runs producer → moderation → consumer. Message text is never put on a span.

When tracing is on. ``open_tracing`` uses, in order: a tracer provider some other code installed
globally (``opentelemetry-instrument`` with the distro, which reads every ``OTEL_*`` variable);
else one it builds itself when the OTLP exporter is installed and ``OTEL_EXPORTER_OTLP_ENDPOINT``
or ``OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`` is set (the SDK and the exporter then read the other
standard variables themselves: ``OTEL_SERVICE_NAME``, ``OTEL_RESOURCE_ATTRIBUTES``,
``OTEL_TRACES_SAMPLER``, headers, timeouts). ``OTEL_SDK_DISABLED=true`` or
``OTEL_TRACES_EXPORTER=none`` turn it off. Like botocore with ``AWS_*``, these ``OTEL_*``
variables are the SDK's own, which is why this module, and not ``worker.settings``, looks at them.

When it is off (the extra is not installed, or nothing configures an exporter), nothing is
wrapped: no span, no per-message cost, and the verdict carries the source message's
``traceparent`` unchanged, as it always has, so a trace still links producer and consumer.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import TYPE_CHECKING, Final

from worker import __version__

if TYPE_CHECKING:
    from opentelemetry.sdk.trace import TracerProvider

    from worker.otel_spans import MessageTracing

INSTRUMENTATION_NAME: Final = "moderation-worker"
_ENDPOINT_VARIABLES: Final = ("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "OTEL_EXPORTER_OTLP_ENDPOINT")


@contextmanager
def open_tracing(environ: Mapping[str, str] = os.environ) -> Iterator[MessageTracing | None]:
    """Tracing as configured (None when off); a provider built here is flushed and shut on exit."""
    # PLC0415: the extra is optional; without it these imports fail and tracing is off.
    try:
        from opentelemetry import trace  # noqa: PLC0415
        from opentelemetry.sdk.trace import TracerProvider  # noqa: PLC0415

        from worker.otel_spans import MessageTracing  # noqa: PLC0415
    except ImportError:
        yield None
        return
    installed = trace.get_tracer_provider()
    if isinstance(installed, TracerProvider):
        yield MessageTracing(installed.get_tracer(INSTRUMENTATION_NAME, __version__))
        return
    provider = _provider_from(environ)
    if provider is None:
        yield None
        return
    try:
        yield MessageTracing(provider.get_tracer(INSTRUMENTATION_NAME, __version__))
    finally:
        provider.shutdown()


def _provider_from(environ: Mapping[str, str]) -> TracerProvider | None:
    if environ.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
        return None
    if environ.get("OTEL_TRACES_EXPORTER", "").strip().lower() == "none":
        return None
    if not any(environ.get(name) for name in _ENDPOINT_VARIABLES):
        return None
    # PLC0415: optional, as above; the exporter may be missing where the SDK is installed.
    try:
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import (  # noqa: PLC0415
            OTLPSpanExporter,
        )
    except ImportError:
        return None
    from opentelemetry.sdk.resources import SERVICE_NAME, Resource  # noqa: PLC0415
    from opentelemetry.sdk.trace import TracerProvider  # noqa: PLC0415
    from opentelemetry.sdk.trace.export import BatchSpanProcessor  # noqa: PLC0415

    resource = Resource.create()  # OTEL_SERVICE_NAME and OTEL_RESOURCE_ATTRIBUTES
    if str(resource.attributes.get(SERVICE_NAME, "")).startswith("unknown_service"):
        resource = resource.merge(Resource({SERVICE_NAME: INSTRUMENTATION_NAME}))
    # Not installed as the global provider: the worker owns it, and shuts it down on exit.
    provider = TracerProvider(resource=resource)
    provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
    return provider
