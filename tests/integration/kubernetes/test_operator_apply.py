"""The operator against an emulator as strict as a real API server (tests/emulator.py):
server-side apply with field ownership and pruning, KEDA's admission webhook, the chart's
RBAC and the OwnerReferencesPermissionEnforcement plugin. What a user sees on a real cluster:
a field removed from the spec leaves every object, the autoscaler switches both ways, a hand
edit is put back, and an object deleted while the API refuses it comes back.
"""

from __future__ import annotations

from typing import Any

import httpx
import pytest
from kmock import ResourceInfo

from empath.operator import kube, status
from tests.emulator import Cluster
from tests.operator_harness import (
    NS,
    OPERATOR_TOKEN,
    SERVERS,
    Api,
    condition,
    degraded,
    deployment_url,
    has_status,
    mailserver,
)
from tests.waiting import passes

# The same emulator, operator and user as tests/test_operator.py.

pytestmark = pytest.mark.kmock(cls=Cluster)

SMTP = f"/api/v1/namespaces/{NS}/services/corp-smtp"
HPA = f"/apis/autoscaling/v2/namespaces/{NS}/horizontalpodautoscalers/corp-delivery"
SCALED = f"/apis/keda.sh/v1alpha1/namespaces/{NS}/scaledobjects/corp-delivery"
KEDA = "keda.sh/v1alpha1/scaledobjects"

OPTIONAL = {
    "imagePullSecrets": [{"name": "registry"}],
    "pod": {
        "nodeSelector": {"disk": "ssd"},
        "tolerations": [{"key": "mail", "operator": "Exists", "effect": "NoSchedule"}],
        "priorityClassName": "mail-critical",
        "affinity": {"nodeAffinity": {"preferredDuringSchedulingIgnoredDuringExecution": []}},
        "annotations": {"team": "mail"},
    },
    "listeners": {
        "tls": {"secretName": "mx-tls"},
        "submission": {"enabled": True, "authSecretName": "mx-users"},
        "service": {"annotations": {"lb.example/internal": "true"}},
    },
    "services": {
        "ingress": {
            "resources": {"requests": {"cpu": "200m"}, "limits": {"memory": "512Mi"}},
        }
    },
}
REMOVED = {
    "imagePullSecrets": None,
    "pod": None,
    "listeners": {"tls": None, "submission": None, "service": None},
    "services": {"ingress": {"resources": {"limits": None}}},
}


def pod_of(deployment: dict[str, Any]) -> dict[str, Any]:
    return dict(deployment["spec"]["template"])


def ingress_container(deployment: dict[str, Any]) -> dict[str, Any]:
    (container,) = pod_of(deployment)["spec"]["containers"]
    return dict(container)


async def test_a_field_removed_from_the_spec_leaves_every_object(api: Api, operator: Any) -> None:
    await operator()
    await api.create(SERVERS, mailserver(**OPTIONAL))
    await api.wait(f"{SERVERS}/corp", has_status(1))
    ingress = await api.get(deployment_url("corp-ingress"))
    smtp = await api.get(SMTP)
    assert ingress
    assert smtp
    pod = pod_of(ingress)
    assert pod["spec"]["nodeSelector"] == {"disk": "ssd"}
    assert pod["spec"]["priorityClassName"] == "mail-critical"
    assert pod["spec"]["tolerations"][0]["key"] == "mail"
    assert pod["spec"]["imagePullSecrets"] == [{"name": "registry"}]
    assert pod["metadata"]["annotations"]["team"] == "mail"
    container = ingress_container(ingress)
    assert container["resources"]["limits"] == {"memory": "512Mi"}
    assert {"EMPATH_TLS_CERT_FILE", "EMPATH_AUTH_CREDENTIALS_FILE"} <= {
        e["name"] for e in container["env"]
    }
    assert {v["name"] for v in pod["spec"]["volumes"]} == {"tmp", "event-keys", "tls", "auth"}
    assert [p["port"] for p in smtp["spec"]["ports"]] == [25, 587]
    assert smtp["metadata"]["annotations"]["lb.example/internal"] == "true"

    await api.patch(f"{SERVERS}/corp", {"spec": REMOVED})
    await api.wait(f"{SERVERS}/corp", has_status(2))
    server = await api.get(f"{SERVERS}/corp")
    assert server
    assert condition(server, "Degraded")["status"] == "False"
    for component in ("ingress", "spool", "delivery", "control"):
        deployment = await api.get(deployment_url(f"corp-{component}"))
        assert deployment
        pod = pod_of(deployment)
        for key in (
            "nodeSelector",
            "tolerations",
            "priorityClassName",
            "affinity",
            "imagePullSecrets",
        ):
            assert key not in pod["spec"], (component, key)
        assert "team" not in pod["metadata"]["annotations"], component
        assert "empath.io/config-hash" in pod["metadata"]["annotations"]
    ingress = await api.get(deployment_url("corp-ingress"))
    smtp = await api.get(SMTP)
    assert ingress
    assert smtp
    container = ingress_container(ingress)
    assert "limits" not in container["resources"]
    assert container["resources"]["requests"] == {"cpu": "200m"}
    names = {e["name"] for e in container.get("env", [])}
    assert not names & {"EMPATH_TLS_CERT_FILE", "EMPATH_AUTH_CREDENTIALS_FILE"}
    assert not names & {"EMPATH_SUBMISSION_LISTEN"}
    assert [v["name"] for v in pod_of(ingress)["spec"]["volumes"]] == ["tmp", "event-keys"]
    assert [p["name"] for p in container["ports"]] == ["smtp", "health"]
    assert [p["port"] for p in smtp["spec"]["ports"]] == [25]
    assert "lb.example/internal" not in (smtp["metadata"].get("annotations") or {})


async def test_nothing_is_written_when_nothing_changed_and_a_hand_edit_is_put_back(
    api: Api, operator: Any
) -> None:
    await operator(resync_seconds=1)
    await api.create(SERVERS, mailserver())
    await api.wait(f"{SERVERS}/corp", has_status(1))
    versions = api.versions("apps/v1/deployments", "corp-spool")
    # A change that renders the same objects (a label on the MailServer) writes none of them.
    await api.patch(f"{SERVERS}/corp", {"metadata": {"labels": {"tier": "gold"}}})
    await api.patch(f"{SERVERS}/corp", {"spec": {"postmaster": "postmaster@example.com"}})
    await api.wait(f"{SERVERS}/corp", has_status(2))
    spool = await api.get(deployment_url("corp-spool"))
    assert spool
    # (The postmaster is a setting: the ConfigMap and the config hash change, once.)
    assert api.versions("apps/v1/deployments", "corp-spool") == versions + 1

    # A hand edit of a field the operator owns: the periodic resync puts it back.
    await api.patch(
        deployment_url("corp-spool"),
        {"spec": {"template": {"spec": {"terminationGracePeriodSeconds": 1}}}},
    )
    again = await api.wait(
        deployment_url("corp-spool"),
        lambda o: o["spec"]["template"]["spec"]["terminationGracePeriodSeconds"] != 1,
        timeout=30,
    )
    assert again["spec"]["template"]["spec"]["containers"][0]["args"] == ["spool"]
    # ... and says so, as any reconcile that changes something does.
    put_back = await api.event(lambda e: e.get("message") == "1 changed: Deployment/corp-spool")
    assert (put_back["type"], put_back["reason"]) == ("Normal", "Applied")


async def test_the_autoscaler_switches_from_hpa_to_keda_and_back(api: Api, operator: Any) -> None:
    assert isinstance(api.kmock, Cluster)
    await operator()
    await api.create(SERVERS, mailserver())
    server = await api.wait(f"{SERVERS}/corp", has_status(1))
    assert server["status"]["autoscaler"] == "hpa"
    assert await api.get(HPA) is not None

    # KEDA is installed after Empath: the next reconcile moves to a ScaledObject (KEDA's
    # webhook refuses one while the HPA is there: the HPA must go first).
    api.kmock.resources[KEDA] = ResourceInfo(
        kind="ScaledObject",
        namespaced=True,
        verbs={"get", "list", "watch", "create", "patch", "delete"},
    )
    await api.patch(f"{SERVERS}/corp", {"spec": {"autoscaling": {"maxReplicas": 20}}})
    server = await api.wait(f"{SERVERS}/corp", has_status(2))
    assert server["status"]["autoscaler"] == "keda"
    assert condition(server, "Degraded")["status"] == "False", condition(server, "Degraded")
    scaled = await api.get(SCALED)
    assert scaled is not None
    assert scaled["spec"]["maxReplicaCount"] == 20
    assert await api.get(HPA) is None

    # No monitoring endpoint any more (the URL comes from a Secret): back to the HPA, and
    # the ScaledObject goes first (KEDA would otherwise keep scaling alongside it).
    await api.patch(
        f"{SERVERS}/corp",
        {"spec": {"nats": {"url": None, "urlSecret": {"name": "nats-url", "key": "url"}}}},
    )
    server = await api.wait(f"{SERVERS}/corp", has_status(3))
    assert server["status"]["autoscaler"] == "hpa"
    assert "spec.nats.monitoringEndpoint" in server["status"]["autoscalerReason"]
    warning = await api.event(lambda e: e.get("reason") == "AutoscalerFallback")
    assert warning["type"] == "Warning"
    assert "scaling on CPU" in warning["message"]
    assert condition(server, "Degraded")["status"] == "False"
    assert await api.get(SCALED) is None
    hpa = await api.get(HPA)
    assert hpa is not None
    assert hpa["spec"]["maxReplicas"] == 20
    log = list(api.kmock)
    made = min(i for i, r in enumerate(log) if r.method == "POST" and r.url.path == SCALED)
    gone = min(i for i, r in enumerate(log[made:]) if r.method == "DELETE" and r.url.path == SCALED)
    back = [i for i, r in enumerate(log[made:]) if r.method == "POST" and r.url.path == HPA]
    assert back
    assert min(back) > gone, "the HPA came back while the ScaledObject was still there"


async def test_an_owned_object_deleted_while_the_api_refuses_it_comes_back(
    api: Api, operator: Any
) -> None:
    assert isinstance(api.kmock, Cluster)
    await operator()
    await api.create(SERVERS, mailserver())
    await api.wait(f"{SERVERS}/corp", has_status(1))
    granted = api.kmock.access[OPERATOR_TOKEN]
    # For a while the operator may not write Deployments (a broken RBAC rollout, say).
    api.revoke("deployments")
    await api.delete(deployment_url("corp-spool"))

    async def refused() -> None:
        server = await api.get(f"{SERVERS}/corp")
        assert server
        assert condition(server, "Degraded").get("reason") == "ApplyFailed"

    await passes(refused)
    api.kmock.access[OPERATOR_TOKEN] = granted
    again = await api.wait(deployment_url("corp-spool"), lambda o: True, timeout=40)
    assert again["spec"]["template"]["spec"]["containers"][0]["args"] == ["spool"]
    await api.wait(
        f"{SERVERS}/corp", lambda o: condition(o, "Degraded").get("status") == "False", timeout=40
    )


async def test_a_users_object_of_the_same_name_is_never_taken_over(api: Api, operator: Any) -> None:
    """Someone's Service called corp-smtp was there first: the operator neither rewrites nor
    adopts it; the MailServer says why it is Degraded, and once the Service is gone the
    operator makes its own."""
    theirs = {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": "corp-smtp", "namespace": NS, "labels": {"team": "web"}},
        "spec": {"selector": {"app": "web"}, "ports": [{"name": "http", "port": 80}]},
    }
    await api.create(f"/api/v1/namespaces/{NS}/services", theirs)
    await operator()
    await api.create(SERVERS, mailserver())
    server = await degraded(api, "ApplyFailed")
    assert "Service corp-smtp exists and is not this MailServer's" in server["degraded"]["message"]
    warning = await api.event(lambda e: e.get("reason") == "ApplyFailed")
    assert "corp-smtp" in warning["message"]
    live = await api.get(SMTP)
    assert live
    assert live["spec"]["selector"] == {"app": "web"}
    assert [p["port"] for p in live["spec"]["ports"]] == [80]
    assert not live["metadata"].get("ownerReferences")

    await api.delete(SMTP)
    ours = await api.wait(SMTP, lambda o: bool(o["metadata"].get("ownerReferences")), timeout=40)
    assert ours["metadata"]["ownerReferences"][0]["name"] == "corp"
    await api.wait(
        f"{SERVERS}/corp", lambda o: condition(o, "Degraded").get("status") == "False", timeout=40
    )


async def test_the_operator_upgrades_its_crds_at_start_as_helm_upgrade_does_not(
    api: Api, operator: Any
) -> None:
    """An older MailServer CRD (without spec.autoscaling.keda) is what an earlier release
    left; `helm upgrade` leaves it; the new operator applies its own."""
    url = "/apis/apiextensions.k8s.io/v1/customresourcedefinitions/mailservers.empath.io"
    keda = ["spec", "versions", 0, "schema", "openAPIV3Schema", "properties", "spec"]

    def autoscaling(crd: dict[str, Any]) -> dict[str, Any]:
        node: Any = crd
        for key in keda:
            node = node[key]
        return dict(node["properties"]["autoscaling"]["properties"])

    old = await api.get(url)
    assert old is not None
    older = autoscaling(old)
    del older["keda"]
    crd = dict(old)
    node: Any = crd
    for key in keda:
        node = node[key]
    node["properties"]["autoscaling"]["properties"] = older
    await api.delete(url)
    await api.create("/apis/apiextensions.k8s.io/v1/customresourcedefinitions", crd)
    assert "keda" not in autoscaling(await api.get(url) or {})

    await operator()
    upgraded = await api.wait(url, lambda o: "keda" in autoscaling(o))
    assert upgraded["spec"]["versions"][0]["name"] == "v1alpha1"


async def test_the_emulator_refuses_a_scaled_object_for_a_deployment_an_hpa_scales(
    api: Api,
) -> None:
    """As KEDA's admission webhook does: the order of a switch matters."""
    api.kmock.resources[KEDA] = ResourceInfo(
        kind="ScaledObject", namespaced=True, verbs={"get", "create", "patch", "delete"}
    )
    target = {"apiVersion": "apps/v1", "kind": "Deployment", "name": "corp-delivery"}
    await api.create(
        HPA.rsplit("/", 1)[0],
        {
            "apiVersion": "autoscaling/v2",
            "kind": "HorizontalPodAutoscaler",
            "metadata": {"name": "corp-delivery", "namespace": NS},
            "spec": {"scaleTargetRef": target, "minReplicas": 1, "maxReplicas": 2},
        },
    )
    scaled = {
        "apiVersion": "keda.sh/v1alpha1",
        "kind": "ScaledObject",
        "metadata": {"name": "corp-delivery", "namespace": NS},
        "spec": {"scaleTargetRef": {"name": "corp-delivery"}},
    }
    refused = await api.http.post(SCALED.rsplit("/", 1)[0], json=scaled)
    assert refused.status_code == 403
    assert "already managed by the hpa 'corp-delivery'" in refused.json()["message"]
    await api.delete(HPA)
    await api.create(SCALED.rsplit("/", 1)[0], scaled)


async def test_without_update_on_mailserver_finalizers_every_owned_object_is_refused(
    api: Api, operator: Any
) -> None:
    """OwnerReferencesPermissionEnforcement (OpenShift): the owner references block the
    MailServer's deletion, which needs that right; the chart grants it."""
    api.revoke("mailservers/finalizers")
    await operator()
    await api.create(SERVERS, mailserver())

    async def refused() -> dict[str, Any]:
        server = await api.get(f"{SERVERS}/corp")
        assert server
        found = condition(server, "Degraded")
        assert found.get("reason") == "ApplyFailed", found
        return found

    found = await passes(refused)
    assert "cannot set blockOwnerDeletion" in found["message"]
    assert await api.get(deployment_url("corp-ingress")) is None


async def test_a_mailserver_the_operator_could_not_run_is_refused_by_the_api(api: Api) -> None:
    """The CRD's CEL rules, as the API server evaluates them: `kubectl apply` fails."""
    refused = await api.http.post(SERVERS, json=mailserver("mx.example.com"))
    assert refused.status_code == 422
    assert "at most 40 characters" in refused.json()["message"]
    await api.create(SERVERS, mailserver())
    refused = await api.http.patch(
        f"{SERVERS}/corp",
        json={"spec": {"listeners": {"submission": {"enabled": True}}}},
        headers={"Content-Type": "application/merge-patch+json"},
    )
    assert refused.status_code == 422
    assert "submission needs tls.secretName" in refused.json()["message"]
    server = await api.get(f"{SERVERS}/corp")
    assert server
    assert "listeners" not in server["spec"]


async def test_a_status_refresh_never_overwrites_a_degraded_written_while_it_looked(
    api: Api,
) -> None:
    """A change of a Deployment refreshes the MailServer's status from what the operator
    read; a reconcile that failed and said so meanwhile is read again, not overwritten."""
    await api.create(SERVERS, mailserver())
    reconciled = {
        "type": "Degraded",
        "status": "False",
        "reason": "Reconciled",
        "message": "every object applied",
        "lastTransitionTime": "2026-01-01T00:00:00Z",
    }
    failed = {
        **reconciled,
        "status": "True",
        "reason": "ApplyFailed",
        "message": "403: deployments.apps is forbidden",
    }
    await api.patch(
        f"{SERVERS}/corp/status", {"status": {"observedGeneration": 1, "conditions": [reconciled]}}
    )

    class Racing(kube.Cluster):
        """The reconcile's write lands while the refresh reads the Deployments."""

        raced = False

        async def get(self, url: str) -> dict[str, Any] | None:
            if "/deployments/" in url and not self.raced:
                self.raced = True
                await api.patch(f"{SERVERS}/corp/status", {"status": {"conditions": [failed]}})
            return await super().get(url)

    async with httpx.AsyncClient(base_url=str(api.kmock.url).rstrip("/")) as http:
        cluster = Racing(http)
        await status.refresh(cluster, await cluster.get(f"{SERVERS}/corp"))
        assert cluster.raced
    server = await api.get(f"{SERVERS}/corp")
    assert server
    assert condition(server, "Degraded")["reason"] == "ApplyFailed"
    assert condition(server, "Ready") | {"lastTransitionTime": None} == {
        "type": "Ready",
        "status": "False",
        "reason": "Degraded",
        "message": "see the Degraded condition",
        "lastTransitionTime": None,
        "observedGeneration": 1,
    }
    assert server["status"]["services"]["spool"] == {"replicas": 1, "readyReplicas": 0}


SETTINGS = {
    "postmaster": "hostmaster@example.com",
    "objectStore": {
        "endpoint": "http://s3.mail.svc:8333",
        "credentialsSecret": "s3",
        "region": "eu-1",
    },
    "nats": {
        "url": "nats://nats.mail.svc:4222",
        "placementTags": ["ssd"],
        "monitoringEndpoint": "nats.mail.svc:8222",
    },
    "delivery": {
        "mxOverrides": {"example.org": "relay.example.net:2525"},
        "tlsPolicies": {"example.org": "required"},
        "dnsNameservers": ["10.0.0.53"],
    },
    "observability": {"otlpEndpoint": "http://otel.mail.svc:4318"},
    "autoscaling": {
        "keda": {"useHttps": True, "authenticationRef": {"name": "nats-monitoring"}},
    },
}
SETTINGS_REMOVED = {
    "postmaster": None,
    "objectStore": {"region": None},
    "nats": {"placementTags": None},
    "delivery": {"mxOverrides": None, "tlsPolicies": None, "dnsNameservers": None},
    "observability": {"otlpEndpoint": None},
    "autoscaling": {"keda": {"useHttps": None, "authenticationRef": None}},
}
CONFIG = f"/api/v1/namespaces/{NS}/configmaps/corp-config"


def env_names(deployment: dict[str, Any]) -> set[str]:
    return {e["name"] for e in ingress_container(deployment).get("env", [])}


async def test_a_setting_removed_from_the_spec_leaves_the_configmap_and_the_scaled_object(
    api: Api, operator: Any
) -> None:
    assert isinstance(api.kmock, Cluster)
    api.kmock.resources[KEDA] = ResourceInfo(
        kind="ScaledObject", namespaced=True, verbs={"get", "create", "patch", "delete"}
    )
    await operator()
    await api.create(SERVERS, mailserver(**SETTINGS))
    await api.wait(f"{SERVERS}/corp", has_status(1))
    config = await api.get(CONFIG)
    assert config
    optional = {
        "EMPATH_POSTMASTER": "hostmaster@example.com",
        "EMPATH_S3_REGION": "eu-1",
        "EMPATH_NATS_PLACEMENT_TAGS": "ssd",
        "EMPATH_MX_OVERRIDES": "example.org=relay.example.net:2525",
        "EMPATH_TLS_POLICIES": "example.org=required",
        "EMPATH_DNS_NAMESERVERS": "10.0.0.53",
        "EMPATH_OTLP_ENDPOINT": "http://otel.mail.svc:4318",
    }
    assert optional.items() <= config["data"].items()
    scaled = await api.get(SCALED)
    assert scaled
    (trigger,) = scaled["spec"]["triggers"]
    assert trigger["metadata"]["useHttps"] == "true"
    assert trigger["authenticationRef"] == {
        "name": "nats-monitoring",
        "kind": "TriggerAuthentication",
    }

    await api.patch(f"{SERVERS}/corp", {"spec": SETTINGS_REMOVED})
    server = await api.wait(f"{SERVERS}/corp", has_status(2))
    assert condition(server, "Degraded")["status"] == "False"
    config = await api.get(CONFIG)
    assert config
    left = {key for key in optional if key in config["data"]}
    assert left == {"EMPATH_OTLP_ENDPOINT"}  # the installation's, as for any MailServer
    assert config["data"]["EMPATH_OTLP_ENDPOINT"] == "http://otel-collector.observability.svc:4318"
    scaled = await api.get(SCALED)
    assert scaled
    (trigger,) = scaled["spec"]["triggers"]
    assert "useHttps" not in trigger["metadata"]
    assert "authenticationRef" not in trigger
    assert trigger["metadata"]["account"] == "$G"

    # The NATS URL from a Secret: an env var of every pod instead of a setting; and back.
    url_secret = {"name": "nats-url", "key": "url"}
    await api.patch(f"{SERVERS}/corp", {"spec": {"nats": {"url": None, "urlSecret": url_secret}}})
    await api.wait(f"{SERVERS}/corp", has_status(3))
    config = await api.get(CONFIG)
    assert config
    assert "EMPATH_NATS_URL" not in config["data"]
    for component in ("ingress", "spool", "delivery", "control"):
        deployment = await api.get(deployment_url(f"corp-{component}"))
        assert deployment
        assert "EMPATH_NATS_URL" in env_names(deployment), component
    await api.patch(
        f"{SERVERS}/corp",
        {"spec": {"nats": {"url": "nats://nats.mail.svc:4222", "urlSecret": None}}},
    )
    await api.wait(f"{SERVERS}/corp", has_status(4))
    config = await api.get(CONFIG)
    assert config
    assert config["data"]["EMPATH_NATS_URL"] == "nats://nats.mail.svc:4222"
    for component in ("ingress", "spool", "delivery", "control"):
        deployment = await api.get(deployment_url(f"corp-{component}"))
        assert deployment
        assert "EMPATH_NATS_URL" not in env_names(deployment), component


async def test_turning_autoscaling_on_keeps_the_workers_running_until_the_autoscaler_scales(
    api: Api, operator: Any
) -> None:
    """The operator stops setting the delivery Deployment's replicas: pruned, the API server
    would default them to 1 and stop all workers but one at once."""
    await operator()
    fixed = {"autoscaling": {"enabled": False}, "services": {"delivery": {"replicas": 3}}}
    await api.create(SERVERS, mailserver(**fixed))
    await api.wait(f"{SERVERS}/corp", has_status(1))
    delivery = await api.get(deployment_url("corp-delivery"))
    assert delivery
    assert delivery["spec"]["replicas"] == 3

    await api.patch(f"{SERVERS}/corp", {"spec": {"autoscaling": {"enabled": True}}})
    server = await api.wait(f"{SERVERS}/corp", has_status(2))
    assert server["status"]["autoscaler"] == "hpa"
    assert await api.get(HPA) is not None
    delivery = await api.get(deployment_url("corp-delivery"))
    assert delivery
    assert delivery["spec"]["replicas"] == 3
    rolled = pod_of(delivery)["metadata"]["annotations"]["empath.io/config-hash"]

    # The autoscaler scales it; a later change of the delivery pods keeps its number.
    await api.patch(deployment_url("corp-delivery"), {"spec": {"replicas": 5}})
    await api.patch(f"{SERVERS}/corp", {"spec": {"postmaster": "postmaster@example.com"}})
    await api.wait(f"{SERVERS}/corp", has_status(3))
    delivery = await api.get(deployment_url("corp-delivery"))
    assert delivery
    assert pod_of(delivery)["metadata"]["annotations"]["empath.io/config-hash"] != rolled
    assert delivery["spec"]["replicas"] == 5


async def test_a_spec_the_services_refuse_is_warned_of_once_not_at_every_resync(
    api: Api, operator: Any
) -> None:
    await operator(resync_seconds=1)
    refused = mailserver()
    refused["spec"]["trustedNetworks"] = ["0.0.0.0/0"]  # an open relay
    await api.create(SERVERS, refused)
    server = await api.wait(
        f"{SERVERS}/corp", lambda o: condition(o, "Degraded").get("reason") == "InvalidSpec"
    )
    assert "spec.trustedNetworks" in condition(server, "Degraded")["message"]
    await api.event(lambda e: e.get("reason") == "InvalidSpec")
    resyncs = api.requests("GET", f"{SERVERS}/corp")

    async def resynced() -> None:
        assert api.requests("GET", f"{SERVERS}/corp") >= resyncs + 3

    await passes(resynced, timeout=30)
    response = await api.http.get(f"/api/v1/namespaces/{NS}/events")
    warnings = [e for e in response.json()["items"] if e.get("reason") == "InvalidSpec"]
    assert len(warnings) == 1, [e["message"] for e in warnings]
