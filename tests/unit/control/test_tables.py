"""`empathctl`'s tables, read from the API's JSON answers through the spool's answer models."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

from rich.console import Console
from rich.table import Table

from empath.control.commands import queue as commands
from empath.core import queries, queue
from empath.spool import stats, view
from tests.unit.spool.samples import entry


def shown(table: Table) -> str:
    console = Console(width=200, record=True, markup=False, emoji=False, highlight=False)
    console.print(table)
    return console.export_text()


def as_json(answer: queries.Answer) -> object:
    """The answer as the CLI receives it: JSON decoded into dicts and lists."""
    return json.loads(answer.model_dump_json())


def test_a_list_counts_the_recipients_an_answer_left_out_and_says_how_to_page_on() -> None:
    item = entry(
        "a@one.test",
        "b@one.test",
        "c@one.test",
        received_at=datetime.now(UTC) - timedelta(hours=3, minutes=5),
        state=queue.State.DEFERRED,
    )
    page = queries.ListAnswer(
        items=[item],
        next_after=item.id,
        omitted={item.id: queries.Omitted(recipients=97)},
    )
    text = shown(commands.queue_table(as_json(page)))
    [row] = [line for line in text.splitlines() if line.startswith("│")]
    assert "deferred" in row
    assert " 3h " in row
    assert "a@one.test, b@one.test +98" in row
    assert f"more: --after {item.id}" in " ".join(text.split())


def test_stats_show_domains_by_age_the_oldest_and_what_was_left_out() -> None:
    now = datetime.now(UTC)
    entries = [
        entry("u@example.com", received_at=now - timedelta(minutes=7), state=queue.State.QUEUED),
    ]
    summaries = [view.Summary.of(e) for e in entries]
    answer = stats.summary(summaries, now=now, frozen=True).model_copy(
        update={"domains_omitted": 4}
    )
    text = shown(commands.stats_table(as_json(answer)))
    assert "1 waiting, frozen: True" in text
    [row] = [line for line in text.splitlines() if "example.com" in line]
    assert row.split() == ["│", "example.com", "│", "1", "│", "0", "│", "1", *["│", "0"] * 9, "│"]
    caption = " ".join(text.split())  # however it wraps
    assert (
        "queued=1, deferred=0, delivering=0, delivered=0, failed=0, frozen=0; "
        f"oldest {entries[0].id}; 4 less busy domains not shown" in caption
    )


def test_stats_name_each_domain_whose_circuit_is_open_with_when_and_why() -> None:
    now = datetime.now(UTC)
    reply = "421 4.3.2 [bold]Service not available[/bold] (greeting of mx.down.test)"
    records = [
        (
            "circuit.down.test",
            json.dumps(
                {
                    "domain": "down.test",
                    "state": "open",
                    "failures": [1.0, 2.0, 3.0],
                    "until": (now + timedelta(minutes=5)).timestamp(),
                    "reason": reply,
                }
            ).encode(),
        ),
        (
            "circuit.fine.test",
            json.dumps({"domain": "fine.test", "state": "closed", "failures": []}).encode(),
        ),
        ("circuit.broken.test", b"{not json"),
    ]
    answer = stats.summary([], now=now, frozen=False, circuits=stats.circuits(records))
    # `-o json` prints the time as every other time: ISO 8601 in UTC, not Unix seconds.
    (circuit,) = as_json(answer)["circuits"]  # type: ignore[index]
    assert circuit["until"].endswith("Z")
    assert datetime.fromisoformat(circuit["until"]) == now + timedelta(minutes=5)
    text = " ".join(shown(commands.stats_table(as_json(answer))).split())
    until = (now + timedelta(minutes=5)).strftime("%H:%M:%S")
    assert f"circuit open: down.test (until {until} UTC, 3 failed connections): {reply}" in text
    assert "fine.test" not in text
