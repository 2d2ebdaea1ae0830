"""The development commands of ``moderation-worker``: ``local``, ``emulator``, ``send``, and the
emulator behind ``check --local``. Registered through the entry points in pyproject.toml.
"""

from __future__ import annotations

import argparse
import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, Final

from pydantic_settings import BaseSettings, SettingsConfigDict

from worker.cli import EXIT_OK, FORMATS
from worker.core.errors import ConfigurationError
from worker.shutdown import install_stop_signals

BACKENDS: Final = ("sagemaker", "tgi", "openai")
PROTOCOLS: Final = ("tgi", "openai")


def register(commands: argparse._SubParsersAction[Any]) -> None:
    """Add the development subcommands to the ``moderation-worker`` parser."""
    local = commands.add_parser("local", help="run everything on an embedded local stack")
    local.add_argument("--input", type=Path, help="JSON Lines file of messages to feed")
    local.add_argument(
        "--serve", action="store_true", help="keep the stack and worker up; print its environment"
    )
    local.add_argument("--format", choices=FORMATS, default="llama-guard-1", dest="prompt_format")
    local.add_argument(
        "--backend",
        choices=BACKENDS,
        default="sagemaker",
        help="how the worker reaches the emulator: its SageMaker route, TGI's /generate, or"
        " the OpenAI-compatible /v1/completions (as vLLM)",
    )
    local.add_argument(
        "--sagemaker-protocol",
        choices=PROTOCOLS,
        default="tgi",
        help="with --backend sagemaker: the body sent, TGI's or OpenAI completions (LMI)",
    )
    local.set_defaults(handler=_cmd_local)

    emulator = commands.add_parser("emulator", help="serve the Llama Guard emulator alone")
    _add_emulator_options(emulator)
    emulator.set_defaults(handler=_cmd_emulator)

    send = commands.add_parser("send", help="enqueue a JSON Lines file to MODERATION_QUEUE_URL")
    send.add_argument("file", type=Path)
    send.set_defaults(handler=_cmd_send)


class _LocalProtocolSettings(BaseSettings):
    """What ``check --local`` reads of the configuration: which protocol to speak."""

    model_config = SettingsConfigDict(env_prefix="MODERATION_", extra="ignore")

    backend: str = "tgi"
    sagemaker_protocol: str = "tgi"


@asynccontextmanager
async def local_endpoint() -> AsyncIterator[dict[str, object]]:
    """An emulator for ``check --local``: the model settings that point at it, while it runs.

    The emulator is reached over HTTP, with the OpenAI completions protocol when
    MODERATION_BACKEND is ``openai`` (or MODERATION_SAGEMAKER_PROTOCOL is), else TGI's.
    """
    from devstack.emulator import EmulatorConfig, run_emulator
    from devstack.emulator.config import EMULATOR_MODEL

    configured = _LocalProtocolSettings()
    openai = "openai" in (configured.backend, configured.sagemaker_protocol)
    async with run_emulator(EmulatorConfig()) as emulator:
        if openai:
            yield {"backend": "openai", "openai_url": emulator.url, "openai_model": EMULATOR_MODEL}
        else:
            yield {"backend": "tgi", "tgi_url": emulator.url}


def _cmd_local(args: argparse.Namespace) -> int:
    from devstack.demo import run_local

    return asyncio.run(
        run_local(
            input_path=args.input,
            serve=args.serve,
            prompt_format=args.prompt_format,
            backend=args.backend,
            sagemaker_protocol=args.sagemaker_protocol,
        )
    )


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
    parser.add_argument(
        "--queue-size",
        type=int,
        default=0,
        help="requests above --capacity that wait their turn (a queueing server, like TGI or"
        " vLLM); only a full queue throttles. 0: throttle at once above the capacity",
    )
    parser.add_argument("--max-total-tokens", type=int, default=4096)
    parser.add_argument("--seed", type=int, default=0, help="makes injected faults repeatable")
    parser.add_argument("--hang-seconds", type=float, default=30.0)
    for name, what in _FAULT_RATES:
        parser.add_argument(f"--{name}-rate", type=float, default=0.0, help=f"share: {what}")


def _cmd_emulator(args: argparse.Namespace) -> int:
    from devstack.emulator import EmulatorConfig, FaultPlan, run_emulator

    try:
        config = EmulatorConfig(
            latency_ms=args.latency_ms,
            latency_jitter_ms=args.latency_jitter_ms,
            capacity=args.capacity,
            queue_size=args.queue_size,
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
                f"  OpenAI:    POST {emu.url}/v1/completions (as vLLM)\n"
                f"  faults:    PUT {emu.url}/emulator/faults  counts: GET {emu.url}/emulator/stats",
                flush=True,
            )
            await stop.wait()

    asyncio.run(serve())
    return EXIT_OK


def _cmd_send(args: argparse.Namespace) -> int:
    from devstack.sending import send_file

    return asyncio.run(send_file(args.file))
