"""The query API's requests as the spool reads them: what passes, and the reason for what not."""

from __future__ import annotations

import json

import pytest

from empath.core import ids, queries, queue

ID = "01ARZ3NDEKTSV4RRFFQ69G5FAV"


def test_an_empty_list_request_asks_for_the_first_hundred_oldest_first() -> None:
    request = queries.parse_request(queries.ListRequest, b"")
    assert (request.state, request.sort, request.limit, request.after) == (None, "age", 100, None)


def test_a_full_list_request_is_read_into_its_types() -> None:
    request = queries.parse_request(
        queries.ListRequest,
        json.dumps(
            {
                "state": "deferred",
                "domain": "example.com",
                "sender": "a@",
                "min_age": 60,
                "sort": "-age",
                "limit": 1000,
                "after": ID,
            }
        ).encode(),
    )
    assert request.state is queue.State.DEFERRED
    assert request.min_age == 60.0
    assert (request.sort, request.limit, request.after) == ("-age", 1000, ID)


def test_every_new_queue_id_is_a_valid_id_in_a_request() -> None:
    for _ in range(50):
        message_id = ids.new_id()
        assert queries.parse_request(queries.GetRequest, {"id": message_id}).id == message_id


@pytest.mark.parametrize(
    ("model", "data", "reason"),
    [
        (queries.ListRequest, {"limit": 0}, "limit must be an integer from 1 to 1000"),
        (queries.ListRequest, {"limit": 1001}, "limit must be an integer from 1 to 1000"),
        (queries.ListRequest, {"limit": "10"}, "limit must be an integer from 1 to 1000"),
        (queries.ListRequest, {"limit": True}, "limit must be an integer from 1 to 1000"),
        (queries.ListRequest, {"state": "lost"}, "unknown state 'lost'"),
        (
            queries.ListRequest,
            {"sort": "size"},
            "sort must be age (oldest first) or -age (newest first)",
        ),
        (queries.ListRequest, {"after": "../etc"}, "after must be a queue id"),
        (queries.ListRequest, {"after": ID.lower()}, "after must be a queue id"),
        (queries.ListRequest, {"domain": "  "}, "domain: not a domain: '': the domain is empty"),
        (
            queries.ListRequest,
            {"domain": "d" * 254},
            f"domain: not a domain: {'d' * 80 + '...'!r}: a domain has at most 253 characters, "
            "this one 254",
        ),
        (
            queries.RetryRequest,
            {"domain": "d" * 64 + ".test"},
            f"domain: not a domain: {'d' * 64 + '.test'!r}: a label of a domain has at most 63 "
            "characters",
        ),
        (
            queries.RetryRequest,
            {"domain": "a\n.test"},
            "domain: not a domain: 'a\\n.test': a domain is labels of letters, digits and hyphens "
            "(not first or last) joined by dots",
        ),
        (queries.ListRequest, {"domain": 5}, "domain: Input should be a valid string"),
        (
            queries.ListRequest,
            {"sender": 5},
            "sender must be a non-empty string of at most 256 characters",
        ),
        (
            queries.ListRequest,
            {"sender": "s" * 257},
            "sender must be a non-empty string of at most 256 characters",
        ),
        (queries.ListRequest, {"min_age": -1}, "min_age must be a number of seconds"),
        (queries.ListRequest, {"page": 5}, "unknown field 'page'"),
        (queries.GetRequest, {}, "id is required"),
        (queries.GetRequest, {"id": "nope"}, "id must be a queue id"),
        (queries.HoldRequest, {"id": ID + "0"}, "id must be a queue id"),
        (queries.RetryRequest, {}, "give either id or domain"),
        (queries.RetryRequest, {"id": ID, "domain": "example.com"}, "give either id or domain"),
        (
            queries.DeleteRequest,
            {"id": ID, "recipients": "v@example.com"},
            "recipients must be a list of addresses of at most 256 characters",
        ),
        (
            queries.DeleteRequest,
            {"id": ID, "recipients": ["r" * 257]},
            "recipients must be a list of addresses of at most 256 characters",
        ),
        (queries.FreezeRequest, {"now": True}, "unknown field 'now'"),
    ],
)
def test_a_bad_request_is_refused_with_a_reason_naming_the_field(
    model: type[queries.Request], data: dict[str, object], reason: str
) -> None:
    with pytest.raises(queries.BadQuery) as refused:
        queries.parse_request(model, json.dumps(data).encode())
    assert str(refused.value) == reason


@pytest.mark.parametrize("model", [queries.ListRequest, queries.RetryRequest])
def test_a_domain_of_253_characters_is_taken_in_the_form_it_is_compared_in(
    model: type[queries.ListRequest | queries.RetryRequest],
) -> None:
    longest = ".".join(["d" * 63] * 3 + ["e" * 61])
    assert len(longest) == 253
    assert model.model_validate({"domain": longest.upper() + "."}).domain == longest
    assert model.model_validate({"domain": "Bücher.Example"}).domain == "bücher.example"


def test_every_wrong_field_is_named_at_once() -> None:
    with pytest.raises(queries.BadQuery) as refused:
        queries.parse_request(queries.ListRequest, {"state": "lost", "limit": 0})
    assert str(refused.value) == ("unknown state 'lost'; limit must be an integer from 1 to 1000")


@pytest.mark.parametrize(
    ("data", "reason"),
    [(b"not json", "request is not JSON"), (b"[1, 2]", "request must be a JSON object")],
)
def test_a_request_that_is_not_a_json_object_is_refused(data: bytes, reason: str) -> None:
    with pytest.raises(queries.BadQuery, match=reason):
        queries.parse_request(queries.CountsRequest, data)


def test_a_retry_by_domain_answers_a_count_and_no_item() -> None:
    assert json.loads(queries.RetryAnswer(retried=3).model_dump_json()) == {"retried": 3}


def test_a_whole_delete_answers_a_null_item() -> None:
    answer = queries.DeleteAnswer(deleted=True, item=None)
    assert json.loads(answer.model_dump_json()) == {"deleted": True, "item": None}


def test_an_error_is_read_as_an_error_whatever_call_was_made() -> None:
    data = b'{"error": "no message 01ARZ3NDEKTSV4RRFFQ69G5FAV in the queue", "code": 404}'
    answer = queries.parse_answer(queries.HoldAnswer, data)
    assert answer == queries.ErrorAnswer(
        error="no message 01ARZ3NDEKTSV4RRFFQ69G5FAV in the queue", code=404
    )


def test_a_request_survives_its_own_json() -> None:
    request = queries.ListRequest(state=queue.State.QUEUED, limit=5, after=ID)
    again = queries.parse_request(queries.ListRequest, request.model_dump_json().encode())
    assert again == request
