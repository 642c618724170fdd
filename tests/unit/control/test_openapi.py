"""The OpenAPI document made from the route tables, without a server."""

from __future__ import annotations

import re

import pydantic
import pytest

from empath.control import api, calls, openapi, queue


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


def test_path_parameters_are_documented_by_the_types_that_read_them() -> None:
    refresh = api.DOCUMENT["paths"]["/api/v1/dns/refresh/{domain}"]["post"]["parameters"]
    assert refresh[0]["schema"] == {"type": "string", "maxLength": 253}
    view = api.DOCUMENT["paths"]["/api/v1/queue/{id}"]["get"]["parameters"]
    assert view[0]["schema"] == {"type": "string", "pattern": "^[0-9A-HJKMNP-TV-Z]{26}$"}
    for name, kind in openapi.PATH_PARAMETERS.items():
        schema = pydantic.TypeAdapter(kind).json_schema()
        assert openapi.path_parameter(name)["schema"] == {
            k: v for k, v in schema.items() if k != "description"
        }


def test_a_domain_in_a_query_or_body_has_the_limit_of_a_domain_in_a_path() -> None:
    listing = api.DOCUMENT["paths"]["/api/v1/queue"]["get"]["parameters"]
    retry = api.DOCUMENT["paths"]["/api/v1/queue/retry"]["post"]["parameters"]
    for parameters in (listing, retry):
        [domain] = [p for p in parameters if p["name"] == "domain"]
        assert domain["schema"] == {"type": "string", "maxLength": 253}
    body = api.DOCUMENT["components"]["schemas"]["RetryDomainBody"]["properties"]["domain"]
    assert {"type": "string", "maxLength": 253} in [
        {k: v for k, v in option.items() if k in {"type", "maxLength"}} for option in body["anyOf"]
    ]


@pytest.mark.parametrize(
    ("model", "given", "read"),
    [
        (queue.ViewQuery, {"body": "yes"}, {"body": True}),
        (queue.ViewQuery, {"body": "0"}, {"body": False}),
        (queue.RetryDomainQuery, {"domain": "Example.COM."}, {"domain": "example.com"}),
        (queue.DeleteQuery, {"recipient": ["a@x.test"]}, {"recipient": ["a@x.test"]}),
    ],
)
def test_the_documented_query_models_read_what_the_handlers_are_given(
    model: type[calls.Parameters], given: dict[str, object], read: dict[str, object]
) -> None:
    assert model.model_validate(given).model_dump(exclude_unset=True) == read


def test_a_documented_query_model_refuses_what_it_does_not_document() -> None:
    with pytest.raises(pydantic.ValidationError):
        queue.ViewQuery.model_validate({"body": "maybe"})
