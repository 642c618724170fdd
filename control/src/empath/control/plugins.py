"""Plugin calls: how each plugin's calls went, from what the ingress instances publish.

Every ingress instance publishes its plugins' figures with its heartbeat
(`empath.core.pluginstatus`); this adds them up per plugin. The plugins are those of this
service's settings (the same `EMPATH_PLUGINS` as ingress's), and any other an instance
reports (one started with other settings, in a rollout).
"""

from __future__ import annotations

from aiohttp import web

from empath.control import calls, system
from empath.core import pluginstatus
from empath.core.settings import Plugin

CONFIGURED: web.AppKey[tuple[Plugin, ...]] = web.AppKey("plugins", tuple)


def _reached_by(plugin: Plugin) -> str | None:
    for way in ("url", "subject", "module", "library"):
        if getattr(plugin, way, None) is not None:
            return way
    return None


async def plugins(request: web.Request) -> web.Response:
    configured = {p.name: p for p in request.app.get(CONFIGURED, ())}
    published = pluginstatus.from_heartbeats(
        beat
        for beat in await system.live(request.app[calls.LINK])
        if beat.get("service") == "ingress"
    )
    found = []
    for name in sorted(set(configured) | set(published)):
        plugin = configured.get(name)
        found.append(
            pluginstatus.summarize(
                name,
                published.get(name, []),
                hooks=[str(hook) for hook in plugin.hooks] if plugin else None,
                reached_by=_reached_by(plugin) if plugin else None,
            )
        )
    return calls.reply(pluginstatus.PluginsAnswer(plugins=found))


ROUTES = (
    calls.Route(
        "GET",
        "/api/v1/plugins",
        handler=plugins,
        summary="Each plugin's calls over every ingress instance: ready, failing (and why), "
        "idle or unknown, with counts by outcome and the last success and failure",
        answer=pluginstatus.PluginsAnswer,
        refusals=(),
    ),
)
