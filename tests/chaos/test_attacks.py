"""Attacks of issue 10 not already played beside the part they attack (see README "Testing"
for where each probe lives): each asserts the safe outcome, where a user would see it.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import nats
import nats.errors
import nats.js.errors
import pytest
from nats.aio.client import Client

from empath.core import bus, flags, names, natsauth

Connect = Callable[[str], Awaitable[tuple[Client, list[str]]]]


@pytest.fixture
async def login(secure_nats: tuple[str, Path]) -> AsyncIterator[Connect]:
    """Log in to NATS (users and permissions as `empath up` makes them) as a role; the client
    and the refusals the server sent it. The buckets exist, as once the services started."""
    url, credentials = secure_nats
    opened: list[Client] = []

    async def connect(role: str) -> tuple[Client, list[str]]:
        refusals: list[str] = []

        async def error(e: Exception) -> None:
            refusals.append(str(e))

        nc = await nats.connect(
            url,
            user=role,
            password=natsauth.password_file(credentials, role).read_text().strip(),
            inbox_prefix=natsauth.inbox_prefix(role),
            error_cb=error,
            allow_reconnect=False,
        )
        opened.append(nc)
        return nc, refusals

    admin, _ = await connect(natsauth.ADMIN)
    await bus.ensure_streams(admin.jetstream())
    for bucket in (names.FLAGS_BUCKET, names.OVERRIDES_BUCKET):
        await admin.jetstream().create_key_value(bucket=bucket)
    yield connect
    for nc in opened:
        await nc.close()


@pytest.mark.parametrize("role", ["ingress", "delivery", "control"])
async def test_no_role_but_the_spool_can_freeze_the_queue_through_its_flags(
    login: Connect, role: str
) -> None:
    """Freezing the queue stops all delivery: only the spool (asked by control's API, which
    audits the call) may write the flag."""
    attacker, refused = await login(role)
    admin, _ = await login(natsauth.ADMIN)
    subject = f"$KV.{names.FLAGS_BUCKET}.{names.FROZEN_FLAG}"
    with pytest.raises((nats.errors.TimeoutError, nats.errors.NoRespondersError)):
        await attacker.jetstream(timeout=1.0).publish(subject, b"1")
    assert any("permissions violation" in r.lower() for r in refused), refused
    kv = await admin.jetstream().key_value(names.FLAGS_BUCKET)
    assert not await flags.is_frozen(kv)
    await flags.set_frozen(kv, True)  # the flag itself works: the refusal was the permission
    assert await flags.is_frozen(kv)


@pytest.mark.parametrize("role", ["ingress", "delivery", "spool"])
async def test_no_role_but_control_can_send_a_domains_mail_elsewhere(
    login: Connect, role: str
) -> None:
    """An MX override in the bucket sends a domain's mail to the host it names: only control
    writes them (and audits who asked)."""
    attacker, refused = await login(role)
    admin, _ = await login(natsauth.ADMIN)
    with pytest.raises((nats.errors.TimeoutError, nats.errors.NoRespondersError)):
        await attacker.jetstream(timeout=1.0).publish(
            f"$KV.{names.OVERRIDES_BUCKET}.dest.test", b"evil.test:25"
        )
    assert any("permissions violation" in r.lower() for r in refused), refused
    kv = await admin.jetstream().key_value(names.OVERRIDES_BUCKET)
    with pytest.raises(nats.js.errors.KeyNotFoundError):
        await kv.get("dest.test")
