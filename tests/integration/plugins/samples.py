"""In-process plugins the plugin tests name in `EMPATH_PLUGINS` (`module`), and what they saw."""

from __future__ import annotations

import asyncio

from empath.core import plugins

# (plugin, hook) of every call, in order; each test clears it first.
CALLS: list[tuple[str, str]] = []


async def refuse_nobody(request: plugins.Request) -> plugins.Verdict | None:
    """Refuses `nobody@...` at rcpt with its own reply; tags the others."""
    CALLS.append(("refuse_nobody", request.hook))
    if isinstance(request, plugins.RcptRequest):
        if request.recipient.startswith("nobody@"):
            return plugins.refuse(550, "nobody lives here", enhanced="5.1.1")
        return plugins.Verdict(metadata={"score": "0.5", f"checked.{len(request.accepted)}": "1"})
    return None


async def first(request: plugins.Request) -> plugins.Verdict:
    CALLS.append(("first", request.hook))
    return plugins.Verdict(metadata={"seen-by": "first"})


async def second(request: plugins.Request) -> plugins.Verdict:
    """Refuses at mail, and says which plugin's metadata it was shown."""
    CALLS.append(("second", request.hook))
    return plugins.refuse(451, f"second after {request.metadata.get('seen-by')}", enhanced="4.7.0")


async def third(request: plugins.Request) -> None:
    CALLS.append(("third", request.hook))


async def slow(request: plugins.Request) -> None:
    CALLS.append(("slow", request.hook))
    await asyncio.sleep(30)


def broken(request: plugins.Request) -> plugins.Verdict:
    CALLS.append(("broken", request.hook))
    raise RuntimeError("a bug in the plugin")


async def refuse_connect(request: plugins.Request) -> plugins.Verdict | None:
    CALLS.append(("refuse_connect", request.hook))
    if request.hook == "connect" and request.session.client_ip == "127.0.0.1":
        return plugins.refuse(554, "no service for you", enhanced="5.7.1")
    return None


async def new_sender(request: plugins.Request) -> plugins.Verdict:
    """Rewrites the sender, as an SRS plugin would."""
    return plugins.Verdict(sender="srs0=ab=cd=sender.test=a@example.net")


async def forged_sender(request: plugins.Request) -> plugins.Verdict:
    """Puts a sender in the envelope that would inject a command and a header downstream."""
    return plugins.Verdict(sender="a@example.net>\r\nRCPT TO:<x@evil.test>\r\nBcc: x@evil.test")


async def control_header(request: plugins.Request) -> plugins.Verdict:
    """Adds a header field with a NUL and a terminal escape in it."""
    return plugins.Verdict(headers=(plugins.Header(name="X-Odd", value="a\x00b\x1b[2J"),))


# The `data` requests `stamp_data` was given.
DATA: list[plugins.DataRequest] = []


async def stamp_data(request: plugins.Request) -> plugins.Verdict | None:
    """Adds a header at data, and keeps what it was shown."""
    if not isinstance(request, plugins.DataRequest):
        return None
    DATA.append(request)
    return plugins.Verdict(headers=(plugins.Header(name="X-Stamped", value=request.id),))


async def refuse_ehlo(request: plugins.Request) -> plugins.Verdict | None:
    if isinstance(request, plugins.EhloRequest) and request.name.endswith(".bad"):
        return plugins.refuse(550, "go away", enhanced="5.7.1")
    return None


# What `tls_and_auth` was told at each hook: (hook, TLS protocol, user, metadata so far).
TOLD: list[tuple[str, str | None, str | None, dict[str, str]]] = []


async def tls_and_auth(request: plugins.Request) -> plugins.Verdict | None:
    """Tags TLS sessions at starttls, refuses the user `mallory` at auth, and reports."""
    session = request.session
    TOLD.append((request.hook, session.tls_protocol, session.authenticated_as, request.metadata))
    if request.hook == "starttls":
        return plugins.Verdict(metadata={"tls.cipher": session.tls_cipher or "none"})
    if request.hook == "auth" and session.authenticated_as == "mallory":
        return plugins.refuse(535, "not you, mallory", enhanced="5.7.8")
    return None
