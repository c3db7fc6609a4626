"""OpenTelemetry tracing of requests and their SQL, exported over OTLP/HTTP in batches.

On with ``SERVICE_OTEL_ENABLED=true``; off (the default) this module is never imported, no middleware is added and
no engine event is listened to. Everything else is the SDK's standard environment, read by the SDK itself:

- ``OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`` (a full URL, ``.../v1/traces``) or ``OTEL_EXPORTER_OTLP_ENDPOINT`` (a base
  URL; default ``http://localhost:4318``), ``OTEL_EXPORTER_OTLP_HEADERS``, ``OTEL_EXPORTER_OTLP_TIMEOUT``;
- ``OTEL_SERVICE_NAME`` (default ``conduit``), ``OTEL_RESOURCE_ATTRIBUTES`` (``deployment.environment=prod,...``);
- ``OTEL_TRACES_SAMPLER`` / ``OTEL_TRACES_SAMPLER_ARG`` (default ``parentbased_always_on``; e.g.
  ``parentbased_traceidratio`` and ``0.1`` keeps a tenth of the traces that do not arrive already sampled);
- ``OTEL_BSP_SCHEDULE_DELAY``, ``OTEL_BSP_MAX_QUEUE_SIZE``, ``OTEL_BSP_MAX_EXPORT_BATCH_SIZE`` (the batching);
- ``OTEL_PYTHON_FASTAPI_EXCLUDED_URLS`` (default here: the health checks and /metrics, which would drown the rest).

SQL spans carry the statement with its placeholders (``$1``, ``?``), never the parameter values.
"""

import os
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from typing import Any, cast

from fastapi import FastAPI
from opentelemetry import trace
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.instrumentation.fastapi import FastAPIInstrumentor
from opentelemetry.instrumentation.sqlalchemy.engine import EngineTracer
from opentelemetry.instrumentation.sqlalchemy.version import __version__ as sqlalchemy_instrumentation_version
from opentelemetry.metrics import NoOpMeterProvider
from opentelemetry.sdk.resources import SERVICE_NAME, SERVICE_VERSION, Resource
from opentelemetry.sdk.trace import SpanProcessor, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor
from sqlalchemy.ext.asyncio import AsyncEngine

from service import __version__

DEFAULT_SERVICE_NAME = "conduit"
DEFAULT_EXCLUDED_URLS = "/health/live,/health/ready,/metrics"
_EXCLUDED_URLS_ENV = ("OTEL_PYTHON_FASTAPI_EXCLUDED_URLS", "OTEL_PYTHON_EXCLUDED_URLS")
# Tracing only: the instrumentations' own metrics would duplicate /metrics' Prometheus ones.
_NO_METRICS = NoOpMeterProvider()


class _EngineTracer(EngineTracer):
    """The SQLAlchemy instrumentation, minus a crash: a listener called without an execution context gets none."""

    def _before_cur_exec(
        self, conn: Any, cursor: Any, statement: Any, params: Any, context: Any, executemany: Any
    ) -> tuple[Any, Any]:
        if context is None:
            return statement, params
        parent: Any = super()  # the instrumentation is untyped
        result: tuple[Any, Any] = parent._before_cur_exec(conn, cursor, statement, params, context, executemany)
        return result


def build_provider(processor: SpanProcessor | None = None) -> TracerProvider:
    """The app's own provider (never the global one: tests build many apps); OTLP/HTTP in batches by default."""
    resource = Resource.create(
        {
            SERVICE_NAME: os.environ.get("OTEL_SERVICE_NAME") or DEFAULT_SERVICE_NAME,
            SERVICE_VERSION: __version__,
        }
    )
    provider = TracerProvider(resource=resource)  # the sampler comes from OTEL_TRACES_SAMPLER
    provider.add_span_processor(processor or BatchSpanProcessor(OTLPSpanExporter()))
    return provider


def instrument_engine(engine: AsyncEngine, provider: TracerProvider) -> None:
    """A span per SQL statement of this engine (through SQLAlchemy or ``Query``'s direct path: both fire its events)."""
    tracer = trace.get_tracer("opentelemetry.instrumentation.sqlalchemy", sqlalchemy_instrumentation_version, provider)
    usage = _NO_METRICS.get_meter(__name__).create_up_down_counter("db.client.connections.usage")
    engine_tracer: Any = _EngineTracer  # untyped constructor
    engine_tracer(tracer, engine.sync_engine, usage)


def install_tracing(app: FastAPI, processor: SpanProcessor | None = None) -> TracerProvider:
    """Trace the app's requests, and the SQL of the engine its lifespan makes; the provider is flushed and shut down
    when the lifespan ends. ``processor``: where spans go instead of OTLP (tests)."""
    provider = build_provider(processor)
    excluded = None if any(os.environ.get(name) for name in _EXCLUDED_URLS_ENV) else DEFAULT_EXCLUDED_URLS
    FastAPIInstrumentor.instrument_app(
        app,
        tracer_provider=provider,
        meter_provider=_NO_METRICS,
        excluded_urls=excluded,
        exclude_spans=["receive", "send"],  # one span per request, not one more per ASGI message
    )
    lifespan = app.router.lifespan_context

    @asynccontextmanager
    async def traced_lifespan(app: FastAPI) -> AsyncIterator[Any]:
        async with lifespan(app) as state:
            instrument_engine(cast(Mapping[str, Any], state)["engine"], provider)
            try:
                yield state
            finally:
                provider.shutdown()  # exports what the batch still holds

    app.router.lifespan_context = traced_lifespan
    app.state.tracer_provider = provider
    return provider
