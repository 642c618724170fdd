"""The Helm chart, through Helm's own Go SDK (helm-python-sdk): lint, render, and every object
checked against the Kubernetes schemas of the versions the chart claims (kubernetes-validate).
The operator's rendered objects get the same check: they are what a cluster would receive.
"""

from __future__ import annotations

import base64
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import helm_python as helm
import jsonschema
import kubernetes_validate
import pytest
import yaml

from empath.core import natsauth
from empath.operator import crds, render
from tests.chart import CHART, TRYOUT, by_kind, rendered
from tests.specs import mailserver

# The oldest the chart's kubeVersion admits and the newest kubernetes-validate knows.
VERSIONS = ("1.28.0", kubernetes_validate.latest_version())


def notes(values: dict[str, Any] | None = None) -> str:
    with helm.Chart.load(str(CHART)) as chart:
        files = chart.render(values or {}, name="empath", namespace="mail", is_install=True)
    return str(files["empath/templates/NOTES.txt"])


def schema_of(crd: dict[str, Any]) -> dict[str, Any]:
    return dict(crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"])


def validate(obj: dict[str, Any]) -> None:
    """A built-in kind against Kubernetes's schemas; our own kinds against our CRDs."""
    if obj["apiVersion"].startswith(f"{crds.GROUP}/"):
        (crd,) = [c for c in crds.definitions() if c["spec"]["names"]["kind"] == obj["kind"]]
        jsonschema.Draft4Validator(schema_of(crd)).validate(obj)  # OpenAPI v3.0 is draft 4
        return
    if obj["apiVersion"].startswith("kopf.dev/"):
        return  # kopf's peering objects: a name and nothing else
    for version in VERSIONS:
        kubernetes_validate.validate(obj, version, strict=True)


def test_helm_lint_is_clean() -> None:
    result = helm.lint(str(CHART), strict=True)
    assert result["errors"] == []
    assert result["messages"] == []


def test_the_chart_ships_exactly_the_crds_the_operator_serves() -> None:
    shipped = {
        doc["metadata"]["name"]: doc
        for path in sorted((CHART / "crds").glob("*.yaml"))
        for doc in yaml.safe_load_all(path.read_text())
    }
    for crd in crds.definitions():
        assert shipped[crd["metadata"]["name"]] == crd
        validate(crd)
    assert set(shipped) == {
        "mailservers.empath.io",
        "mailplugins.empath.io",
        "clusterkopfpeerings.kopf.dev",
        "kopfpeerings.kopf.dev",
    }
    # And the operator prints the same definitions.
    printed = subprocess.run(
        [str(Path(sys.executable).parent / "empath"), "operator", "--crds"],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    ).stdout
    assert list(yaml.safe_load_all(printed)) == crds.definitions()


def test_default_values_install_the_operator_with_least_privilege() -> None:
    objects = rendered()
    for obj in objects:
        validate(obj)
    assert sorted(o["kind"] for o in objects) == [
        "ClusterRole",
        "ClusterRole",
        "ClusterRoleBinding",
        "ClusterRoleBinding",
        "Deployment",
        "Secret",
        "ServiceAccount",
    ]
    (deployment,) = by_kind(objects, "Deployment")
    pod = deployment["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    with helm.Chart.load(str(CHART)) as chart:
        app_version = chart.metadata["appVersion"]
    assert container["image"] == f"ghcr.io/empath-mta/empath:{app_version}"
    assert container["args"] == ["operator"]
    env = {e["name"]: e["value"] for e in container["env"]}
    assert env["EMPATH_OPERATOR_IMAGE"] == container["image"]  # MailServers run this image
    assert env["EMPATH_OPERATOR_NAMESPACES"] == ""
    assert env["EMPATH_OPERATOR_PEERING"] == ""  # one replica: standalone
    assert env["EMPATH_OPERATOR_IMAGE_PULL_SECRETS"] == ""
    assert pod["serviceAccountName"] == "empath"
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
    # The operator key, made once and kept, is mounted where its setting says, for the
    # operator and its group alone.
    (key,) = by_kind(objects, "Secret")
    assert key["metadata"]["name"] == "empath-operator-key"
    assert key["metadata"]["annotations"]["helm.sh/resource-policy"] == "keep"
    assert len(base64.b64decode(key["data"]["key"])) == 48
    volumes = {v["name"]: v for v in pod["volumes"]}
    assert volumes["operator-key"]["secret"] == {
        "secretName": "empath-operator-key",
        "defaultMode": 0o440,
    }
    mounts = {m["name"]: m["mountPath"] for m in container["volumeMounts"]}
    assert env["EMPATH_OPERATOR_KEY_FILE"] == f"{mounts['operator-key']}/key"
    assert pod["securityContext"]["fsGroup"] == pod["securityContext"]["runAsUser"]

    rules = [rule for role in by_kind(objects, "ClusterRole") for rule in role["rules"]]
    for rule in rules:
        assert "*" not in rule["verbs"], rule
        assert "*" not in rule["resources"], rule
    secrets = [r for r in rules if "secrets" in r["resources"]]
    assert [r["verbs"] for r in secrets] == [["create"]]  # never read, list or watch Secrets
    assert not [r for r in rules if "pods" in r["resources"] or "nodes" in r["resources"]]
    granted = {(g, res) for r in rules for g in r["apiGroups"] for res in r["resources"]}
    for needed in [
        ("empath.io", "mailservers"),
        ("empath.io", "mailservers/status"),
        ("", "configmaps"),
        ("", "services"),
        ("apps", "deployments"),
        ("policy", "poddisruptionbudgets"),
        ("autoscaling", "horizontalpodautoscalers"),
        ("keda.sh", "scaledobjects"),
        ("", "events"),
    ]:
        assert needed in granted, needed
    assert "kubectl empath -n mail queue list" in notes()


def test_watched_namespaces_get_roles_and_replicas_get_peering() -> None:
    objects = rendered(
        {
            "operator": {"watchNamespaces": ["mail", "relay"], "replicas": 2},
            "imagePullSecrets": [{"name": "regcred"}, {"name": "mirror"}],
        }
    )
    for obj in objects:
        validate(obj)
    roles = by_kind(objects, "Role")
    assert sorted(r["metadata"]["namespace"] for r in roles) == ["mail", "relay"]
    assert sorted(b["metadata"]["namespace"] for b in by_kind(objects, "RoleBinding")) == [
        "mail",
        "relay",
    ]
    # Only kopf's own cluster-wide needs stay cluster-wide.
    (cluster_role,) = by_kind(objects, "ClusterRole")
    assert {res for r in cluster_role["rules"] for res in r["resources"]} == {
        "customresourcedefinitions",
        "namespaces",
        "clusterkopfpeerings",
    }
    (deployment,) = by_kind(objects, "Deployment")
    env = {
        e["name"]: e["value"]
        for e in deployment["spec"]["template"]["spec"]["containers"][0]["env"]
    }
    assert env["EMPATH_OPERATOR_NAMESPACES"] == "mail,relay"
    assert env["EMPATH_OPERATOR_PEERING"] == "empath"
    # The operator's pod pulls with them, and so does every pod it makes.
    assert env["EMPATH_OPERATOR_IMAGE_PULL_SECRETS"] == "regcred,mirror"
    assert deployment["spec"]["template"]["spec"]["imagePullSecrets"] == [
        {"name": "regcred"},
        {"name": "mirror"},
    ]
    assert sorted(p["metadata"]["namespace"] for p in by_kind(objects, "KopfPeering")) == [
        "mail",
        "relay",
    ]


def test_tryout_values_add_nats_an_object_store_and_an_example_mailserver() -> None:
    objects = rendered({**TRYOUT, "observability": {"otlpEndpoint": "http://otel.obs.svc:4318"}})
    for obj in objects:
        validate(obj)
    (server,) = by_kind(objects, "MailServer")
    assert server["spec"]["nats"]["url"] == "nats://empath-nats.mail.svc:4222"
    assert server["spec"]["objectStore"]["endpoint"] == "http://empath-s3.mail.svc:8333"
    secrets = {
        s["metadata"]["name"]: s["stringData"]
        for s in by_kind(objects, "Secret")
        if s["metadata"]["name"] != "empath-operator-key"  # every installation's (above)
    }
    assert set(secrets) == {
        "empath-s3-credentials",
        "empath-nats-credentials",
        "empath-nats-config",
    }
    assert server["spec"]["objectStore"]["credentialsSecret"] == "empath-s3-credentials"
    assert len(secrets["empath-s3-credentials"]["secretKey"]) == 32
    # NATS with a user per role: the example connects with them, the server checks them.
    assert server["spec"]["nats"]["credentialsSecret"] == "empath-nats-credentials"
    passwords = secrets["empath-nats-credentials"]
    assert set(passwords) == {*natsauth.ROLES, natsauth.PLUGIN, natsauth.ADMIN}
    assert len(set(passwords.values())) == len(passwords)
    assert all(len(password) == 32 for password in passwords.values())
    users = json.loads(secrets["empath-nats-config"]["nats.conf"])["authorization"]["users"]
    assert {u["user"]: u["password"] for u in users} == passwords
    assert {u["user"]: u["permissions"] for u in users} == {
        user: natsauth.permissions_block(user) for user in passwords
    }
    statefulsets = {s["metadata"]["name"]: s for s in by_kind(objects, "StatefulSet")}
    assert set(statefulsets) == {"empath-nats", "empath-s3"}
    nats = statefulsets["empath-nats"]["spec"]["template"]["spec"]["containers"][0]
    assert "--jetstream" in nats["args"]
    services = {s["metadata"]["name"]: s for s in by_kind(objects, "Service")}
    assert {p["port"] for p in services["empath-nats"]["spec"]["ports"]} == {4222, 8222}
    # The example renders into objects the operator accepts.
    body = {**server, "metadata": {**server["metadata"], "uid": "uid"}}
    made = render.render(body, [], render.Options(image="empath:test", keda=True))
    assert made.autoscaler == "keda"
    scaled = made.named("ScaledObject", "example-delivery")
    assert scaled["spec"]["triggers"][0]["metadata"]["natsServerMonitoringEndpoint"] == (
        "empath-nats.mail.svc:8222"
    )
    (operator,) = by_kind(objects, "Deployment")
    env = {
        e["name"]: e["value"] for e in operator["spec"]["template"]["spec"]["containers"][0]["env"]
    }
    assert env["EMPATH_OPERATOR_OTLP_ENDPOINT"] == "http://otel.obs.svc:4318"
    assert "kubectl empath -n mail --mailserver example queue list" in notes(TRYOUT)


def test_the_example_needs_the_tryout_servers() -> None:
    with pytest.raises(helm.HelmError, match=r"needs tryout.nats.enabled"):
        rendered({"tryout": {"mailserver": {"enabled": True}}})


@pytest.mark.parametrize(
    ("values", "complaint"),
    [
        ({"operator": {"replicas": -1}}, "replicas"),
        ({"operator": {"watchNamespaces": ["Not A Namespace"]}}, "watchNamespaces"),
        ({"image": {"pullPolicy": "Sometimes"}}, "pullPolicy"),
        ({"observability": {"otlpEndpoint": "collector:4318"}}, "otlpEndpoint"),
        ({"tryout": {"nats": {"enable": True}}}, "enable"),
        ({"tryout": {"nats": {"enabled": True, "replicas": 2}}}, "replicas"),
    ],
)
def test_wrong_values_are_refused_naming_them(values: dict[str, Any], complaint: str) -> None:
    with pytest.raises(helm.HelmError, match=complaint):
        rendered(values)


@pytest.mark.parametrize("keda", [False, True])
def test_every_object_the_operator_renders_is_valid_kubernetes(keda: bool) -> None:
    body = mailserver(
        relayDomains=["example.com"],
        nats={"urlSecret": {"name": "nats"}, "monitoringEndpoint": "nats.mail.svc:8222"},
        objectStore={"endpoint": "https://s3.example.net", "credentialsSecret": "s3"},
        listeners={
            "tls": {"secretName": "mx-tls"},
            "submission": {"enabled": True, "authSecretName": "mx-users"},
            "service": {"type": "NodePort", "annotations": {"example.net/lb": "x"}},
        },
        services={"delivery": {"resources": {"requests": {"cpu": "100m"}}}},
    )
    validate(body)
    made = render.render(body, [], render.Options(image="empath:test", keda=keda))
    for obj in [*made.objects, made.token_secret]:
        if obj["kind"] != "ScaledObject":  # KEDA's own CRD; not in Kubernetes's schemas
            validate(obj)
    ingress = made.named("Deployment", "corp-ingress")
    container = ingress["spec"]["template"]["spec"]["containers"][0]
    env = {e["name"]: e for e in container["env"]}
    assert env["EMPATH_SUBMISSION_LISTEN"]["value"] == "0.0.0.0:2587"
    assert env["EMPATH_NATS_URL"]["valueFrom"]["secretKeyRef"] == {"name": "nats", "key": "url"}
    smtp = made.named("Service", "corp-smtp")
    assert [p["port"] for p in smtp["spec"]["ports"]] == [25, 587]
    assert made.autoscaler == ("keda" if keda else "hpa")


def test_the_readme_mailserver_is_valid_and_runs() -> None:
    """The example a user copies from the README is accepted by the CRD and the operator."""
    readme = (Path(__file__).resolve().parents[3] / "README.md").read_text()
    section = readme.split("## Install on a cluster", 1)[1]
    example = section.split("<<'YAML'\n", 1)[1].split("\nYAML\n", 1)[0]
    body = yaml.safe_load(example)
    validate(body)
    body["metadata"]["uid"] = "uid-corp"
    made = render.render(body, [], render.Options(image="empath:test"))
    data = made.named("ConfigMap", "corp-config")["data"]
    assert data["EMPATH_TRUSTED_NETWORKS"] == "10.0.0.0/8"
    assert data["EMPATH_S3_BUCKET"] == "empath"
    assert data["EMPATH_POSTMASTER"] == "hostmaster@example.com"


def test_a_three_node_tryout_nats_is_a_routed_statefulset_on_volumes_with_three_replicas() -> None:
    values = {"tryout": {**TRYOUT["tryout"], "nats": {"enabled": True, "replicas": 3}}}
    objects = rendered(values)
    for obj in objects:
        validate(obj)
    (nats,) = [s for s in by_kind(objects, "StatefulSet") if s["metadata"]["name"] == "empath-nats"]
    assert nats["spec"]["replicas"] == 3
    assert nats["spec"]["serviceName"] == "empath-nats-cluster"
    assert [t["metadata"]["name"] for t in nats["spec"]["volumeClaimTemplates"]] == ["data"]
    # Data on the claims; the only volume is the config (users and permissions).
    assert [v["name"] for v in nats["spec"]["template"]["spec"]["volumes"]] == ["config"]
    (container,) = nats["spec"]["template"]["spec"]["containers"]
    routes = next(a for a in container["args"] if a.startswith("--routes="))
    assert routes.removeprefix("--routes=").split(",") == [
        f"nats://empath-nats-{i}.empath-nats-cluster.mail.svc:6222" for i in range(3)
    ]
    assert "--server_name=$(POD_NAME)" in container["args"]
    services = {s["metadata"]["name"]: s["spec"] for s in by_kind(objects, "Service")}
    assert services["empath-nats-cluster"]["clusterIP"] == "None"
    assert services["empath-nats-cluster"]["publishNotReadyAddresses"] is True
    (server,) = by_kind(objects, "MailServer")
    assert server["spec"]["nats"]["replicas"] == 3
    body = {**server, "metadata": {**server["metadata"], "uid": "uid"}}
    data = render.render(body, [], render.Options(image="empath:test")).named(
        "ConfigMap", "example-config"
    )["data"]
    assert data["EMPATH_NATS_REPLICAS"] == "3"
    # One node stays as it was: no peers' service, no replicas in the example.
    single = rendered(TRYOUT)
    assert "empath-nats-cluster" not in {s["metadata"]["name"] for s in by_kind(single, "Service")}
    (example,) = by_kind(single, "MailServer")
    assert "replicas" not in example["spec"]["nats"]
