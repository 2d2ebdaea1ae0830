"""``moderation-worker run`` as a child process serves its probes on ``MODERATION_METRICS_PORT``.

moto and the emulator run in this test process; the child reaches them through the standard
``AWS_ENDPOINT_URL*`` variables, as in production.
"""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Final

from test_health_probes import ENDPOINT_NAME, WITHIN, get, probe_until

if TYPE_CHECKING:
    from devstack.emulator import RunningEmulator
    from devstack.moto_stack import LocalResources

PROJECT_ROOT: Final = Path(__file__).resolve().parents[2]


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


async def test_the_worker_process_serves_healthz_and_readyz_and_drains_on_sigterm(
    local_resources: LocalResources, emulator: RunningEmulator
) -> None:
    port = free_port()
    environment = {
        name: value for name, value in os.environ.items() if not name.startswith("MODERATION_")
    } | {
        **local_resources.environment(),
        "AWS_ENDPOINT_URL_SAGEMAKER_RUNTIME": emulator.url,
        "MODERATION_ENDPOINT_NAME": ENDPOINT_NAME,
        "MODERATION_METRICS_PORT": str(port),
        "MODERATION_RECEIVE_WAIT_SECONDS": "1",
    }
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "worker.cli",
        "run",
        env=environment,
        cwd=PROJECT_ROOT,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.DEVNULL,
    )
    try:
        # Until the child listens, the probe is refused: keep asking.
        ready = await probe_until(
            f"http://127.0.0.1:{port}/readyz", lambda probe: probe.status == 200
        )
        alive = await asyncio.to_thread(get, f"http://127.0.0.1:{port}/healthz")
        process.send_signal(signal.SIGTERM)
        exit_code = await asyncio.wait_for(process.wait(), WITHIN)
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()

    assert ready.body["status"] == "pass"
    assert alive.status == 200
    assert exit_code == 0
