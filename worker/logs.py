"""Structured logs with structlog: JSON for machines, console for people; content stays out."""

from __future__ import annotations

import logging
import sys
from typing import Literal

import structlog


def configure_logging(
    log_format: Literal["json", "console"] = "json", *, level: int = logging.INFO
) -> None:
    """Route structlog and the standard library's loggers to stderr in one format.

    Message text never reaches the logs from this project's code unless the
    ``MODERATION_LOG_CONTENT`` setting asks for it, so nothing here has to scrub it.
    """
    renderer: structlog.types.Processor = (
        structlog.dev.ConsoleRenderer(colors=sys.stderr.isatty())
        if log_format == "console"
        else structlog.processors.JSONRenderer()
    )
    shared: list[structlog.types.Processor] = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
    ]
    structlog.configure(
        processors=[
            *shared,
            structlog.processors.format_exc_info,
            structlog.stdlib.ProcessorFormatter.wrap_for_formatter,
        ],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.make_filtering_bound_logger(level),
        cache_logger_on_first_use=True,
    )
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            foreign_pre_chain=shared,
            processors=[
                structlog.stdlib.ProcessorFormatter.remove_processors_meta,
                renderer,
            ],
        )
    )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    # Vendor libraries are chatty at INFO; their warnings still come through.
    for noisy in ("botocore", "aiobotocore", "aiohttp.access", "werkzeug", "moto"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
