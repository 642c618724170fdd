"""The audit log: one JSON line for every call that changes something or reads a message, and
for every call refused for want of a valid token (who, what, when, result).

"Who" is proven: the name of the token the call used (`tokens`), with its fingerprint (never
the token), and the client's address. A user named in `X-Remote-User` or `Impersonate-User`
is only what the caller says (anyone holding a token can send any header), so it is recorded
apart, as `claimed_user` with `claim_verified: false`, never as `who`.
"""

from __future__ import annotations

import hashlib
import json
import logging
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

log = logging.getLogger("empath.control.audit")

CLAIM_HEADERS = ("X-Remote-User", "Impersonate-User")


def fingerprint(token: str) -> str:
    return "sha256:" + hashlib.sha256(token.encode()).hexdigest()[:12]


def claim(headers: Any) -> dict[str, Any]:
    """The user a caller's headers name, marked as the unverified claim it is ({} if none)."""
    for header in CLAIM_HEADERS:
        value = headers.get(header)
        if value:
            return {"claimed_user": value[:256], "claim_header": header, "claim_verified": False}
    return {}


class AuditLog:
    def __init__(self, path: Path | None) -> None:
        self.path = path

    def record(self, **entry: Any) -> None:
        line = json.dumps({"ts": datetime.now(UTC).isoformat(), **entry}, default=str)
        if self.path is None:
            log.info("%s", line)
            return
        with self.path.open("a") as out:
            out.write(line + "\n")
