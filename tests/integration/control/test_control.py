"""The control API and empathctl against a running system (real NATS, SeaweedFS, services)."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import jsonschema
import pytest

from empath.control import api, audit, link, tokens
from empath.core import dnscache, names
from tests.control_client import TOKEN, call, empathctl, queue_some, view_rows
from tests.servers import free_port
from tests.system import StartSystem, System
from tests.wire import Wire


async def test_every_call_but_health_needs_the_token(control: System) -> None:
    assert (await call(control, "GET", "/healthz", token=None)).status_code == 200
    assert (await call(control, "GET", "/readyz", token=None)).status_code == 200
    for token in (None, "wrong"):
        for path in ("/api/v1/queue", "/api/v1/system/ping", "/openapi.json"):
            response = await call(control, "GET", path, token=token)
            assert response.status_code == 401
            assert response.headers["WWW-Authenticate"].startswith("Bearer")
    refused = await call(control, "POST", "/api/v1/queue/freeze", token="wrong")
    assert refused.status_code == 401
    stats = (await call(control, "GET", "/api/v1/queue/stats")).json()
    assert stats["frozen"] is True  # the refused call changed nothing (frozen by the fixture)


async def test_the_openapi_document_names_every_route_the_app_serves(control: System) -> None:
    document = (await call(control, "GET", "/openapi.json")).json()
    assert document["openapi"].startswith("3.")
    assert document["components"]["securitySchemes"]["bearer"]["scheme"] == "bearer"
    app = api.application(
        connection=link.Link(
            bus=control.bus,
            services=await control.bus.key_value(names.SERVICES_BUCKET),
            dns=await control.bus.key_value(names.DNS_BUCKET),
            overrides=await control.bus.key_value(names.OVERRIDES_BUCKET),
        ),
        objects=control.objects,
        tokens=tokens.Tokens({"default": TOKEN}),
        audit_log=audit.AuditLog(None),
    )
    served = {
        (route.resource.canonical, route.method.lower())
        for route in app.router.routes()
        if route.method != "HEAD" and route.resource is not None
    }
    documented = {(path, method) for path, item in document["paths"].items() for method in item}
    assert served == documented
    for path, method in served:
        operation = document["paths"][path][method]
        assert set(operation["responses"]) >= {"200"} | (
            set() if path in {"/healthz", "/readyz"} else {"401"}
        ), (method, path)


async def test_every_answer_of_a_running_system_fits_the_openapi_document(
    control: System,
) -> None:
    first, second = await queue_some(control, ["a@one.test", "b@one.test"])
    await (await control.bus.key_value(names.DNS_BUCKET)).put(
        dnscache.key("Cached.TEST."),
        dnscache.Record.answer([(10, "mx.cached.test")], ttl=300).model_dump_json().encode(),
    )
    await (await control.bus.key_value(names.DNS_BUCKET)).put(
        dnscache.key("gone.test"),
        dnscache.Record.failure("550 5.1.2 Domain gone.test does not exist", ttl=300)
        .model_dump_json()
        .encode(),
    )
    missing = "01ARZ3NDEKTSV4RRFFQ69G5FAV"
    calls: list[tuple[str, str, str, dict[str, Any], int]] = [
        # (method, documented path, path called, arguments, status expected)
        ("GET", "/healthz", "/healthz", {"token": None}, 200),
        ("GET", "/readyz", "/readyz", {"token": None}, 200),
        ("GET", "/openapi.json", "/openapi.json", {}, 200),
        ("GET", "/api/v1/system/ping", "/api/v1/system/ping", {"token": "wrong"}, 401),
        ("GET", "/api/v1/system/ping", "/api/v1/system/ping", {}, 200),
        ("GET", "/api/v1/system/status", "/api/v1/system/status", {}, 200),
        ("GET", "/api/v1/queue", "/api/v1/queue", {"params": {"limit": 1}}, 200),
        ("GET", "/api/v1/queue", "/api/v1/queue", {"params": {"state": "lost"}}, 400),
        ("GET", "/api/v1/queue/stats", "/api/v1/queue/stats", {}, 200),
        ("GET", "/api/v1/queue/{id}", f"/api/v1/queue/{first}", {}, 200),
        (
            "GET",
            "/api/v1/queue/{id}",
            f"/api/v1/queue/{first}",
            {"params": {"body": "true"}},
            200,
        ),
        ("GET", "/api/v1/queue/{id}", "/api/v1/queue/not-an-id", {}, 400),
        ("GET", "/api/v1/queue/{id}", f"/api/v1/queue/{missing}", {}, 404),
        ("GET", "/api/v1/queue/{id}/headers", f"/api/v1/queue/{first}/headers", {}, 200),
        ("POST", "/api/v1/queue/{id}/hold", f"/api/v1/queue/{first}/hold", {}, 200),
        ("POST", "/api/v1/queue/{id}/retry", f"/api/v1/queue/{first}/retry", {}, 409),
        ("POST", "/api/v1/queue/{id}/release", f"/api/v1/queue/{first}/release", {}, 200),
        ("POST", "/api/v1/queue/{id}/retry", f"/api/v1/queue/{first}/retry", {}, 200),
        (
            "POST",
            "/api/v1/queue/retry",
            "/api/v1/queue/retry",
            {"json": {"domain": "example.com"}},
            200,
        ),
        ("DELETE", "/api/v1/queue/{id}", f"/api/v1/queue/{second}", {}, 200),
        ("POST", "/api/v1/queue/freeze", "/api/v1/queue/freeze", {}, 200),
        ("GET", "/api/v1/dns/cache", "/api/v1/dns/cache", {}, 200),
        ("POST", "/api/v1/dns/refresh/{domain}", "/api/v1/dns/refresh/cached.test", {}, 200),
        (
            "PUT",
            "/api/v1/dns/overrides/{domain}",
            "/api/v1/dns/overrides/x.test",
            {"json": {"target": "127.0.0.9:25"}},
            200,
        ),
        (
            "PUT",
            "/api/v1/dns/overrides/{domain}",
            "/api/v1/dns/overrides/x.test",
            {"json": {"target": "a b"}},
            400,
        ),
        ("GET", "/api/v1/dns/overrides", "/api/v1/dns/overrides", {}, 200),
        ("DELETE", "/api/v1/dns/overrides/{domain}", "/api/v1/dns/overrides/x.test", {}, 200),
        ("DELETE", "/api/v1/dns/overrides/{domain}", "/api/v1/dns/overrides/x.test", {}, 404),
        ("DELETE", "/api/v1/dns/cache", "/api/v1/dns/cache", {}, 200),
        ("GET", "/api/v1/plugins", "/api/v1/plugins", {}, 200),
        ("POST", "/api/v1/queue/unfreeze", "/api/v1/queue/unfreeze", {}, 200),
    ]
    document = (await call(control, "GET", "/openapi.json")).json()
    answered = set()
    for method, documented, path, kwargs, status in calls:
        response = await call(control, method, path, **kwargs)
        assert response.status_code == status, (method, path, response.text)
        assert response.headers["Content-Type"].startswith("application/json")
        operation = document["paths"][documented][method.lower()]
        schema = operation["responses"][str(status)]["content"]["application/json"]["schema"]
        validator = jsonschema.Draft202012Validator(
            {**schema, "components": document["components"]}
        )
        problems = [error.message for error in validator.iter_errors(response.json())]
        assert problems == [], (method, path, status)
        if status == 200:
            answered.add((documented, method.lower()))
        if path == "/api/v1/dns/cache" and method == "GET":
            assert {i["name"]: i["error"] for i in response.json()["items"]} == {
                "cached.test": None,
                "gone.test": "550 5.1.2 Domain gone.test does not exist",
            }
    documented_operations = {
        (path, method) for path, item in document["paths"].items() for method in item
    }
    assert answered == documented_operations


async def test_list_filters_pages_and_sorts(control: System) -> None:
    ids = await queue_some(control, ["a@one.test", "b@two.test", "c@one.test"])
    await queue_some(control, ["d@one.test"], to="v@other.test")
    page = (await call(control, "GET", "/api/v1/queue", params={"limit": 2})).json()
    assert [i["id"] for i in page["items"]] == ids[:2]
    rest = (
        await call(
            control, "GET", "/api/v1/queue", params={"limit": 2, "after": page["next_after"]}
        )
    ).json()
    assert next(i["id"] for i in rest["items"]) == ids[2]
    senders = (await call(control, "GET", "/api/v1/queue", params={"sender": "one.test"})).json()
    assert [i["sender"] for i in senders["items"]] == ["a@one.test", "c@one.test", "d@one.test"]
    other = (await call(control, "GET", "/api/v1/queue", params={"domain": "other.test"})).json()
    assert [i["sender"] for i in other["items"]] == ["d@one.test"]
    newest = await call(control, "GET", "/api/v1/queue", params={"sort": "-age", "limit": 1})
    assert newest.json()["items"][0]["sender"] == "d@one.test"
    old = (await call(control, "GET", "/api/v1/queue", params={"min_age": 3600})).json()
    assert old["items"] == []


async def test_view_shows_the_envelope_headers_and_body(control: System) -> None:
    [queue_id] = await queue_some(control, ["a@one.test"])
    view = await call(control, "GET", f"/api/v1/queue/{queue_id}", params={"body": "true"})
    data = view.json()
    assert data["item"]["recipients"][0]["address"] == "u@example.com"
    assert data["headers"].startswith("Received: from client.test")
    assert data["body"].endswith("Subject: s\r\n\r\nbody\r\n")


async def test_view_of_a_message_whose_body_is_gone_shows_its_record(control: System) -> None:
    """A delivered message keeps its record for a while after its body is removed: viewing it
    shows what happened to it, and says the body is gone, rather than answering 404."""
    [queue_id] = await queue_some(control, ["a@one.test"])
    await control.objects.delete((await control.entry(queue_id)).body_key)
    for path, params in (("/headers", {}), ("", {"body": "true"})):
        view = await call(control, "GET", f"/api/v1/queue/{queue_id}{path}", params=params)
        assert view.status_code == 200, view.text
        data = view.json()
        assert (data["item"]["id"], data["body_gone"]) == (queue_id, True)
        assert "headers" not in data
        assert "body" not in data
    rows = await view_rows(control, queue_id)
    assert ["sender", "a@one.test"] in rows
    assert ["body", "no longer in the bucket (the message is finished)"] in rows


@pytest.mark.parametrize(("given", "with_body"), [("1", True), ("yes", True), ("no", False)])
async def test_view_adds_the_body_as_the_document_says_it_reads_body(
    control: System, given: str, with_body: bool
) -> None:
    [queue_id] = await queue_some(control, ["a@one.test"])
    view = await call(control, "GET", f"/api/v1/queue/{queue_id}", params={"body": given})
    assert view.status_code == 200, view.text
    assert ("body" in view.json()) == with_body
    assert view.json()["item"]["id"] == queue_id


async def test_view_refuses_a_body_parameter_that_is_no_yes_or_no(control: System) -> None:
    [queue_id] = await queue_some(control, ["a@one.test"])
    view = await call(control, "GET", f"/api/v1/queue/{queue_id}", params={"body": "maybe"})
    assert view.status_code == 400
    assert view.json()["error"].startswith("body: ")


async def test_stats_count_by_state_and_domain(control: System) -> None:
    await queue_some(control, ["a@one.test", "b@one.test"])
    await queue_some(control, ["c@one.test"], to="v@other.test")
    stats = (await call(control, "GET", "/api/v1/queue/stats")).json()
    assert stats["by_state"]["queued"] == 3
    assert stats["by_domain"]["example.com"]["total"] == 2
    assert stats["by_domain"]["other.test"]["total"] == 1
    assert stats["buckets"][0] == "T"
    assert stats["ages"][0] == 3


async def test_hold_release_retry_and_delete_change_the_queue(control: System) -> None:
    first, second = await queue_some(control, ["a@one.test", "b@one.test"])
    held = (await call(control, "POST", f"/api/v1/queue/{first}/hold")).json()["item"]
    assert (held["state"], held["held"]) == ("frozen", True)
    released = (await call(control, "POST", f"/api/v1/queue/{first}/release")).json()["item"]
    assert (released["state"], released["held"]) == ("queued", False)
    retried = await call(control, "POST", f"/api/v1/queue/{first}/retry")
    assert retried.status_code == 200
    deleted = await call(control, "DELETE", f"/api/v1/queue/{second}")
    assert deleted.json()["deleted"] is True
    assert [e.id for e in await control.entries()] == [first]
    assert len(await control.bodies()) == 1
    frozen = await call(control, "POST", "/api/v1/queue/unfreeze")
    assert frozen.json() == {"frozen": False}


async def test_deleting_some_recipients_keeps_the_others(control: System) -> None:
    wire = await Wire.open(control.smtp_port)
    reply = await wire.transaction("a@one.test", ["u@example.com", "v@example.com"], b"x\r\n")
    await wire.close()
    queue_id = reply.rsplit(" ", 1)[1]
    await control.entry(queue_id)
    left = await call(
        control, "DELETE", f"/api/v1/queue/{queue_id}", json={"recipients": ["v@example.com"]}
    )
    assert [r["address"] for r in left.json()["item"]["recipients"]] == ["u@example.com"]
    unknown = await call(
        control, "DELETE", f"/api/v1/queue/{queue_id}", json={"recipients": ["w@example.com"]}
    )
    assert unknown.status_code == 409
    assert len((await control.entry(queue_id)).recipients) == 1


async def test_recipients_to_delete_may_be_given_as_repeated_query_parameters(
    control: System,
) -> None:
    wire = await Wire.open(control.smtp_port)
    recipients = ["u@example.com", "v@example.com", "w@example.com"]
    reply = await wire.transaction("a@one.test", recipients, b"x\r\n")
    await wire.close()
    queue_id = reply.rsplit(" ", 1)[1]
    await control.entry(queue_id)
    left = await call(
        control,
        "DELETE",
        f"/api/v1/queue/{queue_id}",
        params=[("recipient", "v@example.com"), ("recipient", "w@example.com")],
    )
    assert left.status_code == 200, left.text
    assert [r["address"] for r in left.json()["item"]["recipients"]] == ["u@example.com"]
    assert [r.address for r in (await control.entry(queue_id)).recipients] == ["u@example.com"]


@pytest.mark.parametrize(
    ("method", "path", "kwargs", "reason"),
    [
        ("GET", "/api/v1/queue", {"params": {"limit": "ten"}}, "limit must be a number"),
        ("GET", "/api/v1/queue", {"params": {"limit": "0"}}, "limit must be an integer"),
        ("GET", "/api/v1/queue", {"params": {"state": "lost"}}, "unknown state"),
        ("GET", "/api/v1/queue", {"params": {"sort": "size"}}, "sort must be"),
        ("GET", "/api/v1/queue/not-an-id", {}, "not a queue id"),
        ("POST", "/api/v1/queue/retry", {"json": {}}, "give the domain"),
        (
            "DELETE",
            "/api/v1/queue/01ARZ3NDEKTSV4RRFFQ69G5FAV",
            {"content": b"{"},
            "body is not JSON",
        ),
        (
            "DELETE",
            "/api/v1/queue/01ARZ3NDEKTSV4RRFFQ69G5FAV",
            {"json": {"recipients": "v@example.com"}},
            "recipients must be a list",
        ),
    ],
)
async def test_bad_calls_get_400_with_a_reason_and_change_nothing(
    control: System, method: str, path: str, kwargs: dict[str, Any], reason: str
) -> None:
    [queue_id] = await queue_some(control, ["a@one.test"])
    before = await control.entry(queue_id)
    response = await call(control, method, path, **kwargs)
    assert response.status_code == 400
    assert reason in response.json()["error"]
    assert await control.entry(queue_id) == before


async def test_a_missing_message_is_404(control: System) -> None:
    response = await call(control, "POST", "/api/v1/queue/01ARZ3NDEKTSV4RRFFQ69G5FAV/hold")
    assert response.status_code == 404


async def test_mutating_calls_are_audited(control: System, tmp_path: Path) -> None:
    [queue_id] = await queue_some(control, ["a@one.test"])
    await call(control, "POST", f"/api/v1/queue/{queue_id}/hold")
    await call(control, "POST", "/api/v1/queue/01ARZ3NDEKTSV4RRFFQ69G5FAV/hold")
    await call(control, "GET", "/api/v1/queue")
    lines = [json.loads(line) for line in (tmp_path / "audit.log").read_text().splitlines()]
    assert [(e["method"], e["path"], e["status"]) for e in lines] == [
        ("POST", f"/api/v1/queue/{queue_id}/hold", 200),
        ("POST", "/api/v1/queue/01ARZ3NDEKTSV4RRFFQ69G5FAV/hold", 404),
    ]
    assert lines[0]["who"].startswith("token:")
    assert TOKEN not in json.dumps(lines)
    assert lines[0]["remote"] == "127.0.0.1"
    assert lines[0]["ts"]


async def test_status_reports_health_services_and_depth(control: System) -> None:
    await queue_some(control, ["a@one.test"])
    status = (await call(control, "GET", "/api/v1/system/status")).json()
    assert status["nats"]["ok"]
    assert status["object_store"]["ok"]
    assert status["services"] == {"control": 1, "ingress": 1, "spool": 1}
    assert status["delivery_workers"] == 0
    assert status["queue"]["waiting"] == 1


async def test_empathctl_lists_views_and_holds(control: System) -> None:
    [queue_id] = await queue_some(control, ["a@one.test"])
    listed = await asyncio.to_thread(empathctl, control, "-o", "json", "queue", "list")
    assert listed.returncode == 0, listed.stderr
    assert [i["id"] for i in json.loads(listed.stdout)["items"]] == [queue_id]
    table = await asyncio.to_thread(empathctl, control, "queue", "list")
    assert queue_id in table.stdout
    assert "queued" in table.stdout
    view = await asyncio.to_thread(empathctl, control, "-o", "yaml", "queue", "view", queue_id)
    assert "sender: a@one.test" in view.stdout
    held = await asyncio.to_thread(empathctl, control, "queue", "hold", queue_id)
    assert held.returncode == 0
    assert (await control.entry(queue_id)).held
    stats = await asyncio.to_thread(empathctl, control, "queue", "stats")
    assert "example.com" in stats.stdout


async def test_empathctl_sets_overrides_retries_by_domain_and_deletes_recipients(
    control: System,
) -> None:
    wire = await Wire.open(control.smtp_port)
    reply = await wire.transaction("a@one.test", ["u@example.com", "v@example.com"], b"x\r\n")
    await wire.close()
    queue_id = reply.rsplit(" ", 1)[1]
    await control.entry(queue_id)
    override = await asyncio.to_thread(
        empathctl, control, "-o", "json", "dns", "set-override", "Dest.Test.", "mx.test:2525"
    )
    assert override.returncode == 0, override.stderr
    assert json.loads(override.stdout) == {"domain": "dest.test", "target": "mx.test:2525"}
    retried = await asyncio.to_thread(
        empathctl, control, "-o", "json", "queue", "retry", "--domain", "example.com"
    )
    assert (retried.returncode, json.loads(retried.stdout)) == (0, {"retried": 0})
    deleted = await asyncio.to_thread(
        empathctl, control, "queue", "delete", queue_id, "--recipient", "v@example.com"
    )
    assert deleted.returncode == 0, deleted.stderr
    assert [r.address for r in (await control.entry(queue_id)).recipients] == ["u@example.com"]
    rows = await view_rows(control, queue_id)
    assert ["id", queue_id] in rows
    assert ["recipient", "u@example.com  pending"] in rows
    assert ["held", "False"] in rows
    assert any(row[0] == "headers" and row[1].startswith("Received: from") for row in rows)
    refused = await asyncio.to_thread(empathctl, control, "queue", "retry", "--domain", "a..b")
    assert refused.returncode == 1
    assert "a domain is labels of letters" in refused.stderr


async def test_empathctl_fails_with_one_line_and_an_exit_code(control: System) -> None:
    missing = await asyncio.to_thread(
        empathctl, control, "queue", "hold", "01ARZ3NDEKTSV4RRFFQ69G5FAV"
    )
    assert missing.returncode == 1
    assert missing.stderr.strip().startswith("empathctl: 404: no message")
    assert len(missing.stderr.strip().splitlines()) == 1
    wrong = await asyncio.to_thread(empathctl, control, "queue", "list", EMPATHCTL_TOKEN="nope")
    assert (wrong.returncode, wrong.stderr.strip()) == (
        1,
        "empathctl: 401: a valid bearer token is required",
    )
    unset = await asyncio.to_thread(empathctl, None, "queue", "list")
    assert unset.returncode == 2
    assert "no API URL" in unset.stderr
    down = await asyncio.to_thread(
        empathctl,
        None,
        "queue",
        "list",
        EMPATHCTL_URL=f"http://127.0.0.1:{free_port()}",
        EMPATHCTL_TOKEN=TOKEN,
    )
    assert down.returncode == 3
    assert "cannot reach" in down.stderr


async def test_the_control_service_refuses_to_start_without_a_token(
    start_system: StartSystem,
) -> None:
    from empath.core import errors

    with pytest.raises(errors.ConfigurationError, match="EMPATH_CONTROL_TOKEN"):
        await start_system(only=("control",), control_listen=f"127.0.0.1:{free_port()}")


async def test_the_token_may_come_from_a_file(start_system: StartSystem, tmp_path: Path) -> None:
    token_file = tmp_path / "token"
    token_file.write_text("from-a-file-0123\n")
    system = await start_system(
        only=("spool", "control"),
        control_token_file=token_file,
        control_listen=f"127.0.0.1:{free_port()}",
    )
    assert (await call(system, "GET", "/api/v1/system/ping", token="from-a-file-0123")).is_success
    assert (await call(system, "GET", "/api/v1/system/ping")).status_code == 401
