"""The SMTP session: aiosmtpd's connection, TLS and AUTH machinery, with Empath's rules.

aiosmtpd parses the command line and runs STARTTLS and the AUTH exchanges; this subclass owns
what an MTA must get exactly right: the envelope commands with their ESMTP and DSN parameters
and the null sender, the relay decision, DATA (only `<CRLF>.<CRLF>` ends it), every limit with
its proper reply, per-state timeouts, enhanced status codes on every reply, and graceful
shutdown.
"""

from __future__ import annotations

import asyncio
import collections
import collections.abc
import functools
import inspect
import logging
import ssl
import time
import types
from dataclasses import dataclass, field
from typing import Any

import aiosmtpd.smtp
from aiosmtpd.smtp import SMTP, AuthResult, LoginPassword
from aiosmtpd.smtp import Session as SMTPSession
from aiosmtpd.smtp import syntax as help_syntax

from empath.core import addresses, ids, metrics, pluginevents
from empath.ingress import bodies, hooks, policies, replies, syntax
from empath.ingress import credentials as credentials_module
from empath.ingress import limits as limits_module
from empath.ingress import plugins as plugin_runtime

log = logging.getLogger("empath.ingress.protocol")

IDENT = "Empath ESMTP"


class _AuthMembers:
    """Stands in for `inspect` inside `aiosmtpd.smtp`. aiosmtpd's SMTP.__init__ calls
    `inspect.getmembers` on the session and on its handler for every connection, only to find
    their `auth_*` methods; that evaluated every attribute of both and cost a tenth of ingress's
    CPU per message. The names are looked up once per class (AUTH mechanisms are methods, never
    set on an instance); the values are still read from each instance."""

    signature = staticmethod(inspect.signature)  # aiosmtpd's other use of the module
    _names: dict[type, tuple[str, ...]] = {}

    @classmethod
    def getmembers(cls, obj: object) -> list[tuple[str, Any]]:
        names = cls._names.get(type(obj))
        if names is None:
            names = cls._names[type(obj)] = tuple(
                name for name in dir(type(obj)) if name.startswith("auth_")
            )
        return [(name, getattr(obj, name)) for name in names]


aiosmtpd.smtp.inspect = _AuthMembers  # type: ignore[attr-defined,assignment]

_HOOK_NAMES: dict[type, tuple[str, ...]] = {}


def _hook_names(obj: object) -> list[str]:
    """Stands in for `dir` inside `aiosmtpd.smtp`, whose SMTP.__init__ lists every attribute
    of the session and of its handler for every connection only to keep the `smtp_*` and
    `handle_*` ones (half the cost of a session's start). Those of the class are listed once;
    an instance's own are still seen. A `Session`'s are none: SMTP.__init__ would bind each
    of its commands only for `Session.__init__` to replace them by `_Commands`."""
    if isinstance(obj, Session):
        return []
    names = _HOOK_NAMES.get(type(obj))
    if names is None:
        names = _HOOK_NAMES[type(obj)] = tuple(
            name for name in dir(type(obj)) if name.startswith(("smtp_", "handle_"))
        )
    own = getattr(obj, "__dict__", {})
    return [*names, *(name for name in own if name.startswith(("smtp_", "handle_")))]


aiosmtpd.smtp.dir = _hook_names  # type: ignore[attr-defined]

_sanitized_log = aiosmtpd.smtp.sanitized_log
_LEVELS = {"debug": logging.DEBUG, "info": logging.INFO}


def _log_if_enabled(func: Any, msg: str, *args: Any, **kwargs: Any) -> None:
    """Stands in for `sanitized_log` inside `aiosmtpd.smtp`, which runs its AUTH-hiding regex
    over every command line twice (for a debug and an info record) before its logger drops
    both (below WARNING, see `logs.setup`). A record that would be written is still made,
    and sanitised."""
    logger = getattr(func, "__self__", None)
    level = _LEVELS.get(getattr(func, "__name__", ""))
    if isinstance(logger, logging.Logger) and level is not None and not logger.isEnabledFor(level):
        return
    _sanitized_log(func, msg, *args, **kwargs)


aiosmtpd.smtp.sanitized_log = _log_if_enabled  # type: ignore[assignment]


@dataclass(frozen=True, slots=True)
class Limits:
    max_message_size: int
    max_recipients: int
    max_line_length: int
    max_errors: int
    command_timeout: float
    data_timeout: float
    # The whole of DATA: a client trickling a byte a second must not keep a slot for ever.
    data_deadline: float = 600.0


@dataclass(frozen=True, slots=True)
class Listener:
    """One listening socket's rules: `submission` requires AUTH before MAIL."""

    name: str
    auth_required: bool = False


# The envelope of a transaction (in `hooks`, which reads what plugins set on it).
Transaction = hooks.Transaction


@dataclass(slots=True)
class _Data:
    content: bodies.Content = field(default_factory=bodies.Content)
    size: int = 0
    too_big: bool = False
    too_long: bool = False
    # The content could not be kept (the temporary file's disk is full): 451 after the data.
    unkept: bool = False

    @property
    def refused(self) -> bool:
        return self.too_big or self.too_long or self.unkept


def _timed(command: str, function: Any) -> Any:
    """An `smtp_*` function that records how long the command took, up to its reply."""

    @functools.wraps(function)  # keeps aiosmtpd's `__smtp_syntax__`, which HELP reads
    async def timed(self: Session, arg: str | None) -> None:
        started = time.monotonic()
        try:
            await function(self, arg)
        finally:
            metrics.smtp_command_duration.record(time.monotonic() - started, {"command": command})

    return timed


# The timed `smtp_*` functions of each session class, made once: wrapping them for every
# connection cost as much as a command.
_TIMED: dict[type, dict[str, Any]] = {}


class _Commands(collections.abc.Mapping[str, Any]):
    """A session's `smtp_*` methods by command, as aiosmtpd looks them up: bound when asked
    for, not all of them for every connection."""

    __slots__ = ("_session", "_timed")

    def __init__(self, session: Session, timed: dict[str, Any]) -> None:
        self._session = session
        self._timed = timed

    def __getitem__(self, command: str) -> Any:
        return types.MethodType(self._timed[command], self._session)

    def __iter__(self) -> collections.abc.Iterator[str]:
        return iter(self._timed)

    def __len__(self) -> int:
        return len(self._timed)


def _same(address: str) -> str:
    """What makes two recipients one: the local part as written, the domain in any case."""
    local, at, domain = address.rpartition("@")
    return f"{local}{at}{addresses.normal_domain(domain)}"


class Session(hooks.PluginHooks, SMTP):
    """One SMTP connection."""

    def __init__(
        self,
        handler: Any,
        *,
        hostname: str,
        limits: Limits,
        listener: Listener,
        policy: policies.RelayPolicy,
        connections: limits_module.Connections,
        credentials: credentials_module.Credentials | None,
        tls_context: ssl.SSLContext | None,
        plugins: plugin_runtime.Runtime | None = None,
        events: pluginevents.Publisher | None = None,
    ) -> None:
        self.session_id = ids.new_id()
        self.plugins = plugins
        self.events = events
        # What plugins set at connect, ehlo, starttls and auth: every transaction starts with it.
        self.session_metadata: dict[str, str] = {}
        self._client_name: str | None = None
        self._greeting_pending = True
        self._errors = 0
        self._in_data = False
        self._deadline = 0.0  # of the current wait, see `_reset_timeout`
        # The reader's limit bounds one line: the longest allowed, CRLF, and a stuffed dot.
        self.line_length_limit = limits.max_line_length + 3
        super().__init__(
            handler,
            data_size_limit=limits.max_message_size,
            enable_SMTPUTF8=True,
            hostname=hostname,
            ident=IDENT,
            tls_context=tls_context,
            timeout=limits.command_timeout,
            auth_required=listener.auth_required,
            auth_require_tls=True,
            # aiosmtpd would look the loop up its own slow way (under catch_warnings) each time.
            loop=asyncio.get_running_loop(),
        )
        # aiosmtpd keeps this on the class and grows it on every EHLO; keep ours per session,
        # sized for DSN parameters (RFC 3461 §5 allows MAIL/RCPT lines of about 1000 octets).
        self.command_size_limits = collections.defaultdict(
            lambda: 512, {"MAIL": 1024, "RCPT": 1024}
        )
        self.limits = limits
        self.listener = listener
        self.policy = policy
        self.connections = connections
        self.credentials = credentials
        timed = _TIMED.get(type(self))
        if timed is None:
            timed = _TIMED[type(self)] = {
                name.removeprefix("smtp_"): _timed(
                    name.removeprefix("smtp_"), getattr(type(self), name)
                )
                for name in dir(type(self))
                if name.startswith("smtp_")
            }
        self._smtp_methods = _Commands(self, timed)  # type: ignore[assignment]  # a Mapping

    # -- connection life -------------------------------------------------------------------

    # These raise AttributeError before a session exists (aiosmtpd's own getmembers, which
    # `_AuthMembers` replaces, evaluated them there and tolerated it).

    @property
    def state(self) -> SMTPSession:
        if self.session is None:
            raise AttributeError("no session yet")
        return self.session

    @property
    def transaction(self) -> Transaction:
        if not isinstance(self.envelope, Transaction):
            raise AttributeError("no transaction yet")
        return self.envelope

    @property
    def peer_ip(self) -> str:
        peer = self.session.peer if self.session else None
        return str(peer[0]) if isinstance(peer, tuple) and peer else ""

    @property
    def in_transaction(self) -> bool:
        return self._in_data or (self.envelope is not None and self.envelope.mail_from is not None)

    async def _handle_client(self) -> None:
        refused = self.connections.admit(self, self.peer_ip)
        if refused is not None:
            reply = {
                "total": replies.TOO_MANY_CONNECTIONS,
                "per_ip": replies.TOO_MANY_CONNECTIONS_FROM_IP,
                "draining": replies.SHUTTING_DOWN,
            }[refused]
            log.warning("refusing %s: %s", self.peer_ip, refused)
            self._greeting_pending = False
            await self.push(reply.format(host=self.hostname))
            if self.transport is not None:
                self.transport.close()
            return
        metrics.smtp_connections.add(1, {"listener": self.listener.name})
        metrics.smtp_connections_active.add(1)
        started = time.monotonic()
        self._emit("connection_opened")
        try:
            if await self._connect_allowed():
                await super()._handle_client()
        finally:
            self._emit("connection_closed")
            self.connections.release(self)
            metrics.smtp_connections_active.add(-1)
            metrics.smtp_session_duration.record(
                time.monotonic() - started, {"listener": self.listener.name}
            )

    def connection_lost(self, error: Exception | None) -> None:
        self.connections.release(self)
        super().connection_lost(error)

    def _reset_timeout(self, duration: float | None = None) -> None:
        """Move the deadline of the current wait. aiosmtpd cancels its timer and makes a new
        one for every command, and DATA did so for every line (a tenth of a message's CPU in
        timers). Here a later deadline only moves `_deadline`: the timer, when it fires at the
        earlier one, sets itself again for the rest. A shorter wait re-arms it at once."""
        deadline = self.loop.time() + (duration or self._timeout_duration)
        self._deadline = deadline
        timer = self._timeout_handle
        if timer is not None and not timer.cancelled() and timer.when() <= deadline:
            return
        if timer is not None:
            timer.cancel()
        self._timeout_handle = self.loop.call_at(deadline, self._timer_fired)

    def _timer_fired(self) -> None:
        if self.loop.time() < self._deadline:
            self._timeout_handle = self.loop.call_at(self._deadline, self._timer_fired)
            return
        self._timeout_cb()

    def _timeout_cb(self) -> None:
        self._write_line(replies.TIMEOUT.format(host=self.hostname))
        super()._timeout_cb()

    def close_idle(self) -> None:
        """Shutdown: a session between transactions is told so and closed."""
        self._write_line(replies.SHUTTING_DOWN.format(host=self.hostname))
        if self.transport is not None:
            self.transport.close()

    def abort(self) -> None:
        """Shutdown grace is over: close, whatever the session is doing."""
        self.close_idle()

    def _write_line(self, line: str) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self._writer.write(line.encode("utf-8", "surrogateescape") + b"\r\n")

    # -- replies ---------------------------------------------------------------------------

    async def push(self, status: str | bytes) -> None:
        """Every reply goes through here: enhanced codes, and the per-session error limit."""
        text = status.decode("utf-8", "surrogateescape") if isinstance(status, bytes) else status
        if self._greeting_pending:
            self._greeting_pending = False  # RFC 2034: the greeting has no enhanced code
        else:
            text = replies.enhance(text)
        await self._push_raw(text)
        if replies.code_of(text) >= 400 and text[3:4] == " ":
            metrics.smtp_errors.add(
                1,
                {
                    "status_class": metrics.status_class(text),
                    "enhanced": metrics.enhanced_class(text),
                },
            )
        if replies.code_of(text) >= 500 and text[3:4] == " ":
            self._errors += 1
            if self._errors >= self.limits.max_errors and self.transport is not None:
                log.warning("%s: too many errors, closing", self.peer_ip)
                await self._push_raw(replies.TOO_MANY_ERRORS.format(host=self.hostname))
                self.transport.close()

    async def _push_raw(self, text: str) -> None:
        if self.transport is None or self.transport.is_closing():
            return
        self._writer.write(text.encode("utf-8", "surrogateescape") + b"\r\n")
        await self._writer.drain()

    # -- greetings -------------------------------------------------------------------------

    @help_syntax("HELO hostname")
    async def smtp_HELO(self, hostname: str | None) -> None:
        try:
            hostname = syntax.helo_name(hostname, syntax_reply=replies.SYNTAX_HELO)
        except syntax.SyntaxProblem as problem:
            await self.push(problem.reply)
            return
        self._set_rset_state()
        self.state.extended_smtp = False
        self.state.host_name = hostname
        if await self._refused_then_closed(await self._ask("ehlo", name=hostname, extended=False)):
            return
        await self._push_raw(f"250 {self.hostname}")

    @help_syntax("EHLO hostname")
    async def smtp_EHLO(self, hostname: str | None) -> None:
        try:
            hostname = syntax.helo_name(hostname, syntax_reply=replies.SYNTAX_EHLO)
        except syntax.SyntaxProblem as problem:
            await self.push(problem.reply)
            return
        self._set_rset_state()
        self.state.extended_smtp = True
        self.state.host_name = hostname
        if await self._refused_then_closed(await self._ask("ehlo", name=hostname, extended=True)):
            return
        lines = [
            self.hostname,
            "PIPELINING",
            f"SIZE {self.limits.max_message_size}",
            "8BITMIME",
            "SMTPUTF8",
            "ENHANCEDSTATUSCODES",
            "DSN",
        ]
        if self.tls_context is not None and self._tls_protocol is None:
            lines.append("STARTTLS")
        if self.credentials is not None and self._tls_protocol is not None:
            lines.append("AUTH PLAIN LOGIN")
        lines.append("HELP")
        # One write for the whole reply, not one per line.
        await self._push_raw(
            "\r\n".join([*(f"250-{line}" for line in lines[:-1]), f"250 {lines[-1]}"])
        )

    @help_syntax("STARTTLS", when="tls_context")
    async def smtp_STARTTLS(self, arg: str | None) -> None:
        if self._tls_protocol is not None:
            await self.push("503 5.5.1 TLS already active")
            return
        await super().smtp_STARTTLS(arg)
        closing = self.transport is None or self.transport.is_closing()
        if self._tls_protocol is not None and not closing:
            await self._refused_then_closed(await self._ask("starttls"))

    # -- AUTH (the hash check runs in a thread, see credentials) ---------------------------

    @help_syntax("AUTH <mechanism>")
    async def smtp_AUTH(self, arg: str | None) -> None:
        if self.credentials is None:
            await self.push(replies.AUTH_UNAVAILABLE)
            return
        await super().smtp_AUTH(arg)

    def _authenticate(self, mechanism: str, auth_data: Any) -> AuthResult:
        # aiosmtpd calls this synchronously; the real check happens in `_verified`.
        return AuthResult(success=True, handled=False, auth_data=auth_data)

    async def _verified(self, result: AuthResult) -> AuthResult:
        data = result.auth_data
        if not result.success or not isinstance(data, LoginPassword):
            return result
        assert self.credentials is not None
        if await self.credentials.verify(data.login, data.password):
            login = data.login.decode("utf-8", "replace")
            checked = await self._ask("auth", login=login)
            if checked is not None and checked.refusal is not None:
                return AuthResult(success=False, handled=False, message=checked.refusal)
            return AuthResult(success=True, auth_data=data)
        log.warning("%s: authentication failed", self.peer_ip)
        return AuthResult(success=False, handled=False)

    async def auth_PLAIN(self, _: Any, args: list[str]) -> AuthResult:
        return await self._verified(await super().auth_PLAIN(_, args))

    async def auth_LOGIN(self, _: Any, args: list[str]) -> AuthResult:
        return await self._verified(await super().auth_LOGIN(_, args))

    # -- the envelope ----------------------------------------------------------------------

    def _create_envelope(self) -> Transaction:
        return Transaction()

    @help_syntax("MAIL FROM: <address>", extended=" [SP <mail-parameters>]")
    async def smtp_MAIL(self, arg: str | None) -> None:
        if await self.check_helo_needed() or await self.check_auth_needed("MAIL"):
            return
        envelope = self.transaction
        if envelope.mail_from is not None:
            await self.push(replies.NESTED_MAIL)
            return
        try:
            path, tokens = syntax.split_path(arg or "", "FROM:", syntax_reply=replies.SYNTAX_MAIL)
            if tokens and not self.state.extended_smtp:
                raise syntax.SyntaxProblem(replies.SYNTAX_MAIL)
            parameters = syntax.mail_parameters(tokens)
            sender = syntax.mailbox(path, bad_reply=replies.BAD_SENDER) if path else ""
            if not sender.isascii() and not parameters.smtputf8:
                raise syntax.SyntaxProblem(replies.NEED_SMTPUTF8)
        except syntax.SyntaxProblem as problem:
            await self.push(problem.reply)
            return
        if parameters.size is not None and parameters.size > self.limits.max_message_size:
            await self.push(replies.SIZE_TOO_BIG.format(limit=self.limits.max_message_size))
            return
        envelope.metadata = {}
        result = await self._ask("mail", sender=sender, parameters=hooks.parameters(tokens))
        if result is not None:
            if result.refusal is not None:
                envelope.metadata = {}
                await self.push(result.refusal)
                return
            if result.sender is not None:
                sender = result.sender
        envelope.mail_from = sender
        envelope.smtp_utf8 = parameters.smtputf8
        envelope.parameters = parameters
        await self.push(replies.SENDER_OK)

    @help_syntax("RCPT TO: <address>", extended=" [SP <mail-parameters>]")
    async def smtp_RCPT(self, arg: str | None) -> None:
        if await self.check_helo_needed() or await self.check_auth_needed("RCPT"):
            return
        envelope = self.transaction
        if envelope.mail_from is None:
            await self.push(replies.NEED_MAIL)
            return
        try:
            path, tokens = syntax.split_path(arg or "", "TO:", syntax_reply=replies.SYNTAX_RCPT)
            if tokens and not self.state.extended_smtp:
                raise syntax.SyntaxProblem(replies.SYNTAX_RCPT)
            parameters = syntax.rcpt_parameters(tokens)
            postmaster = self.policy.is_postmaster(path)
            if postmaster:  # an alias: the mailbox it names, taken from anyone
                if self.policy.postmaster is None:
                    raise syntax.SyntaxProblem(replies.NO_POSTMASTER)
                path = self.policy.postmaster
            address = syntax.mailbox(path, bad_reply=replies.BAD_RECIPIENT)
            if not address.isascii() and not envelope.parameters.smtputf8:
                raise syntax.SyntaxProblem(replies.NEED_SMTPUTF8)
        except syntax.SyntaxProblem as problem:
            await self.push(problem.reply)
            return
        if len(envelope.rcpt_tos) >= self.limits.max_recipients:
            await self.push(replies.TOO_MANY_RECIPIENTS)
            return
        authenticated = bool(self.state.authenticated)
        if not postmaster and not self.policy.allows(
            addresses.domain_of(address), ip=self.peer_ip, authenticated=authenticated
        ):
            log.warning("%s: relay denied for <%s>", self.peer_ip, address)
            await self.push(replies.RELAY_DENIED.format(address=address))
            return
        result = await self._ask(
            "rcpt",
            sender=envelope.mail_from,
            recipient=address,
            parameters=hooks.parameters(tokens),
            accepted=tuple(envelope.rcpt_tos),
        )
        if result is not None:
            if result.refusal is not None:
                await self.push(result.refusal)
                return
            if result.sender is not None:
                envelope.mail_from = result.sender
        if _same(address) not in {_same(known) for known in envelope.rcpt_tos}:
            # A recipient named twice (or postmaster by two names) is delivered once.
            envelope.rcpt_tos.append(address)
            envelope.recipient_parameters.append(parameters)
        await self.push(replies.RECIPIENT_OK)

    # -- DATA ------------------------------------------------------------------------------

    @help_syntax("DATA")
    async def smtp_DATA(self, arg: str | None) -> None:
        if await self.check_helo_needed() or await self.check_auth_needed("DATA"):
            return
        envelope = self.transaction
        if envelope.mail_from is None:
            await self.push(replies.NEED_MAIL)
            return
        if not envelope.rcpt_tos:
            await self.push(replies.NEED_RCPT)
            return
        if arg:
            await self.push(replies.SYNTAX_DATA)
            return
        await self.push(replies.START_DATA)
        self._in_data = True
        data = _Data()
        try:
            try:
                await self._read_data(data)
            finally:
                self._in_data = False
                self._reset_timeout()
            reply = await self._after_data(envelope, data)
        finally:
            data.content.close()  # before the reply: nothing of the message outlives it
        self._set_post_data_state()
        await self.push(reply)
        if self.connections.draining:
            self.close_idle()

    async def _after_data(self, envelope: Transaction, data: _Data) -> str:
        """The reply to the final dot: a refusal of what was read, a plugin's, or the queue's."""
        if data.too_big:
            return replies.SIZE_TOO_BIG.format(limit=self.limits.max_message_size)
        if data.too_long:
            return replies.DATA_LINE_TOO_LONG.format(limit=self.limits.max_line_length)
        if data.unkept:
            return replies.QUEUE_FAILED
        refusal = await self._data_plugins(envelope, data.content)
        if refusal is not None:
            return refusal
        return str(await self._call_handler_hook("DATA"))

    async def _read_data(self, data: _Data) -> None:
        """Read the message up to `<CRLF>.<CRLF>` into `data`, undoing dot-stuffing (RFC 5321
        §4.5.2).

        A line ends only with CRLF: a bare LF or CR is data, so `<LF>.<LF>` or `<LF>.<CRLF>`
        can never end the message or smuggle a second one in. Past a limit the data is read to
        the end and dropped, so the reply comes after the data as RFC 5321 §4.2.5 wants.

        The whole lines a read brought in are taken as one block (a line at a time cost a
        message of 60 lines 90 us); a block with a line over the limit goes line by line.
        Nothing past the final dot is taken: a pipelining client's next command stays for the
        command loop.
        """
        limit_size = self.limits.max_message_size
        limit_line = self.limits.max_line_length + 2
        at_line_start = True
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.limits.data_deadline
        reader = self._reader

        def take(line: bytes) -> bool:
            """One line (or a piece of one over the limit); True: it ends the data."""
            nonlocal at_line_start
            if at_line_start:
                if line == b".\r\n":
                    return True
                if line.startswith(b"."):
                    line = line[1:]
            complete = line.endswith(b"\r\n")
            if at_line_start and complete and len(line) > limit_line:
                data.too_long = True
            at_line_start = complete
            keep(line)
            return False

        def keep(content: bytes) -> None:
            data.size += len(content)
            if data.size > limit_size:
                data.too_big = True
            if data.refused:
                data.content.clear()
                return
            try:
                data.content.append(content)
            except OSError as error:
                log.error("%s: cannot keep the message's content: %s", self.peer_ip, error)
                data.unkept = True

        while True:
            # The whole lines already read, up to the final dot, at once: no wait, no timer.
            # asyncio's own buffer (not public): without it, line by line as before.
            buffered = getattr(reader, "_buffer", None)
            if at_line_start and isinstance(buffered, bytearray) and buffered:
                if buffered.startswith(b".\r\n"):
                    await reader.readexactly(3)
                    return
                end = buffered.find(b"\r\n.\r\n")
                length = end + 2 if end >= 0 else buffered.rfind(b"\r\n") + 2
                if length >= 2:
                    block = await reader.readexactly(length)
                    lines = block.split(b"\r\n")
                    if max(map(len, lines)) <= limit_line - 2:
                        # Unstuffed: the dot at the start of each line (the block's too).
                        block = block.replace(b"\r\n.", b"\r\n")
                        keep(block[1:] if block.startswith(b".") else block)
                    else:
                        for line in lines[:-1]:
                            take(line + b"\r\n")
                    if end >= 0:
                        await reader.readexactly(3)
                        return
                    continue
            # Each wait lasts at most the data timeout, and never past the DATA deadline; when
            # either runs out, `_timeout_cb` answers 421 and closes.
            left = deadline - loop.time()
            self._reset_timeout(max(min(self.limits.data_timeout, left), 0.001))
            try:
                line = await reader.readuntil(b"\r\n")
            except asyncio.LimitOverrunError as overrun:
                line = await reader.read(overrun.consumed)
                data.too_long = True
            except asyncio.IncompleteReadError:
                raise ConnectionResetError("connection closed during DATA") from None
            if take(line):
                return
