"""OpenAPI post-processing: every documented error uses the envelope, and only statuses the service can return."""

from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi

_ERROR_REF = "#/components/schemas/ErrorBody"
_DEFAULT_VALIDATION_REF = "#/components/schemas/HTTPValidationError"


def _envelope(description: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": {"$ref": _ERROR_REF}}}}


def _fix_operation(path: str, operation: dict[str, Any]) -> None:
    responses: dict[str, Any] = operation.setdefault("responses", {})
    default_422 = responses.get("422", {}).get("content", {}).get("application/json", {}).get("schema", {})
    if default_422.get("$ref") == _DEFAULT_VALIDATION_REF:
        can_fail_validation = "requestBody" in operation or any(
            p.get("in") == "query" for p in operation.get("parameters", [])
        )
        if can_fail_validation:
            responses["422"] = _envelope("Validation failed")
        else:  # only string path parameters: nothing to reject
            del responses["422"]
    if operation.get("security") and "401" not in responses:
        responses["401"] = _envelope("Missing, invalid or expired token")
    if "requestBody" in operation and "413" not in responses:
        responses["413"] = _envelope("Request body too large")
    if path.startswith("/api/"):
        responses.setdefault("503", _envelope("Database unavailable"))
        responses.setdefault("500", _envelope("Internal error (no details; quote the X-Request-ID header)"))


def install_openapi(app: FastAPI) -> None:
    def openapi() -> dict[str, Any]:
        if app.openapi_schema:
            return app.openapi_schema
        schema = get_openapi(title=app.title, version=app.version, description=app.description, routes=app.routes)
        for path, operations in schema.get("paths", {}).items():
            for operation in operations.values():
                _fix_operation(path, operation)
        schemas = schema.setdefault("components", {}).setdefault("schemas", {})
        schemas.pop("HTTPValidationError", None)
        schemas.pop("ValidationError", None)
        app.openapi_schema = schema
        return schema

    app.openapi = openapi  # type: ignore[method-assign]  # FastAPI's documented way to customise the schema
