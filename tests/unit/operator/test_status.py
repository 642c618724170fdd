"""The MailServer's status: its conditions, and Ready/Progressing from the Deployments."""

from __future__ import annotations

import itertools
from typing import Any

import pytest

from empath.operator import status

COMPONENTS = ("ingress", "spool", "delivery", "control")


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every condition change gets a later time than the one before (T1, T2, ...)."""
    ticks = (f"T{n}" for n in itertools.count(1))
    monkeypatch.setattr(status, "_now", lambda: next(ticks))


def deployment(
    *,
    replicas: int | None = 1,
    ready: int = 1,
    updated: int | None = None,
    generation: int = 1,
    observed: int | None = 1,
) -> dict[str, Any]:
    """A Deployment as the API returns it once its controller (and the kubelet) reported."""
    state: dict[str, Any] = {"replicas": replicas or 1, "readyReplicas": ready}
    if updated is not None:
        state["updatedReplicas"] = updated
    if observed is not None:
        state["observedGeneration"] = observed
    spec = {} if replicas is None else {"replicas": replicas}
    return {"metadata": {"generation": generation}, "spec": spec, "status": state}


def up(**changed: dict[str, Any] | None) -> dict[str, dict[str, Any] | None]:
    """Every Deployment up to date with one ready pod, but for `changed`."""
    return {component: changed.get(component, deployment()) for component in COMPONENTS}


def by_type(conditions: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {c["type"]: c for c in conditions}


def test_a_new_condition_says_when_it_became_so(clock: None) -> None:
    (found,) = status.set_condition(
        [], "Ready", status=True, reason="Available", message="up", generation=3
    )
    assert found == {
        "type": "Ready",
        "status": "True",
        "reason": "Available",
        "message": "up",
        "lastTransitionTime": "T1",
        "observedGeneration": 3,
    }


def test_a_condition_keeps_its_transition_time_while_its_status_stays(clock: None) -> None:
    first = status.set_condition(
        [], "Progressing", status=True, reason="RollingOut", message="a", generation=1
    )
    again = status.set_condition(
        first, "Progressing", status=True, reason="RollingOut", message="b", generation=2
    )
    (found,) = again
    assert found["lastTransitionTime"] == "T1"
    assert (found["message"], found["observedGeneration"]) == ("b", 2)


def test_a_condition_that_flips_gets_a_new_transition_time(clock: None) -> None:
    first = status.set_condition(
        [], "Degraded", status=True, reason="ApplyFailed", message="403", generation=None
    )
    flipped = status.set_condition(
        first, "Degraded", status=False, reason="Reconciled", message="ok", generation=1
    )
    (found,) = flipped
    assert (found["status"], found["lastTransitionTime"]) == ("False", "T2")


def test_a_condition_without_a_transition_time_gets_one(clock: None) -> None:
    old = [{"type": "Ready", "status": "True", "reason": "Available", "message": "up"}]
    (found,) = status.set_condition(
        old, "Ready", status=True, reason="Available", message="up", generation=None
    )
    assert found["lastTransitionTime"] == "T1"
    assert "observedGeneration" not in found  # not applied: no generation to claim


def test_setting_one_condition_leaves_the_others_as_they_were(clock: None) -> None:
    other = {"type": "Custom", "status": "True", "lastTransitionTime": "earlier"}
    found = status.set_condition(
        [other], "Ready", status=False, reason="Unavailable", message="no", generation=1
    )
    assert found[0] == other
    assert [c["type"] for c in found] == ["Custom", "Ready"]


def test_every_service_up_to_date_is_ready_and_no_longer_progressing(clock: None) -> None:
    replicas, conditions = status.rollout(up(), [], 4)
    found = by_type(conditions)
    assert (found["Progressing"]["status"], found["Progressing"]["reason"]) == (
        "False",
        "Complete",
    )
    assert (found["Ready"]["status"], found["Ready"]["reason"]) == ("True", "Available")
    assert found["Ready"]["observedGeneration"] == 4
    assert replicas == {c: {"replicas": 1, "readyReplicas": 1} for c in COMPONENTS}


def test_a_template_the_deployment_controller_has_not_seen_yet_is_progressing(
    clock: None,
) -> None:
    # `kubectl rollout restart`: generation 2, the controller still reports on 1 (with every
    # pod of the old template ready and "updated").
    pending = deployment(generation=2, observed=1, updated=1)
    _, conditions = status.rollout(up(spool=pending), [], 1)
    found = by_type(conditions)
    assert found["Progressing"]["status"] == "True"
    assert found["Progressing"]["reason"] == "RollingOut"
    assert found["Progressing"]["message"] == "waiting for spool 1/1"
    assert found["Ready"]["status"] == "True"  # the old pods still serve


def test_pods_of_the_old_template_are_progressing(clock: None) -> None:
    rolling = deployment(replicas=2, ready=2, updated=1)
    replicas, conditions = status.rollout(up(ingress=rolling), [], 1)
    assert by_type(conditions)["Progressing"]["message"] == "waiting for ingress 2/2"
    assert replicas["ingress"] == {"replicas": 2, "readyReplicas": 2}


def test_a_missing_deployment_is_neither_ready_nor_done(clock: None) -> None:
    replicas, conditions = status.rollout(up(delivery=None), [], 1)
    found = by_type(conditions)
    assert found["Progressing"]["message"] == "waiting for delivery 0/1"
    assert (found["Ready"]["status"], found["Ready"]["reason"]) == ("False", "Unavailable")
    assert found["Ready"]["message"] == "no ready pods: delivery"
    assert replicas["delivery"] == {"replicas": 1, "readyReplicas": 0}


def test_a_service_without_ready_pods_makes_the_server_unavailable(clock: None) -> None:
    none_ready = deployment(replicas=2, ready=0)
    _, conditions = status.rollout(up(ingress=none_ready, control=none_ready), [], 1)
    ready = by_type(conditions)["Ready"]
    assert ready["status"] == "False"
    assert ready["message"] == "no ready pods: ingress, control"


def test_an_autoscaled_deployment_wants_what_its_status_says(clock: None) -> None:
    # The operator leaves `replicas` out when an autoscaler owns it.
    scaled = deployment(replicas=None, ready=1)
    scaled["status"]["replicas"] = 3
    replicas, conditions = status.rollout(up(delivery=scaled), [], 1)
    assert replicas["delivery"] == {"replicas": 3, "readyReplicas": 1}
    assert by_type(conditions)["Progressing"]["message"] == "waiting for delivery 1/3"


def test_a_degraded_server_is_not_ready_however_its_pods_are(clock: None) -> None:
    degraded = [
        {"type": "Degraded", "status": "True", "reason": "ApplyFailed", "message": "403"},
    ]
    _, conditions = status.rollout(up(), degraded, 2)
    found = by_type(conditions)
    assert (found["Ready"]["status"], found["Ready"]["reason"]) == ("False", "Degraded")
    assert found["Progressing"]["status"] == "False"
    assert found["Degraded"] == degraded[0]


def test_the_same_deployments_give_the_same_conditions(clock: None) -> None:
    # What makes a resync write nothing: nothing changed, not even a transition time.
    _, first = status.rollout(up(spool=None), [], 1)
    _, again = status.rollout(up(spool=None), first, 1)
    assert again == first
    _, recovered = status.rollout(up(), again, 1)
    found = by_type(recovered)
    assert found["Ready"]["lastTransitionTime"] != by_type(first)["Ready"]["lastTransitionTime"]


def smtp_service(**status_and_spec: Any) -> dict[str, Any]:
    spec = {"type": "LoadBalancer", "ports": [{"name": "smtp", "port": 25}]}
    return {"spec": {**spec, **status_and_spec.pop("spec", {})}, **status_and_spec}


@pytest.mark.parametrize(
    ("service", "endpoint"),
    [
        (
            smtp_service(status={"loadBalancer": {"ingress": [{"ip": "203.0.113.7"}]}}),
            "203.0.113.7:25",
        ),
        (
            smtp_service(status={"loadBalancer": {"ingress": [{"hostname": "lb.example"}]}}),
            "lb.example:25",
        ),
        (
            smtp_service(
                spec={
                    "type": "NodePort",
                    "ports": [{"name": "smtp", "port": 25, "nodePort": 30025}],
                }
            ),
            "<node>:30025",
        ),
        (smtp_service(), "corp-smtp.mail.svc:25 (no external address yet)"),
        (None, "corp-smtp.mail.svc:25 (no external address yet)"),
    ],
)
def test_the_endpoint_is_the_address_clients_can_reach(
    service: dict[str, Any] | None, endpoint: str
) -> None:
    assert status.endpoint(service, namespace="mail", name="corp") == endpoint
