"""The control API's tokens, each with a name: the identity the audit log records.

A token proves who calls (whoever holds it); a header the caller sets does not. The single
token of `EMPATH_CONTROL_TOKEN(_FILE)` is named `default`; `EMPATH_CONTROL_TOKENS_FILE` adds
named ones (`name:token` a line), so each person or program can have its own, revoked alone.
"""

from __future__ import annotations

import hmac
import re
from pathlib import Path

from empath.core import errors
from empath.core.settings import Settings

DEFAULT = "default"
NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._@-]{0,63}$")


class Tokens:
    """Token to name; `name_of` compares in constant time against every token."""

    def __init__(self, named: dict[str, str]) -> None:
        if not named:
            raise errors.ConfigurationError("no control token")
        self._by_name = dict(named)

    def name_of(self, given: str) -> str | None:
        """The name of the token `given`, or None when it is none of them."""
        found = None
        for name, token in self._by_name.items():
            # every token compared, so the time taken does not tell which one was close
            if hmac.compare_digest(given.encode(), token.encode()):
                found = name
        return found

    @property
    def names(self) -> list[str]:
        return sorted(self._by_name)


def parse(text: str, *, source: str) -> dict[str, str]:
    """`name:token` lines (blank lines and `#` comments skipped); `ConfigurationError` names
    the line that is wrong, never its token."""
    named: dict[str, str] = {}
    for number, line in enumerate(text.splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        name, colon, token = line.partition(":")
        name, token = name.strip(), token.strip()
        if not colon or not NAME.match(name) or len(token) < 16:
            raise errors.ConfigurationError(
                f"{source} line {number}: expected name:token (a name of letters, digits and "
                "._@-, a token of at least 16 characters)"
            )
        if name in named:
            raise errors.ConfigurationError(f"{source} line {number}: {name!r} given twice")
        named[name] = token
    return named


def load(settings: Settings) -> Tokens:
    """Every token the settings give; `ConfigurationError` when there is none."""
    named: dict[str, str] = {}
    if settings.control_token is not None:
        named[DEFAULT] = settings.control_token.get_secret_value()
    elif settings.control_token_file is not None:
        token = settings.control_token_file.read_text().strip()
        if token:
            named[DEFAULT] = token
    path: Path | None = settings.control_tokens_file
    if path is not None:
        try:
            text = path.read_text()
        except OSError as error:
            raise errors.ConfigurationError(
                f"EMPATH_CONTROL_TOKENS_FILE: cannot read {path}: {error.strerror}"
            ) from None
        for name, token in parse(text, source="EMPATH_CONTROL_TOKENS_FILE").items():
            if name in named:
                raise errors.ConfigurationError(
                    f"EMPATH_CONTROL_TOKENS_FILE: {name!r} is the name of EMPATH_CONTROL_TOKEN"
                )
            named[name] = token
    if not named:
        raise errors.ConfigurationError(
            "EMPATH_CONTROL_TOKEN, EMPATH_CONTROL_TOKEN_FILE or EMPATH_CONTROL_TOKENS_FILE is "
            "required: the control API never runs without authentication"
        )
    return Tokens(named)
