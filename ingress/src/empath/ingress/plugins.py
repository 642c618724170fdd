"""The validation plugin runtime: the plugins of `EMPATH_PLUGINS`, asked at each SMTP hook.

Plugins are asked in priority order (then by name); the first refusal wins and later plugins
are not asked. A plugin that times out, raises, or answers something that is not a verdict
follows its failure policy: `Ignore` goes on as if it said continue, `Fail` refuses with
`451 4.7.1` (temporary, the client tries again later). Nothing a plugin does can break a
session. Every call is logged with the session or queue id, and counted
(`empath.plugin.calls.total` by plugin, hook and outcome, and its duration).
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass, field

from empath.core import bus as bus_module
from empath.core import logs, plugins, telemetry
from empath.core import settings as settings_module
from empath.core.settings import Plugin, Settings
from empath.ingress import cmodules, replies, transports

log = logging.getLogger("empath.ingress.plugins")

_meter = telemetry.meter("empath")
calls = _meter.create_counter(
    "empath.plugin.calls.total",
    description="Validation plugin calls, by plugin, hook and outcome "
    "(continue, refuse, timeout, error)",
)
call_duration = _meter.create_histogram(
    "empath.plugin.call.duration.seconds",
    unit="s",
    description="Time from a plugin call to its verdict (or failure)",
    explicit_bucket_boundaries_advisory=[
        0.0005,
        0.001,
        0.0025,
        0.005,
        0.01,
        0.025,
        0.05,
        0.1,
        0.25,
        0.5,
        1,
        2.5,
        5,
        10,
        30,
    ],
)


@dataclass(slots=True)
class Result:
    """What the plugins at one hook decided, together."""

    refusal: str | None = None  # the reply line, when one refused
    metadata: dict[str, str] = field(default_factory=dict)
    headers: list[plugins.Header] = field(default_factory=list)
    sender: str | None = None  # a new envelope sender ('' is the null sender)


@dataclass(slots=True)
class _Configured:
    config: Plugin
    transport: transports.Transport


class Runtime:
    """The plugins ingress calls, each with its transport, made once at start."""

    def __init__(
        self, configured: list[Plugin], *, bus: bus_module.Bus, settings: Settings | None = None
    ) -> None:
        # C modules are loaded here, at start: one that cannot be is a wrong setting. An event
        # listener among them is kept for the service to feed (`cmodules.follow`).
        loaded = {p.name: cmodules.Module(p) for p in configured if p.library is not None}
        self.event_modules = [m for m in loaded.values() if m.event_listener]
        configured = [loaded[p.name].config if p.name in loaded else p for p in configured]
        ordered = sorted(
            (p for p in configured if p.validation_hooks), key=lambda p: (p.priority, p.name)
        )
        # Plugin factories are given the service's settings (the defaults when none are given).
        given = settings if settings is not None else settings_module.load(environment=False)
        self._plugins = [
            _Configured(
                p,
                cmodules.Transport(loaded[p.name])
                if p.name in loaded
                else transports.transport_for(p, bus, given),
            )
            for p in ordered
        ]
        self._hooks = {hook for p in ordered for hook in p.validation_hooks}

    def wants(self, hook: plugins.Hook) -> bool:
        return hook in self._hooks

    def body_limit(self) -> int:
        """The most of a message any `data` plugin asked to see."""
        return max(
            (p.config.body_limit for p in self._plugins if "data" in p.config.hooks), default=0
        )

    async def close(self) -> None:
        for plugin in self._plugins:
            await plugin.transport.close()

    async def check(self, request: plugins.Request, *, about: str) -> Result:
        """Ask every plugin of the request's hook, in order, until one refuses.

        `about` names the session or message in the logs. Metadata a plugin sets is handed to
        the plugins after it (in the request) and returned; headers only count at `data`.
        """
        result = Result()
        hook = request.hook
        for plugin in self._plugins:
            if hook not in plugin.config.hooks:
                continue
            if result.metadata:
                request = request.model_copy(
                    update={"metadata": {**request.metadata, **result.metadata}}
                )
            verdict = await self._call(plugin, request, about=about)
            if verdict is None:  # failed, and the policy is Fail
                result.refusal = replies.PLUGIN_FAILED
                return result
            if verdict.refused:
                assert verdict.reply is not None
                result.refusal = verdict.reply.line()
                return result
            result.metadata.update(verdict.metadata)
            if hook == "data":
                result.headers.extend(verdict.headers)
            if verdict.sender is not None and hook in {"mail", "rcpt", "data"}:
                result.sender = verdict.sender
        return result

    async def _call(
        self, plugin: _Configured, request: plugins.Request, *, about: str
    ) -> plugins.Verdict | None:
        """One plugin's verdict; on failure, CONTINUE (Ignore) or None (Fail)."""
        name, hook, config = plugin.config.name, request.hook, plugin.config
        about_log = logs.for_message(log, about)
        started = time.monotonic()
        failure: str | None = None
        outcome = "error"
        verdict: plugins.Verdict | None = None
        try:
            async with asyncio.timeout(config.timeout):
                verdict = await plugin.transport.call(request)
        except TimeoutError:
            outcome, failure = "timeout", f"no verdict within {config.timeout:g} s"
        except asyncio.CancelledError:
            raise
        except Exception as error:  # a plugin's bug must never end the session
            failure = f"{error.__class__.__name__}: {error}"
        elapsed = time.monotonic() - started
        call_duration.record(elapsed, {"plugin": name, "hook": hook})
        if verdict is not None:
            outcome = "refuse" if verdict.refused else "continue"
            calls.add(1, {"plugin": name, "hook": hook, "outcome": outcome})
            if not log.isEnabledFor(logging.INFO):
                return verdict
            about_log.info(
                "plugin %s at %s: %s%s%s (%.1f ms)",
                name,
                hook,
                outcome,
                f" {verdict.reply.line()!r}"
                if verdict.reply is not None and verdict.refused
                else "",
                f" metadata={sorted(verdict.metadata)}" if verdict.metadata else "",
                elapsed * 1000,
            )
            return verdict
        calls.add(1, {"plugin": name, "hook": hook, "outcome": outcome})
        about_log.warning(
            "plugin %s at %s failed (%s); policy %s: %s",
            name,
            hook,
            failure,
            config.failure_policy,
            "refusing with 451" if config.failure_policy == "Fail" else "going on",
        )
        return None if config.failure_policy == "Fail" else plugins.CONTINUE
