"""The pods the operator renders, run here as a kubelet would run them, without the cluster.

For every Deployment of a MailServer the test runs the container's command with the
environment the kubelet would give it: the ConfigMap (`envFrom`), the `env` entries with
Secret references resolved, and the Secret volumes as files. Only what is the cluster's is
moved: Service DNS names become the test's NATS and object store, listen addresses become
free loopback ports, mount paths become folders. Then mail goes in over SMTP (STARTTLS with
the TLS Secret, AUTH on submission with the users Secret), is delivered to an aiosmtpd MX
named by an override in the spec, and the control API answers with the token Secret; the
readiness probes answer as the kubelet would ask them.
"""

from __future__ import annotations

import asyncio
import os
import signal
import smtplib
import ssl
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import bcrypt
import httpx
import pytest
import trustme

from empath.core import natsauth, signing
from empath.operator import render
from tests import servers
from tests.remote import Remote
from tests.servers import free_port, probe_ok
from tests.specs import mailserver
from tests.waiting import passes

EMPATH = str(Path(sys.executable).parent / "empath")


class Pod:
    def __init__(self, deployment: dict[str, Any], process: subprocess.Popen[str], health: int):
        self.name = deployment["metadata"]["name"]
        self.container = deployment["spec"]["template"]["spec"]["containers"][0]
        self.process = process
        self.health = health

    async def ready(self) -> None:
        probe = self.container["readinessProbe"]["httpGet"]
        await probe_ok(f"http://127.0.0.1:{self.health}{probe['path']}", self.process)


def kubelet_env(
    container: dict[str, Any],
    config: dict[str, str],
    secrets: dict[str, dict[str, str]],
    mounts: dict[str, Path],
) -> dict[str, str]:
    """What the container's environment would be: envFrom the ConfigMap, then env."""
    env = dict(config)
    for item in container.get("env", []):
        if "value" in item:
            value = item["value"]
            for mount_path, folder in mounts.items():
                value = value.replace(mount_path, str(folder))
            env[item["name"]] = value
        else:
            ref = item["valueFrom"]["secretKeyRef"]
            env[item["name"]] = secrets[ref["name"]][ref["key"]]
    return env


@pytest.fixture
async def mx() -> AsyncIterator[Remote]:
    remote = Remote(name="mx.example.com")
    await remote.start()
    yield remote
    await remote.close()


async def test_the_rendered_pods_run_the_mail_system(
    secure_nats: tuple[str, Path], s3_endpoint: str, bucket: str, mx: Remote, tmp_path: Path
) -> None:
    nats_url, nats_passwords = secure_nats
    ca = trustme.CA()
    body = mailserver(
        hostname="mx.corp.test",
        relayDomains=["example.com"],
        listeners={
            "tls": {"secretName": "mx-tls"},
            "submission": {"enabled": True, "authSecretName": "mx-users"},
        },
        delivery={"mxOverrides": {"example.com": f"127.0.0.1:{mx.port}"}},
        nats={"url": "nats://nats.mail.svc:4222", "credentialsSecret": "nats-credentials"},
    )
    made = render.render(body, [], render.Options(image="empath:test"))
    cert = ca.issue_cert("mx.corp.test", "127.0.0.1")
    token = "control-token-from-its-secret"
    secrets = {
        "s3": {"accessKey": servers.S3_ACCESS_KEY, "secretKey": servers.S3_SECRET_KEY},
        "corp-control-token": {"token": token},
        "mx-tls": {
            "tls.crt": cert.cert_chain_pems[0].bytes().decode(),
            "tls.key": cert.private_key_pem.bytes().decode(),
        },
        "mx-users": {
            "credentials": "alice:" + bcrypt.hashpw(b"s3cret", bcrypt.gensalt(4)).decode()
        },
        # Each role's NATS password under its name, for a NATS with the users of `natsauth`.
        "nats-credentials": {
            role: natsauth.password_file(nats_passwords, role).read_text().strip()
            for role in natsauth.ROLES
        },
        # The event keys, as the operator writes them into the Secret it makes once.
        "corp-event-keys": {name: key.decode() for name, key in signing.new_keys().items()},
    }
    assert made.event_keys_secret["metadata"]["name"] == "corp-event-keys"
    # The token Secret is the one the operator creates (it writes a random token into it).
    assert made.token_secret["metadata"]["name"] == "corp-control-token"

    config = dict(made.named("ConfigMap", "corp-config")["data"])
    assert config["EMPATH_NATS_URL"] == "nats://nats.mail.svc:4222"
    config.update(EMPATH_NATS_URL=nats_url, EMPATH_S3_ENDPOINT=s3_endpoint, EMPATH_S3_BUCKET=bucket)
    ports: dict[str, int] = {}

    def listen(name: str) -> str:
        ports[name] = free_port()
        return f"127.0.0.1:{ports[name]}"

    pods: dict[str, Pod] = {}
    try:
        for component in ("spool", "control", "delivery", "ingress"):
            deployment = made.named("Deployment", f"corp-{component}")
            container = deployment["spec"]["template"]["spec"]["containers"][0]
            volumes = {v["name"]: v for v in deployment["spec"]["template"]["spec"]["volumes"]}
            mounts: dict[str, Path] = {}
            for mount in container["volumeMounts"]:
                folder = tmp_path / component / mount["name"]
                folder.mkdir(parents=True)
                secret = volumes[mount["name"]].get("secret")
                found = secrets[secret["secretName"]] if secret else {}
                # Only the keys the volume names (under their paths), or all of them.
                items = secret.get("items") if secret else None
                paths = {i["key"]: i["path"] for i in items} if items else {k: k for k in found}
                for key, path in paths.items():
                    (folder / path).write_text(found[key])
                mounts[mount["mountPath"]] = folder
            env = kubelet_env(container, config, secrets, mounts)
            for name in [k for k in env if k.endswith("_LISTEN")]:
                env[name] = listen(f"{component}:{name}")
            health = ports[f"{component}:EMPATH_HEALTH_LISTEN"]
            env.update(PATH=os.environ["PATH"], EMPATH_SHUTDOWN_GRACE="2")
            process = await asyncio.to_thread(
                subprocess.Popen,
                [EMPATH, *container["args"]],
                env=env,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                text=True,
            )
            pods[component] = Pod(deployment, process, health)
            if component == "spool":
                # The spool makes the streams (the others would wait for them); control opens
                # the DNS cache that delivery makes, and waits for it.
                await pods["spool"].ready()
        for pod in pods.values():
            await pod.ready()

        client_tls = ssl.create_default_context()
        ca.configure_trust(client_tls)

        def send() -> str:
            smtp_port = ports["ingress:EMPATH_SMTP_LISTEN"]
            with smtplib.SMTP("127.0.0.1", smtp_port, local_hostname="client.test") as smtp:
                code, greeting = smtp.ehlo()
                assert code == 250
                assert greeting.decode().startswith("mx.corp.test")
                assert smtp.has_extn("starttls")
                smtp.starttls(context=client_tls)
                smtp.ehlo()
                smtp.mail("sender@elsewhere.test")
                smtp.rcpt("user@example.com")
                code, reply = smtp.data(b"Subject: through the pods\r\n\r\nhello\r\n")
                assert code == 250
            submission_port = ports["ingress:EMPATH_SUBMISSION_LISTEN"]
            with smtplib.SMTP("127.0.0.1", submission_port, local_hostname="laptop.test") as sub:
                sub.starttls(context=client_tls)
                sub.login("alice", "s3cret")
                refused = sub.sendmail(
                    "alice@corp.test", ["friend@example.com"], b"Subject: submitted\r\n\r\nhi\r\n"
                )
                assert refused == {}
            return str(reply.decode())

        reply = await asyncio.to_thread(send)
        queue_id = reply.rsplit(" ", 1)[1]

        async def both_arrived() -> None:
            assert sorted(a.recipients[0] for a in mx.arrived) == [
                "friend@example.com",
                "user@example.com",
            ]

        await passes(both_arrived)

        control = f"http://127.0.0.1:{ports['control:EMPATH_CONTROL_LISTEN']}"
        async with httpx.AsyncClient(base_url=control) as http:
            refused = await http.get("/api/v1/queue")
            assert refused.status_code == 401

            async def delivered() -> None:
                answer = await http.get(
                    f"/api/v1/queue/{queue_id}", headers={"Authorization": f"Bearer {token}"}
                )
                assert answer.status_code == 200, answer.text
                assert answer.json()["item"]["state"] == "delivered"

            await passes(delivered, timeout=10)
    finally:
        for pod in pods.values():
            if pod.process.poll() is None:
                pod.process.send_signal(signal.SIGTERM)  # what the kubelet sends
        for pod in pods.values():
            try:
                code = await asyncio.to_thread(pod.process.wait, 30)
            except subprocess.TimeoutExpired:
                pod.process.kill()
                code = await asyncio.to_thread(pod.process.wait)
            assert code == 0, f"{pod.name} exited with {code}"
