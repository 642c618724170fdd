"""Who may do what on NATS: one user per role, and the subjects each role needs, in one table.

Design. Anyone who reaches an anonymous NATS can forge a `received` (an open relay), a job
(exfiltration) or an `attempted` (silent loss), call the queue's admin API and rewrite the KV
buckets. So every service connects as its own NATS user, and the server allows each user
exactly the subjects its role needs (`permissions { publish { allow }, subscribe { allow } }`);
everything not allowed is denied, and the server answers a denied publish or subscription with a
permissions violation that the client logs.

Why users with passwords rather than nkeys or decentralised JWT auth: the whole policy is one
static server config that `empath up` (and the chart) can write, passwords fit Kubernetes
Secrets and `_FILE` settings, and nats.py needs no extra native dependency for them. nkeys
would keep the secret out of the server config, JWTs would allow changes without touching the
server; both need an nkeys library and (for JWTs) an operator/account tool chain that a
single-machine `empath up` should not require. Rotation is a new password in the config and
the Secret, then a config reload (SIGHUP) of nats-server and a restart of that role's pods.

The roles (subject names from `names`):

- every role: the JetStream API to look up (`STREAM.INFO`) the three streams, its own
  heartbeat keys in the services bucket (`$KV.empath_services.<role>.>`), and replies on its
  own inbox prefix `_INBOX_<role>` (`bus.connect` sets it): with one shared `_INBOX.>` any role
  could read every other role's replies, the queue API's answers included.
- creating streams: the spool creates and updates the three event streams, and each bucket is
  created by its owner (queue and flags: spool; DNS cache: delivery; overrides: control; the
  services bucket: any role, as any may start first). Nobody else: whoever may create a stream
  may make it a copy (`sources`) of any other, and read it there. `empath up` creates them
  all as admin before starting the services, so on it no role ever creates one.
- ingress: publishes `empath.received`, and reads the plugin events stream as an event
  plugin does, for the C modules it runs that are event listeners
  (`empath.ingress.cmodules`). Nothing else.
- spool: consumes `received` and `attempted` (its two durable consumers only), publishes jobs
  and `received` (the DSNs it generates go through the same path as any message), owns the
  queue and flags buckets (the only writer of the queue bucket), reads the limits bucket (the
  circuit breakers `queue stats` shows), updates stream configs, and answers the queue API
  (`empath.api.queue.*`, replies through `allow_responses`).
- delivery: consumes jobs (its durable consumer only), publishes `empath.delivery.attempted`,
  reads and writes the DNS cache bucket and the limits bucket (slots, rates and circuit
  breakers shared by all workers; it creates it), reads the flags and the MX overrides, gets
  single records of the queue bucket by key (each job is checked against its message's
  record; no listing, no watching, no writing), and listens to `empath.dns.invalidate`.
- control: calls the queue API (the only role that may), publishes `empath.dns.invalidate`,
  reads the services bucket, reads and clears the DNS cache, reads and writes MX overrides.
  It may not read any stream of events.
- plugin: a plugin process (not a service): answers validation requests on
  `empath.plugins.>` (replies through `allow_responses`) and reads the plugin events stream
  with durable consumers (named `plugin-<name>`). Ingress may request `empath.plugins.>` and
  publish the session events, delivery `delivery_attempt`, the spool the outcomes
  (`empath.events.<hook>`).
- admin: everything; no service uses it. It is for the operator's own tools (`nats` CLI) and
  the tests.

A KV bucket `b` is the stream `KV_b` with subjects `$KV.b.>`: reading is `DIRECT.GET` /
`STREAM.MSG.GET` and consumers on `KV_b` (keys, watch); writing is publishing to `$KV.b.<key>`.
"""

from __future__ import annotations

import json
import os
import secrets
import sys
from dataclasses import dataclass
from pathlib import Path

from empath.core import names

API = "$JS.API"
ROLES = ("ingress", "spool", "delivery", "control")
ADMIN = "admin"
PLUGIN = "plugin"  # a plugin process's user; not a service, so not in ROLES
PASSWORD_FILE = "nats-{user}.password"


@dataclass(frozen=True, slots=True)
class Permissions:
    """What one NATS user may publish and subscribe to."""

    publish: tuple[str, ...]
    subscribe: tuple[str, ...]
    allow_responses: bool = False


def inbox_prefix(user: str | None) -> str:
    """The reply-subject prefix of a user's connection (a role reads only its own replies)."""
    return "_INBOX" if user is None or user == ADMIN else f"_INBOX_{user}"


def _streams() -> list[str]:
    return [f"{API}.STREAM.INFO.{spec.name}" for spec in names.STREAMS]


def _consume(stream: names.StreamSpec, durable: str) -> list[str]:
    """A durable pull consumer: look it up, create it, fetch from it and ack its messages."""
    where = f"{stream.name}.{durable}"
    return [
        f"{API}.CONSUMER.INFO.{where}",
        f"{API}.CONSUMER.CREATE.{where}",
        f"{API}.CONSUMER.CREATE.{where}.>",
        f"{API}.CONSUMER.DURABLE.CREATE.{where}",
        f"{API}.CONSUMER.MSG.NEXT.{where}",
        f"$JS.ACK.{where}.>",
    ]


def _kv_open(bucket: str) -> list[str]:
    return [f"{API}.STREAM.INFO.KV_{bucket}"]


def _kv_create(bucket: str) -> list[str]:
    """The owner of a bucket creates it the first time, and changes its replicas when
    `EMPATH_NATS_REPLICAS` changes. Only the owner: whoever may create a stream may make it a
    copy of any other stream (`sources`), and so read that one."""
    return [f"{API}.STREAM.CREATE.KV_{bucket}", f"{API}.STREAM.UPDATE.KV_{bucket}"]


def _kv_get(bucket: str) -> list[str]:
    """Read one key at a time, by name: no consumer, so no listing or watching the bucket."""
    stream = f"KV_{bucket}"
    return [
        *_kv_open(bucket),
        f"{API}.DIRECT.GET.{stream}",
        f"{API}.DIRECT.GET.{stream}.>",
        f"{API}.STREAM.MSG.GET.{stream}",
    ]


def _kv_read(bucket: str) -> list[str]:
    stream = f"KV_{bucket}"
    return [
        *_kv_get(bucket),
        f"{API}.CONSUMER.CREATE.{stream}",
        f"{API}.CONSUMER.CREATE.{stream}.>",
        f"{API}.CONSUMER.INFO.{stream}.>",
        f"{API}.CONSUMER.DELETE.{stream}.>",
        # `bus.kv_items` reads a bucket through a pull consumer of its own.
        f"{API}.CONSUMER.MSG.NEXT.{stream}.>",
        f"$JS.FC.{stream}.>",
    ]


def _kv_write(bucket: str, keys: str = ">") -> list[str]:
    return [*_kv_open(bucket), f"$KV.{bucket}.{keys}"]


def _role(
    role: str, publish: list[str], subscribe: list[str], *, allow_responses: bool = False
) -> Permissions:
    common = [
        *_streams(),
        *_kv_write(names.SERVICES_BUCKET, f"{role}.>"),
        # Every role may be the first to start; `empath up` creates the bucket before them.
        *_kv_create(names.SERVICES_BUCKET),
    ]
    return Permissions(
        publish=tuple(dict.fromkeys([*common, *publish])),
        subscribe=(f"{inbox_prefix(role)}.>", *subscribe),
        allow_responses=allow_responses,
    )


QUEUE_API = f"{names.PREFIX}.api.queue.*"
PLUGIN_REQUESTS = f"{names.PLUGIN_REQUEST_PREFIX}.>"
INGRESS_EVENTS = ("connection_opened", "connection_closed", "message_received")
SPOOL_EVENTS = ("delivered", "deferred", "failed")
DELIVERY_EVENTS = ("delivery_attempt",)


def _plugin_events() -> list[str]:
    """Event plugins: durable consumers on the plugin events stream. NATS wildcards are whole
    tokens, so the rights cover any consumer name there (`plugin-<name>` by convention); the
    stream holds nothing but plugin events."""
    return _consume(names.PLUGIN_EVENTS_STREAM, "*")


PERMISSIONS: dict[str, Permissions] = {
    "ingress": _role(
        "ingress",
        [
            names.RECEIVED_SUBJECT,
            PLUGIN_REQUESTS,
            *(names.plugin_event_subject(event) for event in INGRESS_EVENTS),
            # C modules that are event listeners follow the stream in ingress.
            *_plugin_events(),
            # Whether every spool reads bodies from events (`empath.core.bodies`).
            *_kv_read(names.SERVICES_BUCKET),
        ],
        [],
    ),
    "spool": _role(
        "spool",
        [
            names.RECEIVED_SUBJECT,
            names.JOBS_SUBJECT,
            *(names.plugin_event_subject(event) for event in SPOOL_EVENTS),
            *(f"{API}.STREAM.{v}.{s.name}" for s in names.STREAMS for v in ("CREATE", "UPDATE")),
            *_consume(names.RECEIVED_STREAM, names.SPOOL_RECEIVED_CONSUMER),
            # Whether the last `received` is signed, when signing begins (`intake`); and the
            # body of a small message, which its event carries (`empath.core.bodies`).
            f"{API}.STREAM.MSG.GET.{names.RECEIVED_STREAM.name}",
            *_consume(names.ATTEMPTED_STREAM, names.SPOOL_ATTEMPTED_CONSUMER),
            *_kv_read(names.QUEUE_BUCKET),
            *_kv_write(names.QUEUE_BUCKET),
            *_kv_create(names.QUEUE_BUCKET),
            *_kv_read(names.FLAGS_BUCKET),
            *_kv_write(names.FLAGS_BUCKET),
            *_kv_create(names.FLAGS_BUCKET),
            # `queue stats` shows the circuit breakers delivery keeps there.
            *_kv_read(names.LIMITS_BUCKET),
        ],
        [QUEUE_API],
        allow_responses=True,
    ),
    "delivery": _role(
        "delivery",
        [
            names.ATTEMPTED_SUBJECT,
            *(names.plugin_event_subject(event) for event in DELIVERY_EVENTS),
            *_consume(names.JOBS_STREAM, names.DELIVERY_JOBS_CONSUMER),
            *_kv_read(names.DNS_BUCKET),
            *_kv_write(names.DNS_BUCKET),
            *_kv_create(names.DNS_BUCKET),
            *_kv_read(names.FLAGS_BUCKET),
            *_kv_read(names.OVERRIDES_BUCKET),
            # Each job is checked against its message's record (`delivery.checks`).
            *_kv_get(names.QUEUE_BUCKET),
            *_kv_read(names.LIMITS_BUCKET),
            *_kv_write(names.LIMITS_BUCKET),
            *_kv_create(names.LIMITS_BUCKET),
        ],
        [names.DNS_INVALIDATE_SUBJECT],
    ),
    "control": _role(
        "control",
        [
            QUEUE_API,
            names.DNS_INVALIDATE_SUBJECT,
            *_kv_read(names.SERVICES_BUCKET),
            *_kv_read(names.DNS_BUCKET),
            *_kv_write(names.DNS_BUCKET),
            *_kv_read(names.OVERRIDES_BUCKET),
            *_kv_write(names.OVERRIDES_BUCKET),
            *_kv_create(names.OVERRIDES_BUCKET),
            # `queue view`: a small message not yet stored is read from its `received` event
            # (`empath.core.bodies`), as a stored one is from the bucket.
            f"{API}.STREAM.MSG.GET.{names.RECEIVED_STREAM.name}",
        ],
        [],
    ),
    PLUGIN: _role("plugin", _plugin_events(), [PLUGIN_REQUESTS], allow_responses=True),
    ADMIN: Permissions(publish=(">",), subscribe=(">",)),
}


def permissions_block(user: str) -> dict[str, object]:
    """A user's `permissions` in a nats-server config."""
    rights = PERMISSIONS[user]
    permissions: dict[str, object] = {
        "publish": {"allow": list(rights.publish)},
        "subscribe": {"allow": list(rights.subscribe)},
    }
    if rights.allow_responses:
        permissions["allow_responses"] = True
    return permissions


def authorization(passwords: dict[str, str]) -> dict[str, object]:
    """The `authorization` block of a nats-server config: one user per role, with its rights."""
    users = [
        {"user": user, "password": password, "permissions": permissions_block(user)}
        for user, password in passwords.items()
    ]
    return {"users": users}


def permissions_document() -> str:
    """Every user's permissions as JSON, by user: the chart's try-out NATS builds its config
    from this (in `charts/empath/files/nats-permissions.json`) and passwords of its own."""
    table = {user: permissions_block(user) for user in (*ROLES, PLUGIN, ADMIN)}
    return json.dumps(table, indent=2, sort_keys=True) + "\n"


def password_file(directory: Path, user: str) -> Path:
    return directory / PASSWORD_FILE.format(user=user)


def ensure_passwords(directory: Path, users: tuple[str, ...] = (*ROLES, ADMIN)) -> dict[str, str]:
    """Each role's password, generated into `directory` the first time (files of mode 0600)
    and read back on later starts, so a restart keeps them. The `plugin` user is made only
    when asked for (`python -m empath.core.natsauth` does)."""
    directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    return {user: ensure_secret(password_file(directory, user)) for user in users}


def ensure_secret(path: Path) -> str:
    """A random secret kept in `path` (mode 0600): made the first time, read back after."""
    if not path.is_file() or not path.read_text().strip():
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as out:
            out.write(secrets.token_urlsafe(32) + "\n")
    path.chmod(0o600)
    return path.read_text().strip()


def write_server_config(path: Path, passwords: dict[str, str]) -> Path:
    """Write a nats-server config (JSON is valid NATS config) holding the users; mode 0600.

    Written at every start from the table above, so a new version's permissions apply."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as out:
        json.dump({"authorization": authorization(passwords)}, out, indent=2)
    path.chmod(0o600)
    return path


def main(argv: list[str] | None = None) -> int:
    """`python -m empath.core.natsauth DIR`: the passwords and nats-server config of `empath up`
    made in DIR, for running the services (and NATS) yourself; existing passwords are kept."""
    args = sys.argv[1:] if argv is None else argv
    if len(args) == 2 and args[0] == "--permissions":
        # The chart's copy of the table: `python -m empath.core.natsauth --permissions FILE`.
        Path(args[1]).write_text(permissions_document())
        return 0
    if len(args) != 1:
        print("usage: python -m empath.core.natsauth DIRECTORY", file=sys.stderr)
        print("       python -m empath.core.natsauth --permissions FILE", file=sys.stderr)
        return 2
    directory = Path(args[0])
    passwords = ensure_passwords(directory, (*ROLES, PLUGIN, ADMIN))
    config = write_server_config(directory / "nats-server.conf", passwords)
    print(f"nats-server --config {config}; each service: EMPATH_NATS_USER=<role> ", end="")
    print(f"EMPATH_NATS_PASSWORD_FILE={directory}/{PASSWORD_FILE.format(user='<role>')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
