"""A raw SMTP client for the tests: exact bytes out, exact replies back."""

from __future__ import annotations

import asyncio
import contextlib
import ssl


class Wire:
    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer
        self.greeting = ""

    @classmethod
    async def open(cls, port: int, host: str = "127.0.0.1", *, greet: bool = True) -> Wire:
        reader, writer = await asyncio.open_connection(host, port)
        wire = cls(reader, writer)
        if greet:
            wire.greeting = await wire.reply()
        return wire

    async def send(self, data: bytes | str) -> None:
        self.writer.write(data.encode() if isinstance(data, str) else data)
        await self.writer.drain()

    async def reply(self, timeout: float = 10.0) -> str:
        """One whole reply; the lines of a multi-line reply are joined with newlines."""
        lines = []
        while True:
            raw = await asyncio.wait_for(self.reader.readline(), timeout)
            if not raw:
                raise ConnectionError("connection closed; got so far: " + "\n".join(lines))
            line = raw.decode("utf-8", "replace").rstrip("\r\n")
            lines.append(line)
            if len(line) < 4 or line[3] != "-":
                return "\n".join(lines)

    async def command(self, line: str | bytes) -> str:
        await self.send((line.encode() if isinstance(line, str) else line) + b"\r\n")
        return await self.reply()

    async def transaction(
        self, sender: str, recipients: list[str], body: bytes, *, ehlo: bool = True
    ) -> str:
        """A whole mail transaction; the reply to the final dot."""
        if ehlo:
            assert (await self.command("EHLO client.test")).startswith("250")
        assert (await self.command(f"MAIL FROM:<{sender}>")).startswith("250")
        for rcpt in recipients:
            assert (await self.command(f"RCPT TO:<{rcpt}>")).startswith("250")
        assert (await self.command("DATA")).startswith("354")
        await self.send(body + b".\r\n")
        return await self.reply()

    async def starttls(self, context: ssl.SSLContext, server_hostname: str = "mx.test") -> None:
        reply = await self.command("STARTTLS")
        assert reply.startswith("220"), reply
        await self.writer.start_tls(context, server_hostname=server_hostname)

    async def closed(self, timeout: float = 10.0) -> bool:
        """Whether the server closed the connection (reads what is left first)."""
        try:
            while await asyncio.wait_for(self.reader.read(4096), timeout):
                pass
        except ConnectionError:
            return True
        except TimeoutError:
            return False
        return True

    async def close(self) -> None:
        self.writer.close()
        with contextlib.suppress(ConnectionError, ssl.SSLError):
            await self.writer.wait_closed()
