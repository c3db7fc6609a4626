"""OpenTelemetry tracing: a span per request and per SQL statement when on, nothing at all when off.

The apps run their real lifespan (its engine is the one instrumented) on the test database, and only read: nothing
they commit could leak into other tests.
"""

import subprocess
import sys
import threading
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
from httpx import ASGITransport, AsyncClient
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind

from service.core.config import Settings
from service.core.tracing import install_tracing
from service.main import create_app

SECRET_AUTHOR = "author-nobody-knows"  # a parameter value that must not show up in any SQL span

pytestmark = pytest.mark.usefixtures("engine")  # the test database, migrated


@asynccontextmanager
async def running(app: Any) -> AsyncIterator[tuple[AsyncClient, dict[str, Any]]]:
    """The app with its lifespan run, its state in every request's scope (as uvicorn does), and a client."""
    async with app.router.lifespan_context(app) as state:

        async def asgi(scope: Any, receive: Any, send: Any) -> None:
            scope["state"] = {**scope.get("state", {}), **state}
            await app(scope, receive, send)

        async with AsyncClient(transport=ASGITransport(app=asgi), base_url="http://test") as client:
            yield client, state


def _statement(span: ReadableSpan) -> str:
    attributes = span.attributes or {}
    return str(attributes.get("db.statement") or attributes.get("db.query.text") or "")


async def test_a_request_and_its_sql_make_spans_of_one_trace(settings: Settings) -> None:
    exporter = InMemorySpanExporter()
    app = create_app(settings)
    install_tracing(app, SimpleSpanProcessor(exporter))
    async with running(app) as (client, _):
        response = await client.get("/api/articles", params={"author": SECRET_AUTHOR})
        assert response.status_code == 200, response.text
        assert (await client.get("/health/live")).status_code == 200  # excluded: no span
    spans = exporter.get_finished_spans()
    servers = [span for span in spans if span.kind is SpanKind.SERVER]
    assert [span.name for span in servers] == ["GET /api/articles"]
    server = servers[0]
    assert (server.attributes or {})["http.route"] == "/api/articles"
    assert server.context is not None
    statements = [span for span in spans if span.kind is SpanKind.CLIENT]
    for span in statements:
        assert SECRET_AUTHOR not in repr(span.attributes)  # placeholders only, never the values
    # The request's own (background tasks, such as the outbox's sweep, run statements of their own traces).
    sql = [span for span in statements if span.context is not None and span.context.trace_id == server.context.trace_id]
    assert sql, [span.name for span in spans]
    for span in sql:
        assert span.parent is not None
        assert span.parent.span_id == server.context.span_id
        assert (span.end_time or 0) >= (span.start_time or 0) > 0
        statement = _statement(span)
        assert statement.lstrip().upper().startswith(("SELECT", "WITH", "BEGIN", "ROLLBACK", "COMMIT")), statement
    assert any("users" in _statement(span) for span in sql)  # the author's lookup


async def test_create_app_exports_over_otlp_http_when_enabled(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    received: list[bytes] = []

    class Collector(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            received.append(self.rfile.read(int(self.headers["Content-Length"])))
            self.send_response(200)
            self.send_header("Content-Type", "application/x-protobuf")
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *args: Any) -> None:
            pass

    sink = ThreadingHTTPServer(("127.0.0.1", 0), Collector)
    thread = threading.Thread(target=sink.serve_forever, daemon=True)
    thread.start()
    try:
        monkeypatch.setenv("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", f"http://127.0.0.1:{sink.server_port}/v1/traces")
        monkeypatch.setenv("OTEL_SERVICE_NAME", "conduit-under-test")
        app = create_app(settings.model_copy(update={"otel_enabled": True}))
        async with running(app) as (client, _):
            assert (await client.get("/api/tags")).status_code == 200
        # The lifespan's end shut the provider down, which exported what the batch held.
    finally:
        sink.shutdown()
        thread.join()
    spans: list[tuple[str, str]] = []
    for body in received:
        request = ExportTraceServiceRequest.FromString(body)
        for resource_spans in request.resource_spans:
            attributes = {a.key: a.value.string_value for a in resource_spans.resource.attributes}
            for scope_spans in resource_spans.scope_spans:
                spans += [(attributes["service.name"], span.name) for span in scope_spans.spans]
    assert ("conduit-under-test", "GET /api/tags") in spans
    assert any(name.startswith("SELECT") for _, name in spans), spans


async def test_off_by_default_no_middleware_no_engine_listener(settings: Settings) -> None:
    assert settings.otel_enabled is False
    app = create_app(settings)
    assert not getattr(app, "_is_instrumented_by_opentelemetry", False)
    assert not hasattr(app.state, "tracer_provider")
    async with running(app) as (client, state):
        assert (await client.get("/api/tags")).status_code == 200
        dispatch = state["engine"].sync_engine.dispatch
        assert not dispatch.before_cursor_execute
        assert not dispatch.after_cursor_execute


def test_off_by_default_imports_no_instrumentation() -> None:
    # In a fresh interpreter: this test process has imported them for the tests above.
    code = (
        "import sys\n"
        "from service.core.config import load_settings\n"
        "from service.main import create_app\n"
        "create_app(load_settings(environment='test')).build_middleware_stack()\n"
        "loaded = [m for m in sys.modules if m.startswith(('opentelemetry.instrumentation', "
        "'opentelemetry.exporter', 'opentelemetry.sdk.trace', 'service.core.tracing'))]\n"
        "assert not loaded, loaded\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)  # noqa: S603 - our own interpreter


@pytest.fixture(autouse=True)
def _no_global_provider() -> Iterator[None]:
    """Tracing never sets the global provider (each app has its own): check it stayed unset."""
    from opentelemetry import trace

    yield
    assert type(trace.get_tracer_provider()).__name__ == "ProxyTracerProvider"
