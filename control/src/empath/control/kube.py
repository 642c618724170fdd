"""`kubectl empath`: the empathctl commands, through the Kubernetes API server.

The plugin reads the user's kubeconfig (`KUBECONFIG`, `--context`, `-n/--namespace`) and talks
to the MailServer's control Service through the API server's service proxy
(`/api/v1/namespaces/<ns>/services/<name>-control:http/proxy/...`), so no port-forward is
needed. The API server keeps the `Authorization` header for itself, so the control token rides
in `X-Empath-Token`; the plugin reads it from the Secret `<name>-control-token` with the
user's own credentials. Kubernetes RBAC therefore decides who may manage the queue: whoever may
read that Secret and use the service proxy.
"""

from __future__ import annotations

import base64
import sys

import httpx

from empath.control import ctl
from empath.core import kubeconfig, kubenames


def only_mailserver(kube: httpx.Client, namespace: str) -> str:
    """The namespace's MailServer, when it has exactly one; else say what to choose from."""
    response = kube.get(f"/apis/empath.io/v1alpha1/namespaces/{namespace}/mailservers")
    if response.status_code in (401, 403):
        ctl.fail(
            f"{response.status_code}: cannot list MailServers in {namespace!r}: name one "
            "with --mailserver",
            1,
        )
    if response.status_code == 404:
        ctl.fail("the cluster has no MailServer resource (is the Empath chart installed?)", 1)
    if response.status_code >= 400:
        ctl.fail(f"{response.status_code}: {response.text.strip()[:200]}", 1)
    names = sorted(str(item["metadata"]["name"]) for item in response.json().get("items", []))
    if not names:
        ctl.fail(f"no MailServer in namespace {namespace!r}", 1)
    if len(names) > 1:
        ctl.fail(
            f"{len(names)} MailServers in {namespace!r} ({', '.join(names)}): name one "
            "with --mailserver",
            2,
        )
    return names[0]


def connect(state: ctl.State) -> ctl.Target:
    from kubernetes import client, config
    from kubernetes.config.config_exception import ConfigException

    options = state.options
    configuration = client.Configuration()
    try:
        config.load_kube_config(context=options.get("context"), client_configuration=configuration)
        _, active = config.list_kube_config_contexts()
    except (ConfigException, OSError) as error:
        ctl.fail(f"kubeconfig: {error}", 2)
    if options.get("context"):
        contexts, _ = config.list_kube_config_contexts()
        active = next(c for c in contexts if c["name"] == options["context"])
    namespace = options.get("namespace") or active["context"].get("namespace") or "default"
    user_token = kubeconfig.bearer(configuration)
    headers = {"Authorization": f"Bearer {user_token}"} if user_token else {}
    verify, cert = kubeconfig.tls(configuration)
    host = configuration.host.rstrip("/")
    try:
        with httpx.Client(
            base_url=host, headers=headers, verify=verify, cert=cert, timeout=30
        ) as kube:
            mailserver = options.get("mailserver") or only_mailserver(kube, namespace)
            secret = kubenames.control_token_secret(mailserver)
            secret_path = f"/api/v1/namespaces/{namespace}/secrets/{secret}"
            response = kube.get(secret_path)
    except httpx.HTTPError as error:
        ctl.fail(f"cannot reach the Kubernetes API at {host}: {error}", 3)
    if response.status_code in (401, 403):
        ctl.fail(f"{response.status_code}: Kubernetes does not let you read {secret_path}", 1)
    if response.status_code == 404:
        ctl.fail(
            f"no MailServer {mailserver!r} in namespace {namespace!r} "
            f"(no Secret {kubenames.control_token_secret(mailserver)})",
            1,
        )
    if response.status_code >= 400:
        ctl.fail(f"{response.status_code}: {response.text.strip()[:200]}", 1)
    try:
        token = base64.b64decode(response.json()["data"][kubenames.CONTROL_TOKEN_KEY]).decode()
    except (KeyError, ValueError) as error:
        ctl.fail(
            f"Secret {kubenames.control_token_secret(mailserver)} has no usable token: {error}", 1
        )
    service = f"{kubenames.control_service(mailserver)}:{kubenames.CONTROL_PORT_NAME}"
    return ctl.Target(
        base_url=f"{host}/api/v1/namespaces/{namespace}/services/{service}/proxy",
        headers={**headers, "X-Empath-Token": token},
        verify=verify,
        cert=cert,
    )


def main() -> None:
    ctl.PROGRAM = "kubectl empath"
    ctl.build(connect, name="kubectl empath", kube=True)(
        prog_name="kubectl empath", args=sys.argv[1:]
    )
