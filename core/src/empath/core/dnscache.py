"""The DNS cache the delivery workers share: one record per answer in the KV bucket `empath_dns`.

Delivery writes the records (`delivery.resolver`) and the control service lists and forgets
them (`control.dns`); both read and write them through this model and this key function, so
the two can never disagree on a key's spelling or a record's shape. A record holds either an
answer (MX: preference and host; A/AAAA: addresses) or a permanent failure (NXDOMAIN, null MX)
whose reply every recipient of the domain gets until the record expires.
"""

from __future__ import annotations

import time
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from empath.core import addresses

Kind = Literal["mx", "a"]
KINDS: dict[str, str] = {"mx": "MX", "a": "A/AAAA"}

MxAnswer = list[tuple[int, str]]
AddressAnswer = list[str]


def key(name: str, *, kind: Kind = "mx") -> str:
    """The KV key of a name's answer: `mx.<domain>` or `a.<host>` (as `normal_domain` spells
    the name)."""
    return f"{kind}.{addresses.normal_domain(name)}"


def parse_key(raw: str) -> tuple[str, str]:
    """(kind, name) of a key, the reverse of `key`."""
    kind, _, name = raw.partition(".")
    return kind, name


class Record(BaseModel):
    """One cached answer, or one cached permanent failure, and when it stops counting."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    value: MxAnswer | AddressAnswer | None = Field(
        default=None, description="MX: [preference, host] pairs; A/AAAA: addresses."
    )
    error: str | None = Field(
        default=None, description="The reply for a permanent failure (NXDOMAIN, null MX)."
    )
    expires: float = Field(description="Unix time after which the record is ignored.")

    @model_validator(mode="after")
    def _answer_or_error(self) -> Record:
        if (self.value is None) == (self.error is None):
            raise ValueError("a record holds either a value or an error")
        return self

    @classmethod
    def answer(
        cls, value: MxAnswer | AddressAnswer, *, ttl: float, now: float | None = None
    ) -> Record:
        return cls(value=value, expires=(time.time() if now is None else now) + ttl)

    @classmethod
    def failure(cls, reply: str, *, ttl: float, now: float | None = None) -> Record:
        return cls(error=reply, expires=(time.time() if now is None else now) + ttl)

    def ttl(self, now: float | None = None) -> float:
        """Seconds left (zero or less: expired)."""
        return self.expires - (time.time() if now is None else now)

    def expired(self, now: float | None = None) -> bool:
        return self.ttl(now) <= 0


def read(raw: bytes | None, *, now: float | None = None) -> Record | None:
    """A stored record, or None when there is none, it has expired, or it is unreadable
    (written by another version: the cache is an optimisation, so a miss is always safe)."""
    if not raw:
        return None
    try:
        record = Record.model_validate_json(raw)
    except ValidationError:
        return None
    return None if record.expired(now) else record
