"""The ``moderation-worker`` command: run, local, check, prompt, emulator and send.

Exit codes: 0 success, 2 usage or configuration error, 1 anything else.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from collections.abc import Sequence
from contextlib import AsyncExitStack
from datetime import UTC, datetime
from pathlib import Path
from typing import Final

from worker import __version__
from worker.core.errors import ConfigurationError, InvalidMessage
from worker.core.messages import ModerationRequest, decode_conversation
from worker.core.models import Turn
from worker.core.prompt import render_prompt
from worker.core.taxonomy import PromptFormat
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

    local = commands.add_parser("local", help="run everything on an embedded local stack")
    local.add_argument("--input", type=Path, help="JSON Lines file of messages to feed")
    local.add_argument(
        "--serve", action="store_true", help="keep the stack and worker up; print its environment"
    )
    local.add_argument("--format", choices=FORMATS, default="llama-guard-1", dest="prompt_format")
    local.set_defaults(handler=_cmd_local)

    check = commands.add_parser("check", help="moderate one message and print the verdict JSON")
    check.add_argument("text", help="the message to assess")
    check.add_argument("--role", choices=["user", "assistant"], default="user")
    check.add_argument(
        "--context", type=Path, help='JSON file {"messages": [...]} of earlier turns'
    )
    check.add_argument("--local", action="store_true", help="use the built-in emulator")
    check.set_defaults(handler=_cmd_check)

    prompt = commands.add_parser(
        "prompt", help='print the exact prompt for {"messages": [...]} on stdin'
    )
    prompt.add_argument("--format", choices=FORMATS, default="llama-guard-1", dest="prompt_format")
    prompt.add_argument("--taxonomy", type=Path, help="custom categories (YAML or JSON)")
    prompt.set_defaults(handler=_cmd_prompt)

    emulator = commands.add_parser("emulator", help="serve the Llama Guard emulator alone")
    _add_emulator_options(emulator)
    emulator.set_defaults(handler=_cmd_emulator)

    send = commands.add_parser("send", help="enqueue a JSON Lines file to MODERATION_QUEUE_URL")
    send.add_argument("file", type=Path)
    send.set_defaults(handler=_cmd_send)
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


def _cmd_local(args: argparse.Namespace) -> int:
    from worker.demo import run_local

    return asyncio.run(
        run_local(input_path=args.input, serve=args.serve, prompt_format=args.prompt_format)
    )


def _cmd_check(args: argparse.Namespace) -> int:
    from worker.app import build_classifier, policy_from, retry_policy_from
    from worker.fakes import InMemorySink
    from worker.pipeline import Moderator
    from worker.retrying import RetryingClassifier
    from worker.settings import load_model_settings

    turns = (*_context_turns(args.context), Turn(role=args.role, content=args.text))
    request = ModerationRequest(id="check", conversation_id=None, turns=turns)

    async def moderate() -> str:
        async with AsyncExitStack() as stack:
            overrides: dict[str, object] = {}
            if args.local:
                from worker.emulator import EmulatorConfig, run_emulator

                emulator = await stack.enter_async_context(run_emulator(EmulatorConfig()))
                overrides = {"backend": "tgi", "tgi_url": emulator.url}
            settings = load_model_settings(**overrides)
            classifier = await build_classifier(settings, stack, pool_size=4)
            moderator = Moderator(
                RetryingClassifier(classifier, retry_policy_from(settings)),
                InMemorySink(),
                policy_from(settings),
            )
            verdict = await moderator.moderate(request, received_at=datetime.now(UTC))
            return verdict.to_json()

    print(asyncio.run(moderate()))
    return EXIT_OK


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


_FAULT_RATES: Final = (
    ("throttle", "ThrottlingException / 429 overloaded"),
    ("not-ready", "ModelNotReadyException"),
    ("server-error", "503 ServiceUnavailable"),
    ("model-error", "ModelError with original status 500"),
    ("hang", "hold the request for --hang-seconds"),
    ("invalid-output", "an unparseable completion"),
    ("not-found", "endpoint not found (SageMaker 400 ValidationError, TGI 404)"),
    ("unreadable-response", "200 with an HTML page instead of JSON"),
)


def _add_emulator_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8080)
    parser.add_argument("--latency-ms", type=float, default=0.0, help="added to every answer")
    parser.add_argument("--latency-jitter-ms", type=float, default=0.0)
    parser.add_argument(
        "--capacity", type=int, help="concurrent requests served; beyond it, throttling"
    )
    parser.add_argument("--max-total-tokens", type=int, default=4096)
    parser.add_argument("--seed", type=int, default=0, help="makes injected faults repeatable")
    parser.add_argument("--hang-seconds", type=float, default=30.0)
    for name, what in _FAULT_RATES:
        parser.add_argument(f"--{name}-rate", type=float, default=0.0, help=f"share: {what}")


def _cmd_emulator(args: argparse.Namespace) -> int:
    from worker.emulator import EmulatorConfig, FaultPlan, run_emulator

    try:
        config = EmulatorConfig(
            latency_ms=args.latency_ms,
            latency_jitter_ms=args.latency_jitter_ms,
            capacity=args.capacity,
            max_total_tokens=args.max_total_tokens,
            seed=args.seed,
        )
        faults = FaultPlan()
        rates = {f"{name.replace('-', '_')}_rate" for name, _ in _FAULT_RATES}
        faults.update({"hang_seconds": args.hang_seconds} | {r: getattr(args, r) for r in rates})
    except (TypeError, ValueError) as exc:
        raise ConfigurationError(f"emulator options: {exc}") from exc

    async def serve() -> None:
        stop = install_stop_signals()
        async with run_emulator(config, host=args.host, port=args.port, faults=faults) as emu:
            print(
                f"Llama Guard emulator (a development stand-in, not a safety model) on {emu.url}\n"
                f"  SageMaker: POST {emu.url}/endpoints/NAME/invocations\n"
                f"  TGI:       POST {emu.url}/generate\n"
                f"  faults:    PUT {emu.url}/emulator/faults  counts: GET {emu.url}/emulator/stats",
                flush=True,
            )
            await stop.wait()

    asyncio.run(serve())
    return EXIT_OK


def _cmd_send(args: argparse.Namespace) -> int:
    from worker.sending import send_file

    return asyncio.run(send_file(args.file))


if __name__ == "__main__":
    raise SystemExit(main())
