"""The plugin contract: what a verdict may say, how a refusal reads on the wire, and how
plugins are declared in `EMPATH_PLUGINS`."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

import pytest
from pydantic import ValidationError

from empath.core import events, names, natsauth, plugins, settings


def test_a_refusal_reads_as_the_plugin_wrote_it() -> None:
    verdict = plugins.refuse(550, "nobody lives here", enhanced="5.1.1")
    assert verdict.reply is not None
    assert verdict.reply.line() == "550 5.1.1 nobody lives here"


def test_a_refusal_without_an_enhanced_code_gets_one_of_its_class() -> None:
    assert plugins.Reply(code=451, text="later").line() == "451 4.7.1 later"
    assert plugins.Reply(code=451, enhanced="5.7.1", text="x").line() == "451 4.7.1 x"


@pytest.mark.parametrize(
    "answer",
    [
        {"action": "refuse"},  # no reply
        {"action": "refuse", "reply": {"code": 250, "text": "ok"}},  # not a refusal code
        {"action": "refuse", "reply": {"code": 550, "text": "a\r\nb"}},  # a second line
        {"action": "maybe"},
        {"headers": [{"name": "Bad Name", "value": "x"}]},
        {"metadata": {"key with spaces": "x"}},
        {"surprise": True},
    ],
)
def test_an_answer_that_is_not_a_verdict_is_refused(answer: dict[str, object]) -> None:
    with pytest.raises(ValidationError):
        plugins.Verdict.model_validate_json(json.dumps(answer))


def test_requests_are_told_apart_by_their_hook() -> None:
    session = {"id": "s1", "client_ip": "192.0.2.1"}
    raw = {"hook": "rcpt", "session": session, "sender": "", "recipient": "u@example.com"}
    request = plugins.request_adapter.validate_json(json.dumps(raw))
    assert isinstance(request, plugins.RcptRequest)
    assert request.metadata == {}


def test_a_received_event_of_version_1_is_read_with_no_metadata() -> None:
    v1 = {
        "kind": "received",
        "version": 1,
        "id": "01ARZ3NDEKTSV4RRFFQ69G5FAV",
        "body_key": "k",
        "size": 1,
        "received_at": "2026-01-01T00:00:00Z",
        "envelope": {"sender": "", "recipients": [{"address": "a@b.c"}]},
        "client": {"ip": "192.0.2.1"},
    }
    event = events.decode(json.dumps(v1).encode(), events.Received)
    assert (event.version, event.metadata, event.id, event.body) == (4, {}, v1["id"], None)
    assert event.stored  # an older event's body is always in the bucket
    assert event.received_at == datetime(2026, 1, 1, tzinfo=UTC)
    v2 = {**v1, "version": 2, "metadata": {"policy": "ok"}}
    event = events.decode(json.dumps(v2).encode(), events.Received)
    assert (event.version, event.metadata, event.body) == (4, {"policy": "ok"}, None)


def test_a_delivery_job_of_version_2_is_read_with_no_metadata() -> None:
    v2 = {
        "kind": "delivery-job",
        "version": 2,
        "id": "01ARZ3NDEKTSV4RRFFQ69G5FAV",
        "attempt": 2,
        "body_key": "k",
        "size": 1,
        "envelope": {"sender": "a@b.c", "recipients": [{"address": "u@example.com"}]},
    }
    job = events.decode(json.dumps(v2).encode(), events.DeliveryJob)
    assert (job.version, job.metadata, job.attempt, job.body) == (4, {}, 2, None)
    assert job.envelope.recipients[0].address == "u@example.com"


def test_the_schemas_of_the_contract_are_exported(tmp_path: Path) -> None:
    written = {path.name for path in plugins.export_schemas(tmp_path)}
    assert "plugin.verdict.v1.json" in written
    assert "plugin.event.v1.json" in written
    assert {f"plugin.{hook}.request.v1.json" for hook in plugins.HOOKS} <= written


def test_plugins_of_the_first_crd_keep_their_hook_names() -> None:
    plugin = settings.Plugin(name="p", hooks=["helo", "received"], url="http://p/hook")
    assert plugin.hooks == ["ehlo", "message_received"]


@pytest.mark.parametrize(
    "declared",
    [
        {"hooks": ["mail"]},  # a validation plugin needs a way to reach it
        {"hooks": ["mail"], "url": "http://p/", "subject": "empath.plugins.p"},
        {"hooks": ["mail"], "module": "m:f", "url": "http://p/"},
        {"hooks": ["mail"], "url": "http://p/", "ca_file": "/nonexistent/ca.pem"},
        {"hooks": ["smtp"], "url": "http://p/"},
    ],
)
def test_a_plugin_that_cannot_be_called_is_refused_at_start(declared: dict[str, object]) -> None:
    with pytest.raises(ValidationError):
        settings.Plugin.model_validate({"name": "p", **declared})


def test_an_event_plugin_needs_no_endpoint() -> None:
    plugin = settings.Plugin(name="watcher", hooks=["delivered", "failed"])
    assert plugin.event_hooks == {"delivered", "failed"}
    assert not plugin.validation_hooks


def test_ingress_may_ask_nats_plugins_and_a_plugin_may_only_answer_and_read_its_events() -> None:
    ingress = natsauth.PERMISSIONS["ingress"].publish
    assert f"{names.PLUGIN_REQUEST_PREFIX}.>" in ingress
    assert names.plugin_event_subject("connection_opened") in ingress
    assert names.plugin_event_subject("delivered") not in ingress
    assert names.plugin_event_subject("delivered") in natsauth.PERMISSIONS["spool"].publish
    attempts = names.plugin_event_subject("delivery_attempt")
    assert attempts in natsauth.PERMISSIONS["delivery"].publish
    assert attempts not in natsauth.PERMISSIONS["spool"].publish
    plugin = natsauth.PERMISSIONS[natsauth.PLUGIN]
    assert plugin.subscribe[1:] == (f"{names.PLUGIN_REQUEST_PREFIX}.>",)
    assert plugin.allow_responses
    assert not any(s.startswith(names.PREFIX) for s in plugin.publish)
    assert "$JS.API.CONSUMER.MSG.NEXT.EMPATH_PLUGIN_EVENTS.*" in plugin.publish
    assert not any("CONSUMER" in s and "EMPATH_PLUGIN_EVENTS" not in s for s in plugin.publish)
