"""The settings ConfigMap of a MailServer, and the check that the services would take it.

Settings go into a ConfigMap as the same `EMPATH_*` variables the services read anywhere
else, and are checked with the services' own settings model before anything is applied:
a spec the services would refuse is refused here, naming its field, and changes nothing.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from typing import Any

from empath.core import errors, settings
from empath.operator import metadata


class InvalidSpec(errors.ConfigurationError):
    """The spec passed the CRD's schema but not the services' settings."""


def _pairs(mapping: Mapping[str, str] | None) -> str:
    return ",".join(f"{key}={value}" for key, value in sorted((mapping or {}).items()))


def _numbers(values: list[float]) -> str:
    return ",".join(f"{value:g}" for value in values)


def name(server: str) -> str:
    """The ConfigMap every pod of `server` takes its settings from (`envFrom`)."""
    return f"{server}-config"


def config(
    spec: Mapping[str, Any], plugins: list[dict[str, Any]], *, otlp_endpoint: str | None
) -> dict[str, str]:
    """The `EMPATH_*` settings every service of the server shares; `otlp_endpoint` is the
    installation's, for a spec that names none."""
    limits, retry, delivery = spec["limits"], spec["retry"], spec["delivery"]
    observability = spec["observability"]
    data = {
        "HOSTNAME": spec["hostname"],
        "RELAY_DOMAINS": ",".join(spec["relayDomains"]),
        "SMTP_LISTEN": f"0.0.0.0:{metadata.SMTP_PORT}",
        "CONTROL_LISTEN": f"0.0.0.0:{metadata.CONTROL_PORT}",
        "HEALTH_LISTEN": f"0.0.0.0:{metadata.HEALTH_PORT}",
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
        # The old names, when a spec still has them (or had them filled in by an earlier
        # CRD's defaults), win: the services refuse both names of one setting at once.
        "DELIVERY_DESTINATION_CONCURRENCY": str(
            delivery.get("maxConnectionsPerDomain", delivery["destinationConcurrency"])
        ),
        "DELIVERY_RATE_LIMITS": _pairs(
            {domain: f"{rate:g}" for domain, rate in (delivery.get("rateLimits") or {}).items()}
        ),
        "DELIVERY_RATE_LIMIT_DEFAULT": (
            f"{delivery.get('ratePerDomain', delivery['rateLimitDefault']):g}"
        ),
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
    if spec["nats"].get("replicas", 1) != 1:  # 1 is the services' default: no rollout for it
        data["NATS_REPLICAS"] = str(spec["nats"]["replicas"])
    if spec["nats"].get("placementTags"):
        data["NATS_PLACEMENT_TAGS"] = ",".join(spec["nats"]["placementTags"])
    otlp = observability.get("otlpEndpoint") or otlp_endpoint
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
    "NATS_REPLICAS": "spec.nats.replicas",
    "NATS_PLACEMENT_TAGS": "spec.nats.placementTags",
    "S3_ENDPOINT": "spec.objectStore.endpoint",
    "S3_BUCKET": "spec.objectStore.bucket",
    "RETRY_SCHEDULE": "spec.retry.schedule",
    "OTLP_ENDPOINT": "spec.observability.otlpEndpoint",
}


def check(data: Mapping[str, str]) -> None:
    """Refuse a configuration the services would refuse, naming the setting (and the field)."""
    values: dict[str, Any] = {
        key.removeprefix(settings.ENV_PREFIX).lower(): value for key, value in data.items()
    }
    # Each plugin is checked on its own, naming its MailPlugin, without the files only its
    # pods have (`plugins.check`).
    values.pop("plugins", None)
    # Secrets are not the operator's to read: stand-ins of the right shape.
    values.setdefault("nats_url", "nats://from-secret:4222")
    values["control_token"] = "from-secret"
    try:
        settings.load(environment=False, **values)
    except errors.ConfigurationError as error:
        message = str(error)
        named = [f for key, f in FIELDS.items() if f"{settings.ENV_PREFIX}{key}" in message]
        raise InvalidSpec(f"{', '.join(named) or 'spec'}: {message}") from None


def check_listeners(spec: Mapping[str, Any]) -> None:
    """Refuse a submission listener without the certificate and the users it needs (their
    files come from Secrets, out of the ConfigMap's sight)."""
    listeners = spec["listeners"]
    submission = listeners["submission"]
    if submission["enabled"] and (
        not listeners["tls"].get("secretName") or not submission.get("authSecretName")
    ):
        raise InvalidSpec(
            "spec.listeners.submission needs spec.listeners.tls.secretName and "
            "spec.listeners.submission.authSecretName (EMPATH_SUBMISSION_LISTEN needs "
            "EMPATH_TLS_CERT_FILE and EMPATH_AUTH_CREDENTIALS_FILE)"
        )


def config_hash(*parts: Any) -> str:
    """A digest of what the pods run with, for their template: a change restarts them."""
    text = json.dumps(parts, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:16]
