"""Operational endpoints outside /api: liveness, readiness, metrics, offline docs."""

import asyncio
import logging
from functools import lru_cache
from pathlib import Path
from typing import Literal

import fastapi_offline
from fastapi import APIRouter, Request, Response
from fastapi.openapi.docs import get_redoc_html, get_swagger_ui_html, get_swagger_ui_oauth2_redirect_html
from fastapi.responses import HTMLResponse, JSONResponse, PlainTextResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from pydantic import BaseModel

from service.core.config import Settings
from service.core.db import Database
from service.core.db_health import DatabaseProbe, describe
from service.core.server import DRAINING

logger = logging.getLogger(__name__)

router = APIRouter(tags=["ops"])

# Swagger UI and ReDoc ship inside the fastapi-offline wheel: /docs works with no internet access.
DOCS_ASSETS = Path(fastapi_offline.__file__).parent / "static"
REDOC_CDN_LOGO = b"https://cdn.redoc.ly/redoc/logo-mini.svg"


class Health(BaseModel):
    status: Literal["ok", "unavailable"]
    checks: dict[str, str] = {}


@router.get("/health/live", summary="Liveness: the process is up")
async def live() -> Health:
    return Health(status="ok")


@router.get(
    "/health/ready",
    summary="Readiness: database (and Redis, if configured) reachable",
    responses={503: {"model": Health, "description": "A dependency is unreachable"}},
)
async def ready(request: Request) -> Response:
    database: Database = request.state.database
    settings: Settings = request.app.state.settings
    timeout = settings.readiness_timeout.total_seconds()
    # The lifespan's probe has a connection of its own; without one (an app served without its lifespan) the check
    # goes through the request pool.
    probe = database.probe or DatabaseProbe(database.reader, timeout)
    checks: dict[str, str] = {}
    try:
        await probe.check()
        database.health.answered()
        checks["database"] = "ok"
    except Exception as exc:
        database.health.failed(describe(exc))  # counted with the requests' failures: one log line per burst
        checks["database"] = "unavailable"
    redis = getattr(request.state, "redis", None)
    if redis is not None:
        try:
            async with asyncio.timeout(timeout):
                await redis.ping()
            checks["redis"] = "ok"
        except Exception as exc:
            logger.warning("readiness: redis unreachable", extra={"error": type(exc).__name__})
            checks["redis"] = "unavailable"
    if getattr(request.state, DRAINING, False):  # SIGTERM (core/server.py): the load balancer stops sending first
        checks["shutdown"] = "draining"
    ok = all(value == "ok" for value in checks.values())
    body = Health(status="ok" if ok else "unavailable", checks=checks)
    headers = {} if ok else {"Retry-After": str(settings.database_retry_after)}
    return JSONResponse(body.model_dump(), status_code=200 if ok else 503, headers=headers)


@router.get(
    "/metrics",
    summary="Prometheus metrics (text exposition format)",
    response_class=PlainTextResponse,
    responses={200: {"content": {"text/plain": {}}}},
)
async def metrics(request: Request) -> Response:
    registry = request.app.state.metrics.registry
    return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)


docs_router = APIRouter(include_in_schema=False)


@docs_router.get("/docs")
async def swagger_ui(request: Request) -> HTMLResponse:
    return get_swagger_ui_html(
        openapi_url=str(request.app.openapi_url),
        title=f"{request.app.title} - Swagger UI",
        swagger_js_url="/docs-assets/swagger-ui-bundle.js",
        swagger_css_url="/docs-assets/swagger-ui.css",
        swagger_favicon_url="/docs-assets/favicon.png",
        oauth2_redirect_url="/docs/oauth2-redirect",
        swagger_ui_parameters={"persistAuthorization": True, "displayRequestDuration": True},
    )


@docs_router.get("/docs/oauth2-redirect")
async def swagger_ui_redirect() -> HTMLResponse:
    return get_swagger_ui_oauth2_redirect_html()


@lru_cache(maxsize=1)
def _redoc_bundle() -> bytes:
    # The shipped bundle hard-codes a footer logo on a CDN; point it at our own icon so /redoc fetches nothing
    # from outside (checked in headless Chromium: no external request remains).
    bundle = (DOCS_ASSETS / "redoc.standalone.js").read_bytes()
    return bundle.replace(REDOC_CDN_LOGO, b"/docs-assets/favicon.png")


@docs_router.get("/docs-assets/redoc.standalone.js")
async def redoc_bundle() -> Response:
    return Response(_redoc_bundle(), media_type="text/javascript", headers={"Cache-Control": "public, max-age=3600"})


@docs_router.get("/redoc")
async def redoc(request: Request) -> HTMLResponse:
    return get_redoc_html(
        openapi_url=str(request.app.openapi_url),
        title=f"{request.app.title} - ReDoc",
        redoc_js_url="/docs-assets/redoc.standalone.js",
        redoc_favicon_url="/docs-assets/favicon.png",
        with_google_fonts=False,
    )
