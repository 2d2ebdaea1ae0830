"""A server in a child process that says its URL on stdout and serves until its stdin closes.

The harnesses (chaos runs, the bench) start moto and the emulator this way so each has a core of
its own, and a child whose parent dies (its stdin closes) ends with it.
"""

from __future__ import annotations

import select
import subprocess
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path


@contextmanager
def child_server(
    command: Sequence[str],
    *,
    name: str,
    start_seconds: float,
    stop_seconds: float,
    cwd: Path | None = None,
) -> Iterator[str]:
    """Run ``command``; yield the URL it prints first; close its stdin and wait for it on exit."""
    process = subprocess.Popen(  # noqa: S603 - the harness's own interpreter and arguments
        list(command),
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
        cwd=cwd,
    )
    stdin, stdout = process.stdin, process.stdout
    if stdin is None or stdout is None:  # never: both are pipes; this tells mypy
        raise RuntimeError(f"{name} has no pipes")
    try:
        # Bounded: wait for the first line (the URL) at most so long; the rest is never read.
        ready, _, _ = select.select([stdout], [], [], start_seconds)
        url = stdout.readline().strip() if ready else ""
        if not url.startswith("http://"):
            raise RuntimeError(f"{name} did not start")
        yield url
    finally:
        stdin.close()  # the child's signal to stop
        try:
            process.wait(timeout=stop_seconds)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        stdout.close()
