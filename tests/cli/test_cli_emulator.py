"""``moderation-worker emulator``: the emulator alone as a server process, and its fault options."""

from __future__ import annotations

import asyncio
import re
import signal
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from typing import Any

from aiohttp import ClientSession, ClientTimeout
from cli_helpers import CLI, REPO_ROOT, cli_environment, free_port

from worker.core.models import Turn
from worker.core.prompt import render_prompt
from worker.core.taxonomy import PromptFormat, default_taxonomy

START_TIMEOUT = 20.0
STOP_TIMEOUT = 10.0
PARAMETERS = {"max_new_tokens": 32, "return_full_text": False, "details": True, "top_n_tokens": 5}
URL_IN_BANNER = re.compile(r"\bon (http://\S+)")


def _request(content: str) -> dict[str, Any]:
    fmt = PromptFormat.LLAMA_GUARD_1
    prompt = render_prompt([Turn("user", content)], fmt, default_taxonomy(fmt)).text
    return {"inputs": prompt, "parameters": PARAMETERS}


@asynccontextmanager
async def _emulator_process(
    *options: str, port: int | None = None
) -> AsyncIterator[tuple[asyncio.subprocess.Process, str]]:
    """Start ``emulator`` (on a free port by default); yields the process and the URL its banner
    names. Whatever happens in the block, the process is gone afterwards (killed if still up).
    """
    port = free_port() if port is None else port
    process = await asyncio.create_subprocess_exec(
        *CLI,
        "emulator",
        "--port",
        str(port),
        *options,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env=cli_environment(),
        cwd=REPO_ROOT,
    )
    try:
        assert process.stdout is not None
        banner = await asyncio.wait_for(process.stdout.readline(), timeout=START_TIMEOUT)
        match = URL_IN_BANNER.search(banner.decode("utf-8"))
        assert match is not None, banner
        yield process, match.group(1)
    finally:
        if process.returncode is None:
            process.kill()
        # communicate() also drains and closes the pipes, so no transport is left behind.
        await asyncio.wait_for(process.communicate(), timeout=STOP_TIMEOUT)


async def _post_generate(url: str, bodies: Sequence[dict[str, Any]]) -> list[tuple[int, Any]]:
    async with ClientSession(timeout=ClientTimeout(total=10)) as http:
        answers: list[tuple[int, Any]] = []
        for body in bodies:
            async with http.post(f"{url}/generate", json=body) as response:
                answers.append((response.status, await response.json()))
        return answers


async def test_emulator_serves_tgi_generate_on_the_given_port() -> None:
    port = free_port()

    async with _emulator_process(port=port) as (_, url):
        [(status, answer)] = await _post_generate(url, [_request("How do I rob a bank?")])

    assert url == f"http://127.0.0.1:{port}"
    assert status == 200
    assert isinstance(answer, dict)
    assert answer["generated_text"].splitlines()[0] == "unsafe"
    assert answer["details"]["tokens"]


async def test_emulator_exits_0_on_sigterm() -> None:
    async with _emulator_process() as (process, _):
        process.send_signal(signal.SIGTERM)
        returncode = await asyncio.wait_for(process.wait(), timeout=STOP_TIMEOUT)

    assert returncode == 0


async def test_emulator_with_throttle_rate_1_answers_every_generate_with_429() -> None:
    async with _emulator_process("--throttle-rate", "1") as (_, url):
        answers = await _post_generate(url, [_request(f"Hello number {n}") for n in range(3)])

    assert [status for status, _ in answers] == [429, 429, 429]
