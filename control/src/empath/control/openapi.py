"""The OpenAPI 3.1 document of the control API, served at `PATH`, made from the route tables.

Every route's answer, request body and query parameters are pydantic models (the spool's
`queries` for queue calls, the control API's own for the rest), so the document states the
JSON each call really takes and gives, per status, and cannot drift from the handlers.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, Literal

from aiohttp import web
from pydantic import BaseModel, TypeAdapter
from pydantic.json_schema import models_json_schema

from empath.control import calls
from empath.core import addresses, queries

PATH = "/openapi.json"
REF = "#/components/schemas/{model}"

STATUSES = {
    200: "OK",
    400: "Bad request; the reason names what is wrong. Nothing changed.",
    401: "No valid token (`Authorization: Bearer` or `X-Empath-Token`).",
    404: "No such message (or body, or override).",
    409: "The message is not in a state for this.",
    413: "The body is larger than the API takes.",
    503: "A part of the system (the spool, NATS, the object store) is unavailable.",
}
# The types the handlers read path parameters with: their schemas are what the document says.
PATH_PARAMETERS: dict[str, Any] = {"id": queries.QueueId, "domain": addresses.Domain}


def path_parameter(name: str) -> dict[str, Any]:
    """A path parameter as the document states it: the JSON schema of the type that reads it."""
    schema = TypeAdapter(PATH_PARAMETERS[name]).json_schema()
    description = schema.pop("description", "")
    return {
        "name": name,
        "in": "path",
        "required": True,
        "schema": schema,
        "description": description,
    }


class DocumentAnswer(calls.Model):
    openapi: str
    info: dict[str, Any]
    paths: dict[str, Any]
    components: dict[str, Any]
    security: list[dict[str, Any]]


async def serve(request: web.Request) -> web.Response:
    return web.json_response(request.app[calls.DOCUMENT])


Mode = Literal["validation", "serialization"]


def _models(routes: list[calls.Route]) -> list[tuple[type[BaseModel], Mode]]:
    wanted: dict[tuple[type[BaseModel], Mode], None] = {
        (calls.ProblemAnswer, "serialization"): None
    }
    for route in routes:
        wanted[route.answer, "serialization"] = None
        for model in (route.body, route.query):
            if model is not None:
                wanted[model, "validation"] = None
    return list(wanted)


def _not_null(prop: dict[str, Any]) -> dict[str, Any]:
    """A query parameter's schema: absent rather than null when not given."""
    schema = {k: v for k, v in prop.items() if k not in {"title", "description"}}
    options = [option for option in schema.pop("anyOf", ()) if option != {"type": "null"}]
    if len(options) == 1:
        schema.update({k: v for k, v in options[0].items() if k != "description"})
    elif options:
        schema["anyOf"] = options
    if schema.get("default", 0) is None:
        del schema["default"]
    return schema


def _content(ref: dict[str, Any]) -> dict[str, Any]:
    return {"application/json": {"schema": ref}}


def document(all_routes: Iterable[calls.Route]) -> dict[str, Any]:
    """The document describing `routes`."""
    routes = list(all_routes)
    refs, top = models_json_schema(_models(routes), ref_template=REF)
    schemas: dict[str, Any] = top.get("$defs", {})

    def schema_of(ref: dict[str, Any]) -> dict[str, Any]:
        found: dict[str, Any] = schemas[ref["$ref"].rsplit("/", 1)[1]]
        return found

    problem = _content(refs[calls.ProblemAnswer, "serialization"])
    paths: dict[str, dict[str, Any]] = {}
    for route in routes:
        parameters = []
        for name in calls.path_parameters(route.path):
            parameters.append(path_parameter(name))
        if route.query is not None:
            query = schema_of(refs[route.query, "validation"])
            for name, prop in query["properties"].items():
                schema = _not_null(prop)
                parameters.append(
                    {
                        "name": name,
                        "in": "query",
                        "required": name in query.get("required", ()),
                        "schema": schema,
                        "description": prop.get("description", ""),
                    }
                )
        responses: dict[str, Any] = {
            "200": {
                "description": STATUSES[200],
                "content": _content(refs[route.answer, "serialization"]),
            }
        }
        too_large = (413,) if route.body is not None else ()
        for status in (*(() if route.open else (401,)), *route.refusals, *too_large):
            responses[str(status)] = {"description": STATUSES[status], "content": problem}
        operation: dict[str, Any] = {
            "operationId": f"{route.method.lower()}_{route.handler.__name__}",
            "summary": route.summary,
            "parameters": parameters,
            "responses": dict(sorted(responses.items())),
        }
        if route.audited:
            operation["description"] = "Recorded in the audit log."
        if route.body is not None:
            operation["requestBody"] = {
                "required": False,
                "content": _content(refs[route.body, "validation"]),
            }
        if route.open:
            operation["security"] = []
        paths.setdefault(route.path, {})[route.method.lower()] = operation
    return {
        "openapi": "3.1.0",
        "info": {"title": "Empath control API", "version": "1"},
        "components": {
            "schemas": schemas,
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
        },
        "security": [{"bearer": []}],
        "paths": paths,
    }
