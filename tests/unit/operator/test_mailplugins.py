"""MailPlugins as the services and ingress's pod get them: the `EMPATH_PLUGINS` entries, the
Secrets and ConfigMaps mounted for them, a C module's library copied from its image, and the
CRD's rules and the operator's check that refuse what could not run."""

from __future__ import annotations

import json
import os
from typing import Any

import pytest

from empath.core import settings
from empath.operator import configmap, crds, render
from tests import emulator
from tests.specs import mailserver

OPTIONS = render.Options(image="empath:test")
SELECTING = {"pluginSelector": {"matchLabels": {"team": "mail"}}}


def plugin(name: str, **spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": f"{crds.GROUP}/{crds.VERSION}",
        "kind": "MailPlugin",
        "metadata": {"name": name, "namespace": "mail", "labels": {"team": "mail"}},
        "spec": spec,
    }


def admitted(body: dict[str, Any]) -> list[str]:
    """What the API server says to `body`: [] when it stores it."""
    schema = crds.schema(crds.MAILPLUGINS)
    return emulator.refusals(schema, crds.with_defaults(schema, body))


HTTPS = plugin(
    "policy",
    hooks=["rcpt", "data"],
    endpoint={
        "url": "https://policy.mail.svc/hook",
        "caSecret": {"name": "policy-tls"},
        "secretRef": {"name": "policy-auth", "key": "shared"},
    },
    bodyLimit=65536,
    concurrency=8,
)
DKIM = plugin(
    "dkim",
    hooks=["data"],
    module="empath.ingress.builtin.dkim:plugin",
    options={"keys": "/etc/empath/plugins/dkim/options", "selectors": {"example.com": "s1"}},
    optionsSecret={"name": "dkim-keys"},
)
CMODULE = plugin(
    "greylist",
    hooks=["rcpt"],
    library={
        "image": "registry.example/greylist:1.2",
        "path": "/usr/lib/empath/libgreylist.so",
        "arguments": ["--window", "300"],
    },
    failurePolicy="Fail",
)


def ingress_pod(selected: list[dict[str, Any]]) -> dict[str, Any]:
    made = render.render(mailserver(**SELECTING), selected, OPTIONS)
    return dict(made.named("Deployment", "corp-ingress")["spec"]["template"]["spec"])


def entries(selected: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    made = render.render(mailserver(**SELECTING), selected, OPTIONS)
    data = made.named("ConfigMap", "corp-config")["data"]
    return {entry["name"]: entry for entry in json.loads(data["EMPATH_PLUGINS"])}


def test_an_https_plugin_gets_its_ca_and_shared_secret_mounted_and_named() -> None:
    assert admitted(HTTPS) == []
    assert entries([HTTPS])["policy"] == {
        "name": "policy",
        "hooks": ["rcpt", "data"],
        "timeout": 5,
        "failure_policy": "Ignore",
        "priority": 100,
        "url": "https://policy.mail.svc/hook",
        "ca_file": "/etc/empath/plugins/policy/ca/ca.crt",
        "secret_file": "/etc/empath/plugins/policy/secret/shared",
        "body_limit": 65536,
        "concurrency": 8,
    }
    pod = ingress_pod([HTTPS])
    volumes = {v["name"]: v for v in pod["volumes"]}
    (container,) = pod["containers"]
    mounts = {m["mountPath"]: m for m in container["volumeMounts"]}
    secret = mounts["/etc/empath/plugins/policy/secret"]
    assert secret["readOnly"] is True
    assert volumes[secret["name"]]["secret"] == {
        "secretName": "policy-auth",
        "items": [{"key": "shared", "path": "shared"}],
        "defaultMode": 0o440,
    }
    ca = mounts["/etc/empath/plugins/policy/ca"]
    assert volumes[ca["name"]]["secret"]["secretName"] == "policy-tls"
    assert volumes[ca["name"]]["secret"]["items"] == [{"key": "ca.crt", "path": "ca.crt"}]
    assert "initContainers" not in pod


def test_the_ca_may_come_from_a_configmap() -> None:
    trusted = plugin(
        "policy",
        hooks=["rcpt"],
        endpoint={
            "url": "https://policy.mail.svc/hook",
            "caConfigMap": {"name": "trust-bundle", "key": "bundle.pem"},
        },
    )
    assert admitted(trusted) == []
    assert entries([trusted])["policy"]["ca_file"] == "/etc/empath/plugins/policy/ca/bundle.pem"
    volumes = ingress_pod([trusted])["volumes"]
    (volume,) = [v for v in volumes if "configMap" in v]
    assert volume["configMap"]["name"] == "trust-bundle"


def test_an_in_process_plugin_gets_its_options_and_the_secret_they_name() -> None:
    assert admitted(DKIM) == []
    entry = entries([DKIM])["dkim"]
    assert entry["module"] == "empath.ingress.builtin.dkim:plugin"
    assert entry["options"] == {
        "keys": "/etc/empath/plugins/dkim/options",
        "selectors": {"example.com": "s1"},
    }
    pod = ingress_pod([DKIM])
    (container,) = pod["containers"]
    (mount,) = [
        m for m in container["volumeMounts"] if m["mountPath"].startswith("/etc/empath/plugins")
    ]
    assert mount == {
        "name": mount["name"],
        "mountPath": "/etc/empath/plugins/dkim/options",
        "readOnly": True,
    }
    (volume,) = [v for v in pod["volumes"] if v["name"] == mount["name"]]
    assert volume["secret"] == {"secretName": "dkim-keys", "defaultMode": 0o440}


def test_a_c_module_is_copied_from_its_image_before_ingress_starts() -> None:
    assert admitted(CMODULE) == []
    entry = entries([CMODULE])["greylist"]
    assert entry["library"] == "/etc/empath/plugins/greylist/lib/libgreylist.so"
    assert entry["arguments"] == ["--window", "300"]
    assert "url" not in entry
    assert "module" not in entry
    pod = ingress_pod([CMODULE])
    (init,) = pod["initContainers"]
    (container,) = pod["containers"]
    assert init["image"] == "registry.example/greylist:1.2"
    assert init["imagePullPolicy"] == "IfNotPresent"
    assert init["command"] == [
        "cp",
        "/usr/lib/empath/libgreylist.so",
        "/empath-plugin/libgreylist.so",
    ]
    assert init["securityContext"] == container["securityContext"]  # as hardened
    (copied,) = init["volumeMounts"]
    (mounted,) = [m for m in container["volumeMounts"] if m["name"] == copied["name"]]
    assert mounted == {
        "name": copied["name"],
        "mountPath": "/etc/empath/plugins/greylist/lib",
        "readOnly": True,
    }
    (volume,) = [v for v in pod["volumes"] if v["name"] == copied["name"]]
    assert "emptyDir" in volume


def test_only_ingress_gets_the_plugins_files() -> None:
    made = render.render(mailserver(**SELECTING), [HTTPS, DKIM, CMODULE], OPTIONS)
    for component in ("spool", "delivery", "control"):
        pod = made.named("Deployment", f"corp-{component}")["spec"]["template"]["spec"]
        assert not [v for v in pod["volumes"] if v["name"].startswith("plugin-")], component
        (container,) = pod["containers"]
        mounted = [m["mountPath"] for m in container["volumeMounts"]]
        assert not [path for path in mounted if path.startswith("/etc/empath/plugins")]
        assert "initContainers" not in pod


def test_what_the_operator_renders_the_services_read_back(monkeypatch: pytest.MonkeyPatch) -> None:
    """Entries without files only a pod has load as the services' own settings."""
    simple = plugin(
        "spam",
        hooks=["helo", "rcpt", "received"],
        endpoint={"subject": "empath.plugins.spam"},
        bodyLimit=1024,
    )
    made = render.render(mailserver(**SELECTING), [simple], OPTIONS)
    data = made.named("ConfigMap", "corp-config")["data"]
    for key in [k for k in os.environ if k.startswith(settings.ENV_PREFIX)]:
        monkeypatch.delenv(key)
    for key, value in {**data, "EMPATH_CONTROL_TOKEN": "from-its-secret"}.items():
        monkeypatch.setenv(key, value)
    (loaded,) = settings.load().plugins
    assert loaded.hooks == ["ehlo", "rcpt", "message_received"]
    assert loaded.subject == "empath.plugins.spam"
    assert loaded.body_limit == 1024


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        (
            {"hooks": ["rcpt"], "endpoint": {"url": "http://a/"}, "module": "a:b"},
            "set exactly one of endpoint.url, endpoint.subject, module and library",
        ),
        (
            {
                "hooks": ["rcpt"],
                "module": "a:b",
                "library": {"image": "i", "path": "/l.so"},
            },
            "set exactly one of endpoint.url, endpoint.subject, module and library",
        ),
        (
            {"hooks": ["rcpt"], "endpoint": {"url": "http://a/", "subject": "a.b"}},
            "set exactly one of url and subject",
        ),
        ({"hooks": ["rcpt"]}, "only a plugin of event hooks alone needs none"),
        (
            {
                "hooks": ["rcpt"],
                "endpoint": {"subject": "a.b", "secretRef": {"name": "s", "key": "k"}},
            },
            "caSecret, caConfigMap and secretRef are for an HTTP plugin (url)",
        ),
        (
            {"hooks": ["rcpt"], "endpoint": {"url": "http://a/", "caSecret": {"name": "ca"}}},
            "a CA is for an https:// url",
        ),
        (
            {"hooks": ["rcpt"], "endpoint": {"url": "http://a/"}, "options": {"x": 1}},
            "options and optionsSecret are for in-process plugins (module)",
        ),
        (
            {"hooks": ["rcpt"], "library": {"image": "i", "path": "/usr/../etc/x.so"}},
            "path is an absolute path without .. or //",
        ),
        ({"endpoint": {"url": "http://a/"}}, "hooks is required"),
    ],
)
def test_the_crd_refuses_a_plugin_that_could_not_run(spec: dict[str, Any], message: str) -> None:
    found = admitted(plugin("bad", **spec))
    assert found, spec
    assert any(message in refusal for refusal in found), found


def test_event_plugins_need_no_endpoint_and_a_c_module_may_name_no_hooks() -> None:
    assert admitted(plugin("audit", hooks=["delivered", "received"])) == []
    assert admitted(plugin("c", library={"image": "i", "path": "/lib.so"})) == []
    assert admitted(plugin("x" * 64, hooks=["delivered"])) == [
        "a MailPlugin's name has at most 63 characters (the services' plugin names)"
    ]


@pytest.mark.parametrize(
    ("spec", "named"),
    [
        (
            {"hooks": ["rcpt"], "endpoint": {"url": "http://a/"}, "module": "a:b"},
            "spec.endpoint, spec.module, spec.library",
        ),
        ({"hooks": ["data"]}, "spec.endpoint, spec.module, spec.library"),
        (
            {"hooks": ["rcpt"], "endpoint": {"url": "http://a/", "caSecret": {"name": "c"}}},
            "spec.endpoint.url: a CA is for an https:// url",
        ),
        (
            {"hooks": ["rcpt"], "library": {"image": "i", "path": "relative/x.so"}},
            "spec.library.path",
        ),
        ({"hooks": ["rcpt"], "endpoint": {"url": "ftp://a/"}}, "spec: url"),
        ({"hooks": ["data"], "module": "a:b", "bodyLimit": -1}, "spec: body_limit"),
    ],
)
def test_a_plugin_stored_past_the_crds_rules_is_refused_naming_its_field(
    spec: dict[str, Any], named: str
) -> None:
    """What an API server without the rules (or before them) stored does not run either:
    the MailServer that selects it changes nothing and says why."""
    with pytest.raises(configmap.InvalidSpec, match=f"MailPlugin bad: {named}"):
        render.render(mailserver(**SELECTING), [plugin("bad", **spec)], OPTIONS)


def test_a_change_of_a_plugins_files_rolls_ingress() -> None:
    def template(selected: list[dict[str, Any]]) -> dict[str, Any]:
        made = render.render(mailserver(**SELECTING), selected, OPTIONS)
        return dict(made.named("Deployment", "corp-ingress")["spec"]["template"])

    moved = plugin(
        "policy",
        **{
            **HTTPS["spec"],
            "endpoint": {
                **HTTPS["spec"]["endpoint"],
                "secretRef": {"name": "other", "key": "shared"},
            },
        },
    )
    assert template([HTTPS]) != template([moved])
