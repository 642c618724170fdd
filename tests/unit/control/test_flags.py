"""kubectl's habits in empathctl and `kubectl empath`: the program's own options anywhere, and
completion of commands."""

from __future__ import annotations

import pytest
import typer.main

from empath.control import ctl, kube


def empathctl_params() -> list[object]:
    return list(typer.main.get_command(ctl.build(ctl.PROGRAM, ctl.options)).params)


def kubectl_params() -> list[object]:
    return list(typer.main.get_command(ctl.build(kube.PROGRAM, kube.options)).params)


@pytest.mark.parametrize(
    ("given", "hoisted"),
    [
        (["queue", "list", "-o", "json"], ["-o", "json", "queue", "list"]),
        (["queue", "list", "-ojson"], ["-ojson", "queue", "list"]),
        (["queue", "list", "--output=yaml"], ["--output=yaml", "queue", "list"]),
        (
            ["-o", "json", "queue", "view", "ID", "--url", "http://x", "--token", "t", "--body"],
            ["-o", "json", "--url", "http://x", "--token", "t", "queue", "view", "ID", "--body"],
        ),
        (
            ["queue", "list", "--domain", "d.test", "--config=c.yaml"],
            ["--config=c.yaml", "queue", "list", "--domain", "d.test"],
        ),
        (["queue", "delete", "ID", "--", "-o"], ["queue", "delete", "ID", "--", "-o"]),
        (["queue", "list", "-o"], ["queue", "list", "-o"]),  # click says the value is missing
    ],
)
def test_empathctls_own_options_may_come_after_the_subcommand(
    given: list[str], hoisted: list[str]
) -> None:
    assert ctl.hoist(empathctl_params(), given) == hoisted


def test_kubectl_empaths_own_options_may_come_after_the_subcommand() -> None:
    given = ["queue", "list", "-n", "mail", "--context", "prod", "--mailserver=corp", "-o", "json"]
    assert ctl.hoist(kubectl_params(), given) == [
        "-n",
        "mail",
        "--context",
        "prod",
        "--mailserver=corp",
        "-o",
        "json",
        "queue",
        "list",
    ]
    # --url is not kubectl empath's: left where it is, for click to refuse
    assert ctl.hoist(kubectl_params(), ["queue", "list", "--url", "u"]) == [
        "queue",
        "list",
        "--url",
        "u",
    ]


def test_kubectl_empath_completes_commands_and_options() -> None:
    assert kube.completions(["qu"]) == ["queue"]
    assert "list" in kube.completions(["queue", ""])
    assert kube.completions(["-n", "mail", "queue", "li"]) == ["list"]
    assert kube.completions(["queue", "list", "--st"]) == ["--state"]
