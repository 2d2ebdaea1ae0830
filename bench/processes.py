"""The bench's servers as child processes: LocalStack (SQS, SNS) and the model endpoint.

LocalStack runs from its own virtualenv (``make bench`` installs it, pinned, into
``.venv-localstack``: it needs Python >= 3.13) as a plain host process, no Docker:
``python -m localstack.runtime.main`` with only SQS and SNS, listening on 127.0.0.1, queue URLs
in path style (``http://127.0.0.1:PORT/queue/...``, so no DNS is involved), its files under the
run's directory and no network calls of its own (no certificate download, no analytics, no DNS
server). The endpoint is the Llama Guard emulator in a process of its own (``python -m
bench.processes endpoint ...``), so its timing does not share a core with the bench's own loop.
Every wait here is bounded.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Final

from devstack.child_server import child_server
from devstack.emulator import EmulatorConfig, run_emulator

LOCALSTACK_START_SECONDS: Final = 120.0
_STOP_SECONDS: Final = 30.0
_HEALTH_POLL_SECONDS: Final = 0.5
_ENDPOINT_START_SECONDS: Final = 30.0
_SERVICES: Final = ("sqs", "sns")


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def localstack_environment(port: int, root: Path) -> dict[str, str]:
    """LocalStack's settings for a host process with only SQS and SNS on 127.0.0.1:``port``."""
    return {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": str(root),
        "SERVICES": ",".join(_SERVICES),
        "GATEWAY_LISTEN": f"127.0.0.1:{port}",
        "LOCALSTACK_HOST": f"127.0.0.1:{port}",
        "SQS_ENDPOINT_STRATEGY": "path",
        # Not in a container, whatever the cgroups say: keep every file under ``root``.
        "OVERRIDE_IN_DOCKER": "0",
        "FILESYSTEM_ROOT": str(root / "filesystem"),
        "DNS_ADDRESS": "0",
        "SKIP_SSL_CERT_DOWNLOAD": "1",
        "DISABLE_EVENTS": "1",
    }


@contextmanager
def localstack_server(python: Path, root: Path) -> Iterator[str]:
    """Start LocalStack with ``python`` (its venv's interpreter); yields its URL; stops it."""
    root.mkdir(parents=True, exist_ok=True)
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    with (root / "localstack.log").open("wb") as log:
        process = subprocess.Popen(  # noqa: S603 - the interpreter the Makefile installed
            [str(python.absolute()), "-m", "localstack.runtime.main"],
            env=localstack_environment(port, root),
            cwd=root,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    try:
        _wait_healthy(url, process)
        yield url
    finally:
        _stop(process)


def _wait_healthy(url: str, process: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + LOCALSTACK_START_SECONDS
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"LocalStack exited with code {process.returncode} (see its log)")
        if _services_ready(url):
            return
        time.sleep(_HEALTH_POLL_SECONDS)
    raise RuntimeError(f"LocalStack did not become healthy within {LOCALSTACK_START_SECONDS}s")


def _services_ready(url: str) -> bool:
    try:
        # S310: our own LocalStack on 127.0.0.1, always http.
        with urllib.request.urlopen(f"{url}/_localstack/health", timeout=2) as response:  # noqa: S310
            services = json.load(response).get("services", {})
    except (OSError, ValueError):
        return False
    return all(services.get(name) in {"available", "running"} for name in _SERVICES)


def _stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
    try:
        process.wait(timeout=_STOP_SECONDS)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


@contextmanager
def endpoint_server(config: EmulatorConfig) -> Iterator[str]:
    """The emulator with ``config`` in a child process; yields its URL; stops when done."""
    command = [
        sys.executable,
        "-m",
        "bench.processes",
        "endpoint",
        f"--latency-ms={config.latency_ms}",
        f"--queue-size={config.queue_size}",
    ]
    if config.capacity is not None:
        command.append(f"--capacity={config.capacity}")
    with child_server(
        command,
        name="the endpoint process",
        start_seconds=_ENDPOINT_START_SECONDS,
        stop_seconds=_STOP_SECONDS,
        cwd=Path(__file__).resolve().parents[1],
    ) as url:
        yield url


async def _serve_endpoint(config: EmulatorConfig) -> None:
    async with run_emulator(config) as emulator:
        sys.stdout.write(emulator.url + "\n")
        sys.stdout.flush()
        await asyncio.to_thread(sys.stdin.read)  # until the parent closes it (or dies)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.processes")
    commands = parser.add_subparsers(dest="command", required=True)
    endpoint = commands.add_parser("endpoint", help="serve the emulator until stdin closes")
    endpoint.add_argument("--latency-ms", type=float, default=0.0)
    endpoint.add_argument("--capacity", type=int, default=None)
    endpoint.add_argument("--queue-size", type=int, default=0)
    args = parser.parse_args(argv)
    config = EmulatorConfig(
        latency_ms=args.latency_ms, capacity=args.capacity, queue_size=args.queue_size
    )
    asyncio.run(_serve_endpoint(config))
    return 0


if __name__ == "__main__":
    sys.exit(main())
