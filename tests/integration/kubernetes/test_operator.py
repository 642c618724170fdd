"""The operator (kopf) against a Kubernetes API emulator (kmock).

The emulator serves the built-in resources and the CRDs the chart installs, and keeps what
an API server keeps (resourceVersion, generation, the garbage collector's cascade; see
tests/emulator.py); the operator logs in with a kubeconfig, as it would outside a cluster.
The tests act as a user and as the cluster would: they create, change and delete MailServers
and MailPlugins over the API, and stand in for the kubelet and the cloud's load balancer by
writing Deployment and Service status.
"""

from __future__ import annotations

import base64
import json
import logging
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519
from kmock import ResourceInfo

from tests.emulator import Cluster
from tests.operator_harness import (
    COMPONENTS,
    IMAGE,
    NS,
    PLUGINS,
    SELECTOR,
    SERVERS,
    Api,
    condition,
    degraded,
    deployment_url,
    has_status,
    mailplugin,
    mailserver,
)
from tests.waiting import passes

# An emulator that keeps resourceVersion, generation and owner references as the API does.
pytestmark = pytest.mark.kmock(cls=Cluster)


async def test_a_mailserver_becomes_the_objects_that_run_it(api: Api, operator: Any) -> None:
    await operator()
    await api.create(SERVERS, mailserver())
    server = await api.wait(f"{SERVERS}/corp", has_status(1))
    owner = {
        "apiVersion": "empath.io/v1alpha1",
        "kind": "MailServer",
        "name": "corp",
        "uid": "uid-corp",
        "controller": True,
        "blockOwnerDeletion": True,
    }

    config = await api.get(f"/api/v1/namespaces/{NS}/configmaps/corp-config")
    assert config is not None
    data = config["data"]
    assert data["EMPATH_HOSTNAME"] == "mx.example.com"
    assert data["EMPATH_RELAY_DOMAINS"] == "example.com"
    assert data["EMPATH_TRUSTED_NETWORKS"] == "10.0.0.0/8"
    assert data["EMPATH_NATS_URL"] == "nats://nats.mail.svc:4222"
    assert data["EMPATH_S3_ENDPOINT"] == "http://s3.mail.svc:8333"
    assert data["EMPATH_RETRY_SCHEDULE"] == "0,30,120,480,1800,3600"  # the CRD's default
    assert data["EMPATH_SMTP_LISTEN"] == "0.0.0.0:2525"
    assert data["EMPATH_HEALTH_LISTEN"] == "0.0.0.0:8080"
    # The installation's OTLP endpoint reaches every pod through the shared settings.
    assert data["EMPATH_OTLP_ENDPOINT"] == "http://otel-collector.observability.svc:4318"
    assert config["metadata"]["ownerReferences"] == [owner]

    hashes = set()
    for component in COMPONENTS:
        deployment = await api.get(deployment_url(f"corp-{component}"))
        assert deployment is not None, component
        assert deployment["metadata"]["ownerReferences"] == [owner]
        pod = deployment["spec"]["template"]["spec"]
        (container,) = pod["containers"]
        assert container["image"] == IMAGE
        assert container["args"] == [component]
        assert container["envFrom"] == [{"configMapRef": {"name": "corp-config"}}]
        assert container["securityContext"]["readOnlyRootFilesystem"] is True
        assert container["securityContext"]["runAsNonRoot"] is True
        assert container["securityContext"]["allowPrivilegeEscalation"] is False
        assert container["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "health"}
        assert container["livenessProbe"]["httpGet"] == {"path": "/livez", "port": "health"}
        assert pod["securityContext"]["runAsNonRoot"] is True
        env = {e["name"]: e for e in container["env"]}
        assert env["EMPATH_S3_SECRET_KEY"]["valueFrom"]["secretKeyRef"] == {
            "name": "s3",
            "key": "secretKey",
        }
        hashes.add(
            deployment["spec"]["template"]["metadata"]["annotations"]["empath.io/config-hash"]
        )
        pdb = await api.get(
            f"/apis/policy/v1/namespaces/{NS}/poddisruptionbudgets/corp-{component}"
        )
        assert pdb is not None
        assert pdb["spec"]["maxUnavailable"] == 1
    assert len(hashes) == 1

    ingress = await api.get(deployment_url("corp-ingress"))
    delivery = await api.get(deployment_url("corp-delivery"))
    control = await api.get(deployment_url("corp-control"))
    assert ingress
    assert delivery
    assert control
    assert ingress["spec"]["replicas"] == 2
    assert delivery["spec"]["replicas"] == 1  # the API server's default; the autoscaler's now
    control_env = {
        e["name"]: e for e in control["spec"]["template"]["spec"]["containers"][0]["env"]
    }
    assert control_env["EMPATH_CONTROL_TOKEN"]["valueFrom"]["secretKeyRef"] == {
        "name": "corp-control-token",
        "key": "token",
    }

    smtp = await api.get(f"/api/v1/namespaces/{NS}/services/corp-smtp")
    assert smtp is not None
    assert smtp["spec"]["type"] == "LoadBalancer"
    assert smtp["spec"]["ports"] == [
        {"name": "smtp", "port": 25, "targetPort": "smtp", "protocol": "TCP"}
    ]
    assert smtp["spec"]["selector"] == {
        "app.kubernetes.io/instance": "corp",
        "app.kubernetes.io/component": "ingress",
    }
    control_service = await api.get(f"/api/v1/namespaces/{NS}/services/corp-control")
    assert control_service is not None
    assert control_service["spec"]["type"] == "ClusterIP"
    assert [p["name"] for p in control_service["spec"]["ports"]] == ["http"]  # kubectl empath

    token = await api.get(f"/api/v1/namespaces/{NS}/secrets/corp-control-token")
    assert token is not None
    assert len(base64.b64decode(token["data"]["token"])) >= 32
    # The event keys of ingress and the spool: the spool trusts the key ingress signs with.
    keys = await api.get(f"/api/v1/namespaces/{NS}/secrets/corp-event-keys")
    assert keys is not None
    assert keys["metadata"]["ownerReferences"] == [owner]
    files = {name: base64.b64decode(value) for name, value in keys["data"].items()}
    ingress_key = serialization.load_pem_private_key(files["event-ingress.key"], password=None)
    trusted = serialization.load_pem_public_key(files["event-trusted.pub"])
    assert isinstance(ingress_key, ed25519.Ed25519PrivateKey)
    assert isinstance(trusted, ed25519.Ed25519PublicKey)
    trusted.verify(ingress_key.sign(b"received"), b"received")
    assert isinstance(
        serialization.load_pem_private_key(files["event-spool.key"], password=None),
        ed25519.Ed25519PrivateKey,
    )

    hpa = await api.get(
        f"/apis/autoscaling/v2/namespaces/{NS}/horizontalpodautoscalers/corp-delivery"
    )
    assert hpa is not None
    assert hpa["spec"]["scaleTargetRef"]["name"] == "corp-delivery"
    assert (hpa["spec"]["minReplicas"], hpa["spec"]["maxReplicas"]) == (1, 10)

    assert server["status"]["autoscaler"] == "hpa"
    assert condition(server, "Degraded")["status"] == "False"
    assert condition(server, "Ready")["status"] == "False"
    assert condition(server, "Progressing")["status"] == "True"
    assert "corp-smtp.mail.svc:25" in server["status"]["endpoint"]

    # The kubelet reports pods ready, the cloud gives the Service an address.
    await api.pods_ready()
    await api.patch(
        f"/api/v1/namespaces/{NS}/services/corp-smtp/status",
        {"status": {"loadBalancer": {"ingress": [{"ip": "203.0.113.7"}]}}},
    )
    server = await api.wait(
        f"{SERVERS}/corp",
        lambda o: (
            condition(o, "Ready").get("status") == "True"
            and o["status"].get("endpoint") == "203.0.113.7:25"
        ),
    )
    assert condition(server, "Progressing")["status"] == "False"
    assert server["status"]["services"]["ingress"] == {"replicas": 2, "readyReplicas": 2}
    assert server["status"]["services"]["delivery"] == {"replicas": 1, "readyReplicas": 1}

    # `kubectl rollout restart`: a new pod template the Deployment controller has not acted on
    # yet, so a rollout is pending.
    restart = {"kubectl.kubernetes.io/restartedAt": "2026-11-24T00:00:00Z"}
    await api.patch(
        deployment_url("corp-spool"),
        {"spec": {"template": {"metadata": {"annotations": restart}}}},
    )
    server = await api.wait(
        f"{SERVERS}/corp", lambda o: condition(o, "Progressing").get("status") == "True"
    )
    assert "spool" in condition(server, "Progressing")["message"]
    await api.patch(f"{deployment_url('corp-spool')}/status", {"status": {"observedGeneration": 2}})
    await api.wait(
        f"{SERVERS}/corp", lambda o: condition(o, "Progressing").get("status") == "False"
    )


async def test_a_spec_change_rolls_out_and_a_bad_one_changes_nothing(
    api: Api, operator: Any
) -> None:
    await operator()
    await api.create(SERVERS, mailserver())
    await api.wait(f"{SERVERS}/corp", has_status(1))
    before = await api.get(deployment_url("corp-spool"))
    token = await api.get(f"/api/v1/namespaces/{NS}/secrets/corp-control-token")
    event_keys = await api.get(f"/api/v1/namespaces/{NS}/secrets/corp-event-keys")
    assert before
    assert token
    assert event_keys
    old_hash = before["spec"]["template"]["metadata"]["annotations"]["empath.io/config-hash"]

    await api.patch(
        f"{SERVERS}/corp",
        {"spec": {"limits": {"maxMessageSize": 10485760}}},
    )
    await api.wait(f"{SERVERS}/corp", has_status(2))
    config = await api.get(f"/api/v1/namespaces/{NS}/configmaps/corp-config")
    assert config is not None
    assert config["data"]["EMPATH_MAX_MESSAGE_SIZE"] == "10485760"
    for component in COMPONENTS:
        deployment = await api.get(deployment_url(f"corp-{component}"))
        assert deployment is not None
        new_hash = deployment["spec"]["template"]["metadata"]["annotations"][
            "empath.io/config-hash"
        ]
        assert new_hash != old_hash, f"{component} would not restart on the new settings"
    # The control token is the clients' credential: a spec change leaves it alone (and the
    # event keys: events in flight are signed with them).
    assert await api.get(f"/api/v1/namespaces/{NS}/secrets/corp-control-token") == token
    assert await api.get(f"/api/v1/namespaces/{NS}/secrets/corp-event-keys") == event_keys

    config_versions = api.versions("v1/configmaps", "corp-config")
    await api.patch(
        f"{SERVERS}/corp",
        {"spec": {"trustedNetworks": ["0.0.0.0/0"]}},
    )
    server = await degraded(api, "InvalidSpec")
    assert "spec.trustedNetworks" in server["degraded"]["message"]
    assert "open relay" in server["degraded"]["message"]
    assert condition(server, "Ready")["status"] == "False"
    assert server["status"]["observedGeneration"] == 2  # generation 3 was not applied
    await api.handled(lambda spec: spec["trustedNetworks"] == ["0.0.0.0/0"])
    assert api.versions("v1/configmaps", "corp-config") == config_versions
    config = await api.get(f"/api/v1/namespaces/{NS}/configmaps/corp-config")
    assert config is not None
    assert config["data"]["EMPATH_TRUSTED_NETWORKS"] == "10.0.0.0/8"
    warning = await api.event(lambda e: e.get("reason") == "InvalidSpec")
    assert warning["type"] == "Warning"
    assert warning["involvedObject"]["name"] == "corp"
    assert "open relay" in warning["message"]

    # Fixing the spec recovers; a setting the spec no longer has leaves the ConfigMap.
    await api.patch(f"{SERVERS}/corp", {"spec": {"trustedNetworks": []}})
    server = await api.wait(f"{SERVERS}/corp", has_status(4))
    assert condition(server, "Degraded")["status"] == "False"
    config = await api.get(f"/api/v1/namespaces/{NS}/configmaps/corp-config")
    assert config is not None
    assert "EMPATH_TRUSTED_NETWORKS" not in config["data"]
    assert config["data"]["EMPATH_HOSTNAME"] == "mx.example.com"


async def test_mailplugins_a_server_selects_render_into_its_settings(
    api: Api, operator: Any
) -> None:
    await operator()
    await api.create(PLUGINS, mailplugin("spam-check", {"team": "mail"}, priority=10))
    await api.create(
        PLUGINS,
        mailplugin(
            "audit",
            {"team": "mail"},
            hooks=["delivered", "failed"],
            endpoint={"subject": "audit.mail"},
        ),
    )
    await api.create(PLUGINS, mailplugin("elsewhere", {"team": "web"}))
    await api.create(SERVERS, mailserver(pluginSelector={"matchLabels": {"team": "mail"}}))
    server = await api.wait(f"{SERVERS}/corp", has_status(1))
    assert server["status"]["plugins"] == ["spam-check", "audit"]  # by priority, then name

    async def plugins() -> list[dict[str, Any]]:
        config = await api.get(f"/api/v1/namespaces/{NS}/configmaps/corp-config")
        assert config is not None
        return list(json.loads(config["data"]["EMPATH_PLUGINS"]))

    assert await plugins() == [
        {
            "name": "spam-check",
            "hooks": ["rcpt"],
            "timeout": 5,
            "failure_policy": "Ignore",
            "priority": 10,
            "url": "http://spam-check.mail.svc/hook",
        },
        {
            "name": "audit",
            "hooks": ["delivered", "failed"],
            "timeout": 5,
            "failure_policy": "Ignore",
            "priority": 100,
            "subject": "audit.mail",
        },
    ]

    # A plugin joins, one changes, one goes: the server's settings follow each time.
    await api.create(PLUGINS, mailplugin("greylist", {"team": "mail"}, failurePolicy="Fail"))
    await api.wait(f"{SERVERS}/corp", lambda o: "greylist" in o["status"]["plugins"])
    await api.patch(f"{PLUGINS}/spam-check", {"spec": {"timeoutSeconds": 2}})
    await api.delete(f"{PLUGINS}/audit")
    await api.wait(
        f"{SERVERS}/corp", lambda o: o["status"]["plugins"] == ["spam-check", "greylist"]
    )

    async def followed() -> dict[str, dict[str, Any]]:
        rendered = {p["name"]: p for p in await plugins()}
        assert rendered.get("spam-check", {}).get("timeout") == 2, rendered
        return rendered

    rendered = await passes(followed)
    assert sorted(rendered) == ["greylist", "spam-check"]
    assert rendered["greylist"]["failure_policy"] == "Fail"


async def test_keda_scales_delivery_on_the_backlog_when_the_cluster_has_it(
    api: Api, operator: Any
) -> None:
    api.kmock.resources["keda.sh/v1alpha1/scaledobjects"] = ResourceInfo(
        kind="ScaledObject", namespaced=True, verbs={"get", "list", "create", "patch", "delete"}
    )
    await operator()
    await api.create(SERVERS, mailserver(autoscaling={"maxReplicas": 30, "backlogPerWorker": 250}))
    server = await api.wait(f"{SERVERS}/corp", has_status(1))
    assert server["status"]["autoscaler"] == "keda"
    scaled = await api.get(f"/apis/keda.sh/v1alpha1/namespaces/{NS}/scaledobjects/corp-delivery")
    assert scaled is not None
    assert scaled["spec"]["scaleTargetRef"] == {"name": "corp-delivery"}
    assert (scaled["spec"]["minReplicaCount"], scaled["spec"]["maxReplicaCount"]) == (1, 30)
    assert scaled["spec"]["triggers"] == [
        {
            "type": "nats-jetstream",
            "metadata": {
                "natsServerMonitoringEndpoint": "nats.mail.svc:8222",
                "account": "$G",
                "stream": "EMPATH_JOBS",
                "consumer": "delivery",
                "lagThreshold": "250",
            },
        }
    ]
    hpa = f"/apis/autoscaling/v2/namespaces/{NS}/horizontalpodautoscalers/corp-delivery"
    assert await api.get(hpa) is None

    # Autoscaling off: no autoscaler, the spec's replicas.
    await api.patch(
        f"{SERVERS}/corp",
        {
            "spec": {"autoscaling": {"enabled": False}, "services": {"delivery": {"replicas": 3}}},
        },
    )
    server = await api.wait(f"{SERVERS}/corp", has_status(2))
    assert server["status"]["autoscaler"] == "none"
    assert (
        await api.get(f"/apis/keda.sh/v1alpha1/namespaces/{NS}/scaledobjects/corp-delivery") is None
    )
    delivery = await api.get(deployment_url("corp-delivery"))
    assert delivery is not None
    assert delivery["spec"]["replicas"] == 3


async def test_a_restarted_operator_changes_nothing_and_a_deleted_server_is_left_alone(
    api: Api, operator: Any, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="kopf.objects")  # what the operator says it did
    stop = await operator()
    await api.create(PLUGINS, mailplugin("spam-check", {"team": "mail"}))
    await api.create(SERVERS, mailserver(pluginSelector=SELECTOR))
    await api.wait(f"{SERVERS}/corp", has_status(1))
    await api.handled(lambda spec: spec == mailserver(pluginSelector=SELECTOR)["spec"])
    await stop()

    children = [
        ("v1/configmaps", "corp-config"),
        ("v1/secrets", "corp-control-token"),
        ("v1/secrets", "corp-event-keys"),
        ("v1/services", "corp-smtp"),
        ("v1/services", "corp-control"),
        *[("apps/v1/deployments", f"corp-{c}") for c in COMPONENTS],
        *[("policy/v1/poddisruptionbudgets", f"corp-{c}") for c in COMPONENTS],
        ("autoscaling/v2/horizontalpodautoscalers", "corp-delivery"),
    ]
    versions = {child: api.versions(*child) for child in children}
    status = (await api.get(f"{SERVERS}/corp") or {})["status"]
    reads = api.requests("get", deployment_url("corp-control"))

    stop = await operator()
    # The resumed reconcile reads every object (its last step reads the Deployments) ...

    async def resumed() -> None:
        assert "Resuming is processed: 1 succeeded; 0 failed." in caplog.messages

    # Generous: on a loaded 2-core machine kopf's start-up and the resume took over 20 s once.
    await passes(resumed, timeout=60)
    assert api.requests("get", deployment_url("corp-control")) > reads
    await stop()  # kopf finishes the events it has received before it stops
    # ... and writes nothing: not one object, not the status.
    assert {child: api.versions(*child) for child in children} == versions
    server = await api.get(f"{SERVERS}/corp")
    assert server is not None
    assert {k: v for k, v in server["status"].items() if k != "kopf"} == {
        k: v for k, v in status.items() if k != "kopf"
    }

    # Objects deleted by hand are made again at once.
    stop = await operator()
    await api.delete(deployment_url("corp-spool"))
    await api.delete(f"/api/v1/namespaces/{NS}/configmaps/corp-config")
    again = await api.wait(deployment_url("corp-spool"), lambda o: True)
    assert again["spec"]["template"]["spec"]["containers"][0]["args"] == ["spool"]
    config = await api.wait(f"/api/v1/namespaces/{NS}/configmaps/corp-config", lambda o: True)
    assert config["data"]["EMPATH_HOSTNAME"] == "mx.example.com"

    # Deleting the server: the garbage collector deletes what it owns (owner references); the
    # operator does not make them again, nor fail on the events that follow.
    looked = api.requests("get", f"{SERVERS}/corp")
    await api.delete(f"{SERVERS}/corp")
    await api.create(PLUGINS, mailplugin("late", {"team": "mail"}))
    watched = [child for child in children if child[0] != "v1/secrets"]

    async def looked_for_the_server_after_each_deletion() -> None:
        assert api.requests("get", f"{SERVERS}/corp") >= looked + len(watched)

    await passes(looked_for_the_server_after_each_deletion)
    await stop()
    assert await api.get(f"{SERVERS}/corp") is None
    for resource, name in children:
        assert api.kmock.objects[resource, NS, name].deleted, (resource, name)
    # Nothing the operator did in all this failed. (asyncio may report, when it collects it,
    # that kopf's watch stream of the operator stopped earlier failed to close: a finalizer of
    # the library's, not something the operator did.)
    assert not [
        r.getMessage()
        for r in caplog.records
        if r.levelno >= logging.ERROR
        and not (r.name == "asyncio" and "infinite_watch" in r.getMessage())
    ]


async def test_an_api_that_refuses_an_object_degrades_the_server_and_says_why(
    api: Api, operator: Any
) -> None:
    api.revoke("poddisruptionbudgets")  # an installation whose RBAC leaves them out
    await operator()
    await api.create(SERVERS, mailserver())
    server = await degraded(api, "ApplyFailed")
    assert "403" in server["degraded"]["message"]
    assert "poddisruptionbudgets.policy is forbidden" in server["degraded"]["message"]
    warning = await api.event(lambda e: e.get("reason") == "ApplyFailed")
    assert warning["type"] == "Warning"
    assert "poddisruptionbudgets" in warning["message"]
