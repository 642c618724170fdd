"""`kube.Cluster.apply` as the API sees it: one server-side apply under `empath-operator`
(forced, creation included) when the object is new, changed since this manager applied it,
or edited by hand; nothing at all otherwise."""

from __future__ import annotations

import json
from typing import Any

import httpx

from empath.operator import kube

OBJ = {
    "apiVersion": "v1",
    "kind": "ConfigMap",
    "metadata": {"name": "corp-config", "namespace": "mail"},
    "data": {"A": "1"},
}
URL = "/api/v1/namespaces/mail/configmaps/corp-config"


class Api:
    """One object, as a store; every request it was sent."""

    def __init__(self, live: dict[str, Any] | None) -> None:
        self.live = live
        self.sent: list[httpx.Request] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.sent.append(request)
        if request.method == "GET":
            return httpx.Response(404) if self.live is None else httpx.Response(200, json=self.live)
        self.live = json.loads(request.content)
        return httpx.Response(200, json=self.live)

    def cluster(self) -> kube.Cluster:
        return kube.Cluster(
            httpx.AsyncClient(base_url="http://api", transport=httpx.MockTransport(self))
        )

    def writes(self) -> list[httpx.Request]:
        return [r for r in self.sent if r.method != "GET"]


async def test_a_new_object_is_created_by_a_forced_apply_of_the_operator() -> None:
    api = Api(None)
    assert await api.cluster().apply(OBJ)
    (write,) = api.writes()
    assert (write.method, write.url.path) == ("PATCH", URL)
    assert write.headers["Content-Type"] == "application/apply-patch+yaml"
    assert dict(write.url.params) == {"fieldManager": "empath-operator", "force": "true"}
    assert json.loads(write.content)["data"] == {"A": "1"}


async def test_an_object_as_last_applied_is_not_written_again() -> None:
    api = Api(None)
    await api.cluster().apply(OBJ)
    api.live = {**(api.live or {}), "metadata": {**(api.live or {})["metadata"], "uid": "u"}}
    assert not await api.cluster().apply(OBJ)
    assert len(api.writes()) == 1


async def test_a_field_dropped_from_the_render_is_applied_though_the_live_object_has_it() -> None:
    """The live object says everything the new render says (and more): the hash tells."""
    api = Api(None)
    await api.cluster().apply({**OBJ, "data": {"A": "1", "B": "2"}})
    assert await api.cluster().apply(OBJ)
    assert json.loads(api.writes()[-1].content)["data"] == {"A": "1"}


async def test_a_hand_edit_is_applied_over() -> None:
    api = Api(None)
    await api.cluster().apply(OBJ)
    assert api.live is not None
    api.live["data"] = {"A": "edited"}
    assert await api.cluster().apply(OBJ)
    assert len(api.writes()) == 2
