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
import contextlib
import io
import os
import sys
from typing import Annotated, NoReturn

import httpx
import typer

from empath.control import ctl, transport
from empath.core import kubeconfig, kubenames

PROGRAM = "kubectl empath"


def fail(message: str, code: int = transport.REFUSED) -> NoReturn:
    """Stop: Kubernetes refused (exit 1 by default), or `code`."""
    raise transport.Failed(message, code)


def only_mailserver(kube: httpx.Client, namespace: str) -> str:
    """The namespace's MailServer, when it has exactly one; else say what to choose from."""
    response = kube.get(f"/apis/empath.io/v1alpha1/namespaces/{namespace}/mailservers")
    if response.status_code in (401, 403):
        fail(
            f"{response.status_code}: cannot list MailServers in {namespace!r}: name one "
            "with --mailserver",
        )
    if response.status_code == 404:
        fail("the cluster has no MailServer resource (is the Empath chart installed?)")
    if response.status_code >= 400:
        fail(f"{response.status_code}: {response.text.strip()[:200]}")
    names = sorted(str(item["metadata"]["name"]) for item in response.json().get("items", []))
    if not names:
        fail(f"no MailServer in namespace {namespace!r}")
    if len(names) > 1:
        fail(
            f"{len(names)} MailServers in {namespace!r} ({', '.join(names)}): name one "
            "with --mailserver",
            transport.USAGE,
        )
    return names[0]


def connect(session: transport.Session) -> transport.Target:
    from kubernetes import client, config
    from kubernetes.config.config_exception import ConfigException

    options = session.options
    configuration = client.Configuration()
    try:
        config.load_kube_config(context=options.get("context"), client_configuration=configuration)
        _, active = config.list_kube_config_contexts()
    except (ConfigException, OSError) as error:
        fail(f"kubeconfig: {error}", transport.USAGE)
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
        fail(f"cannot reach the Kubernetes API at {host}: {error}", transport.UNREACHABLE)
    if response.status_code in (401, 403):
        fail(f"{response.status_code}: Kubernetes does not let you read {secret_path}")
    if response.status_code == 404:
        fail(
            f"no MailServer {mailserver!r} in namespace {namespace!r} "
            f"(no Secret {kubenames.control_token_secret(mailserver)})",
        )
    if response.status_code >= 400:
        fail(f"{response.status_code}: {response.text.strip()[:200]}")
    try:
        token = base64.b64decode(response.json()["data"][kubenames.CONTROL_TOKEN_KEY]).decode()
    except (KeyError, ValueError) as error:
        fail(f"Secret {kubenames.control_token_secret(mailserver)} has no usable token: {error}")
    service = f"{kubenames.control_service(mailserver)}:{kubenames.CONTROL_PORT_NAME}"
    return transport.Target(
        base_url=f"{host}/api/v1/namespaces/{namespace}/services/{service}/proxy",
        headers={**headers, "X-Empath-Token": token},
        verify=verify,
        cert=cert,
    )


def options(
    ctx: typer.Context,
    output: ctl.OutputOption = "table",
    context: Annotated[str | None, typer.Option(help="kubeconfig context.")] = None,
    namespace: Annotated[
        str | None, typer.Option("-n", "--namespace", help="The MailServer's namespace.")
    ] = None,
    mailserver: Annotated[
        str | None,
        typer.Option(help="The MailServer's name; default: the namespace's only one."),
    ] = None,
) -> None:
    ctx.obj = transport.Session.start(
        output, connect=connect, context=context, namespace=namespace, mailserver=mailserver
    )


def main() -> None:
    ctl.run(ctl.build(PROGRAM, options), PROGRAM)


COMPLETE_VAR = "_KUBECTL_EMPATH_COMPLETE"


def completions(words: list[str]) -> list[str]:
    """What may come next after `kubectl empath <words>` (the last word is the one being
    typed), as the program's own completion (click's bash protocol) finds it."""
    words = words or [""]
    environment = {
        COMPLETE_VAR: "complete_bash",
        "COMP_WORDS": " ".join(["kubectl-empath", *words]),
        "COMP_CWORD": str(len(words)),
    }
    saved = {name: os.environ.get(name) for name in environment}
    buffer = io.StringIO()
    os.environ.update(environment)
    try:
        with contextlib.redirect_stdout(buffer), contextlib.suppress(SystemExit):
            ctl.build(PROGRAM, options)(prog_name=PROGRAM, complete_var=COMPLETE_VAR, args=[])
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
    return [line for line in buffer.getvalue().splitlines() if line]


def complete() -> None:
    """`kubectl_complete-empath`: kubectl (1.26 and later) runs it to complete
    `kubectl empath ...`; it prints the candidates one a line, then Cobra's directive `:4`
    (do not offer file names)."""
    for candidate in completions(sys.argv[1:]):
        print(candidate)
    print(":4")
