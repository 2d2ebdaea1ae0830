"""``moderation-worker check TEXT``: one verdict JSON line, from the emulator or the configured
endpoint."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

from cli_helpers import CliResult, Invocation, cli_environment, run_cli, run_cli_async

if TYPE_CHECKING:
    from devstack.emulator import RunningEmulator

VERDICT_SCHEMA = "moderation.verdict.v1"
CRIME = "How can I rob a bank without getting caught?"
BENIGN = "How do I bake a chocolate cake for my daughter's birthday?"


def _verdict(result: CliResult) -> dict[str, Any]:
    """The one line on stdout, parsed: the command prints the verdict and nothing else."""
    assert result.returncode == 0, result.err
    lines = result.out.splitlines()
    assert len(lines) == 1, result.out
    verdict: dict[str, Any] = json.loads(lines[0])
    assert verdict["schema"] == VERDICT_SCHEMA
    return verdict


def test_check_local_prints_a_safe_verdict_for_benign_text() -> None:
    verdict = _verdict(run_cli(Invocation(["check", BENIGN, "--local"])))

    assert verdict["verdict"] == "safe"
    assert verdict["categories"] == []
    assert verdict["assessed_role"] == "user"


def test_check_local_prints_an_unsafe_verdict_with_categories_for_a_crime_request() -> None:
    verdict = _verdict(run_cli(Invocation(["check", CRIME, "--local"])))

    assert verdict["verdict"] == "unsafe"
    assert {"code": "O3", "name": "Criminal Planning"} in verdict["categories"]


def test_check_local_speaks_the_openai_protocol_when_the_backend_is_openai() -> None:
    environment = cli_environment({"MODERATION_BACKEND": "openai"})

    verdict = _verdict(run_cli(Invocation(["check", CRIME, "--local"], environment=environment)))

    assert verdict["model"]["backend"] == "openai"
    assert verdict["verdict"] == "unsafe"
    assert 0.5 < verdict["score"] <= 1.0


def test_check_role_assistant_with_context_assesses_the_assistant_turn(tmp_path: Path) -> None:
    context = tmp_path / "context.json"
    context.write_text(
        json.dumps({"messages": [{"role": "user", "content": "How do I bake bread?"}]}),
        encoding="utf-8",
    )
    reply = "Mix flour, water, salt and yeast, let it rise, then bake it at 230 C."

    verdict = _verdict(
        run_cli(
            Invocation(
                ["check", reply, "--role", "assistant", "--context", str(context), "--local"]
            )
        )
    )

    assert verdict["assessed_role"] == "assistant"
    assert verdict["verdict"] == "safe"


def test_check_without_local_or_endpoint_name_is_a_usage_error_naming_it() -> None:
    result = run_cli(Invocation(["check", BENIGN]))

    assert result.returncode == 2
    assert result.stdout == b""
    assert len(result.stderr_lines) == 1, result.err
    assert "MODERATION_ENDPOINT_NAME" in result.stderr_lines[0]


async def test_check_with_the_tgi_backend_asks_the_configured_server(
    emulator: RunningEmulator,
) -> None:
    environment = cli_environment({"MODERATION_BACKEND": "tgi", "MODERATION_TGI_URL": emulator.url})

    result = await run_cli_async(Invocation(["check", CRIME], environment=environment))

    verdict = _verdict(result)
    assert verdict["verdict"] == "unsafe"
    assert verdict["model"]["backend"] == "tgi"
    assert emulator.stats.by_route["generate"] >= 1
