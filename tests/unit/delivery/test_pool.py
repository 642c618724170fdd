"""Connection reuse: which sessions carry the next message, and which are closed."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

import pytest

from empath.delivery import client, pool, resolver
from tests.unit.delivery.remote import HOP, Remote, connection

OTHER_HOP = resolver.Hop(name="mx2.example.com", address="192.0.2.26", port=25)


class Opener:
    """Opens sessions with scripted remotes and keeps them for the test to look at."""

    def __init__(self, hop: resolver.Hop = HOP, *, timeout: float | None = None) -> None:
        self.hop = hop
        self.timeout = timeout
        self.remotes: list[Remote] = []

    async def __call__(self) -> client.Connection:
        remote = Remote()
        self.remotes.append(remote)
        session = (
            connection(remote) if self.timeout is None else connection(remote, timeout=self.timeout)
        )
        session.hop = self.hop
        return session


@pytest.fixture
def opener() -> Opener:
    return Opener()


@pytest.fixture
async def sessions(opener: Opener) -> AsyncIterator[pool.Pool]:
    kept = pool.Pool(messages_per_connection=2, idle_timeout=60)
    yield kept
    for remote in opener.remotes:  # what the pool still keeps gets no answer to its QUIT
        remote.hang_up()
    await kept.close()


async def answered(remote: Remote, expected: bytes, reply: str, call: asyncio.Task[object]) -> None:
    assert await remote.turn() == [expected]
    remote.reply(reply)
    await call


async def test_a_session_whose_transaction_ended_with_data_is_reused_without_rset(
    sessions: pool.Pool, opener: Opener
) -> None:
    first = await sessions.acquire(HOP, "verify", opener)
    first.messages = 1  # and its DATA answered: clean
    await sessions.release(first, "verify", reusable=True)

    again = await sessions.acquire(HOP, "verify", opener)

    assert again is first
    assert opener.remotes[0].unseen() == []  # not a byte before the next MAIL
    assert (sessions.opened, sessions.reused) == (1, 1)


async def test_a_session_whose_transaction_stopped_before_data_is_reset_and_reused(
    sessions: pool.Pool, opener: Opener
) -> None:
    first = await sessions.acquire(HOP, "verify", opener)
    first.messages, first.clean = 1, False  # MAIL or every RCPT refused
    await sessions.release(first, "verify", reusable=True)

    again = asyncio.create_task(sessions.acquire(HOP, "verify", opener))
    assert await opener.remotes[0].turn() == [b"RSET\r\n"]
    opener.remotes[0].reply("250 2.0.0 Ok")

    assert await again is first
    assert (sessions.opened, sessions.reused) == (1, 1)


async def test_a_session_is_never_shared_across_tls_policies_or_hosts(
    sessions: pool.Pool, opener: Opener
) -> None:
    first = await sessions.acquire(HOP, "verify", opener)
    await sessions.release(first, "verify", reusable=True)

    other_policy = await sessions.acquire(HOP, "none", opener)
    other_host = await sessions.acquire(OTHER_HOP, "verify", Opener(OTHER_HOP))

    assert other_policy is not first
    assert other_host is not first
    assert sessions.opened == 3
    assert opener.remotes[0].unseen() == []  # the idle one was not even reset


async def test_a_session_that_carried_its_share_of_messages_is_closed(
    sessions: pool.Pool, opener: Opener
) -> None:
    session = await sessions.acquire(HOP, "verify", opener)
    session.messages = 2

    released = asyncio.create_task(sessions.release(session, "verify", reusable=True))
    await answered(opener.remotes[0], b"QUIT\r\n", "221 2.0.0 Bye", released)

    assert opener.remotes[0].closed


async def test_a_session_released_as_not_reusable_is_closed(
    sessions: pool.Pool, opener: Opener
) -> None:
    session = await sessions.acquire(HOP, "verify", opener)

    released = asyncio.create_task(sessions.release(session, "verify", reusable=False))
    await answered(opener.remotes[0], b"QUIT\r\n", "221 2.0.0 Bye", released)

    assert opener.remotes[0].closed


async def test_a_session_idle_for_too_long_is_closed_and_a_new_one_opened(
    sessions: pool.Pool, opener: Opener
) -> None:
    old = await sessions.acquire(HOP, "verify", opener)
    await sessions.release(old, "verify", reusable=True)
    old.last_used = time.monotonic() - sessions.idle_timeout - 1

    fresh = asyncio.create_task(sessions.acquire(HOP, "verify", opener))
    assert await opener.remotes[0].turn() == [b"QUIT\r\n"]
    opener.remotes[0].reply("221 2.0.0 Bye")

    assert await fresh is not old
    assert (sessions.opened, sessions.reused) == (2, 0)
    assert opener.remotes[0].closed


async def test_a_session_that_refuses_rset_is_replaced(sessions: pool.Pool, opener: Opener) -> None:
    old = await sessions.acquire(HOP, "verify", opener)
    old.clean = False
    await sessions.release(old, "verify", reusable=True)

    fresh = asyncio.create_task(sessions.acquire(HOP, "verify", opener))
    assert await opener.remotes[0].turn() == [b"RSET\r\n"]
    opener.remotes[0].reply("421 4.4.2 Idle too long, closing")
    assert await opener.remotes[0].turn() == [b"QUIT\r\n"]
    opener.remotes[0].reply("221 2.0.0 Bye")

    assert await fresh is not old
    assert sessions.opened == 2


async def test_closing_the_pool_quits_every_idle_session() -> None:
    kept = pool.Pool(messages_per_connection=10, idle_timeout=60)
    opener = Opener()
    for _ in range(2):
        session = await kept.acquire(HOP, "verify", opener)
    await kept.release(session, "verify", reusable=True)

    closing = asyncio.create_task(kept.close())
    await answered(opener.remotes[1], b"QUIT\r\n", "221 2.0.0 Bye", closing)

    assert opener.remotes[1].closed
    assert opener.remotes[0].unseen() == []  # the one still in use is left alone


# The default `delivery_command_timeout`: how long a QUIT may wait for its reply.
COMMAND_TIMEOUT = 300.0


async def test_closing_the_pool_does_not_wait_for_the_reapers_quit_that_gets_no_answer() -> None:
    kept = pool.Pool(messages_per_connection=10, idle_timeout=0.05, quit_timeout=0.2)
    opener = Opener(timeout=COMMAND_TIMEOUT)
    kept.start()
    session = await kept.acquire(HOP, "verify", opener)
    await kept.release(session, "verify", reusable=True)
    assert await opener.remotes[0].turn() == [b"QUIT\r\n"]  # the reaper, waiting for 221

    await asyncio.wait_for(kept.close(), timeout=2.0)

    assert opener.remotes[0].closed


async def test_closing_the_pool_drops_idle_sessions_whose_remote_never_answers_quit() -> None:
    kept = pool.Pool(messages_per_connection=10, idle_timeout=60, quit_timeout=0.2)
    opener = Opener(timeout=COMMAND_TIMEOUT)
    sessions = [await kept.acquire(HOP, "verify", opener) for _ in range(2)]
    for session in sessions:
        await kept.release(session, "verify", reusable=True)

    closing = asyncio.create_task(kept.close())
    assert await opener.remotes[0].turn() == [b"QUIT\r\n"]
    opener.remotes[0].reply("221 2.0.0 Bye")
    await asyncio.wait_for(closing, timeout=2.0)  # the other remote never answers

    assert opener.remotes[1].unseen() == [b"QUIT\r\n"]
    assert [remote.closed for remote in opener.remotes] == [True, True]
