"""When tracing is on: never without the extra, never unconfigured, and with an OTLP endpoint set,
spans are exported there (a local HTTP server standing in for a collector)."""

from __future__ import annotations

import http.server
import subprocess
import sys
import textwrap
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import ClassVar, Final

import pytest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from worker.otel_spans import MessageTracing
from worker.tracing import open_tracing

PROJECT_ROOT: Final = Path(__file__).resolve().parents[2]


def test_without_the_extra_tracing_is_off_and_production_modules_never_import_it() -> None:
    """A child interpreter in which ``opentelemetry`` cannot be imported, as without the extra."""
    script = textwrap.dedent(
        """
        import sys
        sys.modules["opentelemetry"] = None  # import opentelemetry now raises ImportError
        import worker.app, worker.cli, worker.health, worker.metrics, worker.runner
        from worker.tracing import open_tracing
        with open_tracing({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:9"}) as tracing:
            assert tracing is None, tracing
        loaded = [name for name in sys.modules if name.startswith("opentelemetry.")]
        assert loaded == [], loaded
        print("off")
        """
    )
    result = subprocess.run(  # noqa: S603 - our own interpreter and script
        [sys.executable, "-c", script],
        cwd=PROJECT_ROOT,
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert (result.returncode, result.stdout.strip()) == (0, "off"), result.stderr


def test_with_the_extra_but_no_endpoint_tracing_is_off() -> None:
    with open_tracing({}) as tracing:
        assert tracing is None


@pytest.mark.parametrize(
    "switch", [{"OTEL_SDK_DISABLED": "true"}, {"OTEL_TRACES_EXPORTER": "none"}]
)
def test_the_standard_off_switches_turn_tracing_off(switch: dict[str, str]) -> None:
    environ = {"OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:9"} | switch
    with open_tracing(environ) as tracing:
        assert tracing is None


class Collector(http.server.BaseHTTPRequestHandler):
    """An OTLP/HTTP trace receiver: keeps each export request's spans."""

    received: ClassVar[list[ExportTraceServiceRequest]] = []

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"]))
        request = ExportTraceServiceRequest()
        request.ParseFromString(body)
        if self.path == "/v1/traces":
            Collector.received.append(request)
        self.send_response(200)
        self.send_header("Content-Type", "application/x-protobuf")
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002 - the base's name
        pass


@pytest.fixture
def collector() -> Iterator[str]:
    Collector.received = []
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Collector)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_port}"
    server.shutdown()
    server.server_close()
    thread.join()


def test_with_an_otlp_endpoint_spans_are_exported_there_when_tracing_closes(
    monkeypatch: pytest.MonkeyPatch, collector: str
) -> None:
    # The exporter reads the standard variables from the environment itself.
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", collector)
    monkeypatch.setenv("OTEL_SERVICE_NAME", "moderation-test")
    with open_tracing() as tracing:
        assert isinstance(tracing, MessageTracing)
        with tracing.tracer.start_as_current_span("moderate message"):
            pass

    [request] = Collector.received
    [resource_spans] = request.resource_spans
    service = {
        attribute.key: attribute.value.string_value
        for attribute in resource_spans.resource.attributes
    }["service.name"]
    names = [span.name for scope in resource_spans.scope_spans for span in scope.spans]
    assert (service, names) == ("moderation-test", ["moderate message"])
