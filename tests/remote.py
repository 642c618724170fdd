"""Remote mail servers for the delivery tests: aiosmtpd on loopback ports, in this process.

A `Remote` records what arrives (envelope, the exact bytes, the TLS state of the session) and
can be told to answer 4xx or 5xx at RCPT or DATA, to refuse chosen recipients, to drop the
connection in the middle of DATA, to be slow, or to close idle sessions soon; it counts
sessions, RSETs, the most it had open at once, when sessions ended, the transactions that
reached the end of DATA, and the most that were inside DATA at once (deliveries in progress,
idle pooled sessions aside). A `Mute`
accepts TCP and then says nothing, before its greeting or after EHLO; an `Unreachable` never
completes a TCP handshake at all.
"""

from __future__ import annotations

import asyncio
import socket
import ssl
import time
from dataclasses import dataclass, field
from typing import Any

from aiosmtpd.smtp import SMTP, Envelope, Session


@dataclass
class Arrived:
    sender: str
    recipients: list[str]
    data: bytes
    mail_options: list[str]
    tls: bool
    at: float
    helo: str = ""  # the name the client gave in EHLO (which delivery worker sent it)


@dataclass
class Remote:
    name: str = "remote"
    tls_context: ssl.SSLContext | None = None
    pipelining: bool = True
    rcpt_reply: str | None = None  # e.g. "451 4.3.0 try later" for every recipient
    refuse: dict[str, str] = field(default_factory=dict)  # address -> reply
    data_reply: str | None = None
    drop_in_data: bool = False
    data_delay: float = 0.0
    # When set: every transaction waits at the end of DATA until it is set (a delivery held
    # in progress for as long as a test needs, however slow the machine).
    hold: asyncio.Event | None = None
    size_limit: int | None = None
    without: tuple[str, ...] = ()  # extensions not to advertise, e.g. ("SMTPUTF8",)
    arrived: list[Arrived] = field(default_factory=list)
    sessions: int = 0
    open_sessions: int = 0
    data_received: int = 0  # transactions whose whole body came in (before any delay)
    closed_at: list[float] = field(default_factory=list)  # when each session ended
    most_open: int = 0
    # Deliveries in progress: transactions inside DATA (the delay included), now and at most.
    in_data: int = 0
    most_in_data: int = 0
    resets: int = 0  # RSET commands received
    idle_timeout: float = 300.0  # a session silent this long is closed (without a word)
    host: str = "127.0.0.1"
    port: int = 0
    _server: asyncio.Server | None = None

    async def handle_EHLO(
        self,
        server: SMTP,
        session: Session,
        envelope: Envelope,
        hostname: str,
        responses: list[str],
    ) -> list[str]:
        session.host_name = hostname
        if self.pipelining:
            responses.insert(1, "250-PIPELINING")
        responses = [r for r in responses if r[4:].split(" ")[0] not in self.without]
        if self.size_limit is not None:
            responses = [
                f"250-SIZE {self.size_limit}" if r.startswith("250-SIZE") else r for r in responses
            ]
        return responses

    async def handle_RSET(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        self.resets += 1
        return "250 OK"

    async def handle_RCPT(
        self,
        server: SMTP,
        session: Session,
        envelope: Envelope,
        address: str,
        options: list[str],
    ) -> str:
        if address in self.refuse:
            return self.refuse[address]
        if self.rcpt_reply:
            return self.rcpt_reply
        envelope.rcpt_tos.append(address)
        return "250 2.1.5 OK"

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        self.in_data += 1
        self.most_in_data = max(self.most_in_data, self.in_data)
        try:
            return await self._data(server, session, envelope)
        finally:
            self.in_data -= 1

    async def _data(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        self.data_received += 1
        if self.drop_in_data:
            assert server.transport is not None
            server.transport.abort()
            return "451 never seen"
        if self.data_delay:
            await asyncio.sleep(self.data_delay)
        if self.hold is not None:
            await self.hold.wait()
        if self.data_reply:
            return self.data_reply
        assert envelope.mail_from is not None
        assert envelope.original_content is not None
        self.arrived.append(
            Arrived(
                sender=envelope.mail_from,
                recipients=list(envelope.rcpt_tos),
                data=envelope.original_content,
                mail_options=list(envelope.mail_options),
                tls=session.ssl is not None,
                at=time.monotonic(),
                helo=session.host_name or "",
            )
        )
        return f"250 2.0.0 Ok: queued as R{len(self.arrived)}"

    def _factory(self) -> SMTP:
        remote = self

        class Counted(SMTP):  # type: ignore[misc]
            def connection_made(self, transport: Any) -> None:
                if self._original_transport is None and self.transport is None:
                    remote.sessions += 1
                    remote.open_sessions += 1
                    remote.most_open = max(remote.most_open, remote.open_sessions)
                    self._counted = True
                super().connection_made(transport)

            def connection_lost(self, error: Exception | None) -> None:
                if getattr(self, "_counted", False):
                    remote.open_sessions -= 1
                    remote.closed_at.append(time.monotonic())
                    self._counted = False
                super().connection_lost(error)

        return Counted(
            self,
            hostname=self.name,
            tls_context=self.tls_context,
            enable_SMTPUTF8=True,
            data_size_limit=self.size_limit or 0,
            timeout=self.idle_timeout,
        )

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(self._factory, self.host, self.port)
        self.port = self._server.sockets[0].getsockname()[1]

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()


@dataclass
class Mute:
    """A remote MX that accepts TCP and then goes quiet: it never greets, or (`greet`) it
    greets and answers EHLO and then answers nothing more. It keeps what the client sent."""

    host: str = "127.0.0.1"
    port: int = 0
    greet: bool = False
    heard: bytearray = field(default_factory=bytearray)
    sessions: int = 0
    _server: asyncio.Server | None = None
    _writers: set[asyncio.StreamWriter] = field(default_factory=set)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.sessions += 1
        self._writers.add(writer)
        try:
            if self.greet:
                writer.write(b"220 mute.test ESMTP\r\n")
                line = await reader.readline()
                self.heard += line
                writer.write(b"250-mute.test\r\n250 PIPELINING\r\n")
                await writer.drain()
            while data := await reader.read(4096):
                self.heard += data
        except ConnectionError:
            pass
        finally:
            self._writers.discard(writer)
            writer.close()

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._serve, self.host, self.port)
        self.port = self._server.sockets[0].getsockname()[1]

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
            for writer in list(self._writers):
                writer.close()
            await self._server.wait_closed()


class Unreachable:
    """An address where a TCP connect neither succeeds nor fails: it hangs, as it does to a
    host that drops SYNs. A listener with a backlog of none, filled, drops every further SYN
    on Linux; the client kernel retries the SYN until the caller gives up."""

    def __init__(self, host: str, port: int) -> None:
        self.host, self.port = host, port
        self._listener = socket.socket()
        self._fillers: list[socket.socket] = []

    def start(self) -> None:
        self._listener.bind((self.host, self.port))
        self._listener.listen(0)
        for _ in range(4):
            filler = socket.socket()
            filler.setblocking(False)
            filler.connect_ex((self.host, self.port))
            self._fillers.append(filler)

    def close(self) -> None:
        for sock in (*self._fillers, self._listener):
            sock.close()
