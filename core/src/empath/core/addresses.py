"""Mail addresses, domains and network targets, read the same way by every service.

A domain is compared in one form everywhere: lower case (Unicode lower case for an
internationalised domain, as SMTPUTF8 carries it) and without the trailing dot of a fully
qualified name. Without that, `U@EXAMPLE.COM.` would be a different destination in the queue
statistics than in delivery. `Domain` is the one rule for a domain a caller names (the control
API's paths and the spool's queries), so each refuses the same names with the same reason. The
parsers of `host:port` values live here too, so a setting and the service that uses it read it
alike.
"""

from __future__ import annotations

import ipaddress
import re
from typing import Annotated

from pydantic import AfterValidator, Field
from pydantic_core import PydanticCustomError

MAX_DOMAIN = 253  # RFC 1035 §2.3.4: 255 octets on the wire, 253 characters written out
MAX_LABEL = 63
# Letters, digits and hyphens (RFC 1123 §2.1), underscores for service names such as _mta-sts;
# letters of any script, since an internationalised domain is compared in its own letters.
_LABEL = re.compile(r"\w(?:[\w-]*\w)?")


def normal_domain(domain: str) -> str:
    """A domain as Empath compares it: lower case, no trailing dot."""
    return domain.strip().lower().rstrip(".")


def domain_problem(domain: str) -> str | None:
    """Why `domain` (normalised) is no domain name, or None. Checked before a domain names a
    KV key, a subject or a filter: NATS closes the connection of a client whose subject is over
    its limits, and a filter no domain can match is a mistake worth a reason."""
    if not domain:
        return "the domain is empty"
    if len(domain) > MAX_DOMAIN:
        return f"a domain has at most {MAX_DOMAIN} characters, this one {len(domain)}"
    for label in domain.split("."):
        if len(label) > MAX_LABEL:
            return f"a label of a domain has at most {MAX_LABEL} characters"
        if not _LABEL.fullmatch(label):  # not match: `$` takes a final newline
            return (
                "a domain is labels of letters, digits and hyphens (not first or last) joined "
                "by dots"
            )
    return None


def _domain(value: str) -> str:
    domain = normal_domain(value)
    problem = domain_problem(domain)
    if problem is not None:
        shown = domain if len(domain) <= 80 else domain[:80] + "..."
        raise PydanticCustomError(
            "domain", "not a domain: {shown}: {problem}", {"shown": repr(shown), "problem": problem}
        )
    return domain


Domain = Annotated[
    str,
    Field(
        strict=True,
        description=(
            f"A domain name: at most {MAX_DOMAIN} characters, labels of at most {MAX_LABEL} "
            "letters, digits and hyphens."
        ),
        json_schema_extra={"maxLength": MAX_DOMAIN},
    ),
    AfterValidator(_domain),
]
"""A domain a caller names, in the form of `normal_domain`, or a reason why it is none."""


def domain_of(address: str) -> str:
    """The domain of an address (after its last `@`), in the form of `normal_domain`."""
    return normal_domain(address.rpartition("@")[2])


def parse_hostport(value: str, *, default_host: str = "127.0.0.1") -> tuple[str, int]:
    """`host:port`, `[v6]:port` or `:port` -> (host, port), with a clear error."""
    host, sep, port_text = value.strip().rpartition(":")
    if not sep or not port_text.isdigit() or not 0 < int(port_text) < 65536:
        raise ValueError(f"expected host:port, got {value!r}")
    host = host.strip("[]") or default_host
    return host, int(port_text)


def parse_target(value: str, *, default_port: int = 25) -> tuple[str, int]:
    """An MX override: `host`, `host:port`, `[ip]`, `[ip]:port` or a bare IPv6 address.

    The host must be an IP address or a host name (dot-separated labels of letters, digits,
    `-` and `_`): a target like `a/b:25` or `:25` names nothing to connect to.
    """
    text = value.strip()
    if text.startswith("["):
        inside, bracket, rest = text[1:].partition("]")
        host = _ip(inside) if bracket else None
        if host is None:
            raise ValueError(f"expected host[:port] ([address] in brackets), got {value!r}")
        if not rest:
            return host, default_port
        return host, _port(rest, value) if rest.startswith(":") else _port("", value)
    if text.count(":") >= 2:  # a bare IPv6 address: it cannot carry a port
        host = _ip(text)
        if host is None:
            raise ValueError(f"expected host[:port] ([v6] in brackets), got {value!r}")
        return host, default_port
    name, sep, port_text = text.partition(":")
    if not _HOSTNAME.match(name):
        raise ValueError(f"expected host[:port], got {value!r}")
    host = _ip(name) or name
    return host, _port(sep + port_text, value) if sep else default_port


_HOSTNAME = re.compile(r"^[^\W_](?:[\w-]*[^\W_])?(?:\.[\w-]+)*\.?$")


def _ip(text: str) -> str | None:
    try:
        return str(ipaddress.ip_address(text))
    except ValueError:
        return None


def _port(text: str, value: str) -> int:
    """`:port` -> port, or the error that names the whole value."""
    digits = text[1:]
    if not (digits.isascii() and digits.isdigit() and 0 < int(digits) < 65536):
        raise ValueError(f"expected host[:port] with a port from 1 to 65535, got {value!r}")
    return int(digits)


def parse_nameserver(value: str) -> tuple[str, int]:
    """A DNS server: `ip` or `ip:port` (`[v6]:port`)."""
    host, port = parse_target(value, default_port=53)
    try:
        return str(ipaddress.ip_address(host)), port
    except ValueError:
        raise ValueError(f"expected ip[:port], got {value!r}") from None
