"""``moderation-worker local``: the whole product on an embedded stack, for a first look.

Starts moto's server (SQS and SNS) and the Llama Guard emulator on 127.0.0.1, creates the queues
and topics, feeds sample conversations, runs the real worker against them and shows each verdict
as it arrives on the subscriber queues, then what landed in the dead-letter queue and why.
"""

from __future__ import annotations

import asyncio
import json
import os
from collections.abc import Mapping
from contextlib import AsyncExitStack
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

from rich.console import Console
from rich.live import Live
from rich.table import Table

from devstack.emulator.config import EMULATOR_MODEL
from devstack.emulator.server import EmulatorConfig, run_emulator
from devstack.moto_stack import LocalResources, provision, start_moto_server, take_messages
from devstack.sending import read_lines
from worker.adapters.aws import QUEUES_ONLY, AwsClients, open_aws_clients
from worker.app import open_worker
from worker.logs import configure_logging
from worker.settings import load_settings
from worker.shutdown import install_stop_signals

if TYPE_CHECKING:
    from types_aiobotocore_sqs import SQSClient

EMULATOR_ENDPOINT: Final = "llama-guard-emulator"
REGION: Final = "us-east-1"
_POLL_SECONDS: Final = 1


async def run_local(
    *,
    input_path: Path | None,
    serve: bool,
    prompt_format: str,
    backend: str = "sagemaker",
    sagemaker_protocol: str = "tgi",
) -> int:
    """Run the demo (or, with ``serve``, keep the stack up until interrupted).

    ``backend`` is how the worker reaches the emulator: ``sagemaker`` (its SageMaker route, with
    ``sagemaker_protocol``'s body), ``tgi`` (``/generate``) or ``openai`` (``/v1/completions``).
    """
    console = Console()
    configure_logging("console", level=30)  # warnings only: the tables are the demo's output
    bodies = _read_bodies(input_path)  # a bad --input stops here, before anything starts
    async with AsyncExitStack() as stack:
        moto_url = stack.enter_context(start_moto_server())
        emulator = await stack.enter_async_context(run_emulator(EmulatorConfig()))
        environment = _aws_environment(moto_url, emulator.url)
        os.environ.update(environment)  # botocore finds the local endpoints the standard way
        aws = await stack.enter_async_context(open_aws_clients(services=QUEUES_ONLY))
        resources = await provision(aws.sqs, aws.sns, prefix="moderation")
        environment = {
            **environment,
            **resources.environment(),
            **model_environment(prompt_format, backend, sagemaker_protocol, emulator.url),
        }
        if bodies:
            await _enqueue(aws.sqs, resources.queue_url, bodies)
        if serve:
            _print_serve_instructions(console, environment)
        settings = load_settings(**_settings_overrides(environment, serve=serve))
        stop = install_stop_signals()
        async with open_worker(settings, burst=not serve) as worker:
            work = asyncio.create_task(worker.runner.run(stop))
            shown = await _show_verdicts(console, aws, resources, work)
        stats = work.result()
        console.print(
            f"\n{len(bodies)} sent, {stats.acked} verdicts published ({shown} shown above), "
            f"{stats.dead_lettered} dead-lettered, {stats.retried} released for a later attempt.\n"
        )
        if resources.dead_letter_queue_url is not None:
            await _show_dead_letters(console, aws.sqs, resources.dead_letter_queue_url)
    return 0


def _aws_environment(moto_url: str, emulator_url: str) -> dict[str, str]:
    return {
        "AWS_ACCESS_KEY_ID": "local",
        "AWS_SECRET_ACCESS_KEY": "local",
        "AWS_DEFAULT_REGION": REGION,
        "AWS_ENDPOINT_URL_SQS": moto_url,
        "AWS_ENDPOINT_URL_SNS": moto_url,
        "AWS_ENDPOINT_URL_SAGEMAKER_RUNTIME": emulator_url,
    }


def model_environment(
    prompt_format: str, backend: str, sagemaker_protocol: str, emulator_url: str
) -> dict[str, str]:
    """The model settings that send the worker to the emulator by ``backend``."""
    environment = {"MODERATION_BACKEND": backend, "MODERATION_PROMPT_FORMAT": prompt_format}
    if backend == "tgi":
        return environment | {"MODERATION_TGI_URL": emulator_url}
    if backend == "openai":
        return environment | {
            "MODERATION_OPENAI_URL": emulator_url,
            "MODERATION_OPENAI_MODEL": EMULATOR_MODEL,
        }
    return environment | {
        "MODERATION_ENDPOINT_NAME": EMULATOR_ENDPOINT,
        "MODERATION_SAGEMAKER_PROTOCOL": sagemaker_protocol,
    }


def _settings_overrides(environment: Mapping[str, str], *, serve: bool) -> dict[str, Any]:
    prefix = "MODERATION_"
    overrides: dict[str, Any] = {
        key.removeprefix(prefix).lower(): value
        for key, value in environment.items()
        if key.startswith(prefix)
    }
    overrides.update(log_format="console", metrics_port=0, release_delay_base=1)
    if not serve:
        overrides["receive_wait_seconds"] = _POLL_SECONDS
    return overrides


def _read_bodies(input_path: Path | None) -> list[str]:
    if input_path is None:
        text = resources.files("devstack.data").joinpath("samples.jsonl").read_text("utf-8")
        return [line for line in text.splitlines() if line.strip()]
    return read_lines(input_path)


async def _enqueue(sqs: SQSClient, queue_url: str, bodies: list[str]) -> None:
    for offset in range(0, len(bodies), 10):
        chunk = bodies[offset : offset + 10]
        await sqs.send_message_batch(
            QueueUrl=queue_url,
            Entries=[{"Id": str(index), "MessageBody": body} for index, body in enumerate(chunk)],
        )


def _verdict_table() -> Table:
    table = Table(title="Verdicts, as they arrive on the SNS topics")
    for column in ("id", "verdict", "categories", "score", "flags", "topic"):
        table.add_column(column)
    return table


async def _show_verdicts(
    console: Console, aws: AwsClients, resources: LocalResources, work: asyncio.Task[Any]
) -> int:
    """Show verdicts from the subscriber queues until the worker is done and they are empty.

    Returns how many were shown.
    """
    table = _verdict_table()
    topics = {
        resources.safe_subscriber_queue_url: "safe",
        resources.unsafe_subscriber_queue_url: "unsafe",
    }
    with Live(table, console=console, refresh_per_second=8):
        while True:
            finished = work.done()
            rows = await asyncio.gather(*(_receive_verdicts(aws.sqs, url) for url in topics))
            for url, verdicts in zip(topics, rows, strict=True):
                for verdict in verdicts:
                    table.add_row(*_row(verdict, topics[url]))
            if finished and not any(rows):
                break
    await work  # surfaces a crash of the worker, if any
    return table.row_count


async def _receive_verdicts(sqs: SQSClient, queue_url: str) -> list[dict[str, Any]]:
    messages = await take_messages(sqs, queue_url, wait_seconds=_POLL_SECONDS)
    return [json.loads(message["Body"]) for message in messages]


def _row(verdict: Mapping[str, Any], topic: str) -> tuple[str, ...]:
    colour = "green" if verdict["verdict"] == "safe" else "red"
    categories = ", ".join(f"{c['code']} {c['name']}" for c in verdict["categories"])
    score = "" if verdict["score"] is None else f"{verdict['score']:.3f}"
    return (
        verdict["id"],
        f"[{colour}]{verdict['verdict']}[/{colour}]",
        categories or "-",
        score or "-",
        ", ".join(verdict["flags"]) or "-",
        topic,
    )


async def _show_dead_letters(console: Console, sqs: SQSClient, queue_url: str) -> None:
    response = await sqs.receive_message(
        QueueUrl=queue_url, MaxNumberOfMessages=10, MessageAttributeNames=["All"]
    )
    table = Table(title="Dead-letter queue: messages that can never be moderated")
    for column in ("body", "error_code", "error_detail"):
        table.add_column(column)
    for message in response.get("Messages", []):
        attributes = message.get("MessageAttributes", {})
        code = (
            attributes["error_code"].get("StringValue", "?") if "error_code" in attributes else "?"
        )
        detail = (
            attributes["error_detail"].get("StringValue", "")
            if "error_detail" in attributes
            else ""
        )
        table.add_row(message["Body"][:60], code, detail)
    console.print(table)


def _print_serve_instructions(console: Console, environment: Mapping[str, str]) -> None:
    console.print("[bold]The local stack is up.[/bold] Point other tools at it with:\n")
    for key, value in sorted(environment.items()):
        console.print(f"export {key}={value}", highlight=False, soft_wrap=True)
    console.print(
        "\nThen, for example:\n"
        '  aws sqs send-message --queue-url "$MODERATION_QUEUE_URL" '
        '--message-body \'{"id": "hello-1", "content": "How do I bake bread?"}\'\n'
        "  moderation-worker send my-messages.jsonl\n"
        "Verdicts appear below as they arrive. Press Ctrl-C to stop.\n",
        highlight=False,
    )
