"""OpenTelemetry tracing, off unless the standard ``OTEL_*`` variables ask for an exporter.

Tracing starts only when ``OTEL_TRACES_EXPORTER`` names an exporter (``otlp``, ``console``)
and ``OTEL_SDK_DISABLED`` is not ``true``. The OpenTelemetry specification defaults the
exporter to ``otlp``; we do not, so that a process without a collector does not try to send
spans to ``localhost:4318`` forever. Everything else (endpoint, headers, sampler, resource
attributes, service name) is read by the SDK from its own ``OTEL_*`` variables.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any

from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.sdk.resources import SERVICE_NAME, Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import (
    BatchSpanProcessor,
    ConsoleSpanExporter,
    SimpleSpanProcessor,
    SpanExporter,
)

__all__ = [
    "SINK_WRITE_SPAN",
    "attached",
    "batch_span",
    "capture_context",
    "configure_tracing",
    "span",
    "tracer",
    "tracing_active",
    "tracing_requested",
]

SINK_WRITE_SPAN = "ingest.sink.write"
log = logging.getLogger(__name__)
_lock = threading.Lock()
_provider: TracerProvider | None = None


def tracing_requested(environ: Mapping[str, str]) -> bool:
    """Whether ``environ`` asks for traces: an exporter other than ``none``, SDK not disabled."""
    if environ.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
        return False
    names = _exporter_names(environ)
    return bool(names) and names != ["none"]


def _exporter_names(environ: Mapping[str, str]) -> list[str]:
    raw = environ.get("OTEL_TRACES_EXPORTER", "")
    return [n.strip().lower() for n in raw.split(",") if n.strip()]


def _exporters(environ: Mapping[str, str]) -> list[SpanExporter]:
    exporters: list[SpanExporter] = []
    for name in _exporter_names(environ):
        if name == "otlp":
            # Only the HTTP/protobuf exporter is installed; it reads OTEL_EXPORTER_OTLP_*.
            from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

            exporters.append(OTLPSpanExporter())
        elif name == "console":
            exporters.append(ConsoleSpanExporter())
        elif name != "none":
            log.warning("OTEL_TRACES_EXPORTER=%s is not supported here; use otlp or console", name)
    return exporters


def _resource(service_name: str) -> Resource:
    resource = Resource.create()  # OTEL_SERVICE_NAME and OTEL_RESOURCE_ATTRIBUTES win
    if str(resource.attributes.get(SERVICE_NAME, "")).startswith("unknown_service"):
        resource = resource.merge(Resource({SERVICE_NAME: service_name}))
    return resource


def configure_tracing(
    service_name: str,
    environ: Mapping[str, str] | None = None,
    exporter: SpanExporter | None = None,
) -> bool:
    """Install this process's tracer provider once; returns whether tracing is active.

    ``exporter`` (tests: an in-memory one) is used as given, spans exported as they end;
    otherwise exporters come from ``OTEL_TRACES_EXPORTER`` and export in batches.
    """
    global _provider
    # The OTEL_* variables are the SDK's own interface, read here as the SDK would read them.
    env = os.environ if environ is None else environ
    with _lock:
        if _provider is not None:
            if exporter is not None:  # another test's exporter joins the running provider
                _provider.add_span_processor(SimpleSpanProcessor(exporter))
            return True
        if exporter is None and not tracing_requested(env):
            return False
        provider = TracerProvider(resource=_resource(service_name))
        if exporter is not None:
            provider.add_span_processor(SimpleSpanProcessor(exporter))
        for found in _exporters(env) if exporter is None else []:
            provider.add_span_processor(BatchSpanProcessor(found))
        trace.set_tracer_provider(provider)
        _provider = provider
        log.info("tracing on: service %s", service_name)
        return True


def tracing_active() -> bool:
    """Whether :func:`configure_tracing` installed a provider in this process."""
    return _provider is not None


def tracer() -> trace.Tracer:
    """The tracer of IntelGraph ingest's own spans (a no-op one while tracing is off)."""
    return trace.get_tracer("intelgraph.ingest")


@contextmanager
def span(name: str, **attributes: Any) -> Iterator[trace.Span]:
    """A child span of the current one, with ``attributes`` (``None`` values left out)."""
    with tracer().start_as_current_span(name) as current:
        if current.is_recording():
            for key, value in attributes.items():
                if value is not None:
                    current.set_attribute(key, value)
        yield current


def capture_context() -> Context:
    """The current trace context, to carry work to another thread (a batch publisher)."""
    return otel_context.get_current()


def traceparent() -> str | None:
    """The current trace context as a W3C ``traceparent`` value, to carry it through a store
    (a webhook event's stream entry); None while tracing is off."""
    if _provider is None:
        return None
    from opentelemetry.propagate import inject

    carrier: dict[str, str] = {}
    inject(carrier)
    return carrier.get("traceparent")


def context_from(value: str) -> Context:
    """The trace context a :func:`traceparent` value carried."""
    from opentelemetry.propagate import extract

    return extract({"traceparent": value})


@contextmanager
def attached(ctx: Context | None) -> Iterator[None]:
    """Run a block in a context captured elsewhere, so its spans join that trace."""
    if ctx is None:
        yield
        return
    token = otel_context.attach(ctx)
    try:
        yield
    finally:
        otel_context.detach(token)


@contextmanager
def batch_span(
    name: str, contexts: Sequence[Context | None], **attributes: Any
) -> Iterator[trace.Span]:
    """A span for work done on behalf of several requests (one published webhook batch).

    It continues the first request's trace and links to the others, so each request's trace
    leads to the batch, and everything started inside (the task message) follows it.
    """
    found = [c for c in contexts if c is not None]
    links = []
    for ctx in found[1:]:
        linked = trace.get_current_span(ctx).get_span_context()
        if linked.is_valid:
            links.append(trace.Link(linked))
    with (
        attached(found[0] if found else None),
        tracer().start_as_current_span(name, links=links) as current,
    ):
        if current.is_recording():
            for key, value in attributes.items():
                if value is not None:
                    current.set_attribute(key, value)
        yield current
