"""The chart's try-out NATS and object store, run here with the chart's own command lines.

No cluster runs here, but the servers do: the test takes the container's command, arguments
and credentials from the rendered chart, runs the same binaries (the versions the chart's
images carry) with only the data directory and ports moved, and connects to them with the
settings the operator renders for the example MailServer, through the services' own clients.
"""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Any

import httpx
import nats.errors
import nats.js.errors
import pytest
from pydantic import SecretStr

from empath.core import bus, errors, names, settings, store
from empath.core.up import WEED_PORTS, find_binary
from empath.operator import render
from tests.chart import TRYOUT, by_kind, rendered
from tests.servers import free_port, running
from tests.waiting import eventually


def container(objects: list[dict[str, Any]], name: str) -> dict[str, Any]:
    (workload,) = [o for o in by_kind(objects, "StatefulSet") if o["metadata"]["name"] == name]
    (found,) = workload["spec"]["template"]["spec"]["containers"]
    return dict(found)


def moved(args: list[str], *, data: Path, extra: list[str]) -> list[str]:
    """The chart's arguments with the data directory (and NATS's config, `mounted`) moved and
    flags added to move the ports (both servers' flag parsers let a later flag override an
    earlier one)."""
    return [*[mounted(a.replace("=/data", f"={data}"), data) for a in args], *extra]


def secret(objects: list[dict[str, Any]], name: str) -> dict[str, str]:
    (found,) = [o for o in by_kind(objects, "Secret") if o["metadata"]["name"] == name]
    return dict(found["stringData"])


def mounted(arg: str, data: Path) -> str:
    """NATS's `--config`, moved to where `write_config` put the chart's config Secret."""
    return arg.replace("=/etc/nats/", f"={data.parent / (data.name + '-config')}/")


def write_config(objects: list[dict[str, Any]], data: Path) -> None:
    """The config Secret's file where a pod with data directory `data` mounts it (`mounted`)."""
    folder = data.parent / (data.name + "-config")
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "nats.conf").write_text(secret(objects, "empath-nats-config")["nats.conf"])


def login(objects: list[dict[str, Any]], made: render.Rendered, role: str) -> dict[str, Any]:
    """The NATS settings the operator gives a role's pod of the example MailServer: its user,
    and its password from the key of the chart's credentials Secret the pod mounts."""
    deployment = made.named("Deployment", f"example-{role}")
    pod = deployment["spec"]["template"]["spec"]
    (volume,) = [v for v in pod["volumes"] if v["name"] == "nats"]
    (item,) = volume["secret"]["items"]
    env = {e["name"]: e.get("value") for e in pod["containers"][0]["env"]}
    return {
        "nats_user": env["EMPATH_NATS_USER"],
        "nats_password": SecretStr(secret(objects, volume["secret"]["secretName"])[item["key"]]),
    }


@pytest.fixture(scope="module")
def chart() -> list[dict[str, Any]]:
    return rendered(TRYOUT)


async def test_the_tryout_servers_run_as_the_chart_starts_them_and_the_example_can_use_them(
    chart: list[dict[str, Any]], tmp_path: Path
) -> None:
    nats_server = container(chart, "empath-nats")
    weed = container(chart, "empath-s3")
    assert "-master.telemetry=false" in weed["args"]  # nothing reported to seaweedfs.com
    credentials = secret(chart, "empath-s3-credentials")
    write_config(chart, tmp_path / "nats")

    nats_port, monitor_port, s3_port = free_port(), free_port(), free_port()
    nats_argv = [
        find_binary(nats_server["command"][0]),
        *moved(
            nats_server["args"],
            data=tmp_path / "nats",
            extra=["--addr=127.0.0.1", f"--port={nats_port}", f"--http_port={monitor_port}"],
        ),
    ]
    weed_env = {
        item["name"]: credentials[item["valueFrom"]["secretKeyRef"]["key"]] for item in weed["env"]
    }
    weed_argv = [
        find_binary(weed["command"][0]),
        *moved(
            weed["args"],
            data=tmp_path / "weed",
            extra=[
                "-ip.bind=127.0.0.1",
                f"-s3.port={s3_port}",
                *(f"-{name}={free_port()}" for name in WEED_PORTS),
            ],
        ),
    ]
    (tmp_path / "weed").mkdir()

    # The probe the chart gives NATS answers once JetStream is on.
    probe = nats_server["readinessProbe"]["httpGet"]
    assert probe["port"] == "monitor"
    with (
        running(nats_argv, nats_port, tmp_path / "nats.log"),
        running(weed_argv, s3_port, tmp_path / "weed.log", env=weed_env),
    ):
        async with httpx.AsyncClient() as http:
            health = await http.get(f"http://127.0.0.1:{monitor_port}{probe['path']}")
        assert health.status_code == 200, health.text

        # The example MailServer, as the operator renders it, moved to these ports.
        (example,) = by_kind(chart, "MailServer")
        example["metadata"]["uid"] = "uid-example"
        made = render.render(example, [], render.Options(image="empath:test"))
        data = made.named("ConfigMap", "example-config")["data"]
        assert data["EMPATH_NATS_URL"] == "nats://empath-nats.mail.svc:4222"
        assert data["EMPATH_S3_ENDPOINT"] == "http://empath-s3.mail.svc:8333"
        here = settings.load(
            environment=False,
            nats_url=f"nats://127.0.0.1:{nats_port}",
            s3_endpoint=f"http://127.0.0.1:{s3_port}",
            s3_bucket=data["EMPATH_S3_BUCKET"],
            s3_access_key=credentials["accessKey"],
            s3_secret_key=credentials["secretKey"],
            hostname=data["EMPATH_HOSTNAME"],
            **login(chart, made, "spool"),
        )

        # The spool's pod, on its own NATS user, makes the streams; nobody gets in without one.
        connected = await bus.connect(here, name="tryout-check", retry=False)
        try:
            info = await connected.js.stream_info("EMPATH_JOBS")
            assert info.config.name == "EMPATH_JOBS"
        finally:
            await connected.close()
        with pytest.raises(nats.errors.Error, match="Authorization Violation"):
            await nats.connect(f"nats://127.0.0.1:{nats_port}", allow_reconnect=False)
        # Ingress's pod may publish mail in, but not jobs: the permissions of `natsauth`.
        ingress = await bus.connect(
            here.model_copy(update=login(chart, made, "ingress")), name="tryout-ingress"
        )
        try:
            ack = await ingress.js.publish(names.RECEIVED_SUBJECT, b"{}")
            assert ack.stream == names.RECEIVED_STREAM.name
            with pytest.raises((nats.errors.TimeoutError, nats.errors.NoRespondersError)):
                await ingress.js.publish(names.JOBS_SUBJECT, b"{}", timeout=1)
        finally:
            await ingress.close()

        objects = store.ObjectStore(here)
        try:
            await objects.ensure_bucket()
            await objects.put("messages/check.eml", b"Subject: tryout\r\n\r\nstored\r\n")
            assert await objects.get("messages/check.eml") == b"Subject: tryout\r\n\r\nstored\r\n"
        finally:
            objects.close()

        # The credentials are what guards it: a wrong secret key is refused.
        intruder = store.ObjectStore(
            settings.load(
                environment=False,
                s3_endpoint=f"http://127.0.0.1:{s3_port}",
                s3_bucket=data["EMPATH_S3_BUCKET"],
                s3_access_key=credentials["accessKey"],
                s3_secret_key="not-the-secret",
                hostname="x.test",
            )
        )
        try:
            with pytest.raises(
                errors.StoreUnavailable, match=r"SignatureDoesNotMatch|AccessDenied"
            ):
                await intruder.get("messages/check.eml")
        finally:
            intruder.close()


async def test_the_three_node_tryout_nats_forms_a_jetstream_cluster_the_example_replicates_on(
    tmp_path: Path,
) -> None:
    """The chart's arguments of each of the three pods, with the pod's name filled in as the
    kubelet does and each pod's DNS name moved to a loopback port: the servers find one
    another by the routes, elect a JetStream leader, and the example MailServer's settings make
    every stream at three replicas."""
    values = {"tryout": {**TRYOUT["tryout"], "nats": {"enabled": True, "replicas": 3}}}
    objects = rendered(values)
    for pod in (f"empath-nats-{i}" for i in range(3)):
        write_config(objects, tmp_path / pod)
    server = container(objects, "empath-nats")
    pods = [f"empath-nats-{i}" for i in range(3)]
    ports = {pod: (free_port(), free_port(), free_port()) for pod in pods}  # client, route, http

    def argv(pod: str) -> list[str]:
        client, route, http = ports[pod]
        args = []
        for arg in server["args"]:
            arg = arg.replace("$(POD_NAME)", pod).replace("=/data", f"={tmp_path / pod}")
            arg = mounted(arg, tmp_path / pod)
            arg = arg.replace("nats://0.0.0.0:6222", f"nats://127.0.0.1:{route}")
            for peer in pods:
                arg = arg.replace(
                    f"{peer}.empath-nats-cluster.mail.svc:6222", f"127.0.0.1:{ports[peer][1]}"
                )
            args.append(arg)
        extra = ["--addr=127.0.0.1", f"--port={client}", f"--http_port={http}"]
        return [find_binary(server["command"][0]), *args, *extra]

    (example,) = by_kind(objects, "MailServer")
    example["metadata"]["uid"] = "uid-example"
    made = render.render(example, [], render.Options(image="empath:test"))
    data = made.named("ConfigMap", "example-config")["data"]
    here = settings.load(
        environment=False,
        nats_url=",".join(f"nats://127.0.0.1:{ports[pod][0]}" for pod in pods),
        nats_replicas=int(data["EMPATH_NATS_REPLICAS"]),
        hostname=data["EMPATH_HOSTNAME"],
        **login(objects, made, "spool"),
    )
    with contextlib.ExitStack() as stack:
        for pod in pods:
            stack.enter_context(running(argv(pod), ports[pod][0], tmp_path / f"{pod}.log"))

        async def replicated() -> tuple[int | None, list[str]]:
            connected = await bus.connect(here, name="tryout-check", retry=False)
            try:
                info = await connected.js.stream_info("EMPATH_JOBS")
            finally:
                await connected.close()
            assert info.cluster is not None
            peers = [info.cluster.leader or "", *(p.name for p in info.cluster.replicas or [])]
            return info.config.num_replicas, sorted(peers)

        # Until the servers have met and elected a meta leader, JetStream is not there yet.
        found = await eventually(
            replicated,
            until=lambda f: f == (3, pods),
            what="EMPATH_JOBS on all three servers",
            timeout=60,
            interval=0.5,
            ignoring=(errors.BusUnavailable, nats.errors.Error, nats.js.errors.Error),
        )
        assert found == (3, pods)
