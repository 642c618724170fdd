"""`empath up` gives nats-server and weed one Go thread on a machine of two cores or fewer
(where it was measured to save CPU), Go's default on a larger one, and never overrides a
GOMAXPROCS the user exported."""

from __future__ import annotations

import pytest

from empath.core import up


@pytest.mark.parametrize(
    ("cores", "expected"), [(1, {"GOMAXPROCS": "1"}), (2, {"GOMAXPROCS": "1"}), (8, {})]
)
def test_one_go_thread_on_a_small_machine_only(
    monkeypatch: pytest.MonkeyPatch, cores: int, expected: dict[str, str]
) -> None:
    monkeypatch.delenv("GOMAXPROCS", raising=False)
    monkeypatch.setattr(up.os, "sched_getaffinity", lambda _pid: set(range(cores)))
    assert up.go_env() == expected


def test_a_gomaxprocs_of_the_users_own_stands(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GOMAXPROCS", "4")
    monkeypatch.setattr(up.os, "sched_getaffinity", lambda _pid: {0})
    assert up.go_env() == {}
