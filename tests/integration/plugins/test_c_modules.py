"""The ancestor's C modules in ingress, compiled by these tests with the machine's C compiler:
one that rewrites the sender and refuses a recipient with its own reply, an event listener told
of deliveries, one that hangs, and libraries that stop ingress at start."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from empath.core import errors
from tests.control_client import view_rows, with_control
from tests.dns_server import DnsServer
from tests.integration.plugins.cmodules import POLICY, SOURCES, build
from tests.mail import BODY, arrivals, mx, settle
from tests.system import StartSystem
from tests.waiting import eventually


def policy(directory: Path, **options: Any) -> dict[str, Any]:
    return {
        "name": "policy",
        "library": build(POLICY, directory),
        "arguments": ["bounces@example.net", "blocked"],
        **options,
    }


async def test_a_c_module_changes_the_sender_and_refuses_a_recipient_with_its_own_reply(
    relay: Callable[..., Any], remote: Callable[..., Any], dns: DnsServer, tmp_path: Path
) -> None:
    # One recipient is deferred: the message stays in the queue with its body, for `view`.
    server = await remote("127.0.0.2", refuse={"later@dest.test": "451 4.2.0 Mailbox busy"})
    mx(dns, "dest.test", (10, "mx.dest.test", "127.0.0.2"))
    told = tmp_path / "events.log"
    system = await relay(
        retry_schedule=[0, 60],
        **with_control("ingress", "spool", "delivery"),
        plugins=[
            policy(tmp_path),
            # No hooks: an event listener is told of every event.
            {
                "name": "events",
                "library": build(SOURCES / "events.c", tmp_path),
                "arguments": [str(told)],
            },
        ],
    )
    wire = await system.wire()
    await wire.command("EHLO client.test")
    assert await wire.command("MAIL FROM:<a@sender.test>") == "250 2.1.0 Sender OK"
    assert await wire.command("RCPT TO:<blocked@dest.test>") == (
        "550 5.7.1 <blocked@dest.test> takes no mail from here"
    )
    for recipient in ("u@dest.test", "later@dest.test"):
        assert await wire.command(f"RCPT TO:<{recipient}>") == "250 2.1.5 Recipient OK"
    assert (await wire.command("DATA")).startswith("354")
    await wire.send(BODY.replace(b"\r\n.", b"\r\n..") + b".\r\n")
    reply = await wire.reply()
    await wire.close()
    assert reply.startswith("250 2.0.0 Ok: queued as "), reply
    queue_id = reply.rsplit(" ", 1)[1]

    entry = await settle(system, queue_id, "deferred")
    await arrivals(server, 1)
    (arrived,) = server.arrived
    assert (arrived.sender, arrived.recipients) == ("bounces@example.net", ["u@dest.test"])
    assert entry.sender == "bounces@example.net"
    assert entry.metadata == {"policy.original-sender": "a@sender.test"}
    rows = await view_rows(system, queue_id)
    assert ["metadata", "policy.original-sender=a@sender.test"] in rows

    # DeliverySuccess (3), with the delivery accessors and the message's metadata.
    success = f"3 {queue_id} delivery={queue_id},dest.test,mx.dest.test,1,- tag=a@sender.test"
    lines = await eventually(
        lambda: told.read_text().splitlines() if told.exists() else [],
        until=lambda lines: success in lines,
        what="the event module to be told of the delivery",
    )
    attempt = next(line for line in lines if line.startswith(f"2 {queue_id} "))  # DeliveryAttempt
    assert attempt.startswith(f"2 {queue_id} delivery={queue_id},dest.test,mx.dest.test,1,250 ")
    assert f"6 {queue_id} tag=a@sender.test" in lines  # SmtpMessageReceived
    assert sum(line.startswith("0 ") for line in lines) == 1  # ConnectionOpened


async def test_a_c_module_that_hangs_fails_by_its_timeout_and_sessions_go_on(
    start_system: StartSystem, tmp_path: Path
) -> None:
    slow = {
        "name": "slow",
        "library": build(SOURCES / "slow.c", tmp_path),
        "timeout": 0.5,
        "failure_policy": "Fail",
    }
    system = await start_system(frozen=True, plugins=[slow])
    first, second = await system.wire(), await system.wire()
    for wire in (first, second):
        await wire.command("EHLO client.test")
    started = time.monotonic()
    replies = await asyncio.gather(
        first.command("MAIL FROM:<a@sender.test>"), second.command("MAIL FROM:<b@sender.test>")
    )
    assert time.monotonic() - started < 5  # the timeout decided, not the module
    assert replies == ["451 4.7.1 Temporary policy failure, try again later"] * 2
    assert (await first.command("NOOP")).startswith("250")
    for wire in (first, second):
        await wire.close()


@pytest.mark.parametrize(
    ("case", "problem"),
    [
        ("missing", "library {directory}/missing.so: no such file"),
        ("not a module", "library {directory}/nothing.so: no declare_module()"),
        ("wrong arguments", "library {directory}/policy.so: init() returned 1"),
        ("a hook it lacks", "a validation listener with no callback for data"),
    ],
)
async def test_a_library_that_cannot_be_used_stops_ingress_naming_the_setting(
    start_system: StartSystem, tmp_path: Path, case: str, problem: str
) -> None:
    plugin = {
        "missing": {"name": "policy", "library": tmp_path / "missing.so"},
        "not a module": {"name": "policy", "library": build(SOURCES / "nothing.c", tmp_path)},
        "wrong arguments": policy(tmp_path, arguments=["only-one@example.net"]),
        "a hook it lacks": policy(tmp_path, hooks=["mail", "data"]),
    }[case]
    with pytest.raises(errors.ConfigurationError) as raised:
        await start_system(only=("ingress",), plugins=[plugin])
    assert str(raised.value).startswith("EMPATH_PLUGINS: plugin 'policy': ")
    assert problem.format(directory=tmp_path) in str(raised.value)
