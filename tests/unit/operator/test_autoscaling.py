"""KEDA's trigger as the spec configures it, and the reason given for each autoscaler."""

from __future__ import annotations

from empath.operator import render
from tests.specs import mailserver

KEDA = render.Options(image="x", keda=True)


def test_keda_reads_the_account_over_https_with_a_trigger_authentication() -> None:
    body = mailserver(
        autoscaling={
            "keda": {
                "account": "EMPATH",
                "useHttps": True,
                "authenticationRef": {"name": "nats-monitoring"},
            }
        }
    )
    made = render.render(body, [], KEDA)
    (trigger,) = made.named("ScaledObject", "corp-delivery")["spec"]["triggers"]
    assert trigger["metadata"]["account"] == "EMPATH"
    assert trigger["metadata"]["useHttps"] == "true"
    assert trigger["authenticationRef"] == {
        "name": "nats-monitoring",
        "kind": "TriggerAuthentication",
    }
    assert made.autoscaler_reason == "KEDA on the delivery backlog, read from nats.mail.svc:8222"


def test_keda_defaults_to_the_global_account_over_http_without_credentials() -> None:
    made = render.render(mailserver(), [], KEDA)
    (trigger,) = made.named("ScaledObject", "corp-delivery")["spec"]["triggers"]
    assert trigger["metadata"]["account"] == "$G"
    assert "useHttps" not in trigger["metadata"]
    assert "authenticationRef" not in trigger


def test_keda_without_a_monitoring_endpoint_falls_back_to_cpu_and_says_why() -> None:
    body = mailserver(nats={"urlSecret": {"name": "nats-url", "key": "url"}})
    made = render.render(body, [], KEDA)
    assert made.autoscaler == "hpa"
    assert made.autoscaler_fallback
    assert "spec.nats.monitoringEndpoint" in made.autoscaler_reason
    without_keda = render.render(body, [], render.Options(image="x"))
    assert not without_keda.autoscaler_fallback
    assert without_keda.autoscaler_reason == "KEDA is not installed: scaling on CPU"
