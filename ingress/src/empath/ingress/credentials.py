"""SMTP AUTH credentials: a file of `user:bcrypt-hash` lines, never plain passwords.

`empath hash-password` prints a line for the file. Checking a bcrypt hash takes real CPU time,
so it runs in a thread, off the event loop.
"""

from __future__ import annotations

import asyncio
import getpass
import logging
from pathlib import Path
from typing import Annotated

import bcrypt
import typer

from empath.core import errors

log = logging.getLogger("empath.ingress.credentials")

# Checked when the user is unknown, so that unknown and known users take equally long.
_DUMMY_HASH = bcrypt.hashpw(b"empath", bcrypt.gensalt(rounds=10))


class Credentials:
    def __init__(self, hashes: dict[str, bytes]) -> None:
        self._hashes = hashes

    @classmethod
    def load(cls, path: Path) -> Credentials:
        hashes: dict[str, bytes] = {}
        for number, raw in enumerate(path.read_text().splitlines(), start=1):
            line = raw.strip()
            if not line or line.startswith("#"):
                continue
            user, sep, hashed = line.partition(":")
            if not sep or not user or not hashed.startswith(("$2a$", "$2b$", "$2y$")):
                raise errors.ConfigurationError(
                    f"EMPATH_AUTH_CREDENTIALS_FILE: {path}:{number}: expected user:bcrypt-hash"
                )
            hashes[user] = hashed.encode()
        return cls(hashes)

    def __len__(self) -> int:
        return len(self._hashes)

    def replace(self, other: Credentials) -> None:
        """Take `other`'s users: sessions that hold this object see them from now on."""
        self._hashes = other._hashes

    def _check(self, user: str, password: bytes) -> bool:
        hashed = self._hashes.get(user)
        ok = bcrypt.checkpw(password, hashed or _DUMMY_HASH)
        return ok and hashed is not None

    async def verify(self, user: bytes, password: bytes) -> bool:
        try:
            name = user.decode("utf-8")
        except UnicodeDecodeError:
            return False
        return await asyncio.to_thread(self._check, name, password)


def hash_password(
    user: Annotated[str, typer.Argument(help="The user name clients log in with.")],
    rounds: Annotated[int, typer.Option(min=10, max=16, help="bcrypt cost.")] = 12,
) -> None:
    """Print a `user:hash` line for EMPATH_AUTH_CREDENTIALS_FILE (password read from stdin)."""
    password = (
        getpass.getpass("password: ")
        if typer.get_text_stream("stdin").isatty()
        else (typer.get_text_stream("stdin").readline().rstrip("\n"))
    )
    if not password:
        typer.echo("empty password", err=True)
        raise typer.Exit(2)
    hashed = bcrypt.hashpw(password.encode(), bcrypt.gensalt(rounds=rounds)).decode()
    typer.echo(f"{user}:{hashed}")
