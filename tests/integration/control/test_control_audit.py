"""The audit log records who called as proven by the token (its name), a user a header claims
only as an unverified claim, refused calls, and every read of a message."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from tests.control_client import TOKEN, call, queue_some
from tests.servers import free_port
from tests.system import StartSystem, System

ALICE = "alice-token-0123456789"
ROBOT = "robot-token-9876543210"


@pytest.fixture
async def named(start_system: StartSystem, tmp_path: Path) -> System:
    tokens = tmp_path / "tokens"
    tokens.write_text(f"# people and programs\nalice:{ALICE}\n\nci-bot : {ROBOT}\n")
    return await start_system(
        only=("ingress", "spool", "control"),
        frozen=True,
        control_token=TOKEN,
        control_tokens_file=tokens,
        control_listen=f"127.0.0.1:{free_port()}",
        control_audit_file=tmp_path / "audit.log",
    )


def audit_lines(tmp_path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in (tmp_path / "audit.log").read_text().splitlines()]


async def test_each_named_token_works_and_the_audit_log_records_its_name(
    named: System, tmp_path: Path
) -> None:
    [queue_id] = await queue_some(named, ["a@one.test"])
    for token in (ALICE, ROBOT, TOKEN):
        answer = await call(named, "POST", f"/api/v1/queue/{queue_id}/hold", token=token)
        assert answer.status_code in (200, 409)
    lines = audit_lines(tmp_path)
    assert [line["who"] for line in lines] == ["token:alice", "token:ci-bot", "token:default"]
    text = json.dumps(lines)
    for token in (ALICE, ROBOT, TOKEN):
        assert token not in text
    assert len({line["fingerprint"] for line in lines}) == 3


async def test_a_user_named_in_a_header_is_recorded_only_as_an_unverified_claim(
    named: System, tmp_path: Path
) -> None:
    await call(
        named, "POST", "/api/v1/queue/freeze", token=ALICE, headers={"X-Remote-User": "root"}
    )
    await call(
        named, "POST", "/api/v1/queue/freeze", token=ALICE, headers={"Impersonate-User": "bob"}
    )
    first, second = audit_lines(tmp_path)
    assert first["who"] == second["who"] == "token:alice"
    assert (first["claimed_user"], first["claim_header"], first["claim_verified"]) == (
        "root",
        "X-Remote-User",
        False,
    )
    assert (second["claimed_user"], second["claim_header"]) == ("bob", "Impersonate-User")
    assert "user" not in first


async def test_refused_calls_are_audited_reads_too(named: System, tmp_path: Path) -> None:
    await call(named, "GET", "/api/v1/queue", token="not-a-token")
    await call(named, "POST", "/api/v1/queue/freeze", token=None, headers={"X-Remote-User": "x"})
    wrong, missing = audit_lines(tmp_path)
    assert (wrong["who"], wrong["status"], wrong["token_given"]) == (None, 401, True)
    assert (wrong["method"], wrong["path"]) == ("GET", "/api/v1/queue")
    assert (missing["status"], missing["token_given"], missing["claimed_user"]) == (401, False, "x")
    assert "not-a-token" not in json.dumps([wrong, missing])


async def test_reading_a_message_is_audited_and_listing_is_not(
    named: System, tmp_path: Path
) -> None:
    [queue_id] = await queue_some(named, ["a@one.test"])
    await call(named, "GET", "/api/v1/queue", token=ROBOT)
    await call(named, "GET", "/api/v1/queue/stats", token=ROBOT)
    await call(named, "GET", f"/api/v1/queue/{queue_id}", params={"body": "true"}, token=ROBOT)
    await call(named, "GET", f"/api/v1/queue/{queue_id}/headers", token=ALICE)
    await call(named, "GET", f"/api/v1/queue/{queue_id}", token=ALICE)
    lines = audit_lines(tmp_path)
    assert [(line["who"], line["method"], line["path"], line["status"]) for line in lines] == [
        ("token:ci-bot", "GET", f"/api/v1/queue/{queue_id}?body=true", 200),
        ("token:alice", "GET", f"/api/v1/queue/{queue_id}/headers", 200),
        ("token:alice", "GET", f"/api/v1/queue/{queue_id}", 200),
    ]


async def test_the_tokens_file_alone_is_enough(start_system: StartSystem, tmp_path: Path) -> None:
    tokens = tmp_path / "tokens"
    tokens.write_text(f"alice:{ALICE}\n")
    system = await start_system(
        only=("spool", "control"),
        control_tokens_file=tokens,
        control_listen=f"127.0.0.1:{free_port()}",
    )
    assert (await call(system, "GET", "/api/v1/system/ping", token=ALICE)).is_success
    assert (await call(system, "GET", "/api/v1/system/ping")).status_code == 401
