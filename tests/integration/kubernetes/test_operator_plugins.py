"""MailPlugins through the operator, against the Kubernetes API emulator: what a MailPlugin
needs as files reaches ingress's pod (Secrets and ConfigMaps mounted, a C module's library
copied from its image by an init container) and its entry in `EMPATH_PLUGINS` names them; the
API server refuses a MailPlugin with two ways to reach it, and one stored before that rule
existed changes nothing of the MailServers that select it, which say why."""

from __future__ import annotations

import json
from typing import Any

import httpx
import kubernetes_validate
import pytest

from empath.operator import crds
from tests.emulator import Cluster
from tests.operator_harness import (
    NS,
    PLUGINS,
    SELECTOR,
    SERVERS,
    Api,
    degraded,
    deployment_url,
    has_status,
    mailplugin,
    mailserver,
)

pytestmark = pytest.mark.kmock(cls=Cluster)

# The oldest Kubernetes the chart admits and the newest kubernetes-validate knows.
VERSIONS = ("1.28.0", kubernetes_validate.latest_version())

SECURE = {
    "hooks": ["rcpt", "data"],
    "endpoint": {
        "url": "https://policy.mail.svc/hook",
        "caConfigMap": {"name": "trust-bundle", "key": "bundle.pem"},
        "secretRef": {"name": "policy-auth", "key": "shared"},
    },
    "bodyLimit": 4096,
}
DKIM = {
    "hooks": ["data"],
    "module": "empath.ingress.builtin.dkim:plugin",
    "options": {"keys": "/etc/empath/plugins/dkim/options", "selector": "s1"},
    "optionsSecret": {"name": "dkim-keys"},
}
CMODULE = {
    "hooks": ["mail"],
    "library": {
        "image": "registry.example/greylist:1.2",
        "path": "/opt/lib/libgreylist.so",
        "arguments": ["300"],
        "pullPolicy": "Always",
    },
}


def plugin(name: str, **spec: Any) -> dict[str, Any]:
    """A MailPlugin the MailServer selects, reached as `spec` says (and no other way)."""
    body = mailplugin(name, {"team": "mail"}, **spec)
    body["spec"] = spec
    return body


async def config_plugins(api: Api) -> dict[str, dict[str, Any]]:
    config = await api.get(f"/api/v1/namespaces/{NS}/configmaps/corp-config")
    assert config is not None
    return {p["name"]: p for p in json.loads(config["data"]["EMPATH_PLUGINS"])}


async def test_a_plugins_secrets_options_and_c_module_reach_ingress(
    api: Api, operator: Any
) -> None:
    await operator()
    for name, spec in (("policy", SECURE), ("dkim", DKIM), ("greylist", CMODULE)):
        await api.create(PLUGINS, plugin(name, **spec))
    await api.create(SERVERS, mailserver(pluginSelector=SELECTOR))
    server = await api.wait(f"{SERVERS}/corp", has_status(1))
    assert server["status"]["plugins"] == ["dkim", "greylist", "policy"]

    entries = await config_plugins(api)
    assert entries["policy"]["secret_file"] == "/etc/empath/plugins/policy/secret/shared"
    assert entries["policy"]["ca_file"] == "/etc/empath/plugins/policy/ca/bundle.pem"
    assert entries["policy"]["body_limit"] == 4096
    assert entries["dkim"]["module"] == "empath.ingress.builtin.dkim:plugin"
    assert entries["dkim"]["options"] == DKIM["options"]
    assert entries["greylist"]["library"] == "/etc/empath/plugins/greylist/lib/libgreylist.so"
    assert entries["greylist"]["arguments"] == ["300"]

    ingress = await api.get(deployment_url("corp-ingress"))
    assert ingress is not None
    for version in VERSIONS:  # init containers, Secret, ConfigMap and emptyDir volumes
        kubernetes_validate.validate(ingress, version, strict=True)
    pod = ingress["spec"]["template"]["spec"]
    volumes = {v["name"]: v for v in pod["volumes"]}
    (container,) = pod["containers"]
    mounted = {m["mountPath"]: volumes[m["name"]] for m in container["volumeMounts"]}
    assert mounted["/etc/empath/plugins/policy/secret"]["secret"]["secretName"] == "policy-auth"
    assert mounted["/etc/empath/plugins/policy/ca"]["configMap"]["name"] == "trust-bundle"
    assert mounted["/etc/empath/plugins/dkim/options"]["secret"]["secretName"] == "dkim-keys"
    library = mounted["/etc/empath/plugins/greylist/lib"]
    assert "emptyDir" in library
    (init,) = pod["initContainers"]
    assert init["image"] == "registry.example/greylist:1.2"
    assert init["imagePullPolicy"] == "Always"
    assert init["command"] == ["cp", "/opt/lib/libgreylist.so", "/empath-plugin/libgreylist.so"]
    (copied,) = init["volumeMounts"]
    assert copied["mountPath"] == "/empath-plugin"
    assert volumes[copied["name"]] is library

    # A plugin's Secret changes: ingress's pods roll with it.
    before = ingress["spec"]["template"]
    changed = {**SECURE["endpoint"], "secretRef": {"name": "policy-auth-2", "key": "shared"}}
    await api.patch(f"{PLUGINS}/policy", {"spec": {"endpoint": changed}})
    rolled = await api.wait(
        deployment_url("corp-ingress"), lambda d: d["spec"]["template"] != before
    )
    volumes = rolled["spec"]["template"]["spec"]["volumes"]
    assert any((v.get("secret") or {}).get("secretName") == "policy-auth-2" for v in volumes)


async def test_the_api_server_refuses_a_plugin_with_two_ways_to_reach_it(api: Api) -> None:
    both = mailplugin(
        "both", {"team": "mail"}, endpoint={"url": "http://a.mail.svc/"}, module="a.b:c"
    )
    with pytest.raises(httpx.HTTPStatusError) as refused:
        await api.create(PLUGINS, both)
    assert refused.value.response.status_code == 422
    assert "set exactly one of endpoint.url, endpoint.subject, module and library" in (
        refused.value.response.text
    )
    assert await api.get(f"{PLUGINS}/both") is None


async def test_a_plugin_stored_before_the_rules_changes_nothing_and_says_why(
    api: Api, operator: Any
) -> None:
    await operator()
    await api.create(PLUGINS, mailplugin("spam-check", {"team": "mail"}))
    await api.create(SERVERS, mailserver(pluginSelector=SELECTOR))
    await api.wait(f"{SERVERS}/corp", has_status(1))
    before = await config_plugins(api)

    # Stored by an API server that did not have the CRD's rules yet.
    rules = api.kmock.schemas.pop(crds.MAILPLUGINS)  # type: ignore[attr-defined]
    await api.create(
        PLUGINS,
        mailplugin("both", {"team": "mail"}, endpoint={"url": "http://a.mail.svc/"}, module="a:b"),
    )
    api.kmock.schemas[crds.MAILPLUGINS] = rules  # type: ignore[attr-defined]

    found = await degraded(api, "InvalidSpec")
    assert (
        "MailPlugin both: spec.endpoint, spec.module, spec.library"
        in (found["degraded"]["message"])
    )
    assert await config_plugins(api) == before  # nothing changed
    await api.delete(f"{PLUGINS}/both")
    await api.wait(
        f"{SERVERS}/corp",
        lambda o: any(
            c["type"] == "Degraded" and c["status"] == "False" for c in o["status"]["conditions"]
        ),
    )


def ready(plugin: dict[str, Any]) -> dict[str, Any]:
    conditions = (plugin.get("status") or {}).get("conditions") or []
    return next((c for c in conditions if c["type"] == "Ready"), {})


async def test_a_plugins_status_names_the_servers_that_use_it(api: Api, operator: Any) -> None:
    await operator()
    await api.create(PLUGINS, mailplugin("spam-check", {"team": "mail"}))
    await api.create(PLUGINS, mailplugin("lonely", {"team": "web"}))
    await api.create(SERVERS, mailserver(pluginSelector=SELECTOR))
    await api.create(SERVERS, mailserver("other", pluginSelector=SELECTOR))
    used = await api.wait(
        f"{PLUGINS}/spam-check",
        lambda o: (o.get("status") or {}).get("usedBy") == ["corp", "other"],
    )
    assert ready(used)["status"] == "True"
    assert ready(used)["reason"] == "Selected"
    assert used["status"]["observedGeneration"] == used["metadata"]["generation"]
    lonely = await api.wait(f"{PLUGINS}/lonely", lambda o: ready(o).get("status") == "False")
    assert lonely["status"]["usedBy"] == []
    assert ready(lonely)["reason"] == "NotSelected"

    # A server goes, another starts selecting the lonely one: both statuses follow.
    await api.delete(f"{SERVERS}/other")
    await api.wait(
        f"{PLUGINS}/spam-check", lambda o: (o.get("status") or {}).get("usedBy") == ["corp"]
    )
    await api.patch(f"{PLUGINS}/lonely", {"metadata": {"labels": {"team": "mail"}}})
    lonely = await api.wait(f"{PLUGINS}/lonely", lambda o: ready(o).get("status") == "True")
    assert lonely["status"]["usedBy"] == ["corp"]
