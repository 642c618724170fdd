"""The audit log: one JSON line for every call that changes something (who, what, when, result).

"Who" is the token's fingerprint (never the token) and the client's address; behind the
Kubernetes API service proxy, the user Kubernetes authenticated comes in the
`X-Remote-User`-style headers a proxy adds, which are recorded too when present.
"""

from __future__ import annotations

import hashlib
import json
import logging
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

log = logging.getLogger("empath.control.audit")


def fingerprint(token: str) -> str:
    return "token:" + hashlib.sha256(token.encode()).hexdigest()[:12]


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
