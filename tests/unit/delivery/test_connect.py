"""Opening a session: a scripted MX on a loopback socket, inside the test."""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import AsyncIterator

import pytest

from empath.delivery import client, resolver


@contextlib.asynccontextmanager
async def mx(
    *script: bytes, hang_up: bool = False
) -> AsyncIterator[tuple[resolver.Hop, list[bytes]]]:
    """A server that sends the first item at once, then each next one per line it reads; it
    records the lines and ends when the client hangs up (or, with `hang_up`, hangs up itself
    at the end of the script)."""
    heard: list[bytes] = []
    handlers: list[asyncio.Task[None]] = []

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        handlers.append(asyncio.current_task())  # type: ignore[arg-type]
        try:
            writer.write(script[0])
            for answer in script[1:]:
                line = await reader.readline()
                if not line:
                    return
                heard.append(line)
                writer.write(answer)
            if hang_up:
                return
            while line := await reader.readline():
                heard.append(line)
        finally:
            writer.close()

    server = await asyncio.start_server(serve, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        yield resolver.Hop(name="mx1.example.com", address="127.0.0.1", port=port), heard
    finally:
        server.close()
        await server.wait_closed()
        await asyncio.wait_for(asyncio.gather(*handlers), 5)


async def connect(hop: resolver.Hop, policy: str = "opportunistic") -> client.Connection:
    return await client.connect(
        hop, helo="mx.test", policy=policy, ca_file=None, connect_timeout=5, command_timeout=5
    )


async def test_a_session_is_greeted_and_knows_the_remotes_extensions() -> None:
    async with mx(
        b"220 mx1.example.com ESMTP\r\n",
        b"250-mx1.example.com\r\n250-PIPELINING\r\n250 SIZE 1000\r\n",
        b"221 Bye\r\n",
    ) as (hop, heard):
        session = await connect(hop)
        assert session.supports("pipelining")
        assert session.size_limit == 1000
        assert session.tls_note == "none (STARTTLS not offered)"
        await session.close()

    assert heard == [b"EHLO mx.test\r\n", b"QUIT\r\n"]


async def test_a_greeting_other_than_220_is_a_temporary_error() -> None:
    async with mx(b"554 5.7.1 No mail from you\r\n") as (hop, heard):
        with pytest.raises(resolver.DeliveryError) as error:
            await connect(hop)

    assert error.value.temporary
    assert error.value.reply.startswith("554 5.7.1 No mail from you (greeting of mx1.example.com")
    assert heard == []


async def test_required_tls_without_starttls_is_a_temporary_error() -> None:
    async with mx(b"220 mx1.example.com\r\n", b"250 mx1.example.com\r\n") as (hop, heard):
        with pytest.raises(resolver.DeliveryError) as error:
            await connect(hop, policy="required")

    assert error.value.temporary
    assert error.value.reply == (
        "451 4.7.5 mx1.example.com does not offer STARTTLS and TLS is required"
    )
    assert heard == [b"EHLO mx.test\r\n"]


async def test_a_refused_starttls_is_a_temporary_error() -> None:
    async with mx(
        b"220 mx1.example.com\r\n",
        b"250-mx1.example.com\r\n250 STARTTLS\r\n",
        b"454 4.7.0 TLS not available now\r\n",
    ) as (hop, heard):
        with pytest.raises(resolver.DeliveryError) as error:
            await connect(hop, policy="verify")

    assert error.value.temporary
    assert error.value.reply.startswith("454 4.7.0 TLS not available now")
    assert heard == [b"EHLO mx.test\r\n", b"STARTTLS\r\n"]


async def test_a_session_dropped_during_the_greeting_is_a_temporary_error() -> None:
    async with mx(b"220-mx1.example.com\r\n", hang_up=True) as (hop, _):
        with pytest.raises(resolver.DeliveryError) as error:
            await connect(hop)

    assert error.value.temporary
    assert error.value.reply.startswith("451 4.4.2 mx1.example.com[127.0.0.1]")


async def test_a_host_that_refuses_connections_is_a_temporary_error() -> None:
    with socket.socket() as unused:
        unused.bind(("127.0.0.1", 0))
        port = unused.getsockname()[1]
        hop = resolver.Hop(name="mx1.example.com", address="127.0.0.1", port=port)

        with pytest.raises(resolver.DeliveryError) as error:
            await connect(hop)

    assert error.value.temporary
    assert error.value.reply.startswith(
        f"451 4.4.1 Cannot connect to mx1.example.com[127.0.0.1]:{port}"
    )
