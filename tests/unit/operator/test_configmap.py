"""The settings ConfigMap: what the services read from it is what the spec said."""

from __future__ import annotations

import os
from typing import Any

import pytest

from empath.core import settings
from empath.operator import configmap, plugins, render
from tests.specs import mailserver as server

OPTIONS = render.Options(image="empath:test")


def rendered_config(**spec: Any) -> dict[str, str]:
    made = render.render(server(**spec), [], OPTIONS)
    return dict(made.named("ConfigMap", "corp-config")["data"])


def as_a_pod_reads_it(monkeypatch: pytest.MonkeyPatch, data: dict[str, str]) -> settings.Settings:
    """The settings a service loads in a pod that has the ConfigMap (and the Secrets)."""
    for key in [k for k in os.environ if k.startswith(settings.ENV_PREFIX)]:
        monkeypatch.delenv(key)
    for key, value in {**data, "EMPATH_CONTROL_TOKEN": "from-its-secret"}.items():
        monkeypatch.setenv(key, value)
    return settings.load()


def test_the_services_read_the_spec_back_from_the_configmap(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    data = rendered_config(
        relayDomains=["example.com", "example.org"],
        trustedNetworks=["10.0.0.0/8", "192.168.0.0/16"],
        retry={"schedule": [0, 1.5, 60], "maxQueueLifetime": 3600},
        delivery={
            "mxOverrides": {"example.org": "10.1.2.3:2525", "example.com": "mx.test"},
            "tlsPolicies": {"example.org": "none"},
        },
    )
    # Maps in key order, numbers as short as they go: the same spec, the same ConfigMap.
    assert data["EMPATH_MX_OVERRIDES"] == "example.com=mx.test,example.org=10.1.2.3:2525"
    assert data["EMPATH_RETRY_SCHEDULE"] == "0,1.5,60"
    found = as_a_pod_reads_it(monkeypatch, data)
    assert found.relay_domains == ["example.com", "example.org"]
    assert found.mx_overrides == {"example.com": "mx.test", "example.org": "10.1.2.3:2525"}
    assert found.tls_policies == {"example.org": "none"}
    assert found.retry_schedule == [0, 1.5, 60]
    assert found.max_queue_lifetime == 3600
    assert [str(n) for n in found.trusted_networks] == ["10.0.0.0/8", "192.168.0.0/16"]


def test_settings_the_spec_leaves_out_are_left_to_the_services_defaults() -> None:
    data = rendered_config()
    for absent in ("TRUSTED_NETWORKS", "MX_OVERRIDES", "TLS_POLICIES", "POSTMASTER", "S3_REGION"):
        assert f"EMPATH_{absent}" not in data
    # A NATS URL from a Secret is the kubelet's to fill in, not the ConfigMap's.
    assert "EMPATH_NATS_URL" not in rendered_config(nats={"urlSecret": {"name": "n", "key": "u"}})


def test_a_setting_refused_is_named_by_its_spec_field() -> None:
    data = rendered_config()
    data["EMPATH_RETRY_SCHEDULE"] = "30,-1"
    with pytest.raises(configmap.InvalidSpec, match=r"^spec\.retry\.schedule: "):
        configmap.check(data)


@pytest.mark.parametrize(
    ("listeners", "refused"),
    [
        ({"submission": {"enabled": True, "authSecretName": "users"}}, True),
        ({"submission": {"enabled": True}, "tls": {"secretName": "tls"}}, True),
        (
            {
                "submission": {"enabled": True, "authSecretName": "users"},
                "tls": {"secretName": "t"},
            },
            False,
        ),
        ({"tls": {"secretName": "tls"}}, False),
    ],
)
def test_submission_needs_a_certificate_and_users(listeners: dict[str, Any], refused: bool) -> None:
    body = server(listeners=listeners)
    if refused:
        with pytest.raises(configmap.InvalidSpec, match=r"^spec\.listeners\.submission needs"):
            render.render(body, [], OPTIONS)
    else:
        assert render.render(body, [], OPTIONS).named("Service", "corp-smtp")


def test_plugins_get_the_crds_defaults_and_run_by_priority_then_name() -> None:
    def plugin(name: str, **spec: Any) -> dict[str, Any]:
        return {"metadata": {"name": name}, "spec": {"hooks": ["rcpt"], **spec}}

    entries = plugins.settings(
        [
            plugin("zeta", endpoint={"url": "http://zeta/hook"}),
            plugin("alpha", endpoint={"subject": "alpha.hooks"}),
            plugin("first", priority=1, timeoutSeconds=2, failurePolicy="Fail"),
        ]
    )
    assert entries == [
        {"name": "first", "hooks": ["rcpt"], "timeout": 2, "failure_policy": "Fail", "priority": 1},
        {
            "name": "alpha",
            "hooks": ["rcpt"],
            "timeout": 5,
            "failure_policy": "Ignore",
            "priority": 100,
            "subject": "alpha.hooks",
        },
        {
            "name": "zeta",
            "hooks": ["rcpt"],
            "timeout": 5,
            "failure_policy": "Ignore",
            "priority": 100,
            "url": "http://zeta/hook",
        },
    ]


def test_a_change_of_what_pods_mount_restarts_them() -> None:
    # The TLS Secret's name is not in the ConfigMap, but the pods mount it: the hash that
    # restarts them covers it.
    def config_hash(**spec: Any) -> str:
        made = render.render(server(**spec), [], OPTIONS)
        template = made.named("Deployment", "corp-ingress")["spec"]["template"]
        return str(template["metadata"]["annotations"]["empath.io/config-hash"])

    assert config_hash() == config_hash()
    assert config_hash() != config_hash(listeners={"tls": {"secretName": "mx-tls"}})
    assert config_hash() != config_hash(limits={"maxRecipients": 5})


def test_nats_replicas_and_placement_reach_the_services_and_one_replica_is_left_to_default(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    nats = {"url": "nats://nats.mail.svc:4222"}
    assert "EMPATH_NATS_REPLICAS" not in rendered_config(nats={**nats, "replicas": 1})
    data = rendered_config(nats={**nats, "replicas": 3, "placementTags": ["zone-a", "ssd"]})
    assert data["EMPATH_NATS_REPLICAS"] == "3"
    found = as_a_pod_reads_it(monkeypatch, data)
    assert (found.nats_replicas, found.nats_placement_tags) == (3, ["zone-a", "ssd"])
    # A change of the count rolls the pods, which then change the streams' replicas.
    assert rendered_config(nats={**nats, "replicas": 3}) != rendered_config(nats=nats)


def test_a_default_spec_gives_postfix_like_limits_and_no_rate_limit(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    loaded = as_a_pod_reads_it(monkeypatch, rendered_config())
    assert loaded.delivery_destination_concurrency == 20
    assert loaded.delivery_rate_limit_default == 0
    assert loaded.delivery_rate_limits == {}


def test_per_domain_rates_and_the_old_limit_names_reach_the_services(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    limited = rendered_config(
        delivery={"rateLimits": {"Example.COM": 5, "slow.test": 0.5}, "destinationConcurrency": 4}
    )
    loaded = as_a_pod_reads_it(monkeypatch, limited)
    assert loaded.delivery_rate_limits == {"example.com": 5, "slow.test": 0.5}
    assert loaded.delivery_destination_concurrency == 4
    # A MailServer written for an earlier version (its CRD filled these in): still honoured.
    old = rendered_config(delivery={"maxConnectionsPerDomain": 10, "ratePerDomain": 10})
    loaded = as_a_pod_reads_it(monkeypatch, old)
    assert (loaded.delivery_destination_concurrency, loaded.delivery_rate_limit_default) == (10, 10)
