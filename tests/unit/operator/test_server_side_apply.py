"""The emulator's server-side apply (tests/emulator.py) against the rules of the Kubernetes
documentation ("Server-Side Apply": field management, conflicts, and removing fields), so that
the operator tests that rely on it rely on the API server's behaviour."""

from __future__ import annotations

from typing import Any

import pytest

from tests import emulator, server_side_apply


def configmap(**data: str) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c"}, "data": data}


def test_an_apply_sets_what_it_says_and_its_manager_owns_those_fields() -> None:
    managed: dict[str, set[server_side_apply.FieldPath]] = {}
    found = server_side_apply.apply({}, configmap(a="1", b="2"), managed, manager="op", force=False)
    assert found["data"] == {"a": "1", "b": "2"}
    assert managed == {"op": {("data", "a"), ("data", "b")}}


def test_a_field_the_manager_no_longer_applies_is_removed() -> None:
    managed: dict[str, set[server_side_apply.FieldPath]] = {}
    live = server_side_apply.apply({}, configmap(a="1", b="2"), managed, manager="op", force=False)
    found = server_side_apply.apply(live, configmap(a="1"), managed, manager="op", force=False)
    assert found["data"] == {"a": "1"}


def test_a_field_another_manager_also_set_stays_when_one_stops_applying_it() -> None:
    managed: dict[str, set[server_side_apply.FieldPath]] = {}
    live = server_side_apply.apply({}, configmap(a="1", b="2"), managed, manager="op", force=False)
    live = server_side_apply.apply(live, configmap(b="2"), managed, manager="other", force=False)
    found = server_side_apply.apply(live, configmap(a="1"), managed, manager="op", force=False)
    assert found["data"] == {"a": "1", "b": "2"}  # still "other"'s


def test_a_field_written_by_another_client_is_not_removed_by_an_apply() -> None:
    managed: dict[str, set[server_side_apply.FieldPath]] = {}
    live = server_side_apply.apply({}, configmap(a="1"), managed, manager="op", force=False)
    edited = {**live, "data": {"a": "1", "hand": "x"}}
    server_side_apply.record_update(live, edited, managed, "kubectl-edit")
    found = server_side_apply.apply(edited, configmap(a="1"), managed, manager="op", force=False)
    assert found["data"] == {"a": "1", "hand": "x"}


def test_a_conflicting_value_is_refused_unless_forced_and_force_takes_the_field() -> None:
    managed: dict[str, set[server_side_apply.FieldPath]] = {}
    live = server_side_apply.apply({}, configmap(a="1"), managed, manager="op", force=False)
    edited = {**live, "data": {"a": "hand"}}
    server_side_apply.record_update(live, edited, managed, "kubectl-edit")
    with pytest.raises(server_side_apply.ApplyConflict, match=r"data\.a"):
        server_side_apply.apply(edited, configmap(a="1"), managed, manager="op", force=False)
    found = server_side_apply.apply(edited, configmap(a="1"), managed, manager="op", force=True)
    assert found["data"] == {"a": "1"}
    assert ("data", "a") not in managed.get("kubectl-edit", set())


def test_a_map_emptied_by_a_removal_goes_too() -> None:
    managed: dict[str, set[server_side_apply.FieldPath]] = {}
    pod = {"apiVersion": "v1", "kind": "X", "metadata": {"name": "x"}}
    live = server_side_apply.apply(
        {},
        {**pod, "spec": {"nodeSelector": {"disk": "ssd"}, "n": 1}},
        managed,
        manager="op",
        force=True,
    )
    found = server_side_apply.apply(
        live, {**pod, "spec": {"n": 1}}, managed, manager="op", force=True
    )
    assert found["spec"] == {"n": 1}


def test_a_list_is_replaced_whole() -> None:
    managed: dict[str, set[server_side_apply.FieldPath]] = {}
    obj = {"apiVersion": "v1", "kind": "X", "metadata": {"name": "x"}}
    live = server_side_apply.apply(
        {}, {**obj, "spec": {"l": [1, 2]}}, managed, manager="op", force=True
    )
    found = server_side_apply.apply(
        live, {**obj, "spec": {"l": [3]}}, managed, manager="op", force=True
    )
    assert found["spec"]["l"] == [3]


def test_a_merge_patch_turns_one_object_into_the_other() -> None:
    old = {"a": {"b": 1, "c": 2}, "d": [1], "e": 1}
    new = {"a": {"b": 1}, "d": [2], "f": 3}
    assert server_side_apply.merge_patch(old, new) == {
        "a": {"c": None},
        "d": [2],
        "e": None,
        "f": 3,
    }


@pytest.mark.parametrize(
    ("selector", "matches"),
    [("a=1", True), ("a=2", False), ("a!=2", True), ("a", True), ("!a", False), ("a=1,b", False)],
)
def test_label_selectors_are_read_as_the_api_server_reads_them(
    selector: str, matches: bool
) -> None:
    assert emulator.labels_match(selector, {"a": "1"}) is matches


def pod(*containers: dict[str, Any]) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "p"},
        "spec": {"containers": list(containers)},
    }


def test_an_associative_list_is_merged_by_item_and_another_managers_item_stays() -> None:
    """A sidecar added by another manager (a mesh, say) outlives the operator's applies."""
    managed: dict[str, set[server_side_apply.FieldPath]] = {}
    app = {"name": "app", "image": "a:1", "env": [{"name": "A", "value": "1"}]}
    live = server_side_apply.apply({}, pod(app), managed, manager="op", force=True)
    sidecar = {"name": "proxy", "image": "mesh:1"}
    live = server_side_apply.apply(live, pod(sidecar), managed, manager="mesh", force=True)
    assert [c["name"] for c in live["spec"]["containers"]] == ["app", "proxy"]
    found = server_side_apply.apply(
        live, pod({**app, "image": "a:2"}), managed, manager="op", force=True
    )
    assert found["spec"]["containers"] == [{**app, "image": "a:2"}, sidecar]


def test_an_item_or_a_field_of_an_item_the_manager_stops_applying_is_removed() -> None:
    managed: dict[str, set[server_side_apply.FieldPath]] = {}
    app = {
        "name": "app",
        "image": "a:1",
        "env": [{"name": "A", "value": "1"}, {"name": "TLS", "value": "/tls"}],
        "resources": {"limits": {"memory": "1Gi"}, "requests": {"cpu": "1"}},
    }
    live = server_side_apply.apply({}, pod(app), managed, manager="op", force=True)
    less = {
        "name": "app",
        "image": "a:1",
        "env": [{"name": "A", "value": "1"}],
        "resources": {"requests": {"cpu": "1"}},
    }
    found = server_side_apply.apply(live, pod(less), managed, manager="op", force=True)
    assert found["spec"]["containers"] == [less]
    found = server_side_apply.apply(
        found, pod({"name": "other", "image": "o"}), managed, manager="op", force=True
    )
    assert found["spec"]["containers"] == [{"name": "other", "image": "o"}]


def test_items_take_the_order_of_the_apply() -> None:
    managed: dict[str, set[server_side_apply.FieldPath]] = {}
    env = [{"name": "A", "value": "1"}, {"name": "C", "value": "3"}]
    live = server_side_apply.apply(
        {}, pod({"name": "app", "env": env}), managed, manager="op", force=True
    )
    env = [env[0], {"name": "B", "value": "2"}, env[1]]
    found = server_side_apply.apply(
        live, pod({"name": "app", "env": env}), managed, manager="op", force=True
    )
    assert found["spec"]["containers"][0]["env"] == env
