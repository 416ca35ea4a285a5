"""Structured logs for every process: structlog renders JSON lines (or console text), and the
standard library's loggers (Flask, Celery, ours) are routed through the same renderer.

Context bound with :func:`bind_log_context` (request id, task id, import id, source) lives in
contextvars, so each request, greenlet or task sees only its own fields on every line.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Mapping, MutableMapping
from contextvars import ContextVar
from types import MappingProxyType
from typing import IO, Any

import structlog
from opentelemetry import trace
from structlog.types import EventDict, Processor, WrappedLogger

__all__ = [
    "CONTEXT_FIELDS",
    "bind_log_context",
    "clear_log_context",
    "configure_logging",
    "get_logger",
    "log_context",
]

# The correlation fields a line may carry; docs/observability.md explains each.
CONTEXT_FIELDS = ("request_id", "task_id", "task_name", "import_id", "source", "batch_id")
_HANDLER_NAME = "ingest-structlog"
# One context variable holding every bound field: binding and clearing are one ``set`` each,
# where structlog's own contextvars (a variable per field) walk the whole context to clear it.
_NOTHING: Mapping[str, Any] = MappingProxyType({})
_CONTEXT: ContextVar[Mapping[str, Any]] = ContextVar("ingest_log_context", default=_NOTHING)


def merge_log_context(_: WrappedLogger, __: str, event_dict: EventDict) -> EventDict:
    """Add the fields bound in this context; a field given on the line itself wins."""
    bound = _CONTEXT.get()
    if bound:
        return {**bound, **event_dict}
    return event_dict


def add_trace_context(_: WrappedLogger, __: str, event_dict: EventDict) -> EventDict:
    """Add the active OpenTelemetry trace and span ids, so a log line finds its trace."""
    context = trace.get_current_span().get_span_context()
    if context.is_valid:
        event_dict.setdefault("trace_id", format(context.trace_id, "032x"))
        event_dict.setdefault("span_id", format(context.span_id, "016x"))
    return event_dict


def _shared_processors() -> list[Processor]:
    return [
        merge_log_context,
        structlog.stdlib.add_log_level,
        structlog.stdlib.add_logger_name,
        add_trace_context,
        structlog.processors.TimeStamper(fmt="iso", utc=True, key="timestamp"),
        structlog.processors.StackInfoRenderer(),
    ]


def _renderer(json_output: bool) -> list[Processor]:
    if json_output:
        return [
            structlog.processors.format_exc_info,
            structlog.processors.EventRenamer("message"),
            structlog.processors.JSONRenderer(default=str),
        ]
    return [structlog.dev.ConsoleRenderer(colors=False)]


def configure_logging(
    level: str | int = "INFO", json_output: bool = True, stream: IO[str] | None = None
) -> None:
    """Send every log line of this process, structlog's and the standard library's, to
    ``stream`` (stdout by default) as JSON or console text; safe to call again."""
    shared = _shared_processors()
    structlog.configure(
        processors=[
            *shared,
            structlog.stdlib.PositionalArgumentsFormatter(),
            structlog.stdlib.ProcessorFormatter.wrap_for_formatter,
        ],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        cache_logger_on_first_use=True,
    )
    formatter = structlog.stdlib.ProcessorFormatter(
        # Lines from standard loggers get the same fields; ``extra={...}`` becomes fields too.
        foreign_pre_chain=[*shared, structlog.stdlib.ExtraAdder()],
        processors=[
            structlog.stdlib.ProcessorFormatter.remove_processors_meta,
            *_renderer(json_output),
        ],
    )
    handler = logging.StreamHandler(stream or sys.stdout)
    handler.set_name(_HANDLER_NAME)
    handler.setFormatter(formatter)
    root = logging.getLogger()
    # Replace only our own handler: test harnesses and Sentry keep theirs.
    for old in [h for h in root.handlers if h.get_name() == _HANDLER_NAME]:
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level.upper() if isinstance(level, str) else level)


def get_logger(name: str | None = None) -> Any:
    """A structlog logger that carries the bound context."""
    return structlog.stdlib.get_logger(name)


def bind_log_context(**fields: Any) -> None:
    """Add fields (``None`` values are skipped) to every following line of this context."""
    given = {k: v for k, v in fields.items() if v is not None}
    if given:
        _CONTEXT.set({**_CONTEXT.get(), **given})


def clear_log_context() -> None:
    """Forget every bound field (at the end of a request or task)."""
    _CONTEXT.set(_NOTHING)


def log_context() -> MutableMapping[str, Any]:
    """The fields bound in this context right now."""
    return dict(_CONTEXT.get())
