"""Structured logging: one JSON object per line, carrying the service and, where known, digit_id
and the trace id."""

from __future__ import annotations

import logging
import sys

import structlog

from mnistream_common.tracing import log_trace_ids


def configure_logging(service: str, *, level: str = "INFO", json: bool = True) -> None:
    """Route stdlib and structlog records through one JSON (or console) renderer on stderr."""
    shared: list[structlog.types.Processor] = [
        structlog.contextvars.merge_contextvars,
        log_trace_ids,
        structlog.stdlib.add_log_level,
        structlog.stdlib.add_logger_name,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
    ]
    renderer: structlog.types.Processor = (
        structlog.processors.JSONRenderer() if json else structlog.dev.ConsoleRenderer()
    )
    structlog.configure(
        processors=[*shared, structlog.stdlib.ProcessorFormatter.wrap_for_formatter],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        cache_logger_on_first_use=True,
    )
    formatter = structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=shared,
        processors=[
            structlog.stdlib.ProcessorFormatter.remove_processors_meta,
            structlog.processors.format_exc_info,
            renderer,
        ],
    )
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(formatter)
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    structlog.contextvars.bind_contextvars(service=service)
    for noisy in ("aiokafka", "urllib3", "httpx"):
        logging.getLogger(noisy).setLevel(max(logging.WARNING, root.level))
    # libpng's warnings about an upload (one per odd chunk) are the upload's business: a crafted
    # PNG of thousands of duplicate chunks must not become thousands of log lines.
    logging.getLogger("imagecodecs").setLevel(max(logging.ERROR, root.level))


def get_logger(name: str) -> structlog.stdlib.BoundLogger:
    """A structured logger; pass fields as keyword arguments (digit_id=..., version=...)."""
    logger: structlog.stdlib.BoundLogger = structlog.get_logger(name)
    return logger
