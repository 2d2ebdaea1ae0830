"""The ``moderation-worker`` command: run, check and prompt, plus the development commands.

The development tools (``local``, ``emulator``, ``send`` and ``check --local``) live in the
``devstack`` package, which the container image does not contain. They are found through the
entry points below, so production code never imports them: where they are not installed the
commands are simply absent and ``check --local`` says so.

Exit codes: 0 success, 2 usage or configuration error, 1 anything else.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib.util
import json
import sys
from collections.abc import Callable, Sequence
from contextlib import AbstractAsyncContextManager, AsyncExitStack
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import Any, Final

from worker import __version__
from worker.core.errors import ConfigurationError, InvalidMessage
from worker.core.messages import ModerationRequest, decode_conversation
from worker.core.models import Turn
from worker.core.prompt import render_prompt
from worker.core.taxonomy import PromptFormat
from worker.ports import Publication
from worker.shutdown import install_stop_signals

EXIT_OK: Final = 0
EXIT_FAILURE: Final = 1
EXIT_USAGE: Final = 2
FORMATS: Final = [str(fmt) for fmt in PromptFormat]


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the console script; returns the process exit code."""
    parser = _parser()
    args = parser.parse_args(argv)
    try:
        result: int = args.handler(args)
    except ConfigurationError as exc:
        print(f"moderation-worker: configuration error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        return EXIT_OK
    return result


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="moderation-worker",
        description="Moderate chat messages from SQS with Llama Guard and publish verdicts to SNS.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    run = commands.add_parser("run", help="run the production worker (configured by environment)")
    run.add_argument("--burst", action="store_true", help="stop when the queue is empty")
    run.set_defaults(handler=_cmd_run)

    check = commands.add_parser("check", help="moderate one message and print the verdict JSON")
    check.add_argument("text", help="the message to assess")
    check.add_argument("--role", choices=["user", "assistant"], default="user")
    check.add_argument(
        "--context", type=Path, help='JSON file {"messages": [...]} of earlier turns'
    )
    check.add_argument(
        "--local",
        action="store_true",
        help="use the Llama Guard emulator (development tools only)",
    )
    check.set_defaults(handler=_cmd_check)

    prompt = commands.add_parser(
        "prompt", help='print the exact prompt for {"messages": [...]} on stdin'
    )
    prompt.add_argument("--format", choices=FORMATS, default="llama-guard-1", dest="prompt_format")
    prompt.add_argument("--taxonomy", type=Path, help="custom categories (YAML or JSON)")
    prompt.set_defaults(handler=_cmd_prompt)

    _add_development_commands(commands)
    return parser


def _cmd_run(args: argparse.Namespace) -> int:
    from contextlib import ExitStack

    from worker.app import open_worker, policy_from
    from worker.health import Health, HealthPolicy
    from worker.logs import configure_logging
    from worker.metrics import serving
    from worker.settings import load_settings
    from worker.tracing import open_tracing

    settings = load_settings()
    configure_logging(settings.log_format)
    policy_from(settings)  # a bad taxonomy file stops start-up here, before any connection
    health = Health(HealthPolicy.for_receive_wait(settings.receive_wait_seconds))

    async def work() -> None:
        stop = install_stop_signals()
        health.watch_stop(stop)
        async with open_worker(
            settings, burst=args.burst, health=health, tracing=tracing
        ) as worker:
            await worker.runner.run(stop)

    with ExitStack() as edges:
        if settings.metrics_port:
            edges.enter_context(serving(settings.metrics_port, health))
        tracing = edges.enter_context(open_tracing())
        asyncio.run(work())
    return EXIT_OK


def _cmd_check(args: argparse.Namespace) -> int:
    from worker.app import build_classifier, policy_from, retry_policy_from
    from worker.pipeline import Moderator
    from worker.retrying import RetryingClassifier
    from worker.settings import load_model_settings

    turns = (*_context_turns(args.context), Turn(role=args.role, content=args.text))
    request = ModerationRequest(id="check", conversation_id=None, turns=turns)
    local_endpoint = _local_endpoint() if args.local else None

    async def moderate() -> str:
        async with AsyncExitStack() as stack:
            overrides: dict[str, object] = {}
            if local_endpoint is not None:
                overrides = await stack.enter_async_context(local_endpoint())
            settings = load_model_settings(**overrides)
            classifier = await build_classifier(settings, stack, pool_size=4)
            moderator = Moderator(
                RetryingClassifier(classifier, retry_policy_from(settings)),
                _NoPublishing(),
                policy_from(settings),
            )
            verdict = await moderator.moderate(request, received_at=datetime.now(UTC))
            return verdict.to_json()

    print(asyncio.run(moderate()))
    return EXIT_OK


class _NoPublishing:
    """``check`` prints the verdict; nothing is ever published."""

    async def publish(self, publications: Sequence[Publication]) -> Sequence[Exception | None]:
        raise RuntimeError("moderation-worker check does not publish verdicts")


# Entry-point groups the development package (devstack) fills in.
COMMANDS_GROUP: Final = "moderation_worker.commands"
LOCAL_ENDPOINT_GROUP: Final = "moderation_worker.local_endpoint"
LocalEndpoint = Callable[[], AbstractAsyncContextManager[dict[str, object]]]


def _add_development_commands(commands: argparse._SubParsersAction[Any]) -> None:
    """Let each installed plugin add its subcommands (the development tools add three)."""
    for entry_point in _installed(COMMANDS_GROUP):
        register: Callable[[argparse._SubParsersAction[Any]], None] = entry_point.load()
        register(commands)


def _local_endpoint() -> LocalEndpoint:
    """The development tools' local model endpoint, or a usage error where they are absent."""
    for entry_point in _installed(LOCAL_ENDPOINT_GROUP):
        endpoint: LocalEndpoint = entry_point.load()
        return endpoint
    raise ConfigurationError(
        "--local needs the development tools (the devstack package), which this installation"
        " does not have; point MODERATION_* at an endpoint instead"
    )


def _installed(group: str) -> list[metadata.EntryPoint]:
    """The group's entry points whose module can be imported here.

    The image is built from the production package alone, but the project's metadata still names
    the devstack entry points: those whose package is absent are skipped, not errors.
    """
    found = []
    for entry_point in metadata.entry_points(group=group):
        module = entry_point.module
        if importlib.util.find_spec(module.partition(".")[0]) is not None:
            found.append(entry_point)
    return found


def _context_turns(path: Path | None) -> tuple[Turn, ...]:
    if path is None:
        return ()
    try:
        document = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ConfigurationError(f"--context: cannot read {path}: {exc}") from exc
    try:
        return decode_conversation(document)
    except InvalidMessage as exc:
        raise ConfigurationError(f"--context: {exc.detail}") from exc


def _cmd_prompt(args: argparse.Namespace) -> int:
    from worker.taxonomy_file import load_taxonomy

    prompt_format = PromptFormat(args.prompt_format)
    taxonomy = load_taxonomy(prompt_format, args.taxonomy, setting="--taxonomy")
    raw = sys.stdin.buffer.read()
    try:
        turns = decode_conversation(json.loads(raw.decode("utf-8")))
    except (ValueError, UnicodeDecodeError) as exc:
        print(f"moderation-worker: stdin is not JSON: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except InvalidMessage as exc:
        print(f"moderation-worker: {exc.error_code}: {exc.detail}", file=sys.stderr)
        return EXIT_USAGE
    rendered = render_prompt(turns, prompt_format, taxonomy)
    sys.stdout.buffer.write(rendered.text.encode("utf-8"))
    sys.stdout.flush()
    return EXIT_OK


if __name__ == "__main__":
    raise SystemExit(main())
