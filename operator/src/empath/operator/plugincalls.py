"""How a MailServer's plugin calls went, as its control API tells it (`GET /api/v1/plugins`).

The services publish their plugins' calls (ingress's heartbeat, added up by control); the
operator asks each MailServer's control Service for them and writes them into the MailPlugins'
status. It may not read Secrets, so it does not read the control token: it derives it. With
an operator key (`EMPATH_OPERATOR_KEY_FILE`, a Secret the chart makes once) each MailServer's
token is HMAC-SHA256(key, "<namespace>/<name>"), and the operator puts that token in the
token Secret it creates. A token Secret made before (without the key, or with another) stays
as it is: control then refuses the operator, and the status says so (`ControlTokenUnknown`).
"""

from __future__ import annotations

import asyncio
import base64
import dataclasses
import hashlib
import hmac
from typing import Any

import httpx
from pydantic import ValidationError

from empath.core import kubenames, pluginstatus
from empath.operator import metadata

# `{name}` and `{namespace}` are the MailServer's, `{service}` its control Service's name and
# `{port}` that Service's port. Tests point it at a control service of their own.
DEFAULT_URL = "http://{service}.{namespace}.svc:{port}/api/v1/plugins"
# An answer larger than this is not control's (a few hundred bytes a plugin).
MOST_BYTES = 1 << 20


def control_token(key: bytes, namespace: str, name: str) -> str:
    """The control token of MailServer `namespace/name` under the operator key `key`."""
    digest = hmac.new(key, f"{namespace}/{name}".encode(), hashlib.sha256).digest()
    return base64.urlsafe_b64encode(digest).decode().rstrip("=")


def control_url(template: str, namespace: str, name: str) -> str:
    return template.format(
        name=name,
        namespace=namespace,
        service=kubenames.control_service(name),
        port=metadata.CONTROL_PORT,
    )


def check_template(template: str) -> str:
    """`template` as a setting: an http(s) URL once filled in, or `ValueError`."""
    try:
        url = control_url(template, "ns", "server")
    except (KeyError, IndexError, ValueError) as error:
        raise ValueError(
            f"only {{name}}, {{namespace}}, {{service}} and {{port}} may be filled in: {error}"
        ) from None
    if not url.startswith(("http://", "https://")):
        raise ValueError("an http:// or https:// URL")
    return template


@dataclasses.dataclass(frozen=True)
class Caller:
    """How the operator asks control (its settings); no key: it does not ask."""

    key: bytes | None = None
    url: str = DEFAULT_URL
    timeout: float = 3.0


@dataclasses.dataclass(frozen=True)
class Heard:
    """What a MailServer's control said of its plugins (by name), or why it said nothing:
    `problem` is a reason and a message for a status condition."""

    plugins: dict[str, pluginstatus.PluginStatus] = dataclasses.field(default_factory=dict)
    problem: tuple[str, str] | None = None


async def ask(http: httpx.AsyncClient, caller: Caller, namespace: str, name: str) -> Heard:
    """Ask MailServer `namespace/name`'s control for its plugins' calls; never raises."""
    if caller.key is None:
        return Heard(
            problem=(
                "OperatorKeyUnset",
                "the operator has no key (EMPATH_OPERATOR_KEY_FILE), so it cannot call the "
                "control API; `empathctl plugins` shows the calls",
            )
        )
    url = control_url(caller.url, namespace, name)
    token = control_token(caller.key, namespace, name)
    try:
        # httpx's timeout bounds each read; this bounds the whole answer (one sent slowly).
        async with (
            asyncio.timeout(caller.timeout),
            http.stream(
                "GET", url, headers={"Authorization": f"Bearer {token}"}, timeout=caller.timeout
            ) as response,
        ):
            body = bytearray()
            async for chunk in response.aiter_bytes():
                body += chunk
                if len(body) > MOST_BYTES:
                    return Heard(problem=("ControlAnswerInvalid", f"{url}: answer too large"))
    except TimeoutError:
        return Heard(problem=("ControlUnreachable", f"{url}: no answer in {caller.timeout} s"))
    except httpx.HTTPError as error:
        return Heard(problem=("ControlUnreachable", f"{url}: {type(error).__name__}: {error}"))
    if response.status_code in (401, 403):
        return Heard(
            problem=(
                "ControlTokenUnknown",
                f"control refused the token the operator derives for {name}: its Secret "
                f"{kubenames.control_token_secret(name)} was made before the operator had its "
                "key (delete it: the next reconcile makes it again, then restart control)",
            )
        )
    if response.status_code != 200:
        return Heard(problem=("ControlFailed", f"{url}: HTTP {response.status_code}"))
    try:
        answer = pluginstatus.PluginsAnswer.model_validate_json(bytes(body))
    except ValidationError as error:
        return Heard(
            problem=("ControlAnswerInvalid", f"{url}: {error.error_count()} invalid fields")
        )
    return Heard(plugins={plugin.name: plugin for plugin in answer.plugins})


def last_call(plugin: pluginstatus.PluginStatus) -> dict[str, Any]:
    """A plugin's calls as a MailPlugin's `status.lastCall` tells them for one MailServer."""
    found = plugin.model_dump(mode="json")
    return {
        "state": found["state"],
        "reason": found["reason"],
        "instances": found["instances"],
        "calls": found["calls"],
        "lastSuccess": found["last_success"],
        "lastFailure": found["last_failure"],
        "lastFailureReason": found["last_failure_reason"],
    }
