"""The OpenAPI 3.1 document of the control API, served at `PATH`."""

from __future__ import annotations

from typing import Any

PATH = "/openapi.json"

_ID = {
    "name": "id",
    "in": "path",
    "required": True,
    "schema": {"type": "string"},
    "description": "Queue id (26 characters).",
}
_DOMAIN = {"name": "domain", "in": "path", "required": True, "schema": {"type": "string"}}
_ERROR = {
    "description": "Error",
    "content": {
        "application/json": {
            "schema": {
                "type": "object",
                "properties": {"error": {"type": "string"}},
                "required": ["error"],
            }
        }
    },
}
_OK = {"description": "OK", "content": {"application/json": {"schema": {"type": "object"}}}}


def _op(
    summary: str,
    *,
    params: list[dict[str, Any]] | None = None,
    body: bool = False,
    mutating: bool = False,
) -> dict[str, Any]:
    operation: dict[str, Any] = {
        "summary": summary,
        "parameters": params or [],
        "responses": {"200": _OK, "400": _ERROR, "401": _ERROR, "404": _ERROR, "503": _ERROR},
    }
    if mutating:
        operation["description"] = "Recorded in the audit log."
    if body:
        operation["requestBody"] = {
            "required": False,
            "content": {"application/json": {"schema": {"type": "object"}}},
        }
    return operation


def _query(name: str, kind: str, description: str) -> dict[str, Any]:
    return {
        "name": name,
        "in": "query",
        "required": False,
        "schema": {"type": kind},
        "description": description,
    }


DOCUMENT: dict[str, Any] = {
    "openapi": "3.1.0",
    "info": {"title": "Empath control API", "version": "1"},
    "components": {"securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}}},
    "security": [{"bearer": []}],
    "paths": {
        "/healthz": {"get": {**_op("Liveness"), "security": []}},
        "/readyz": {"get": {**_op("Readiness (connected to NATS)"), "security": []}},
        "/api/v1/system/ping": {"get": _op("Ping")},
        "/api/v1/system/status": {
            "get": _op(
                "Version, uptime, health of NATS, the object store and each service, workers, depth"
            )
        },
        "/api/v1/queue": {
            "get": _op(
                "List messages, oldest first",
                params=[
                    _query(
                        "state", "string", "queued, deferred, delivering, delivered, failed, frozen"
                    ),
                    _query("domain", "string", "a recipient domain"),
                    _query("sender", "string", "part of the sender address"),
                    _query("min_age", "number", "seconds since the message was received, at least"),
                    _query("sort", "string", "age (oldest first, default) or -age"),
                    _query("limit", "integer", "page size, 1 to 1000 (default 100)"),
                    _query(
                        "after", "string", "queue id to page on from (next_after of the last page)"
                    ),
                ],
            )
        },
        "/api/v1/queue/stats": {
            "get": _op("Counts by state and domain, the oldest message, age buckets (qshape)")
        },
        "/api/v1/queue/retry": {
            "post": _op(
                "Retry now every deferred message to a domain",
                body=True,
                mutating=True,
                params=[_query("domain", "string", "the domain")],
            )
        },
        "/api/v1/queue/freeze": {"post": _op("Freeze the queue: no new attempts", mutating=True)},
        "/api/v1/queue/unfreeze": {"post": _op("Unfreeze the queue", mutating=True)},
        "/api/v1/queue/{id}": {
            "get": _op(
                "One message: envelope, recipients, attempts; body=true adds the body",
                params=[_ID, _query("body", "boolean", "include the message")],
            ),
            "delete": _op(
                "Delete a message, or only the recipients given",
                params=[_ID, _query("recipient", "string", "a recipient to delete (repeatable)")],
                body=True,
                mutating=True,
            ),
        },
        "/api/v1/queue/{id}/headers": {"get": _op("The message's header section", params=[_ID])},
        "/api/v1/queue/{id}/retry": {"post": _op("Retry now", params=[_ID], mutating=True)},
        "/api/v1/queue/{id}/hold": {"post": _op("Hold", params=[_ID], mutating=True)},
        "/api/v1/queue/{id}/release": {"post": _op("Release", params=[_ID], mutating=True)},
        "/api/v1/dns/cache": {
            "get": _op("The DNS cache shared by the delivery workers"),
            "delete": _op("Clear it", mutating=True),
        },
        "/api/v1/dns/refresh/{domain}": {
            "post": _op("Forget the cached answer for a domain", params=[_DOMAIN], mutating=True)
        },
        "/api/v1/dns/overrides": {"get": _op("MX overrides set at run time")},
        "/api/v1/dns/overrides/{domain}": {
            "put": _op(
                'Send a domain\'s mail to host[:port] ({"target": ...})',
                params=[_DOMAIN],
                body=True,
                mutating=True,
            ),
            "delete": _op("Remove an override", params=[_DOMAIN], mutating=True),
        },
    },
}
