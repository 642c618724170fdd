"""The command-line clients' side of the control API: where it is, one call, and failures.

A command fails by raising `Failed` with one line and an exit code; the program's runner
(`ctl.run`) prints it after the program's own name. The exit codes are a contract for
scripts: 1 when the API refused (its reason is printed), 2 for bad usage or configuration,
3 when the API cannot be reached, 4 when the program itself failed (a bug: never exit 0).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import httpx
import typer

REFUSED = 1
USAGE = 2
UNREACHABLE = 3
CRASHED = 4

OUTPUTS = ("table", "json", "yaml")
TIMEOUT = 30.0


class Failed(Exception):
    """A command cannot go on: `message` is the line to print, `code` the exit code."""

    def __init__(self, message: str, code: int) -> None:
        super().__init__(message)
        self.message = message
        self.code = code


@dataclass(frozen=True, slots=True)
class Target:
    """Where the API is and how to authenticate."""

    base_url: str
    headers: dict[str, str] = field(default_factory=dict)
    verify: Any = True
    cert: Any = None


Connector = Callable[["Session"], Target]


@dataclass(frozen=True, slots=True)
class Session:
    """What one run of a program was told: the output format, the options its connector
    reads, and the connector that finds the API (directly, or through Kubernetes)."""

    output: str
    options: dict[str, Any]
    connect: Connector

    @classmethod
    def start(cls, output: str, *, connect: Connector, **options: Any) -> Session:
        if output not in OUTPUTS:
            raise Failed(f"unknown output {output!r}: use table, json or yaml", USAGE)
        return cls(output=output, options=options, connect=connect)

    def call(self, method: str, path: str, **kwargs: Any) -> Any:
        """One call of the API: its JSON answer, or `Failed` with its status and reason."""
        target = self.connect(self)
        try:
            with httpx.Client(
                base_url=target.base_url.rstrip("/"),
                headers=target.headers,
                verify=target.verify,
                cert=target.cert,
                timeout=TIMEOUT,
            ) as client:
                response = client.request(method, path, **kwargs)
        except httpx.HTTPError as error:
            raise Failed(f"cannot reach {target.base_url}: {error}", UNREACHABLE) from None
        if response.status_code >= 400:
            try:
                reason = response.json().get("error", response.text)
            except ValueError:
                reason = response.text.strip() or response.reason_phrase
            raise Failed(f"{response.status_code}: {reason}", REFUSED)
        return response.json()


def session(ctx: typer.Context) -> Session:
    """The session the program's options made (the typer context carries it)."""
    found = ctx.obj
    assert isinstance(found, Session)
    return found
