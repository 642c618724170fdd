"""A MailServer (and the MailPlugins it selects) as the Kubernetes objects that run it.

Pure functions: `render` takes the resource as the API server stores it and returns every
object the operator applies, so what a spec means can be read (and tested) in one place.
Settings go into a ConfigMap as the same `EMPATH_*` variables the services read anywhere
else, and are checked with the services' own settings model before anything is applied.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

from empath.core import errors, kubenames, names, settings
from empath.operator import crds

COMPONENTS = ("ingress", "spool", "delivery", "control")
MANAGED_BY = "empath-operator"
SERVER_LABEL = "empath.io/mailserver"
CONFIG_HASH = "empath.io/config-hash"
UID = 10001

SMTP_PORT = 2525
SUBMISSION_PORT = 2587
CONTROL_PORT = 8025
HEALTH_PORT = 8080
DRAIN_PAUSE = 5  # seconds ingress keeps accepting after its pod is marked terminating
TLS_DIR = "/etc/empath/tls"
AUTH_DIR = "/etc/empath/auth"


class InvalidSpec(errors.ConfigurationError):
    """The spec passed the CRD's schema but not the services' settings."""


@dataclass(frozen=True, slots=True)
class Options:
    """What the installation decides for every MailServer (the operator's own settings)."""

    image: str
    otlp_endpoint: str | None = None
    keda: bool = False
    pull_secrets: tuple[str, ...] = ()


@dataclass(slots=True)
class Rendered:
    objects: list[dict[str, Any]] = field(default_factory=list)
    token_secret: dict[str, Any] = field(default_factory=dict)
    autoscaler: str = "none"
    plugins: list[str] = field(default_factory=list)
    config_hash: str = ""

    def named(self, kind: str, name: str) -> dict[str, Any]:
        for obj in self.objects:
            if obj["kind"] == kind and obj["metadata"]["name"] == name:
                return obj
        raise LookupError(f"{kind}/{name}")


def labels(server: str, component: str | None = None) -> dict[str, str]:
    found = {
        "app.kubernetes.io/name": "empath",
        "app.kubernetes.io/instance": server,
        "app.kubernetes.io/managed-by": MANAGED_BY,
        SERVER_LABEL: server,
    }
    if component:
        found["app.kubernetes.io/component"] = component
    return found


def selector(server: str, component: str) -> dict[str, str]:
    return {"app.kubernetes.io/instance": server, "app.kubernetes.io/component": component}


def owner_reference(body: Mapping[str, Any]) -> dict[str, Any]:
    return {
        "apiVersion": f"{crds.GROUP}/{crds.VERSION}",
        "kind": "MailServer",
        "name": body["metadata"]["name"],
        "uid": body["metadata"]["uid"],
        "controller": True,
        "blockOwnerDeletion": True,
    }


def selects(selector_spec: Mapping[str, Any] | None, plugin_labels: Mapping[str, str]) -> bool:
    """A Kubernetes label selector; an absent selector selects nothing."""
    if selector_spec is None:
        return False
    for key, value in (selector_spec.get("matchLabels") or {}).items():
        if plugin_labels.get(key) != value:
            return False
    for expression in selector_spec.get("matchExpressions") or []:
        key, operator, values = expression["key"], expression["operator"], expression.get("values")
        present = key in plugin_labels
        if operator == "Exists" and not present:
            return False
        if operator == "DoesNotExist" and present:
            return False
        if operator == "In" and plugin_labels.get(key) not in (values or []):
            return False
        if operator == "NotIn" and present and plugin_labels[key] in (values or []):
            return False
    return True


def plugin_settings(plugins: list[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """MailPlugins as `EMPATH_PLUGINS` entries, in the order the services call them."""
    schema = crds.schema(crds.MAILPLUGINS)["properties"]["spec"]
    entries = []
    for plugin in plugins:
        spec = crds.with_defaults(schema, plugin.get("spec") or {})
        entry: dict[str, Any] = {
            "name": plugin["metadata"]["name"],
            "hooks": list(spec.get("hooks") or []),
            "timeout": spec["timeoutSeconds"],
            "failure_policy": spec["failurePolicy"],
            "priority": spec["priority"],
        }
        endpoint = spec.get("endpoint") or {}
        for key in ("url", "subject"):
            if key in endpoint:
                entry[key] = endpoint[key]
        entries.append(entry)
    return sorted(entries, key=lambda entry: (entry["priority"], entry["name"]))


def _pairs(mapping: Mapping[str, str] | None) -> str:
    return ",".join(f"{key}={value}" for key, value in sorted((mapping or {}).items()))


def _numbers(values: list[float]) -> str:
    return ",".join(f"{value:g}" for value in values)


def config(
    spec: Mapping[str, Any], plugins: list[dict[str, Any]], options: Options
) -> dict[str, str]:
    """The `EMPATH_*` settings every service of the server shares."""
    limits, retry, delivery = spec["limits"], spec["retry"], spec["delivery"]
    observability = spec["observability"]
    data = {
        "HOSTNAME": spec["hostname"],
        "RELAY_DOMAINS": ",".join(spec["relayDomains"]),
        "SMTP_LISTEN": f"0.0.0.0:{SMTP_PORT}",
        "CONTROL_LISTEN": f"0.0.0.0:{CONTROL_PORT}",
        "HEALTH_LISTEN": f"0.0.0.0:{HEALTH_PORT}",
        "MAX_MESSAGE_SIZE": str(limits["maxMessageSize"]),
        "MAX_RECIPIENTS": str(limits["maxRecipients"]),
        "MAX_CONNECTIONS": str(limits["maxConnections"]),
        "MAX_CONNECTIONS_PER_IP": str(limits["maxConnectionsPerIP"]),
        "MAX_ERRORS": str(limits["maxErrors"]),
        "RETRY_SCHEDULE": _numbers(retry["schedule"]),
        "MAX_ATTEMPTS": str(retry["maxAttempts"]),
        "MAX_QUEUE_LIFETIME": f"{retry['maxQueueLifetime']:g}",
        "DELAY_WARNING_AFTER": f"{retry['delayWarningAfter']:g}",
        "DELIVERY_CONCURRENCY": str(delivery["concurrency"]),
        "MX_OVERRIDES": _pairs(delivery.get("mxOverrides")),
        "TLS_POLICY": delivery["tlsPolicy"],
        "TLS_POLICIES": _pairs(delivery.get("tlsPolicies")),
        "DNS_NAMESERVERS": ",".join(delivery.get("dnsNameservers") or []),
        "DELIVERY_MAX_CONNECTIONS_PER_DOMAIN": str(delivery["maxConnectionsPerDomain"]),
        "DELIVERY_RATE_PER_DOMAIN": f"{delivery['ratePerDomain']:g}",
        "S3_ENDPOINT": spec["objectStore"]["endpoint"],
        "S3_BUCKET": spec["objectStore"]["bucket"],
        "LOG_FORMAT": "json",
        "LOG_LEVEL": observability["logLevel"],
        "PLUGINS": json.dumps(plugins, separators=(",", ":")),
    }
    if spec.get("postmaster"):
        data["POSTMASTER"] = spec["postmaster"]
    if spec["trustedNetworks"]:
        data["TRUSTED_NETWORKS"] = ",".join(spec["trustedNetworks"])
    if spec["objectStore"].get("region"):
        data["S3_REGION"] = spec["objectStore"]["region"]
    if spec["nats"].get("url"):
        data["NATS_URL"] = spec["nats"]["url"]
    otlp = observability.get("otlpEndpoint") or options.otlp_endpoint
    if otlp:
        data["OTLP_ENDPOINT"] = otlp
    return {f"{settings.ENV_PREFIX}{key}": value for key, value in data.items() if value != ""}


# Which spec field each rendered setting comes from, to name it in an error.
FIELDS = {
    "HOSTNAME": "spec.hostname",
    "RELAY_DOMAINS": "spec.relayDomains",
    "POSTMASTER": "spec.postmaster",
    "TRUSTED_NETWORKS": "spec.trustedNetworks",
    "MX_OVERRIDES": "spec.delivery.mxOverrides",
    "TLS_POLICIES": "spec.delivery.tlsPolicies",
    "DNS_NAMESERVERS": "spec.delivery.dnsNameservers",
    "NATS_URL": "spec.nats.url",
    "S3_ENDPOINT": "spec.objectStore.endpoint",
    "S3_BUCKET": "spec.objectStore.bucket",
    "RETRY_SCHEDULE": "spec.retry.schedule",
    "OTLP_ENDPOINT": "spec.observability.otlpEndpoint",
    "PLUGINS": "the selected MailPlugins",
}


def check(data: Mapping[str, str]) -> None:
    """Refuse a configuration the services would refuse, naming the setting (and the field)."""
    values: dict[str, Any] = {
        key.removeprefix(settings.ENV_PREFIX).lower(): value for key, value in data.items()
    }
    values["plugins"] = json.loads(values.get("plugins", "[]"))  # the environment's JSON
    # Secrets are not the operator's to read: stand-ins of the right shape.
    values.setdefault("nats_url", "nats://from-secret:4222")
    values["control_token"] = "from-secret"
    try:
        settings.load(environment=False, **values)
    except errors.ConfigurationError as error:
        message = str(error)
        named = [f for key, f in FIELDS.items() if f"{settings.ENV_PREFIX}{key}" in message]
        raise InvalidSpec(f"{', '.join(named) or 'spec'}: {message}") from None


def _secret_env(name: str, secret: str, key: str) -> dict[str, Any]:
    return {"name": name, "valueFrom": {"secretKeyRef": {"name": secret, "key": key}}}


def _common_env(spec: Mapping[str, Any]) -> list[dict[str, Any]]:
    store = spec["objectStore"]
    env = [
        _secret_env("EMPATH_S3_ACCESS_KEY", store["credentialsSecret"], "accessKey"),
        _secret_env("EMPATH_S3_SECRET_KEY", store["credentialsSecret"], "secretKey"),
    ]
    url_secret = spec["nats"].get("urlSecret")
    if url_secret:
        env.append(_secret_env("EMPATH_NATS_URL", url_secret["name"], url_secret["key"]))
    return env


def _port(name: str, port: int) -> dict[str, Any]:
    return {"name": name, "containerPort": port, "protocol": "TCP"}


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
    container = {
        "name": component,
        "image": body["spec"]["image"],
        "imagePullPolicy": "IfNotPresent",
        "args": [component],
        "envFrom": [{"configMapRef": {"name": f"{server}-config"}}],
        "env": [*_common_env(body["spec"]), *env],
        "ports": [*ports, _port("health", HEALTH_PORT)],
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
        "volumeMounts": [{"name": "tmp", "mountPath": "/tmp"}, *mounts],
    }
    spec: dict[str, Any] = {
        "selector": {"matchLabels": selector(server, component)},
        "template": {
            "metadata": {
                "labels": labels(server, component),
                "annotations": {CONFIG_HASH: config_hash},
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
                "volumes": [{"name": "tmp", "emptyDir": {}}, *volumes],
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
            CONFIG_HASH: config_hash,
        }
    if component in ("ingress", "delivery"):
        # Spread the replicas that carry traffic over nodes, where the cluster allows it.
        spec["template"]["spec"]["topologySpreadConstraints"] = [
            {
                "maxSkew": 1,
                "topologyKey": "kubernetes.io/hostname",
                "whenUnsatisfiable": "ScheduleAnyway",
                "labelSelector": {"matchLabels": selector(server, component)},
            }
        ]
    if replicas is not None:
        spec["replicas"] = replicas
    return _object(body, "apps/v1", "Deployment", f"{server}-{component}", component, spec=spec)


def _object(
    body: Mapping[str, Any],
    api_version: str,
    kind: str,
    name: str,
    component: str | None,
    **rest: Any,
) -> dict[str, Any]:
    return {
        "apiVersion": api_version,
        "kind": kind,
        "metadata": {
            "name": name,
            "namespace": body["metadata"]["namespace"],
            "labels": labels(body["metadata"]["name"], component),
            "ownerReferences": [owner_reference(body)],
        },
        **rest,
    }


def _ingress(body: Mapping[str, Any], config_hash: str) -> list[dict[str, Any]]:
    spec = body["spec"]
    server = body["metadata"]["name"]
    listeners = spec["listeners"]
    env: list[dict[str, Any]] = []
    volumes: list[dict[str, Any]] = []
    mounts: list[dict[str, Any]] = []
    ports = [_port("smtp", SMTP_PORT)]
    tls_secret = listeners["tls"].get("secretName")
    if tls_secret:
        volumes.append({"name": "tls", "secret": {"secretName": tls_secret}})
        mounts.append({"name": "tls", "mountPath": TLS_DIR, "readOnly": True})
        env.append({"name": "EMPATH_TLS_CERT_FILE", "value": f"{TLS_DIR}/tls.crt"})
        env.append({"name": "EMPATH_TLS_KEY_FILE", "value": f"{TLS_DIR}/tls.key"})
    submission = listeners["submission"]
    if submission["enabled"]:
        if not tls_secret or not submission.get("authSecretName"):
            raise InvalidSpec(
                "spec.listeners.submission needs spec.listeners.tls.secretName and "
                "spec.listeners.submission.authSecretName (EMPATH_SUBMISSION_LISTEN needs "
                "EMPATH_TLS_CERT_FILE and EMPATH_AUTH_CREDENTIALS_FILE)"
            )
        volumes.append({"name": "auth", "secret": {"secretName": submission["authSecretName"]}})
        mounts.append({"name": "auth", "mountPath": AUTH_DIR, "readOnly": True})
        env.append({"name": "EMPATH_AUTH_CREDENTIALS_FILE", "value": f"{AUTH_DIR}/credentials"})
        env.append({"name": "EMPATH_SUBMISSION_LISTEN", "value": f"0.0.0.0:{SUBMISSION_PORT}"})
        ports.append(_port("submission", SUBMISSION_PORT))
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
    service_spec = listeners["service"]
    service_ports = [
        {"name": "smtp", "port": listeners["smtp"]["port"], "targetPort": "smtp", "protocol": "TCP"}
    ]
    if submission["enabled"]:
        service_ports.append(
            {
                "name": "submission",
                "port": submission["port"],
                "targetPort": "submission",
                "protocol": "TCP",
            }
        )
    service = _object(
        body,
        "v1",
        "Service",
        f"{server}-smtp",
        "ingress",
        spec={
            "type": service_spec["type"],
            "externalTrafficPolicy": service_spec["externalTrafficPolicy"],
            "selector": selector(server, "ingress"),
            "ports": service_ports,
        },
    )
    if service_spec.get("annotations"):
        service["metadata"]["annotations"] = dict(service_spec["annotations"])
    return [workload, service]


def _control(body: Mapping[str, Any], config_hash: str) -> list[dict[str, Any]]:
    server = body["metadata"]["name"]
    workload = deployment(
        body,
        "control",
        replicas=body["spec"]["services"]["control"]["replicas"],
        ports=[_port(kubenames.CONTROL_PORT_NAME, CONTROL_PORT)],
        env=[
            _secret_env(
                "EMPATH_CONTROL_TOKEN",
                kubenames.control_token_secret(server),
                kubenames.CONTROL_TOKEN_KEY,
            )
        ],
        config_hash=config_hash,
    )
    # `kubectl empath` reaches it through the API server's proxy, on the port named `http`.
    service = _object(
        body,
        "v1",
        "Service",
        kubenames.control_service(server),
        "control",
        spec={
            "type": "ClusterIP",
            "selector": selector(server, "control"),
            "ports": [
                {
                    "name": kubenames.CONTROL_PORT_NAME,
                    "port": CONTROL_PORT,
                    "targetPort": kubenames.CONTROL_PORT_NAME,
                    "protocol": "TCP",
                }
            ],
        },
    )
    return [workload, service]


def monitoring_endpoint(spec: Mapping[str, Any]) -> str | None:
    """Where KEDA reads the JetStream consumer's backlog (NATS's monitoring port)."""
    nats = spec["nats"]
    if nats.get("monitoringEndpoint"):
        return str(nats["monitoringEndpoint"])
    if nats.get("url"):
        host = urlsplit(nats["url"].split(",")[0].strip()).hostname
        return f"{host}:8222" if host else None
    return None


def _autoscaler(body: Mapping[str, Any], options: Options) -> tuple[str, dict[str, Any] | None]:
    spec = body["spec"]
    scaling = spec["autoscaling"]
    server = body["metadata"]["name"]
    target = {"apiVersion": "apps/v1", "kind": "Deployment", "name": f"{server}-delivery"}
    if not scaling["enabled"]:
        return "none", None
    endpoint = monitoring_endpoint(spec)
    if options.keda and endpoint:
        scaled = _object(
            body,
            "keda.sh/v1alpha1",
            "ScaledObject",
            f"{server}-delivery",
            "delivery",
            spec={
                "scaleTargetRef": {"name": f"{server}-delivery"},
                "minReplicaCount": scaling["minReplicas"],
                "maxReplicaCount": scaling["maxReplicas"],
                "triggers": [
                    {
                        "type": "nats-jetstream",
                        "metadata": {
                            "natsServerMonitoringEndpoint": endpoint,
                            "account": "$G",
                            "stream": names.JOBS_STREAM.name,
                            "consumer": names.DELIVERY_JOBS_CONSUMER,
                            "lagThreshold": str(scaling["backlogPerWorker"]),
                        },
                    }
                ],
            },
        )
        return "keda", scaled
    hpa = _object(
        body,
        "autoscaling/v2",
        "HorizontalPodAutoscaler",
        f"{server}-delivery",
        "delivery",
        spec={
            "scaleTargetRef": target,
            "minReplicas": scaling["minReplicas"],
            "maxReplicas": scaling["maxReplicas"],
            "metrics": [
                {
                    "type": "Resource",
                    "resource": {
                        "name": "cpu",
                        "target": {
                            "type": "Utilization",
                            "averageUtilization": scaling["targetCPUUtilization"],
                        },
                    },
                }
            ],
        },
    )
    return "hpa", hpa


def config_hash(*parts: Any) -> str:
    text = json.dumps(parts, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def render(body: Mapping[str, Any], plugins: list[Mapping[str, Any]], options: Options) -> Rendered:
    """Every object of a MailServer; raises `InvalidSpec` and renders nothing on a bad spec."""
    spec = crds.with_defaults(crds.schema(crds.MAILSERVERS)["properties"]["spec"], body["spec"])
    # The installation's image and pull secrets, unless the MailServer names its own.
    spec["image"] = spec.get("image") or options.image
    spec["imagePullSecrets"] = spec.get("imagePullSecrets") or [
        {"name": name} for name in options.pull_secrets
    ]
    body = {**body, "spec": spec}
    server = body["metadata"]["name"]
    selected = plugin_settings(plugins)
    data = config(spec, selected, options)
    check(data)
    rendered = Rendered(plugins=[entry["name"] for entry in selected])
    rendered.config_hash = config_hash(data, spec["listeners"], spec["nats"], spec["objectStore"])
    rendered.objects.append(_object(body, "v1", "ConfigMap", f"{server}-config", None, data=data))
    rendered.objects += _ingress(body, rendered.config_hash)
    rendered.objects += _control(body, rendered.config_hash)
    rendered.objects.append(
        deployment(
            body,
            "spool",
            replicas=spec["services"]["spool"]["replicas"],
            config_hash=rendered.config_hash,
        )
    )
    rendered.autoscaler, scaler = _autoscaler(body, options)
    rendered.objects.append(
        deployment(
            body,
            "delivery",
            # An autoscaler owns the number of workers; the operator only sets it without one.
            replicas=None if scaler else spec["services"]["delivery"]["replicas"],
            config_hash=rendered.config_hash,
            grace=60,
        )
    )
    if scaler:
        rendered.objects.append(scaler)
    for component in COMPONENTS:
        rendered.objects.append(
            _object(
                body,
                "policy/v1",
                "PodDisruptionBudget",
                f"{server}-{component}",
                component,
                spec={
                    "maxUnavailable": 1,
                    "selector": {"matchLabels": selector(server, component)},
                },
            )
        )
    rendered.token_secret = _object(
        body, "v1", "Secret", kubenames.control_token_secret(server), "control", type="Opaque"
    )
    return rendered
