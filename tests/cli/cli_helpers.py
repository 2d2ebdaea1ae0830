"""Running ``moderation-worker`` as a real subprocess: its environment, its runs, its output.

Every CLI test starts ``python -m worker.cli`` with the test's own interpreter, so what is checked
is what a user's shell sees: exit code, stdout bytes and stderr lines. The environment starts from
the test's (the autouse fixture has already hidden the real ``AWS_*`` and set dummy credentials)
with every ``MODERATION_*`` variable removed, so only what a test sets configures the command.
"""

from __future__ import annotations

import asyncio
import os
import re
import socket
import subprocess
import sys
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final

from devstack.moto_stack import LOCAL_ACCESS_KEY, LOCAL_REGION

REPO_ROOT: Final = Path(__file__).resolve().parents[2]
VECTORS_DIR: Final = Path(__file__).resolve().parents[1] / "data" / "llama-guard"
PROMPT_VECTORS: Final = VECTORS_DIR / "prompt-vectors.json"
CLI: Final = (sys.executable, "-m", "worker.cli")

# Seconds a short command (argument parsing, start-up checks, one prompt) may take; generous,
# since the interpreter start and imports alone take over a second on a loaded CI machine.
SHORT_TIMEOUT: Final = 30.0
# How many short commands run side by side: each is one process busy importing on one core.
PARALLEL_RUNS: Final = max(2, min(4, os.cpu_count() or 2))

_ANSI_ESCAPE: Final = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")


# What the autouse fixture sets, for environments built outside a test (module-scoped fixtures
# are set up before it): dummy credentials and no AWS configuration file of the developer's.
ISOLATED_AWS: Final = {
    "AWS_ACCESS_KEY_ID": LOCAL_ACCESS_KEY,
    "AWS_SECRET_ACCESS_KEY": LOCAL_ACCESS_KEY,
    "AWS_DEFAULT_REGION": LOCAL_REGION,
    "AWS_CONFIG_FILE": os.devnull,
    "AWS_SHARED_CREDENTIALS_FILE": os.devnull,
    "AWS_EC2_METADATA_DISABLED": "true",
}


def cli_environment(
    variables: Mapping[str, str] | None = None, *, inherit_aws: bool = True
) -> dict[str, str]:
    """The test's environment minus ``MODERATION_*``, plus ``variables``.

    With ``inherit_aws`` false every ``AWS_*`` variable is dropped too (add ``ISOLATED_AWS`` to
    give dummy credentials back). ``COLUMNS`` is fixed wide so that rich does not wrap its
    tables at the default 80 columns.
    """
    environment = {
        name: value
        for name, value in os.environ.items()
        if not name.startswith("MODERATION_") and (inherit_aws or not name.startswith("AWS_"))
    }
    environment["COLUMNS"] = "200"
    environment.pop("FORCE_COLOR", None)
    environment.update(variables or {})
    return environment


@dataclass(frozen=True, slots=True)
class Invocation:
    """One command line to run: its arguments, its stdin bytes and its environment."""

    args: Sequence[str]
    environment: Mapping[str, str] = field(default_factory=cli_environment)
    stdin: bytes = b""
    timeout: float = SHORT_TIMEOUT


@dataclass(frozen=True, slots=True)
class CliResult:
    """What a finished command left behind."""

    returncode: int
    stdout: bytes
    stderr: bytes

    @property
    def out(self) -> str:
        """stdout decoded, with any terminal escape sequences removed."""
        return _ANSI_ESCAPE.sub("", self.stdout.decode("utf-8"))

    @property
    def err(self) -> str:
        """stderr decoded."""
        return self.stderr.decode("utf-8")

    @property
    def stderr_lines(self) -> list[str]:
        """The non-empty lines of stderr."""
        return [line for line in self.err.splitlines() if line.strip()]


def run_cli(invocation: Invocation) -> CliResult:
    """Run one command to completion (killed, and the test failed, after its timeout)."""
    completed = subprocess.run(  # noqa: S603 - our own interpreter and module, fixed arguments
        [*CLI, *invocation.args],
        input=invocation.stdin,
        capture_output=True,
        env=dict(invocation.environment),
        cwd=REPO_ROOT,
        timeout=invocation.timeout,
        check=False,
    )
    return CliResult(completed.returncode, completed.stdout, completed.stderr)


def run_cli_many(
    invocations: Mapping[str, Invocation], *, at_once: int = PARALLEL_RUNS
) -> dict[str, CliResult]:
    """Run independent commands ``at_once`` at a time; results by the same keys."""
    with ThreadPoolExecutor(max_workers=at_once) as pool:
        futures = {key: pool.submit(run_cli, item) for key, item in invocations.items()}
        return {key: future.result() for key, future in futures.items()}


async def run_cli_async(invocation: Invocation) -> CliResult:
    """Run one command without blocking the event loop (servers on the test's loop keep
    answering it); killed, and the test failed, after its timeout."""
    process = await asyncio.create_subprocess_exec(
        *CLI,
        *invocation.args,
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env=dict(invocation.environment),
        cwd=REPO_ROOT,
    )
    try:
        stdout, stderr = await asyncio.wait_for(
            process.communicate(invocation.stdin), timeout=invocation.timeout
        )
    except TimeoutError:
        process.kill()
        await process.wait()
        raise
    assert process.returncode is not None
    return CliResult(process.returncode, stdout, stderr)


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def table_rows(text: str) -> list[list[str]]:
    """The body rows of every rich table in ``text``, as lists of stripped cell texts."""
    return [
        [cell.strip() for cell in line[1:-1].split("│")]
        for line in text.splitlines()
        if line.startswith("│") and line.endswith("│")
    ]
