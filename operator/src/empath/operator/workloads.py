"""The Deployments that run a MailServer's services, and the budgets that keep them running.

Every service runs the one image with its name as the argument, the shared settings from the
ConfigMap and the credentials from Secrets, hardened alike; what differs (ports, TLS and
AUTH files, the drain before a stop) is added per service here.

Credentials reach a pod as files of a mounted Secret, and each pod mounts only its own: its
NATS password (the key named for its role in `spec.nats.credentialsSecret`), and for ingress
and the spool their event keys (`kubenames.event_keys_secret`, made once by the operator).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from empath.core import kubenames, signing
from empath.operator import configmap, metadata, plugins

UID = 10001
DRAIN_PAUSE = 5  # seconds ingress keeps accepting after its pod is marked terminating
TLS_DIR = "/etc/empath/tls"
AUTH_DIR = "/etc/empath/auth"
NATS_DIR = "/etc/empath/nats"
EVENTS_DIR = "/etc/empath/events"
STORE_CA_DIR = "/etc/empath/s3"
SECRET_MODE = 0o440  # readable by the pod's group (fsGroup) only
# The event keys each service gets (README "Security"): its private key first.
EVENT_KEYS = {
    "ingress": (signing.INGRESS_KEY,),
    "spool": (signing.SPOOL_KEY, signing.TRUSTED_KEYS),
}


def name(server: str, component: str) -> str:
    """The Deployment (and its autoscaler and disruption budget) of one component."""
    return f"{server}-{component}"


def secret_env(variable: str, secret: str, key: str) -> dict[str, Any]:
    """An environment variable the kubelet fills from a Secret the operator does not read."""
    return {"name": variable, "valueFrom": {"secretKeyRef": {"name": secret, "key": key}}}


def _common_env(spec: Mapping[str, Any]) -> list[dict[str, Any]]:
    store = spec["objectStore"]
    env = [
        secret_env("EMPATH_S3_ACCESS_KEY", store["credentialsSecret"], "accessKey"),
        secret_env("EMPATH_S3_SECRET_KEY", store["credentialsSecret"], "secretKey"),
    ]
    url_secret = spec["nats"].get("urlSecret")
    if url_secret:
        env.append(secret_env("EMPATH_NATS_URL", url_secret["name"], url_secret["key"]))
    return env


def secret_files(
    volume: str, secret: str, keys: dict[str, str], directory: str
) -> tuple[dict[str, Any], dict[str, Any]]:
    """A volume with only these keys of a Secret (key: file name), and its read-only mount."""
    items = [{"key": key, "path": path} for key, path in keys.items()]
    source = {"secretName": secret, "items": items, "defaultMode": SECRET_MODE}
    return (
        {"name": volume, "secret": source},
        {"name": volume, "mountPath": directory, "readOnly": True},
    )


Files = tuple[list[dict[str, Any]], list[dict[str, Any]], list[dict[str, Any]]]


def _credentials(body: Mapping[str, Any], component: str) -> Files:
    """The environment, volumes and mounts of a service's own NATS password and event keys,
    and of the object store's CA bundle (`spec.objectStore.caSecret`), which every pod uses."""
    env: list[dict[str, Any]] = []
    volumes: list[dict[str, Any]] = []
    mounts: list[dict[str, Any]] = []
    store_ca = body["spec"]["objectStore"].get("caSecret")
    if store_ca:
        key = store_ca.get("key", "ca.crt")
        volume, mount = secret_files("s3-ca", store_ca["name"], {key: "ca.pem"}, STORE_CA_DIR)
        volumes.append(volume)
        mounts.append(mount)
        env.append({"name": "EMPATH_S3_TLS_CA", "value": f"{STORE_CA_DIR}/ca.pem"})
    secret = body["spec"]["nats"].get("credentialsSecret")
    if secret:
        volume, mount = secret_files("nats", secret, {component: "password"}, NATS_DIR)
        volumes.append(volume)
        mounts.append(mount)
        env.append({"name": "EMPATH_NATS_USER", "value": component})
        env.append({"name": "EMPATH_NATS_PASSWORD_FILE", "value": f"{NATS_DIR}/password"})
    keys = EVENT_KEYS.get(component)
    if keys:
        server = body["metadata"]["name"]
        where = kubenames.event_keys_secret(server)
        volume, mount = secret_files("event-keys", where, {k: k for k in keys}, EVENTS_DIR)
        volumes.append(volume)
        mounts.append(mount)
        env.append({"name": "EMPATH_EVENT_SIGNING_KEY_FILE", "value": f"{EVENTS_DIR}/{keys[0]}"})
        for trusted in keys[1:]:
            env.append(
                {"name": "EMPATH_EVENT_TRUSTED_KEYS_FILE", "value": f"{EVENTS_DIR}/{trusted}"}
            )
    return env, volumes, mounts


def port(port_name: str, number: int) -> dict[str, Any]:
    """A container port, named so that Services and probes need not repeat its number."""
    return {"name": port_name, "containerPort": number, "protocol": "TCP"}


def _probe(path: str, *, period: int, failures: int) -> dict[str, Any]:
    return {
        "httpGet": {"path": path, "port": "health"},
        "periodSeconds": period,
        "failureThreshold": failures,
        "timeoutSeconds": 3,
    }


def deployment(
    body: Mapping[str, Any],
    component: str,
    *,
    replicas: int | None,
    config_hash: str,
    ports: Sequence[dict[str, Any]] = (),
    env: Sequence[dict[str, Any]] = (),
    volumes: Sequence[dict[str, Any]] = (),
    mounts: Sequence[dict[str, Any]] = (),
    grace: int = 30,
) -> dict[str, Any]:
    """A service's Deployment: the shared settings and credentials, and `env` after them."""
    server = body["metadata"]["name"]
    resources = body["spec"]["services"][component].get("resources") or {}
    pod_options = body["spec"]["pod"]
    own_env, own_volumes, own_mounts = _credentials(body, component)
    container = {
        "name": component,
        "image": body["spec"]["image"],
        "imagePullPolicy": "IfNotPresent",
        "args": [component],
        "envFrom": [{"configMapRef": {"name": configmap.name(server)}}],
        "env": [*_common_env(body["spec"]), *own_env, *env],
        "ports": [*ports, port("health", metadata.HEALTH_PORT)],
        "readinessProbe": _probe("/readyz", period=5, failures=2),
        "livenessProbe": {**_probe("/livez", period=10, failures=3), "initialDelaySeconds": 10},
        "resources": resources,
        "securityContext": {
            "allowPrivilegeEscalation": False,
            "readOnlyRootFilesystem": True,
            "runAsNonRoot": True,
            "runAsUser": UID,
            "runAsGroup": UID,
            "capabilities": {"drop": ["ALL"]},
        },
        "volumeMounts": [{"name": "tmp", "mountPath": "/tmp"}, *own_mounts, *mounts],
    }
    spec: dict[str, Any] = {
        "selector": {"matchLabels": metadata.selector(server, component)},
        "template": {
            "metadata": {
                "labels": metadata.labels(server, component),
                "annotations": {metadata.CONFIG_HASH: config_hash},
            },
            "spec": {
                "automountServiceAccountToken": False,
                "enableServiceLinks": False,
                "terminationGracePeriodSeconds": grace,
                "securityContext": {
                    "runAsNonRoot": True,
                    "runAsUser": UID,
                    "runAsGroup": UID,
                    "fsGroup": UID,
                    "seccompProfile": {"type": "RuntimeDefault"},
                },
                "containers": [container],
                "volumes": [{"name": "tmp", "emptyDir": {}}, *own_volumes, *volumes],
            },
        },
    }
    template = spec["template"]
    if body["spec"].get("imagePullSecrets"):
        template["spec"]["imagePullSecrets"] = body["spec"]["imagePullSecrets"]
    for key in ("nodeSelector", "tolerations", "affinity", "priorityClassName"):
        if pod_options.get(key):
            template["spec"][key] = pod_options[key]
    if pod_options.get("annotations"):
        template["metadata"]["annotations"] = {
            **pod_options["annotations"],
            metadata.CONFIG_HASH: config_hash,
        }
    if component in ("ingress", "delivery"):
        # Spread the replicas that carry traffic over nodes, where the cluster allows it.
        spec["template"]["spec"]["topologySpreadConstraints"] = [
            {
                "maxSkew": 1,
                "topologyKey": "kubernetes.io/hostname",
                "whenUnsatisfiable": "ScheduleAnyway",
                "labelSelector": {"matchLabels": metadata.selector(server, component)},
            }
        ]
    if replicas is not None:
        spec["replicas"] = replicas
    return metadata.owned(
        body, "apps/v1", "Deployment", name(server, component), component, spec=spec
    )


def ingress(
    body: Mapping[str, Any], config_hash: str, plugin_parts: plugins.PodParts | None = None
) -> dict[str, Any]:
    """The SMTP server: its listeners, the certificate and users from Secrets, a drain, and
    what its plugins need (`plugins.pod_parts`)."""
    spec = body["spec"]
    listeners = spec["listeners"]
    env: list[dict[str, Any]] = []
    volumes: list[dict[str, Any]] = []
    mounts: list[dict[str, Any]] = []
    ports = [port("smtp", metadata.SMTP_PORT)]
    tls_secret = listeners["tls"].get("secretName")
    if tls_secret:
        volumes.append({"name": "tls", "secret": {"secretName": tls_secret}})
        mounts.append({"name": "tls", "mountPath": TLS_DIR, "readOnly": True})
        env.append({"name": "EMPATH_TLS_CERT_FILE", "value": f"{TLS_DIR}/tls.crt"})
        env.append({"name": "EMPATH_TLS_KEY_FILE", "value": f"{TLS_DIR}/tls.key"})
    submission = listeners["submission"]
    if submission["enabled"]:  # with its certificate and users: `configmap.check_listeners`
        volumes.append({"name": "auth", "secret": {"secretName": submission["authSecretName"]}})
        mounts.append({"name": "auth", "mountPath": AUTH_DIR, "readOnly": True})
        env.append({"name": "EMPATH_AUTH_CREDENTIALS_FILE", "value": f"{AUTH_DIR}/credentials"})
        env.append(
            {"name": "EMPATH_SUBMISSION_LISTEN", "value": f"0.0.0.0:{metadata.SUBMISSION_PORT}"}
        )
        ports.append(port("submission", metadata.SUBMISSION_PORT))
    plugin_parts = plugin_parts or plugins.PodParts()
    volumes += plugin_parts.volumes
    mounts += plugin_parts.mounts
    # The preStop pause, EMPATH_SHUTDOWN_GRACE (30 s) for sessions in flight, and some.
    grace = DRAIN_PAUSE + 45
    workload = deployment(
        body,
        "ingress",
        replicas=spec["services"]["ingress"]["replicas"],
        ports=ports,
        env=env,
        volumes=volumes,
        mounts=mounts,
        config_hash=config_hash,
        grace=grace,
    )
    # Endpoints learn of a terminating pod a moment after the pod does: keep accepting for
    # that moment, so that a rollout refuses no connection. Then SIGTERM drains the sessions.
    (container,) = workload["spec"]["template"]["spec"]["containers"]
    container["lifecycle"] = {"preStop": {"exec": {"command": ["sleep", str(DRAIN_PAUSE)]}}}
    if plugin_parts.init_containers:  # C modules' libraries, copied as hardened as the service
        workload["spec"]["template"]["spec"]["initContainers"] = [
            {**init, "securityContext": container["securityContext"]}
            for init in plugin_parts.init_containers
        ]
    return workload


def control(body: Mapping[str, Any], config_hash: str) -> dict[str, Any]:
    """The management API, with the token its clients hold (from the Secret made once)."""
    server = body["metadata"]["name"]
    return deployment(
        body,
        "control",
        replicas=body["spec"]["services"]["control"]["replicas"],
        ports=[port(kubenames.CONTROL_PORT_NAME, metadata.CONTROL_PORT)],
        env=[
            secret_env(
                "EMPATH_CONTROL_TOKEN",
                kubenames.control_token_secret(server),
                kubenames.CONTROL_TOKEN_KEY,
            )
        ],
        config_hash=config_hash,
    )


def spool(body: Mapping[str, Any], config_hash: str) -> dict[str, Any]:
    """The queue's keeper: nothing beyond the shared settings."""
    return deployment(
        body,
        "spool",
        replicas=body["spec"]["services"]["spool"]["replicas"],
        config_hash=config_hash,
    )


def delivery(body: Mapping[str, Any], config_hash: str, *, autoscaled: bool) -> dict[str, Any]:
    """The outbound workers, with time to finish a transaction in flight before SIGKILL."""
    return deployment(
        body,
        "delivery",
        # An autoscaler owns the number of workers; the operator only sets it without one.
        replicas=None if autoscaled else body["spec"]["services"]["delivery"]["replicas"],
        config_hash=config_hash,
        grace=60,
    )


def disruption_budget(body: Mapping[str, Any], component: str) -> dict[str, Any]:
    """A voluntary disruption (a node drain) takes one pod of a component at a time."""
    server = body["metadata"]["name"]
    return metadata.owned(
        body,
        "policy/v1",
        "PodDisruptionBudget",
        name(server, component),
        component,
        spec={
            "maxUnavailable": 1,
            "selector": {"matchLabels": metadata.selector(server, component)},
        },
    )
