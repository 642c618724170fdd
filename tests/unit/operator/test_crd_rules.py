"""The CRD's CEL rules (x-kubernetes-validations), evaluated as the API server evaluates them:
on the object with the schema's defaults applied, each rule with `self` at the node that
declares it. A MailServer the operator could not run is refused at `kubectl apply`."""

from __future__ import annotations

import re
from typing import Any

import pytest

from empath.operator import crds, render
from tests import emulator
from tests.specs import mailserver

DNS_1035 = re.compile(r"^[a-z]([-a-z0-9]*[a-z0-9])?$")
DNS_1123 = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")


def admitted(body: dict[str, Any]) -> list[str]:
    """What the API server says to `body`: [] when it stores it."""
    schema = crds.schema(crds.MAILSERVERS)
    return emulator.refusals(schema, crds.with_defaults(schema, body))


def test_a_valid_mailserver_passes_every_rule() -> None:
    assert admitted(mailserver()) == []


@pytest.mark.parametrize(
    "name",
    ["mx.example.com", "a" * 41, "Corp", "9corp", "corp-", "corp_mail", ""],
)
def test_a_name_that_would_make_invalid_object_names_is_refused(name: str) -> None:
    (message,) = admitted(mailserver(name))
    assert "at most 40 characters" in message


def test_the_longest_name_allowed_makes_valid_names_for_every_object() -> None:
    name = "m" * 40
    assert admitted(mailserver(name)) == []
    rendered = render.render(mailserver(name), [], render.Options(image="x", keda=True))
    for obj in [*rendered.objects, rendered.token_secret]:
        found = obj["metadata"]["name"]
        assert DNS_1123.match(found), found
        assert len(found) <= 253, found
        if obj["kind"] == "Service":
            assert DNS_1035.match(found), found
            assert len(found) <= 63, found
        for value in obj["metadata"]["labels"].values():
            assert len(value) <= 63, value
    assert len(f"keda-hpa-{name}-delivery") <= 63  # the HPA KEDA makes for the ScaledObject


def test_submission_without_tls_or_users_is_refused() -> None:
    body = mailserver(listeners={"submission": {"enabled": True}})
    (message,) = admitted(body)
    assert "submission needs tls.secretName" in message
    body = mailserver(
        listeners={
            "submission": {"enabled": True, "authSecretName": "u"},
            "tls": {"secretName": "t"},
        }
    )
    assert admitted(body) == []


def test_submission_on_the_smtp_port_is_refused() -> None:
    body = mailserver(
        listeners={
            "smtp": {"port": 587},
            "submission": {"enabled": True, "authSecretName": "u"},
            "tls": {"secretName": "t"},
        }
    )
    assert admitted(body) == ["the submission port must differ from the SMTP port"]


def test_the_existing_rules_still_hold() -> None:
    body = mailserver(nats={"url": "nats://n:4222", "urlSecret": {"name": "s"}})
    assert admitted(body) == ["set exactly one of url and urlSecret"]


def test_a_ca_for_an_object_store_reached_over_plain_http_is_refused() -> None:
    store = {"credentialsSecret": "s3", "caSecret": {"name": "s3-ca"}}
    body = mailserver(objectStore={**store, "endpoint": "http://s3.mail.svc:8333"})
    assert admitted(body) == ["caSecret is for an https:// endpoint"]
    assert admitted(mailserver(objectStore={**store, "endpoint": "https://s3.example.net"})) == []
