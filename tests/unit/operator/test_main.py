"""The operator's own settings, as `empath operator` reads them."""

from __future__ import annotations

from empath.operator import main


def test_peered_operator_replicas_never_share_a_priority() -> None:
    peered = main.OperatorSettings(image="x", peering="empath")
    drawn = {main.peering_priority(peered) for _ in range(50)}
    assert len(drawn) == 50  # kopf would pause all of two equals
    assert main.peering_priority(main.OperatorSettings(image="x", priority=7)) == 7
