"""Hostile input to the control API: every bad call is a 400 (or 413) with a reason, never a
500 or a traceback, and none of them harms the service (its NATS connection, later calls)."""

from __future__ import annotations

import logging
from typing import Any

import pytest

from tests.control_client import call, queue_some
from tests.system import System


async def test_a_5000_character_override_domain_is_refused_and_the_service_keeps_working(
    control: System,
) -> None:
    domain = "a" * 5000 + ".test"
    refused = await call(control, "PUT", f"/api/v1/dns/overrides/{domain}", json={"target": "h"})
    assert refused.status_code == 400, refused.text
    assert "at most 253 characters" in refused.json()["error"]
    assert (await call(control, "GET", "/api/v1/queue")).status_code == 200
    assert (await call(control, "GET", "/healthz")).status_code == 200
    assert (await call(control, "GET", "/api/v1/dns/overrides")).json() == {"items": []}


@pytest.mark.parametrize(
    ("domain", "reason"),
    [
        ("a" * 64 + ".test", "at most 63 characters"),
        ("-bad.test", "labels of letters"),
        ("two..dots.test", "labels of letters"),
        ("sp%20ace.test", "labels of letters"),
        ("a.*", "labels of letters"),
        ("exa>mple.test", "labels of letters"),
    ],
)
async def test_a_domain_that_is_no_domain_is_refused_with_the_rule_it_breaks(
    control: System, domain: str, reason: str
) -> None:
    for method, path, kwargs in (
        ("PUT", f"/api/v1/dns/overrides/{domain}", {"json": {"target": "mx.test"}}),
        ("DELETE", f"/api/v1/dns/overrides/{domain}", {}),
        ("POST", f"/api/v1/dns/refresh/{domain}", {}),
    ):
        refused = await call(control, method, path, **kwargs)
        assert refused.status_code == 400, (method, refused.text)
        assert reason in refused.json()["error"]


async def test_an_override_target_that_is_no_host_is_refused(control: System) -> None:
    for target in ("h" * 300, "mx..test", "mx.test:99999"):
        refused = await call(
            control, "PUT", "/api/v1/dns/overrides/dest.test", json={"target": target}
        )
        assert refused.status_code == 400, target
        assert len(refused.json()["error"]) < 300
    assert (await call(control, "GET", "/api/v1/dns/overrides")).json() == {"items": []}


BAD_BODIES: list[tuple[bytes, str]] = [
    (b"[" * 60_000, "nested too deeply"),
    (b'{"domain": "\xff\xfe.test"}', "not UTF-8"),
    (b'{"domain": ', "not JSON"),
    (b"[1, 2]", "must be a JSON object"),
    (b'"just a string"', "must be a JSON object"),
    (b'{"domain": 5}', "give the domain"),
    (b'{"domain": ["a.test"]}', "give the domain"),
    (b'{"domain": "' + b"a" * 300 + b'"}', "at most 253 characters"),
    (b'{"domain": "' + b"a" * 64 + b'.test"}', "at most 63 characters"),
]


@pytest.mark.parametrize(("body", "reason"), BAD_BODIES)
async def test_a_bad_json_body_is_a_400_with_its_reason(
    control: System, body: bytes, reason: str
) -> None:
    response = await call(
        control,
        "POST",
        "/api/v1/queue/retry",
        content=body,
        headers={"Content-Type": "application/json"},
    )
    assert response.status_code == 400, response.text
    assert reason in response.json()["error"]
    assert "Traceback" not in response.text


@pytest.mark.parametrize(
    ("method", "path", "body", "reason"),
    [
        ("PUT", "/api/v1/dns/overrides/dest.test", b'{"target": 25}', "give the target"),
        ("PUT", "/api/v1/dns/overrides/dest.test", b"[" * 60_000, "nested too deeply"),
        ("PUT", "/api/v1/dns/overrides/dest.test", b"\xff", "not UTF-8"),
        ("DELETE", "/api/v1/queue/{id}", b'{"recipients": "u@example.com"}', "recipients must"),
        ("DELETE", "/api/v1/queue/{id}", b'{"recipients": [1, 2]}', "recipients must"),
        ("DELETE", "/api/v1/queue/{id}", b"\xc3\x28", "not UTF-8"),
    ],
)
async def test_wrong_types_and_bytes_in_any_body_are_400_and_change_nothing(
    control: System, method: str, path: str, body: bytes, reason: str
) -> None:
    [queue_id] = await queue_some(control, ["a@one.test"])
    before = await control.entry(queue_id)
    response = await call(
        control,
        method,
        path.format(id=queue_id),
        content=body,
        headers={"Content-Type": "application/json"},
    )
    assert response.status_code == 400, response.text
    assert reason in response.json()["error"]
    assert await control.entry(queue_id) == before
    assert (await call(control, "GET", "/api/v1/dns/overrides")).json() == {"items": []}


async def test_a_body_over_the_limit_is_refused_with_413_before_it_is_parsed(
    control: System,
) -> None:
    [queue_id] = await queue_some(control, ["a@one.test"])
    recipients = [f"user{n}@example.com" for n in range(10_000)]
    response = await call(
        control, "DELETE", f"/api/v1/queue/{queue_id}", json={"recipients": recipients}
    )
    assert response.status_code == 413
    assert "larger than" in response.json()["error"]
    assert (await control.entry(queue_id)).state == "queued"
    brackets = await call(
        control,
        "POST",
        "/api/v1/queue/retry",
        content=b"[" * 100_000,
        headers={"Content-Type": "application/json"},
    )
    assert brackets.status_code == 413


@pytest.mark.parametrize(
    "params",
    [
        {"sender": "s" * 1000},
        {"domain": "d" * 300},
        {"limit": "ten"},
        {"min_age": "nan"},
        {"after": "\u00ff" * 26},
        {"state": "x" * 5000},
    ],
)
async def test_bad_list_parameters_are_400(control: System, params: dict[str, Any]) -> None:
    response = await call(control, "GET", "/api/v1/queue", params=params)
    assert response.status_code == 400, response.text
    assert response.json()["error"]


@pytest.mark.parametrize(
    ("domain", "reason"),
    [
        ("d" * 254, "a domain has at most 253 characters, this one 254"),
        ("d" * 64 + ".test", "a label of a domain has at most 63 characters"),
        ("two..dots.test", "labels of letters"),
    ],
)
async def test_the_queue_refuses_a_domain_by_the_rules_of_the_dns_calls(
    control: System, domain: str, reason: str
) -> None:
    [queue_id] = await queue_some(control, ["a@one.test"])
    before = await control.entry(queue_id)
    for method, params, kwargs in (
        ("GET", {"domain": domain}, {}),
        ("POST", {"domain": domain}, {}),
        ("POST", {}, {"json": {"domain": domain}}),
    ):
        path = "/api/v1/queue" if method == "GET" else "/api/v1/queue/retry"
        refused = await call(control, method, path, params=params, **kwargs)
        assert refused.status_code == 400, (method, params, refused.text)
        assert reason in refused.json()["error"]
    assert await control.entry(queue_id) == before


async def test_the_queue_takes_a_domain_of_253_characters_and_any_spelling(
    control: System,
) -> None:
    [queue_id] = await queue_some(control, ["a@one.test"])
    longest = ".".join(["d" * 63] * 3 + ["e" * 61])
    for domain in (longest, "EXAMPLE.com."):
        listed = await call(control, "GET", "/api/v1/queue", params={"domain": domain})
        assert listed.status_code == 200, listed.text
    listed = await call(control, "GET", "/api/v1/queue", params={"domain": "EXAMPLE.com."})
    assert [item["id"] for item in listed.json()["items"]] == [queue_id]
    retried = await call(control, "POST", "/api/v1/queue/retry", params={"domain": longest})
    assert retried.json() == {"retried": 0}


async def test_a_request_line_over_the_limit_is_refused_without_a_traceback_in_the_log(
    control: System, caplog: pytest.LogCaptureFixture
) -> None:
    response = await call(control, "GET", "/api/v1/queue", params={"sender": "s" * 10_000})
    assert response.status_code == 400
    assert [r for r in caplog.records if r.exc_info or r.levelno >= logging.ERROR] == []
    [refused] = [r for r in caplog.records if r.name == "empath.control.http"]
    assert refused.levelno == logging.WARNING
    assert "Got more than" in refused.getMessage()
    assert (await call(control, "GET", "/healthz")).status_code == 200
