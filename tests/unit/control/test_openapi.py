"""The OpenAPI document made from the route tables, without a server."""

from __future__ import annotations

import re

from empath.control import api, calls


def operations() -> list[tuple[str, str, dict[str, object]]]:
    return [
        (path, method, operation)
        for path, item in api.DOCUMENT["paths"].items()
        for method, operation in item.items()
    ]


def test_every_route_is_one_documented_operation() -> None:
    routes = {(route.path, route.method.lower()) for route in api.ROUTES}
    assert len(routes) == len(api.ROUTES)
    assert routes == {(path, method) for path, method, _ in operations()}


def test_every_path_parameter_is_described() -> None:
    for path, _, operation in operations():
        named = set(re.findall(r"\{(\w+)\}", path))
        parameters = operation["parameters"]
        assert isinstance(parameters, list)
        assert named == {p["name"] for p in parameters if p["in"] == "path"}, path


def test_only_health_is_open_and_every_change_and_message_read_is_said_to_be_audited() -> None:
    reads = {("/api/v1/queue/{id}", "get"), ("/api/v1/queue/{id}/headers", "get")}
    for path, method, operation in operations():
        assert ("security" in operation) == (path in {"/healthz", "/readyz"}), path
        audited = operation.get("description") == "Recorded in the audit log."
        assert audited == (method.upper() in calls.MUTATING or (path, method) in reads), (
            method,
            path,
        )


def test_the_list_parameters_are_the_spools_list_request() -> None:
    listing = api.DOCUMENT["paths"]["/api/v1/queue"]["get"]["parameters"]
    by_name = {p["name"]: p["schema"] for p in listing}
    assert set(by_name) == {"state", "domain", "sender", "min_age", "sort", "limit", "after"}
    assert by_name["limit"] == {"type": "integer", "minimum": 1, "maximum": 1000, "default": 100}
    assert by_name["sort"]["enum"] == ["age", "-age"]


def test_every_schema_reference_resolves() -> None:
    text = str(api.DOCUMENT)
    schemas = api.DOCUMENT["components"]["schemas"]
    for name in re.findall(r"#/components/schemas/(\w+)", text):
        assert name in schemas
