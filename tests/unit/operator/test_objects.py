"""The objects around the pods: labels and owners, Services, budgets and autoscalers."""

from __future__ import annotations

from typing import Any

import pytest

from empath.operator import autoscaling, render
from tests.specs import mailserver as server

OPTIONS = render.Options(image="empath:test")


def test_every_object_is_found_by_the_operators_watches_and_goes_with_its_server() -> None:
    made = render.render(server(), [], render.Options(image="empath:test", keda=True))
    for obj in [*made.objects, made.token_secret]:
        where = f"{obj['kind']}/{obj['metadata']['name']}"
        assert obj["metadata"]["namespace"] == "mail", where
        assert obj["metadata"]["labels"]["app.kubernetes.io/managed-by"] == "empath-operator"
        assert obj["metadata"]["labels"]["empath.io/mailserver"] == "corp", where
        (owner,) = obj["metadata"]["ownerReferences"]
        assert (owner["kind"], owner["name"], owner["uid"]) == ("MailServer", "corp", "uid-corp")
        assert owner["controller"] is True


def test_services_and_budgets_select_the_pods_of_their_own_component_only() -> None:
    made = render.render(server(), [], OPTIONS)
    pods = {
        obj["metadata"]["name"]: obj["spec"]["template"]["metadata"]["labels"]
        for obj in made.objects
        if obj["kind"] == "Deployment"
    }

    def chosen(selector: dict[str, str]) -> list[str]:
        return sorted(n for n, labels in pods.items() if selector.items() <= labels.items())

    assert chosen(made.named("Service", "corp-smtp")["spec"]["selector"]) == ["corp-ingress"]
    assert chosen(made.named("Service", "corp-control")["spec"]["selector"]) == ["corp-control"]
    for name in pods:
        budget = made.named("PodDisruptionBudget", name)["spec"]
        assert chosen(budget["selector"]["matchLabels"]) == [name]
        assert budget["maxUnavailable"] == 1


def test_submission_is_served_with_its_certificate_and_users_mounted() -> None:
    listeners = {
        "smtp": {"port": 2525},
        "tls": {"secretName": "mx-tls"},
        "submission": {"enabled": True, "authSecretName": "mx-users", "port": 1587},
        "service": {"type": "NodePort", "annotations": {"lb.example/pool": "mail"}},
    }
    made = render.render(server(listeners=listeners), [], OPTIONS)
    smtp = made.named("Service", "corp-smtp")
    assert smtp["spec"]["type"] == "NodePort"
    assert smtp["spec"]["ports"] == [
        {"name": "smtp", "port": 2525, "targetPort": "smtp", "protocol": "TCP"},
        {"name": "submission", "port": 1587, "targetPort": "submission", "protocol": "TCP"},
    ]
    assert smtp["metadata"]["annotations"] == {"lb.example/pool": "mail"}

    pod = made.named("Deployment", "corp-ingress")["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    assert [(p["name"], p["containerPort"]) for p in container["ports"]] == [
        ("smtp", 2525),
        ("submission", 2587),
        ("health", 8080),
    ]
    secrets = {v["name"]: v["secret"]["secretName"] for v in pod["volumes"] if "secret" in v}
    assert secrets == {"tls": "mx-tls", "auth": "mx-users", "event-keys": "corp-event-keys"}
    mounted = {m["name"]: m for m in container["volumeMounts"] if m["name"] in secrets}
    assert all(m["readOnly"] for m in mounted.values())
    env = {e["name"]: e.get("value") for e in container["env"]}
    assert env["EMPATH_TLS_CERT_FILE"] == mounted["tls"]["mountPath"] + "/tls.crt"
    assert env["EMPATH_TLS_KEY_FILE"] == mounted["tls"]["mountPath"] + "/tls.key"
    assert env["EMPATH_AUTH_CREDENTIALS_FILE"] == mounted["auth"]["mountPath"] + "/credentials"
    assert env["EMPATH_SUBMISSION_LISTEN"] == "0.0.0.0:2587"
    # Only ingress listens for mail.
    spool = made.named("Deployment", "corp-spool")["spec"]["template"]["spec"]["containers"][0]
    assert [p["name"] for p in spool["ports"]] == ["health"]


@pytest.mark.parametrize(
    ("nats", "endpoint"),
    [
        ({"url": "nats://nats.mail.svc:4222"}, "nats.mail.svc:8222"),
        ({"url": "nats://a.mail.svc:4222, nats://b.mail.svc:4222"}, "a.mail.svc:8222"),
        ({"url": "nats://nats:4222", "monitoringEndpoint": "mon:9999"}, "mon:9999"),
        ({"urlSecret": {"name": "nats", "key": "url"}}, None),
    ],
)
def test_keda_reads_the_backlog_from_natss_monitoring_port(
    nats: dict[str, Any], endpoint: str | None
) -> None:
    assert autoscaling.monitoring_endpoint({"nats": nats}) == endpoint


def test_without_keda_an_hpa_scales_delivery_on_cpu() -> None:
    made = render.render(server(autoscaling={"minReplicas": 2, "maxReplicas": 5}), [], OPTIONS)
    assert made.autoscaler == "hpa"
    hpa = made.named("HorizontalPodAutoscaler", "corp-delivery")["spec"]
    assert hpa["scaleTargetRef"] == {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "name": "corp-delivery",
    }
    assert (hpa["minReplicas"], hpa["maxReplicas"]) == (2, 5)
    (metric,) = hpa["metrics"]
    assert metric["resource"]["target"] == {"type": "Utilization", "averageUtilization": 70}
    assert "replicas" not in made.named("Deployment", "corp-delivery")["spec"]


def test_without_autoscaling_delivery_runs_the_replicas_the_spec_asks_for() -> None:
    spec = {"autoscaling": {"enabled": False}, "services": {"delivery": {"replicas": 4}}}
    made = render.render(server(**spec), [], render.Options(image="x", keda=True))
    assert made.autoscaler == "none"
    assert not [o for o in made.objects if o["kind"] in ("HorizontalPodAutoscaler", "ScaledObject")]
    assert made.named("Deployment", "corp-delivery")["spec"]["replicas"] == 4
