"""What a MailServer spec renders into, where the cases are many and the API adds nothing."""

from __future__ import annotations

from typing import Any

import pytest

from empath.operator import configmap, plugins, render
from tests.specs import mailserver as server

OPTIONS = render.Options(image="empath:test", keda=True)


def test_the_operators_own_environment_does_not_leak_into_the_check(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("EMPATH_CONFIG", "/nonexistent.yaml")
    monkeypatch.setenv("EMPATH_SUBMISSION_LISTEN", "0.0.0.0:587")
    made = render.render(server(), [], OPTIONS)
    assert "EMPATH_SUBMISSION_LISTEN" not in made.named("ConfigMap", "corp-config")["data"]


@pytest.mark.parametrize(
    ("spec", "named"),
    [
        ({"trustedNetworks": ["0.0.0.0/0"]}, "spec.trustedNetworks"),
        ({"trustedNetworks": ["not-a-network"]}, "spec.trustedNetworks"),
        (
            {"delivery": {"mxOverrides": {"example.com": "bad host name"}}},
            "spec.delivery.mxOverrides",
        ),
        ({"delivery": {"dnsNameservers": ["dns.example.com"]}}, "spec.delivery.dnsNameservers"),
        ({"listeners": {"submission": {"enabled": True}}}, "spec.listeners.submission"),
    ],
)
def test_a_spec_the_services_would_refuse_is_refused_naming_the_field(
    spec: dict[str, Any], named: str
) -> None:
    with pytest.raises(configmap.InvalidSpec, match=named.replace(".", r"\.")):
        render.render(server(**spec), [], OPTIONS)


def test_keda_needs_the_monitoring_endpoint_else_an_hpa() -> None:
    secret_url = {"urlSecret": {"name": "nats"}}
    made = render.render(server(nats=secret_url), [], OPTIONS)
    assert made.autoscaler == "hpa"  # no host to read the backlog from
    made = render.render(
        server(nats={**secret_url, "monitoringEndpoint": "nats-mon:8222"}), [], OPTIONS
    )
    assert made.autoscaler == "keda"


@pytest.mark.parametrize(
    ("selector", "selected"),
    [
        (None, []),
        ({}, ["a", "b", "c"]),
        ({"matchLabels": {"tier": "edge"}}, ["a", "b"]),
        ({"matchExpressions": [{"key": "tier", "operator": "In", "values": ["core"]}]}, ["c"]),
        (
            {"matchExpressions": [{"key": "tier", "operator": "NotIn", "values": ["core"]}]},
            ["a", "b"],
        ),
        ({"matchExpressions": [{"key": "beta", "operator": "Exists"}]}, ["b"]),
        ({"matchExpressions": [{"key": "beta", "operator": "DoesNotExist"}]}, ["a", "c"]),
    ],
)
def test_plugin_selection_follows_label_selector_rules(
    selector: dict[str, Any] | None, selected: list[str]
) -> None:
    mailplugins = [
        {"metadata": {"name": "a", "labels": {"tier": "edge"}}},
        {"metadata": {"name": "b", "labels": {"tier": "edge", "beta": "yes"}}},
        {"metadata": {"name": "c", "labels": {"tier": "core"}}},
    ]
    found = [
        p["metadata"]["name"]
        for p in mailplugins
        if plugins.selects(selector, p["metadata"]["labels"])
    ]
    assert found == selected


def test_a_mailserver_may_send_its_traces_elsewhere_than_the_installation() -> None:
    installation = render.Options(image="empath:test", otlp_endpoint="http://otel.obs.svc:4318")
    made = render.render(server(), [], installation)
    assert made.named("ConfigMap", "corp-config")["data"]["EMPATH_OTLP_ENDPOINT"] == (
        "http://otel.obs.svc:4318"
    )
    own = server(observability={"otlpEndpoint": "http://tenant-otel.corp.svc:4318"})
    made = render.render(own, [], installation)
    assert made.named("ConfigMap", "corp-config")["data"]["EMPATH_OTLP_ENDPOINT"] == (
        "http://tenant-otel.corp.svc:4318"
    )
    made = render.render(server(), [], render.Options(image="empath:test"))
    assert "EMPATH_OTLP_ENDPOINT" not in made.named("ConfigMap", "corp-config")["data"]


def test_pods_have_requests_by_default_and_traffic_carriers_spread_over_nodes() -> None:
    made = render.render(server(), [], OPTIONS)
    for component in ("ingress", "spool", "delivery", "control"):
        pod = made.named("Deployment", f"corp-{component}")["spec"]["template"]["spec"]
        resources = pod["containers"][0]["resources"]
        # The HPA's CPU utilisation is relative to the request: without one it cannot scale.
        assert resources["requests"] == {"cpu": "100m", "memory": "128Mi"}
        assert resources["limits"] == {"memory": "1Gi"}
        spread = pod.get("topologySpreadConstraints", [])
        assert bool(spread) == (component in ("ingress", "delivery"))
    own = server(services={"delivery": {"resources": {"requests": {"cpu": "1"}}}})
    made = render.render(own, [], OPTIONS)
    pod = made.named("Deployment", "corp-delivery")["spec"]["template"]["spec"]
    assert pod["containers"][0]["resources"] == {"requests": {"cpu": "1"}}


def test_pull_secrets_and_scheduling_reach_every_pod() -> None:
    installation = render.Options(image="registry.corp/empath:1", pull_secrets=("regcred",))
    made = render.render(server(), [], installation)
    pod = made.named("Deployment", "corp-spool")["spec"]["template"]["spec"]
    assert pod["imagePullSecrets"] == [{"name": "regcred"}]
    assert pod["containers"][0]["image"] == "registry.corp/empath:1"

    own = server(
        image="mirror.corp/empath:1",
        imagePullSecrets=[{"name": "mirror"}],
        pod={
            "nodeSelector": {"pool": "mail"},
            "tolerations": [{"key": "mail", "operator": "Exists", "effect": "NoSchedule"}],
            "priorityClassName": "mail-critical",
            "annotations": {"sidecar.istio.io/inject": "false"},
        },
    )
    made = render.render(own, [], installation)
    hashes = set()
    for component in ("ingress", "spool", "delivery", "control"):
        template = made.named("Deployment", f"corp-{component}")["spec"]["template"]
        pod = template["spec"]
        assert pod["containers"][0]["image"] == "mirror.corp/empath:1"
        assert pod["imagePullSecrets"] == [{"name": "mirror"}]
        assert pod["nodeSelector"] == {"pool": "mail"}
        assert pod["tolerations"][0]["key"] == "mail"
        assert pod["priorityClassName"] == "mail-critical"
        assert template["metadata"]["annotations"]["sidecar.istio.io/inject"] == "false"
        hashes.add(template["metadata"]["annotations"]["empath.io/config-hash"])
    assert len(hashes) == 1


def test_ingress_keeps_accepting_until_its_endpoints_are_gone() -> None:
    made = render.render(server(), [], OPTIONS)
    pod = made.named("Deployment", "corp-ingress")["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    assert container["lifecycle"]["preStop"]["exec"]["command"] == ["sleep", "5"]
    # The pause and the 30 s drain both fit in the grace period before SIGKILL.
    assert pod["terminationGracePeriodSeconds"] >= 5 + 30


def test_the_smtp_service_keeps_client_addresses_by_default() -> None:
    made = render.render(server(), [], OPTIONS)
    smtp = made.named("Service", "corp-smtp")["spec"]
    # Relay policy (trustedNetworks) decides on the client's address: kube-proxy must not
    # replace it with a node's, as `Cluster` would.
    assert smtp["externalTrafficPolicy"] == "Local"
    assert smtp["type"] == "LoadBalancer"


def test_a_spec_that_asks_for_cluster_traffic_policy_gets_it() -> None:
    own = server(listeners={"service": {"externalTrafficPolicy": "Cluster"}})
    made = render.render(own, [], OPTIONS)
    assert made.named("Service", "corp-smtp")["spec"]["externalTrafficPolicy"] == "Cluster"


def pod_files(made: render.Rendered, component: str) -> tuple[dict[str, str | None], set[str]]:
    """A pod's environment values, and the Secret keys it mounts as `secret:key`."""
    pod = made.named("Deployment", f"corp-{component}")["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    env = {e["name"]: e.get("value") for e in container["env"]}
    mounted = {v["name"] for v in pod["volumes"]} & {m["name"] for m in container["volumeMounts"]}
    keys = {
        f"{v['secret']['secretName']}:{item['key']}"
        for v in pod["volumes"]
        if v["name"] in mounted and "secret" in v
        for item in v["secret"].get("items", [])
    }
    return env, keys


def test_each_pod_connects_as_its_own_nats_user_and_mounts_only_its_own_password() -> None:
    spec = {"nats": {"url": "nats://nats.mail.svc:4222", "credentialsSecret": "nats-users"}}
    made = render.render(server(**spec), [], OPTIONS)
    for component in ("ingress", "spool", "delivery", "control"):
        env, keys = pod_files(made, component)
        assert env["EMPATH_NATS_USER"] == component
        assert env["EMPATH_NATS_PASSWORD_FILE"] == "/etc/empath/nats/password"
        assert {k for k in keys if k.startswith("nats-users:")} == {f"nats-users:{component}"}
    # Without the Secret the pods connect anonymously, as before.
    env, keys = pod_files(render.render(server(), [], OPTIONS), "delivery")
    assert "EMPATH_NATS_USER" not in env
    assert keys == set()


def test_ingress_and_the_spool_mount_only_their_own_event_keys() -> None:
    made = render.render(server(), [], OPTIONS)
    assert made.event_keys_secret["metadata"]["name"] == "corp-event-keys"
    ingress_env, ingress_keys = pod_files(made, "ingress")
    assert ingress_keys == {"corp-event-keys:event-ingress.key"}
    assert ingress_env["EMPATH_EVENT_SIGNING_KEY_FILE"] == "/etc/empath/events/event-ingress.key"
    spool_env, spool_keys = pod_files(made, "spool")
    assert spool_keys == {"corp-event-keys:event-spool.key", "corp-event-keys:event-trusted.pub"}
    assert spool_env["EMPATH_EVENT_TRUSTED_KEYS_FILE"] == "/etc/empath/events/event-trusted.pub"
    for component in ("delivery", "control"):
        env, keys = pod_files(made, component)
        assert keys == set()
        assert not any(name.startswith("EMPATH_EVENT_") for name in env)


def test_every_pod_mounts_the_object_stores_ca_and_verifies_the_store_with_it() -> None:
    store = {"endpoint": "https://s3.example.net", "credentialsSecret": "s3"}
    made = render.render(server(objectStore={**store, "caSecret": {"name": "s3-ca"}}), [], OPTIONS)
    for component in ("ingress", "spool", "delivery", "control"):
        env, keys = pod_files(made, component)
        assert env["EMPATH_S3_TLS_CA"] == "/etc/empath/s3/ca.pem"
        assert {k for k in keys if k.startswith("s3-ca:")} == {"s3-ca:ca.crt"}
    # Without it the pods verify the store with the system's CAs; another CA rolls the pods.
    plain = render.render(server(objectStore=store), [], OPTIONS)
    env, keys = pod_files(plain, "delivery")
    assert "EMPATH_S3_TLS_CA" not in env
    assert keys == set()
    assert plain.config_hash != made.config_hash
