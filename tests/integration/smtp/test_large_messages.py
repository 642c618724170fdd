"""Large messages (issue 10): ingress streams a body to the bucket instead of holding it in
memory several times over, so eight 25 MB messages at once fit in a small pod.

Ingress runs as `empath ingress`, a process of its own (its peak memory is read from /proc);
the spool runs in the test with the queue frozen, so what is accepted stays in the bucket.
"""

from __future__ import annotations

import asyncio
import os
import tempfile
from collections.abc import AsyncIterator
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from tests import fleet
from tests.integration.plugins import samples
from tests.servers import Proxy
from tests.system import StartSystem, System
from tests.wire import Wire

MB = 1000 * 1000
BIG = 25 * MB
AT_ONCE = 8


def content(seed: int, size: int) -> bytes:
    """A message of about `size` bytes, unique to `seed`: headers, then lines of 76 octets as
    base64 makes them, every hundredth starting with a dot (stuffed on the wire)."""
    head = f"From: a@example.org\r\nTo: b@example.com\r\nSubject: big {seed}\r\n\r\n".encode()
    lines = [
        (b"." if i % 100 == 0 else b"") + f"{seed:02d}-{i:012d}-".encode() + b"Q" * 60 + b"\r\n"
        for i in range(size // 78)
    ]
    return head + b"".join(lines)


def stuffed(message: bytes) -> bytes:
    """The message as DATA carries it (RFC 5321 §4.5.2)."""
    return message.replace(b"\r\n.", b"\r\n..") + b".\r\n"


async def send(port: int, message: bytes) -> str:
    """One transaction with the whole message; the reply to its final dot."""
    wire = await Wire.open(port)
    try:
        return await transaction(wire, message)
    finally:
        await wire.close()


async def transaction(wire: Wire, message: bytes) -> str:
    assert (await wire.command("EHLO client.test")).startswith("250")
    assert (await wire.command("MAIL FROM:<a@example.org>")).startswith("250")
    assert (await wire.command("RCPT TO:<b@example.com>")).startswith("250")
    assert (await wire.command("DATA")).startswith("354")
    await wire.send(stuffed(message))
    return await wire.reply(timeout=300)


async def stored(system: System, reply: str) -> bytes:
    """The body in the bucket of the message a `250 ... queued as <id>` reply names."""
    assert reply.startswith("250 2.0.0 Ok: queued as "), reply
    entry = await system.entry(reply.rsplit(" ", 1)[1])
    body = await system.objects.get(entry.body_key)
    assert entry.size == len(body)
    return body


def peak_rss(pid: int) -> int:
    """The highest resident set size the process ever had, in bytes (VmHWM)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    raise AssertionError(f"no VmHWM for {pid}")


def deleted_files(pid: int) -> list[str]:
    """The files the process holds open that have no name (temporary files)."""
    found = []
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        try:
            target = os.readlink(fd)
        except OSError:
            continue
        if target.endswith("(deleted)"):
            found.append(target)
    return found


async def ingress_process(system: System, tmp_path: Path) -> fleet.Service:
    ingress = fleet.Service("ingress", system.settings, tmp_path)
    ingress.start()
    try:
        await ingress.ready()
    except BaseException:
        ingress.end()
        raise
    return ingress


async def test_eight_25_mb_messages_at_once_are_stored_whole_and_ingress_stays_small(
    start_system: StartSystem, tmp_path: Path
) -> None:
    system = await start_system(only=("spool",), frozen=True, max_message_size=26 * MB)
    ingress = await ingress_process(system, tmp_path)
    try:
        assert ingress.process is not None
        messages = [content(seed, BIG) for seed in range(AT_ONCE)]
        replies = await asyncio.gather(*(send(system.smtp_port, m) for m in messages))
        peak = peak_rss(ingress.process.pid)
        left_open = deleted_files(ingress.process.pid)
    finally:
        ingress.end()

    assert all(r.startswith("250 2.0.0 Ok: queued as ") for r in replies), replies
    for message, reply in zip(messages, replies, strict=True):
        body = await stored(system, reply)
        trace = body[: -len(message)]
        assert body[-len(message) :] == message
        assert trace.startswith(b"Received: from client.test ([127.0.0.1])\r\n")
        assert trace.count(b"\r\n") == 3  # the Received header and nothing else
    assert peak < 300 * MB, f"ingress peaked at {peak / MB:.0f} MB"
    assert left_open == []  # no temporary file outlives its message


async def test_a_message_over_the_limit_is_refused_with_552_and_nothing_kept_of_it(
    start_system: StartSystem,
) -> None:
    # Large enough to have gone on from memory to a temporary file before the limit.
    system = await start_system(frozen=True, max_message_size=1 * MB)
    wire = await Wire.open(system.smtp_port)
    refused = await transaction(wire, content(1, 2 * MB))
    # The session goes on, and a message within the limit is taken whole.
    within = content(2, MB // 2)
    accepted = await transaction(wire, within)
    await wire.close()

    assert refused == "552 5.3.4 Message size exceeds fixed maximum message size (1000000)"
    assert (await stored(system, accepted)).endswith(within)
    assert len(await system.bodies()) == 1


@pytest.fixture
async def store_cut_midway(s3_endpoint: str) -> AsyncIterator[Proxy]:
    """The object store, lost once 7 MB went through: in the second part of an upload."""
    proxy = Proxy(urlsplit(s3_endpoint).port or 8333, cut_after=7 * MB)
    await proxy.start()
    yield proxy
    await proxy.close()


async def test_a_store_lost_in_the_middle_of_an_upload_gets_451_and_keeps_nothing(
    start_system: StartSystem, store_cut_midway: Proxy
) -> None:
    system = await start_system(
        frozen=True, s3_endpoint=f"http://127.0.0.1:{store_cut_midway.port}", s3_timeout=2.0
    )
    message = content(3, 12 * MB)
    wire = await Wire.open(system.smtp_port)
    lost = await transaction(wire, message)
    assert await system.bodies() == []
    await store_cut_midway.restore()
    again = await transaction(wire, message)  # as the client retries, in the same session
    await wire.close()

    assert lost == "451 4.3.0 Temporary failure queueing the message, try again later"
    assert (await stored(system, again)).endswith(message)
    assert len(await system.bodies()) == 1


async def test_plugins_are_shown_the_headers_and_the_start_of_a_large_message(
    start_system: StartSystem,
) -> None:
    samples.DATA.clear()
    plugin = {
        "name": "stamp",
        "hooks": ["data"],
        "module": "tests.integration.plugins.samples:stamp_data",
        "body_limit": 100_000,
    }
    system = await start_system(frozen=True, plugins=[plugin])
    message = content(4, 2 * MB)
    body = await stored(system, await send(system.smtp_port, message))

    (request,) = samples.DATA
    assert request.size == len(message)
    assert ("Subject", "big 4") in request.headers
    assert (request.body(), request.body_truncated) == (message[:100_000], True)
    received, stamp, rest = body.partition(f"\r\nX-Stamped: {request.id}\r\n".encode())
    assert received.startswith(b"Received: from client.test")
    assert stamp
    assert rest == message


async def test_a_client_that_hangs_up_right_after_the_final_dot_still_gets_its_message_queued(
    system: System,
) -> None:
    # The commit goes on without the session (shielded), reading the content from a
    # temporary file the session has closed by then.
    message = content(5, 3 * MB)
    wire = await Wire.open(system.smtp_port)
    assert (await wire.command("EHLO client.test")).startswith("250")
    assert (await wire.command("MAIL FROM:<a@example.org>")).startswith("250")
    assert (await wire.command("RCPT TO:<b@example.com>")).startswith("250")
    assert (await wire.command("DATA")).startswith("354")
    await wire.send(stuffed(message))
    await wire.close()

    await system.listed(1)
    (entry,) = await system.entries()
    assert (await system.objects.get(entry.body_key)).endswith(message)


async def test_content_that_cannot_be_kept_gets_451_after_the_data_and_nothing_is_stored(
    system: System, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The temporary files' directory is gone (as a full disk, the writes fail).
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path / "gone"))
    message = content(6, 1 * MB)
    wire = await Wire.open(system.smtp_port)
    unkept = await transaction(wire, message)
    monkeypatch.undo()
    kept = await transaction(wire, message)  # the client's retry, in the same session
    await wire.close()

    assert unkept == "451 4.3.0 Temporary failure queueing the message, try again later"
    assert (await stored(system, kept)).endswith(message)
    assert len(await system.bodies()) == 1
