"""The ancestor's C modules: shared libraries loaded into ingress, asked through its API.

A module exports `declare_module()` returning its `Mod`: a validation listener (a callback per
stage, 0 accepts) or an event listener (`emit(event, context)`), each with `init(arguments)`.
It calls back into Empath through the `em_*` functions, which the shim `cshim` (built with
the package, see `ingress/hatch_build.py`) defines and hands to the callbacks below. The shim
is loaded into the global scope before any module, and each module is loaded with every
symbol bound at once, so a module that needs a function Empath lacks fails at start.

Stages map onto hooks: connect, ehlo, mail (`validate_mail_from`), rcpt (`validate_rcpt_to`),
data and starttls; a validation module runs in the plugin runtime like any other plugin
(priority, first refusal, timeout, failure policy). Events: an event listener follows the
plugin events stream with its own durable consumer, in ingress (`follow`), and is told of
ConnectionOpened/Closed, SmtpMessageReceived, DeliveryAttempt, DeliverySuccess (delivered)
and DeliveryFailure (deferred, failed).

A call into C blocks: it runs on the module's own threads, under the plugin's timeout; a
module that hangs keeps its thread, and later calls fail by timeout (its failure policy)
rather than hold up sessions. Strings handed to C are the module's to free with
`em_free_string(_vector)`; whatever it did not free is released when its callback returns,
and freeing something twice or that Empath did not give is ignored. Strings from C are
read up to a bound and checked (a new sender must be an address, metadata keys and values
as the contract says).
"""

from __future__ import annotations

import asyncio
import functools
import importlib
import itertools
import logging
import queue
import re
import threading
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from empath.core import bus as bus_module
from empath.core import errors, pluginevents, plugins
from empath.core.settings import Plugin
from empath.ingress import syntax

log = logging.getLogger("empath.ingress.cmodules")

# The callbacks' fields: the same numbers as FIELDS in ingress/hatch_build.py.
ID, SENDER, DATA, TLS_PROTOCOL, TLS_CIPHER, GET = range(6)
MESSAGE_ID, DOMAIN, SERVER, ERROR = range(6, 10)
IS_TLS, EXISTS, HAS_DELIVERY, ATTEMPTS = range(10, 14)
SET_SENDER, SET_RESPONSE, SET = range(14, 17)

# Which callback of a validation listener answers each hook (`auth` has none).
VALIDATORS: dict[str, str] = {
    "connect": "validate_connect",
    "ehlo": "validate_ehlo",
    "mail": "validate_mail_from",
    "rcpt": "validate_rcpt_to",
    "data": "validate_data",
    "starttls": "validate_starttls",
}
# The ancestor's `Ev` for each event hook.
EVENTS: dict[str, str] = {
    "connection_opened": "ConnectionOpened",
    "connection_closed": "ConnectionClosed",
    "message_received": "SmtpMessageReceived",
    "delivery_attempt": "DeliveryAttempt",
    "delivered": "DeliverySuccess",
    "deferred": "DeliveryFailure",
    "failed": "DeliveryFailure",
}
MAX_THREADS = 16
_KEY = re.compile(r"^[A-Za-z0-9_.:/-]{1,64}$")
_ENHANCED = re.compile(r"^([245]\.\d{1,3}\.\d{1,3}) +")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
SENDER_LIMIT = syntax.MAX_PATH
TEXT_LIMIT = 400
VALUE_LIMIT = 1024


@dataclass(slots=True)
class Context:
    """What one callback is about, and what the module set through it."""

    id: str
    sender: str | None = None
    recipients: tuple[str, ...] = ()
    data: bytes | None = None
    tls_protocol: str | None = None
    tls_cipher: str | None = None
    metadata: dict[str, str] = field(default_factory=dict)
    delivery: plugins.Delivery | None = None
    message_id: str | None = None
    error: str | None = None
    # Set by the module.
    new_sender: str | None = None
    response: tuple[int, str] | None = None
    changed: dict[str, str] = field(default_factory=dict)
    allocations: list[int] = field(default_factory=list)

    @classmethod
    def of_request(cls, request: plugins.Request) -> Context:
        session = request.session
        context = cls(
            id=session.id,
            tls_protocol=session.tls_protocol,
            tls_cipher=session.tls_cipher,
            metadata=dict(request.metadata),
        )
        if isinstance(request, plugins.MailRequest):
            context.sender = request.sender
        elif isinstance(request, plugins.RcptRequest):
            context.sender = request.sender
            context.recipients = (*request.accepted, request.recipient)
        elif isinstance(request, plugins.DataRequest):
            context.id = request.id
            context.sender = request.sender
            context.recipients = request.recipients
            context.data = request.body()
        return context

    @classmethod
    def of_event(cls, event: plugins.Event) -> Context:
        session = event.session
        delivery = event.delivery
        return cls(
            id=event.id or (session.id if session else ""),
            sender=event.sender,
            recipients=event.recipients,
            tls_protocol=session.tls_protocol if session else None,
            tls_cipher=session.tls_cipher if session else None,
            metadata=dict(event.metadata),
            delivery=delivery,
            message_id=event.id,
            error=delivery.reply if delivery and event.event != "delivered" else None,
        )

    def text(self, what: int, key: str | None) -> str | bytes | None:
        delivery = self.delivery
        if what == GET:
            return self.metadata.get(key) if key is not None else None
        values: dict[int, str | bytes | None] = {
            ID: self.id,
            SENDER: self.sender,
            DATA: self.data,
            TLS_PROTOCOL: self.tls_protocol,
            TLS_CIPHER: self.tls_cipher,
            MESSAGE_ID: self.message_id if delivery is not None else None,
            DOMAIN: delivery.domain if delivery is not None else None,
            SERVER: delivery.server if delivery is not None else None,
            ERROR: self.error,
        }
        return values.get(what)

    def number(self, what: int, key: str | None) -> int:
        values = {
            IS_TLS: self.tls_protocol is not None,
            EXISTS: key is not None and key in self.metadata,
            HAS_DELIVERY: self.delivery is not None,
            ATTEMPTS: self.delivery.attempt if self.delivery is not None else 0,
        }
        return int(values.get(what, 0))

    def set_sender(self, sender: str | None) -> bool:
        if sender is None:  # NULL: the null sender <>
            self.sender = self.new_sender = ""
            return True
        try:
            syntax.mailbox(sender, bad_reply="")
        except syntax.SyntaxProblem:
            return False
        if not sender.isascii():  # would need SMTPUTF8, which the client may not have asked
            return False
        self.sender = self.new_sender = sender
        return True

    def set_response(self, status: int, text: str | None) -> bool:
        if text is None:
            self.response = None
            return True
        if not 200 <= status <= 599:
            return False
        self.response = (status, _CONTROL.sub("?", text)[:TEXT_LIMIT])
        return True

    def set(self, key: str, value: str) -> bool:
        if not _KEY.match(key) or len(value) > VALUE_LIMIT:
            return False
        self.metadata[key] = self.changed[key] = value
        return True

    def verdict(self, code: int, *, name: str) -> plugins.Verdict:
        """What the module said: a non-zero return or a 4xx/5xx response refuses, with that
        response (or a 550 of Empath's); a 2xx/3xx response is not sent (Empath's own
        positive replies stand)."""
        response = self.response
        if code == 0 and (response is None or response[0] < 400):
            return plugins.Verdict(metadata=self.changed, sender=self.new_sender)
        reply = plugins.Reply(code=550, enhanced="5.7.1", text=f"Refused by {name}")
        if response is not None and response[0] >= 400:
            status, text = response
            enhanced = _ENHANCED.match(text)
            if enhanced is not None:
                text = text[enhanced.end() :]
            reply = plugins.Reply(
                code=status,
                enhanced=enhanced[1] if enhanced is not None else None,
                text=text or "Refused by policy",
            )
        return plugins.Verdict(action="refuse", reply=reply, metadata=self.changed)


# The contexts of callbacks running now, by the number C sees as its `Context *`; the
# buffers handed to C, by address: the buffer, a vector's strings, and the context it was
# given in. Only a callback of that context frees it: a stale pointer freed again can never
# free what another module's callback holds now at the same address.
_contexts: dict[int, Context] = {}
_buffers: dict[int, tuple[Any, list[int], int]] = {}
_numbers = itertools.count(1)
_running = threading.local()  # the number of the context a module thread is in


def _key(ffi: Any, pointer: Any, limit: int) -> str | None:
    """A string from C, read up to `limit` bytes; None if NULL, longer or not UTF-8."""
    if pointer == ffi.NULL:
        return None
    raw: bytes = ffi.string(pointer, limit + 1)
    if len(raw) > limit:
        return None
    try:
        return raw.decode()
    except UnicodeDecodeError:
        return None


def _give(ffi: Any, number: int, value: str | bytes) -> Any:
    raw = value.encode() if isinstance(value, str) else value
    buffer = ffi.new("char[]", raw)
    address = int(ffi.cast("uintptr_t", buffer))
    _buffers[address] = (buffer, [], number)
    _contexts[number].allocations.append(address)
    return buffer, len(raw)


@functools.cache
def shim() -> Any:
    """The shim, loaded into the global scope, with its callbacks defined (once)."""
    try:
        module: Any = importlib.import_module("empath.ingress.cshim")
    except ImportError as error:
        raise errors.ConfigurationError(
            "EMPATH_PLUGINS: C modules need empath-ingress built with its C shim "
            f"(reinstall the package on a machine with a C compiler): {error}"
        ) from error
    ffi, lib = module.ffi, module.lib
    # Python loads extensions with RTLD_LOCAL: load it again, global, for the modules.
    flags = lib.RTLD_NOW | lib.RTLD_GLOBAL | lib.RTLD_NOLOAD
    if lib.dlopen(str(module.__file__).encode(), flags) == ffi.NULL:
        raise errors.ConfigurationError(f"EMPATH_PLUGINS: cannot share the C shim: {_dlerror()}")

    def on_error(kind: Any, value: Any, traceback: Any) -> None:
        log.error("a C module's call back into Empath failed: %r", value)

    @ffi.def_extern(onerror=on_error)  # type: ignore[untyped-decorator]
    def em_py_text(number: int, what: int, key: Any, out: Any) -> int:
        context = _contexts.get(number)
        if context is None:
            return 0
        value = context.text(what, _key(ffi, key, 64))
        if value is None:
            return 0
        out.data, out.len = _give(ffi, number, value)
        return 1

    @ffi.def_extern(onerror=on_error)  # type: ignore[untyped-decorator]
    def em_py_recipients(number: int, out: Any) -> int:
        context = _contexts.get(number)
        if context is None:
            return 0
        array = ffi.new("String[]", max(len(context.recipients), 1))
        strings = []
        for index, recipient in enumerate(context.recipients):
            array[index].data, array[index].len = _give(ffi, number, recipient)
            strings.append(int(ffi.cast("uintptr_t", array[index].data)))
        address = int(ffi.cast("uintptr_t", array))
        _buffers[address] = (array, strings, number)
        context.allocations.append(address)
        out.data, out.len = array, len(context.recipients)
        return 1

    @ffi.def_extern(onerror=on_error)  # type: ignore[untyped-decorator]
    def em_py_number(number: int, what: int, key: Any) -> int:
        context = _contexts.get(number)
        return 0 if context is None else context.number(what, _key(ffi, key, 64))

    @ffi.def_extern(onerror=on_error)  # type: ignore[untyped-decorator]
    def em_py_set(number: int, what: int, status: int, first: Any, second: Any) -> int:
        context = _contexts.get(number)
        if context is None:
            return 0
        if what == SET_SENDER:
            sender = _key(ffi, first, SENDER_LIMIT)
            return int((first == ffi.NULL or sender is not None) and context.set_sender(sender))
        if what == SET_RESPONSE:
            raw = None if first == ffi.NULL else ffi.string(first, TEXT_LIMIT)
            text = None if raw is None else raw.decode("utf-8", "replace")
            return int(context.set_response(status, text))
        key, value = _key(ffi, first, 64), _key(ffi, second, VALUE_LIMIT)
        return int(key is not None and value is not None and context.set(key, value))

    @ffi.def_extern(onerror=on_error)  # type: ignore[untyped-decorator]
    def em_py_free(address: int, vector: int) -> None:
        kept = _buffers.get(address)
        if kept is None or kept[2] != getattr(_running, "number", None):
            return
        del _buffers[address]
        if vector:
            for string in kept[1]:
                _buffers.pop(string, None)

    return module


def _dlerror() -> str:
    module = importlib.import_module("empath.ingress.cshim")
    message = module.lib.dlerror()
    return "unknown error" if message == module.ffi.NULL else module.ffi.string(message).decode()


class _Threads:
    """A module's threads. Daemon threads, unlike a ThreadPoolExecutor's (which the
    interpreter joins at exit): a module stuck in C never holds up ingress's stop."""

    def __init__(self, count: int, name: str) -> None:
        self._work: queue.SimpleQueue[tuple[Future[int], Callable[[], int]] | None]
        self._work = queue.SimpleQueue()
        self._count = count
        for index in range(count):
            threading.Thread(target=self._serve, name=f"{name}-{index}", daemon=True).start()

    def _serve(self) -> None:
        while (item := self._work.get()) is not None:
            future, call = item
            if not future.set_running_or_notify_cancel():  # timed out while waiting
                continue
            try:
                future.set_result(call())
            except BaseException as error:
                future.set_exception(error)

    async def run(self, call: Callable[[], int]) -> int:
        future: Future[int] = Future()
        self._work.put((future, call))
        return await asyncio.wrap_future(future)

    def close(self) -> None:
        for _ in range(self._count):
            self._work.put(None)


def _run(call: Callable[[int], int], context: Context) -> int:
    """One call into C, on a module thread, with `context` as its `Context *`."""
    number = next(_numbers)
    _contexts[number] = context
    _running.number = number
    try:
        return call(number)
    finally:
        _running.number = None
        del _contexts[number]
        for address in context.allocations:
            _buffers.pop(address, None)


class Module:
    """A loaded C module: its declaration, resolved hooks, and its threads."""

    def __init__(self, config: Plugin) -> None:
        module = shim()
        self.ffi, self.lib = module.ffi, module.lib
        self.name = config.name
        where = f"EMPATH_PLUGINS: plugin {config.name!r}: library {config.library}"
        path = Path(str(config.library))
        if not path.is_file():
            raise errors.ConfigurationError(f"{where}: no such file")
        handle = self.lib.dlopen(str(path).encode(), self.lib.RTLD_NOW | self.lib.RTLD_LOCAL)
        if handle == self.ffi.NULL:
            raise errors.ConfigurationError(f"{where}: cannot load: {_dlerror()}")
        symbol = self.lib.dlsym(handle, b"declare_module")
        if symbol == self.ffi.NULL:
            raise errors.ConfigurationError(f"{where}: no declare_module()")
        self.handle = handle
        self.declared = self.lib.em_host_declare(symbol)
        tag = int(self.declared.tag)
        if tag == self.lib.ValidationListener:
            body = self.declared.validation_listener
            own = [h for h, member in VALIDATORS.items() if getattr(body.validators, member)]
        elif tag == self.lib.EventListener:
            body = self.declared.event_listener
            own = list(plugins.EVENT_HOOKS) if body.emit != self.ffi.NULL else []
        else:
            raise errors.ConfigurationError(f"{where}: declare_module() returned tag {tag}")
        self.event_listener = tag == self.lib.EventListener
        hooks = [str(hook) for hook in config.hooks] or own
        if strange := sorted(set(hooks) - set(own)):
            kind = "an event listener" if self.event_listener else "a validation listener"
            raise errors.ConfigurationError(
                f"{where}: {kind} with no callback for {', '.join(strange)}"
            )
        self.config = config.model_copy(update={"hooks": hooks})
        self._init(body.init, config.arguments, where)
        self.threads = _Threads(min(config.concurrency, MAX_THREADS), f"cmodule-{config.name}")
        declared_name = _key(self.ffi, body.module_name, 256) or "?"
        log.info(
            "C module %s (%r, %s at %s) loaded from %s",
            self.name,
            declared_name,
            "event listener" if self.event_listener else "validation listener",
            ", ".join(hooks),
            path,
        )

    def _init(self, init: Any, arguments: list[str], where: str) -> None:
        if init == self.ffi.NULL:
            return
        # Kept for the module's life: a module may keep pointers to its arguments.
        self.arguments = [self.ffi.new("char[]", a.encode()) for a in arguments]
        self.vector = self.ffi.new("String[]", max(len(arguments), 1))
        for index, (raw, text) in enumerate(zip(self.arguments, arguments, strict=True)):
            self.vector[index].data, self.vector[index].len = raw, len(text.encode())
        value = self.ffi.new("StringVector *", {"len": len(arguments), "data": self.vector})
        result = int(self.lib.em_host_init(init, value[0]))
        if result != 0:
            raise errors.ConfigurationError(f"{where}: init() returned {result}")

    async def _call(self, call: Callable[[int], int], context: Context) -> int:
        return await self.threads.run(functools.partial(_run, call, context))

    async def validate(self, request: plugins.Request) -> plugins.Verdict:
        callback = getattr(self.declared.validation_listener.validators, VALIDATORS[request.hook])
        context = Context.of_request(request)
        code = await self._call(lambda number: self.lib.em_host_validate(callback, number), context)
        return context.verdict(int(code), name=self.name)

    async def emit(self, event: plugins.Event) -> None:
        emit = self.declared.event_listener.emit
        ev = getattr(self.lib, EVENTS[event.event])
        context = Context.of_event(event)
        await self._call(lambda number: self.lib.em_host_emit(emit, ev, number), context)

    def close(self) -> None:
        # A module stuck in a call keeps its thread; nothing waits for it.
        self.threads.close()


class Transport:
    """A validation listener as a plugin transport."""

    def __init__(self, module: Module) -> None:
        self.module = module

    async def call(self, request: plugins.Request) -> plugins.Verdict:
        return await self.module.validate(request)

    async def close(self) -> None:
        self.module.close()


async def follow(bus: bus_module.Bus, module: Module, stop: asyncio.Event) -> None:
    """Tell an event listener of its events from the plugin events stream, from where it left
    off (durable consumer `plugin-<name>`), each under its timeout: one that times out or
    fails is logged and not told again (events never hold up anything)."""
    timeout = module.config.timeout

    async def handle(event: plugins.Event) -> None:
        try:
            async with asyncio.timeout(timeout):
                await module.emit(event)
        except TimeoutError:
            log.warning(
                "C module %s: %s event of %s not handled in %g s",
                module.name,
                event.event,
                event.id or "a session",
                timeout,
            )

    try:
        await pluginevents.follow(
            bus, plugin=module.name, handle=handle, stop=stop, hooks=module.config.hooks
        )
    finally:
        module.close()
