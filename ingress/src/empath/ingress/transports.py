"""How ingress reaches a validation plugin: in process, over HTTP, or over NATS request/reply.

Each transport turns a hook request (`empath.core.plugins`) into a verdict, or raises; the
runtime (`empath.ingress.plugins`) owns timeouts, the failure policy, logs and metrics, so a
transport only says what went wrong. Connections are made once per plugin and reused: an
aiohttp session with a connector bounded to the plugin's `concurrency`, or the service's own
NATS connection.
"""

from __future__ import annotations

import importlib
import importlib.metadata
import inspect
import ssl
from typing import Any, Protocol, cast

import aiohttp
import nats.errors

from empath.core import bus as bus_module
from empath.core import errors, plugins
from empath.core.settings import Plugin, Settings

ENTRY_POINT_GROUP = "empath.plugins"
SECRET_HEADER = "X-Empath-Plugin-Secret"

# An in-process plugin: an async callable from a request to a verdict (None: continue).
PluginFunction = plugins.Function


class PluginError(errors.TemporaryError):
    """A plugin could not be asked, or its answer was not a verdict."""


class Transport(Protocol):
    async def call(self, request: plugins.Request) -> plugins.Verdict: ...

    async def close(self) -> None: ...


def load_function(name: str) -> PluginFunction:
    """`package.module:callable`, or the name of an entry point of group `empath.plugins`
    (a plugin function, or a `plugins.factory`)."""
    try:
        if ":" in name:
            module_name, _, attribute = name.partition(":")
            target: Any = importlib.import_module(module_name)
            for part in attribute.split("."):
                target = getattr(target, part)
        else:
            found = importlib.metadata.entry_points(group=ENTRY_POINT_GROUP, name=name)
            if not found:
                raise LookupError(f"no entry point {name!r} in group {ENTRY_POINT_GROUP}")
            target = next(iter(found)).load()
    except (ImportError, AttributeError, LookupError, ValueError) as error:
        raise errors.ConfigurationError(f"EMPATH_PLUGINS: cannot load {name!r}: {error}") from error
    if not callable(target):
        raise errors.ConfigurationError(f"EMPATH_PLUGINS: {name!r} is not callable")
    function: PluginFunction = target
    return function


def load_in_process(config: Plugin, settings: Settings) -> PluginFunction:
    """The plugin function a declaration's `module` names: the callable itself, or what the
    factory it names makes of the declaration's `options` (checked there, at start)."""
    assert config.module is not None
    target = load_function(config.module)
    if not plugins.is_factory(target):
        if config.options is not None:
            raise errors.ConfigurationError(
                f"EMPATH_PLUGINS: plugin {config.name!r}: {config.module!r} takes no options "
                "(it is no plugins.factory)"
            )
        return target
    setup = plugins.Setup(plugin=config, settings=settings)
    try:
        made: Any = cast(Any, target)(setup)
    except errors.ConfigurationError:
        raise
    except Exception as error:  # a factory's bug must name the plugin, not crash anonymously
        raise setup.error(f"{error.__class__.__name__}: {error}") from error
    if not callable(made):
        raise setup.error(f"its factory made {type(made).__name__}, not a plugin function")
    function: PluginFunction = made
    return function


class InProcess:
    """A Python callable in ingress's own process (closed at stop if it has `close()`)."""

    def __init__(self, function: PluginFunction) -> None:
        self.function = function

    async def call(self, request: plugins.Request) -> plugins.Verdict:
        called: Any = self.function(request)
        answer = await called if inspect.isawaitable(called) else called
        if answer is None:
            return plugins.CONTINUE
        if not isinstance(answer, plugins.Verdict):
            raise PluginError(f"answered {type(answer).__name__}, not a Verdict")
        return answer

    async def close(self) -> None:
        close = getattr(self.function, "close", None)
        if close is not None:
            await close()


def _verdict(data: bytes) -> plugins.Verdict:
    try:
        return plugins.Verdict.model_validate_json(data)
    except ValueError as error:
        raise PluginError(f"answered something that is not a verdict: {error}") from error


class Http:
    """A JSON POST of the request to the plugin's URL; the verdict is the JSON answer."""

    def __init__(self, config: Plugin) -> None:
        assert config.url is not None
        self.url = config.url
        context: ssl.SSLContext | bool = True
        if config.ca_file is not None:
            context = ssl.create_default_context(cafile=str(config.ca_file))
        self.headers = {"Content-Type": "application/json"}
        if config.secret_file is not None:
            self.headers[SECRET_HEADER] = config.secret_file.read_text().strip()
        self.connector_options: dict[str, Any] = {"limit": config.concurrency, "ssl": context}
        self.timeout = config.timeout
        self._session: aiohttp.ClientSession | None = None

    def _client(self) -> aiohttp.ClientSession:
        # Made on first use, inside the running event loop; kept for connection reuse.
        if self._session is None:
            self._session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(**self.connector_options),
                timeout=aiohttp.ClientTimeout(total=self.timeout),
            )
        return self._session

    async def call(self, request: plugins.Request) -> plugins.Verdict:
        try:
            async with self._client().post(
                self.url, data=request.model_dump_json(), headers=self.headers
            ) as response:
                body = await response.read()
                if response.status != 200:
                    raise PluginError(f"HTTP {response.status} from {self.url}")
        except aiohttp.ClientError as error:
            raise PluginError(f"cannot reach {self.url}: {error!r}") from error
        return _verdict(body)

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()


class Nats:
    """A NATS request on the plugin's subject; the verdict is the reply."""

    def __init__(self, config: Plugin, bus: bus_module.Bus) -> None:
        assert config.subject is not None
        self.subject = config.subject
        self.bus = bus
        self.timeout = config.timeout

    async def call(self, request: plugins.Request) -> plugins.Verdict:
        try:
            reply = await self.bus.nc.request(
                self.subject, request.model_dump_json().encode(), timeout=self.timeout
            )
        except nats.errors.NoRespondersError as error:
            raise PluginError(f"nobody answers on {self.subject}") from error
        except nats.errors.TimeoutError:
            raise
        except (nats.errors.Error, OSError) as error:
            raise PluginError(f"request on {self.subject} failed: {error!r}") from error
        return _verdict(reply.data)

    async def close(self) -> None:
        return None


def transport_for(config: Plugin, bus: bus_module.Bus, settings: Settings) -> Transport:
    if config.module is not None:
        return InProcess(load_in_process(config, settings))
    if config.url is not None:
        return Http(config)
    return Nats(config, bus)
