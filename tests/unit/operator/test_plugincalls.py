"""A MailPlugin's status from what each MailServer's control API says of its calls, and the
control token the operator derives from its key (it may not read the token Secret)."""

from __future__ import annotations

import base64
import hashlib
import hmac
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from empath.core import errors
from empath.core.pluginstatus import PluginStatus
from empath.operator import crds, main, plugincalls, pluginstatus
from tests.specs import mailserver

KEY = b"operator-key-0123456789abcdef"
SELECTING: dict[str, Any] = {"pluginSelector": {"matchLabels": {"team": "mail"}}}
PLUGIN: dict[str, Any] = {
    "apiVersion": f"{crds.GROUP}/{crds.VERSION}",
    "kind": "MailPlugin",
    "metadata": {"name": "spam-check", "namespace": "mail", "labels": {"team": "mail"}},
    "spec": {"hooks": ["rcpt"], "endpoint": {"url": "http://spam.mail.svc/hook"}},
}
SERVERS = [mailserver("corp", **SELECTING), mailserver("other", **SELECTING)]
EARLIER = datetime(2026, 12, 7, 10, 0, tzinfo=UTC)
LATER = datetime(2026, 12, 7, 10, 5, tzinfo=UTC)


def condition(found: dict[str, Any], kind: str) -> dict[str, Any]:
    return next(c for c in found["conditions"] if c["type"] == kind)


def said(**plugin: Any) -> plugincalls.Heard:
    status = PluginStatus(name="spam-check", hooks=["rcpt"], reached_by="url", **plugin)
    return plugincalls.Heard(plugins={"spam-check": status})


READY = said(
    state="ready", instances=2, calls={"continue": 7}, last_success=LATER, last_failure=None
)
FAILING = said(
    state="failing",
    reason="at rcpt: timed out after 2.0 s",
    instances=1,
    calls={"continue": 3, "timeout": 1},
    last_success=EARLIER,
    last_failure=LATER,
    last_failure_reason="at rcpt: timed out after 2.0 s",
)


def test_the_control_token_is_the_hmac_of_the_servers_namespace_and_name() -> None:
    token = plugincalls.control_token(KEY, "mail", "corp")
    expected = hmac.new(KEY, b"mail/corp", hashlib.sha256).digest()
    assert base64.urlsafe_b64decode(token + "=") == expected
    assert len(token) == 43  # urlsafe base64 without its padding
    # Each server its own token; another key, other tokens.
    assert plugincalls.control_token(KEY, "mail", "other") != token
    assert plugincalls.control_token(KEY, "other", "corp") != token
    assert plugincalls.control_token(b"another-key-0123456789", "mail", "corp") != token


def test_every_servers_calls_are_in_the_status_and_a_failing_one_makes_it_not_ready() -> None:
    found = pluginstatus.found(PLUGIN, SERVERS, {"corp": READY, "other": FAILING})
    assert found["usedBy"] == ["corp", "other"]
    assert found["lastCall"] == [
        {
            "mailServer": "corp",
            "state": "ready",
            "reason": None,
            "instances": 2,
            "calls": {"continue": 7},
            "lastSuccess": "2026-12-07T10:05:00Z",
            "lastFailure": None,
            "lastFailureReason": None,
        },
        {
            "mailServer": "other",
            "state": "failing",
            "reason": "at rcpt: timed out after 2.0 s",
            "instances": 1,
            "calls": {"continue": 3, "timeout": 1},
            "lastSuccess": "2026-12-07T10:00:00Z",
            "lastFailure": "2026-12-07T10:05:00Z",
            "lastFailureReason": "at rcpt: timed out after 2.0 s",
        },
    ]
    ready = condition(found, "Ready")
    assert (ready["status"], ready["reason"]) == ("False", "Failing")
    assert ready["message"] == "other: at rcpt: timed out after 2.0 s"
    reported = condition(found, "CallsReported")
    assert (reported["status"], reported["reason"]) == ("True", "Reported")

    # It recovers: ready again, and says which servers use it.
    found = pluginstatus.found(
        {**PLUGIN, "status": found}, SERVERS, {"corp": READY, "other": READY}
    )
    ready = condition(found, "Ready")
    assert (ready["status"], ready["reason"]) == ("True", "Selected")
    assert ready["message"] == "in the settings of corp, other"
    assert [call["state"] for call in found["lastCall"]] == ["ready", "ready"]


def test_a_control_that_could_not_be_asked_says_why_and_changes_nothing_else() -> None:
    unknown = plugincalls.Heard(problem=("ControlTokenUnknown", "control refused the token"))
    found = pluginstatus.found(PLUGIN, SERVERS, {"corp": READY, "other": unknown})
    assert [call["mailServer"] for call in found["lastCall"]] == ["corp"]
    reported = condition(found, "CallsReported")
    assert (reported["status"], reported["reason"]) == ("False", "ControlTokenUnknown")
    assert reported["message"] == "other: control refused the token"
    assert condition(found, "Ready")["status"] == "True"


def test_a_plugin_no_server_uses_has_no_calls() -> None:
    alone = {**PLUGIN, "metadata": {**PLUGIN["metadata"], "labels": {"team": "web"}}}
    found = pluginstatus.found(alone, SERVERS, {"corp": FAILING})
    assert found["lastCall"] == []
    assert condition(found, "Ready")["reason"] == "NotSelected"
    assert all(c["type"] != "CallsReported" for c in found["conditions"])


async def test_without_a_key_the_operator_does_not_call_and_says_so() -> None:
    heard = await pluginstatus.ask_all(plugincalls.Caller(key=None), "mail", ["corp"])
    found = pluginstatus.found(PLUGIN, SERVERS[:1], heard)
    reported = condition(found, "CallsReported")
    assert (reported["status"], reported["reason"]) == ("False", "OperatorKeyUnset")
    assert "EMPATH_OPERATOR_KEY_FILE" in reported["message"]


def test_the_control_url_is_the_servers_control_service() -> None:
    url = plugincalls.control_url(plugincalls.DEFAULT_URL, "mail", "corp")
    assert url == "http://corp-control.mail.svc:8025/api/v1/plugins"


@pytest.mark.parametrize(
    ("env", "value", "message"),
    [
        ("KEY_FILE", "/nonexistent/key", "EMPATH_OPERATOR_KEY_FILE: Value error, cannot read"),
        ("KEY_FILE", "short", "EMPATH_OPERATOR_KEY_FILE: Value error, "),
        ("CONTROL_URL", "http://{host}/plugins", "EMPATH_OPERATOR_CONTROL_URL: Value error, only"),
        ("CONTROL_URL", "ftp://{service}/", "EMPATH_OPERATOR_CONTROL_URL: Value error, an http"),
        ("CONTROL_TIMEOUT", "0", "EMPATH_OPERATOR_CONTROL_TIMEOUT: Input should be greater"),
    ],
)
def test_a_wrong_setting_stops_the_operator_naming_it(
    env: str, value: str, message: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    if value == "short":
        (tmp_path / "key").write_text("too short\n")
        value = str(tmp_path / "key")
    monkeypatch.setenv("EMPATH_OPERATOR_IMAGE", "empath:test")
    monkeypatch.setenv(f"EMPATH_OPERATOR_{env}", value)
    with pytest.raises(errors.ConfigurationError) as raised:
        main.load()
    assert str(raised.value).startswith(message)


def test_a_key_file_is_read_stripped(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "key").write_bytes(KEY + b"\n")
    monkeypatch.setenv("EMPATH_OPERATOR_IMAGE", "empath:test")
    monkeypatch.setenv("EMPATH_OPERATOR_KEY_FILE", str(tmp_path / "key"))
    assert main.load().key_file == tmp_path / "key"
    assert main.operator_key(main.load()) == KEY
