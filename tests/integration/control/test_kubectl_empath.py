"""`kubectl empath` through the real kubectl binary, against a Kubernetes API emulator (kmock).

The emulator stores the MailServer's token Secret like a cluster would, checks the user's
bearer token, and forwards service-proxy requests to the running control service, as the API
server forwards them to a Service.
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import httpx
import pytest
from kmock import KubernetesEmulator, RawHandler, Request, ResourceInfo, Response

from tests.control_client import queue_some
from tests.servers import free_port, kubeconfig
from tests.system import StartSystem, System

TOKEN = "control-token-for-kube"
BIN = Path(sys.executable).parent
PROXY = re.compile(r"^/api/v1/namespaces/mail/services/corp-control:http/proxy(/.*)$")


@pytest.fixture
async def control(start_system: StartSystem) -> System:
    return await start_system(
        only=("ingress", "spool", "control"),
        frozen=True,
        control_token=TOKEN,
        control_listen=f"127.0.0.1:{free_port()}",
    )


@pytest.fixture
async def cluster(kmock: RawHandler, control: System, tmp_path: Path) -> Path:
    """A kubeconfig for a user 'alice' of an emulated cluster that runs MailServer 'corp'."""
    secret = {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": "corp-control-token", "namespace": "mail"},
        "data": {"token": base64.b64encode(TOKEN.encode()).decode()},
    }

    async def read_secret(request: Request) -> Response:
        if request.headers.get("Authorization") != "Bearer alice-token":
            return Response(status=403, payload={"kind": "Status", "code": 403})
        return Response(status=200, payload=secret)

    async def service_proxy(request: Request) -> Response:
        if request.headers.get("Authorization") != "Bearer alice-token":
            return Response(status=403, payload={"kind": "Status", "code": 403})
        match = PROXY.match(request.url.path)
        assert match is not None
        # The API server keeps Authorization for itself; everything else goes on.
        headers = {
            k: v
            for k, v in request.headers.items()
            if k.lower() not in {"authorization", "host", "content-length"}
        }
        async with httpx.AsyncClient(base_url=f"http://{control.settings.control_listen}") as c:
            answer = await c.request(
                str(request.method.value).upper(),
                match[1],
                params=dict(request.params),
                headers=headers,
                content=request.body,
            )
        return Response(
            status=answer.status_code,
            payload=answer.content,
            headers={"Content-Type": answer.headers["content-type"]},
        )

    kmock["get /api/v1/namespaces/mail/secrets/corp-control-token"] << read_secret
    kmock[PROXY] << service_proxy
    return kubeconfig(
        tmp_path / "kubeconfig",
        str(kmock.url),
        users={"alice": "alice-token", "mallory": "mallory-token"},
        contexts={
            "test": {"user": "alice", "namespace": "mail"},
            "other": {"user": "mallory"},
        },
    )


def kubectl(config: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "KUBECONFIG": str(config), "PATH": f"{BIN}:{os.environ['PATH']}"}
    return subprocess.run(
        [str(BIN / "kubectl"), "empath", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


async def test_kubectl_empath_lists_the_queue_through_the_service_proxy(
    control: System, cluster: Path, kmock: RawHandler
) -> None:
    [queue_id] = await queue_some(control, ["a@one.test"])

    listed = await asyncio.to_thread(
        kubectl, cluster, "-o", "json", "--mailserver", "corp", "queue", "list"
    )
    assert listed.returncode == 0, listed.stderr
    assert [i["id"] for i in json.loads(listed.stdout)["items"]] == [queue_id]
    held = await asyncio.to_thread(
        kubectl, cluster, "--mailserver", "corp", "queue", "hold", queue_id
    )
    assert held.returncode == 0, held.stderr
    assert (await control.entry(queue_id)).held
    proxied = list(kmock[PROXY])
    assert [r.url.path.rsplit("/proxy", 1)[1] for r in proxied] == [
        "/api/v1/queue",
        f"/api/v1/queue/{queue_id}/hold",
    ]


async def test_kubernetes_rbac_decides_who_may_manage_the_queue(cluster: Path) -> None:
    refused = await asyncio.to_thread(
        kubectl,
        cluster,
        "--context",
        "other",
        "-n",
        "mail",
        "--mailserver",
        "corp",
        "queue",
        "list",
    )
    assert refused.returncode == 1
    assert refused.stderr.strip() == (
        "kubectl empath: 403: Kubernetes does not let you read "
        "/api/v1/namespaces/mail/secrets/corp-control-token"
    )
    missing = await asyncio.to_thread(kubectl, cluster, "--mailserver", "nope", "queue", "list")
    assert missing.returncode == 1
    assert "no MailServer 'nope' in namespace 'mail'" in missing.stderr


async def test_the_namespaces_only_mailserver_needs_no_name(
    control: System, cluster: Path, kmock: RawHandler
) -> None:
    servers = "empath.io/v1alpha1/mailservers"

    def mailserver(name: str) -> dict[str, object]:
        return {
            "apiVersion": "empath.io/v1alpha1",
            "kind": "MailServer",
            "metadata": {"name": name, "namespace": "mail"},
            "spec": {"hostname": f"{name}.example.com"},
        }

    assert isinstance(kmock, KubernetesEmulator)
    no_crd = await asyncio.to_thread(kubectl, cluster, "queue", "list")
    assert no_crd.returncode == 1
    assert "the cluster has no MailServer resource (is the Empath chart installed?)" in (
        no_crd.stderr
    )
    kmock.resources[servers] = ResourceInfo(kind="MailServer", namespaced=True, verbs={"list"})
    empty = await asyncio.to_thread(kubectl, cluster, "queue", "list")
    assert empty.returncode == 1
    assert "kubectl empath: no MailServer in namespace 'mail'" in empty.stderr

    kmock.objects[servers, "mail", "corp"] = mailserver("corp")
    listed = await asyncio.to_thread(kubectl, cluster, "-o", "json", "queue", "list")
    assert listed.returncode == 0, listed.stderr
    assert json.loads(listed.stdout)["items"] == []
    assert list(kmock[PROXY])  # it reached corp's control service

    kmock.objects[servers, "mail", "edge"] = mailserver("edge")
    ambiguous = await asyncio.to_thread(kubectl, cluster, "queue", "list")
    assert ambiguous.returncode == 2
    assert "2 MailServers in 'mail' (corp, edge): name one with --mailserver" in (ambiguous.stderr)


async def test_kubectl_empath_takes_its_options_after_the_subcommand_and_completes(
    control: System, cluster: Path
) -> None:
    [queue_id] = await queue_some(control, ["a@one.test"])
    listed = await asyncio.to_thread(
        kubectl,
        cluster,
        "queue",
        "list",
        "-o",
        "json",
        "--context",
        "test",
        "-n",
        "mail",
        "--mailserver",
        "corp",
    )
    assert listed.returncode == 0, listed.stderr
    assert [i["id"] for i in json.loads(listed.stdout)["items"]] == [queue_id]

    env = {**os.environ, "KUBECONFIG": str(cluster), "PATH": f"{BIN}:{os.environ['PATH']}"}
    completed = await asyncio.to_thread(
        subprocess.run,
        [str(BIN / "kubectl"), "__complete", "empath", "-n", "mail", "queue", "li"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert completed.stdout.splitlines() == ["list", ":4"], completed.stderr
