"""The spool's query API (`empath.api.queue.*`): one request and one answer model per call.

The spool validates every request with these models and builds its answers with them; the
control service builds its requests with them and parses the answers into them, so both sides
agree on the JSON by construction, and the schemas are exported with the events'. A request
that does not fit gets an `ErrorAnswer` with code 400 and a reason that names the field, and
changes nothing.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Callable
from dataclasses import KW_ONLY, dataclass
from datetime import datetime
from pathlib import Path
from typing import Annotated, Any, Generic, Literal, TypeVar

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    ValidatorFunctionWrapHandler,
    WrapValidator,
    model_validator,
)
from pydantic_core import PydanticCustomError

from empath.core import addresses, errors, ids, names, queue

MAX_LIMIT = 1000


class BadQuery(errors.PermanentError):
    """A request that does not fit its model; the message is the reason sent back."""


def _reasoned(reason: str) -> WrapValidator:
    """Replace pydantic's message for a field with `reason`, which names the field, so whoever
    made the request reads what is expected ("limit must be an integer from 1 to 1000")."""

    def validate(value: Any, handler: ValidatorFunctionWrapHandler) -> Any:
        try:
            return handler(value)
        except ValidationError:
            raise PydanticCustomError("query", reason) from None

    return WrapValidator(validate)


def _queue_id(value: Any, handler: ValidatorFunctionWrapHandler, info: ValidationInfo) -> Any:
    try:
        checked = handler(value)
    except ValidationError:
        checked = None
    if not isinstance(checked, str) or not ids.is_valid(checked):
        raise PydanticCustomError("query", "{field} must be a queue id", {"field": info.field_name})
    return checked


# The pattern is for the schema's readers; ids.is_valid stays the one rule.
QueueId = Annotated[
    str,
    Field(
        strict=True,
        pattern="^[0-9A-HJKMNP-TV-Z]{26}$",
        description="Queue id (26 characters).",
    ),
    WrapValidator(_queue_id),
]
MAX_ADDRESS = 256  # a path, RFC 5321 §4.5.3.1.3
Sender = Annotated[
    str,
    Field(strict=True, pattern=r"\S", max_length=MAX_ADDRESS),
    _reasoned(f"sender must be a non-empty string of at most {MAX_ADDRESS} characters"),
]
Limit = Annotated[
    int,
    Field(ge=1, le=MAX_LIMIT, strict=True),
    _reasoned(f"limit must be an integer from 1 to {MAX_LIMIT}"),
]
MinAge = Annotated[
    float, Field(ge=0, strict=True), _reasoned("min_age must be a number of seconds")
]
Sort = Annotated[
    Literal["age", "-age"],
    _reasoned("sort must be age (oldest first) or -age (newest first)"),
]
Recipients = Annotated[
    list[Annotated[str, Field(strict=True, max_length=MAX_ADDRESS)]],
    _reasoned(f"recipients must be a list of addresses of at most {MAX_ADDRESS} characters"),
]


def _state(value: Any, handler: ValidatorFunctionWrapHandler) -> Any:
    try:
        return handler(value)
    except ValidationError:
        raise PydanticCustomError(
            "query", "unknown state {state}", {"state": repr(value)}
        ) from None


State = Annotated[queue.State, WrapValidator(_state)]


class Request(BaseModel):
    """Base of the requests: an unknown field is refused rather than silently ignored, so a
    misspelt filter never widens what a call touches."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class Answer(BaseModel):
    """Base of the answers: a field the reader does not know yet is ignored, so a newer spool
    can add one without breaking an older control service."""

    model_config = ConfigDict(frozen=True)


# -- requests ----------------------------------------------------------------------------


class ListRequest(Request):
    """Messages (oldest first unless `sort` is `-age`), filtered, one page at a time."""

    state: State | None = Field(default=None, description="Only messages in this state.")
    domain: addresses.Domain | None = Field(default=None, description="A recipient domain.")
    sender: Sender | None = Field(default=None, description="Part of the sender address.")
    min_age: MinAge | None = Field(
        default=None, description="Seconds since the message was received, at least."
    )
    sort: Sort = Field(default="age", description="age (oldest first) or -age (newest first).")
    limit: Limit = Field(default=100, description=f"Page size, 1 to {MAX_LIMIT}.")
    after: QueueId | None = Field(
        default=None, description="Queue id to page on from (next_after of the last page)."
    )


class GetRequest(Request):
    id: QueueId


class CountsRequest(Request):
    pass


class StatsRequest(Request):
    """`activity_minutes`: also say what happened in that many last minutes (`system status`)."""

    activity_minutes: int | None = Field(default=None, ge=1, le=1440)


class RetryRequest(Request):
    """Retry one message now (`id`), or every deferred message to a domain (`domain`)."""

    id: QueueId | None = None
    domain: addresses.Domain | None = None

    @model_validator(mode="after")
    def _one_of(self) -> RetryRequest:
        if (self.id is None) == (self.domain is None):
            raise PydanticCustomError("query", "give either id or domain")
        return self


class DeleteRequest(Request):
    """Delete a message (no bounce), or only the recipients given."""

    id: QueueId
    recipients: Recipients | None = None


class HoldRequest(Request):
    id: QueueId


class ReleaseRequest(Request):
    id: QueueId


class FreezeRequest(Request):
    pass


class UnfreezeRequest(Request):
    pass


# -- answers -----------------------------------------------------------------------------


class ErrorAnswer(Answer):
    """A refused or failed call: 400 bad request, 404 no such message, 409 not in a state for
    it, 503 the spool cannot reach what it needs."""

    error: str
    code: Literal[400, 404, 409, 503]


class Omitted(Answer):
    """What an answer left out of a message's record so that it fits NATS's payload limit."""

    recipients: int = Field(default=0, description="Recipients left out (the last ones).")
    history: int = Field(default=0, description="Attempts left out (the oldest ones).")


class ListAnswer(Answer):
    """A page of messages. A page holds at most `limit` messages and fewer when more would not
    fit in one NATS message (`next_after` is set then); each item lists at most
    `LIST_RECIPIENTS` recipients, and `omitted` says, by queue id, what an item leaves out."""

    items: list[queue.Entry]
    next_after: str | None = Field(description="Give as `after` for the next page; null: no more.")
    omitted: dict[str, Omitted] = Field(
        default_factory=dict, description="By queue id: what an item leaves out."
    )


class ItemAnswer(Answer):
    """An answer that carries one message's record: whole unless it would not fit in one NATS
    message; then the oldest attempts, and if need be the last recipients, are left out and
    `omitted` says how many."""

    omitted: Omitted | None = Field(
        default=None,
        exclude_if=lambda value: value is None,
        description="What the record leaves out to fit NATS's payload limit.",
    )


class GetAnswer(ItemAnswer):
    item: queue.Entry


class CountsAnswer(Answer):
    counts: dict[str, int] = Field(description="Messages per state, and `total`.")
    frozen: bool


class Oldest(Answer):
    id: str
    age_seconds: float


class DomainAges(Answer):
    total: int
    ages: list[int]


class Circuit(Answer):
    """A domain whose delivery circuit breaker is not closed (README "Delivery limits")."""

    domain: str
    state: Literal["open", "half-open"]
    failures: int = Field(description="Failed connections counted in the window.")
    until: datetime = Field(
        description="Open: when a probe may go; half-open: when the probe's claim ends "
        "(ISO 8601, UTC; a spool from before this sent Unix time, read as the same instant)."
    )
    reason: str = Field(default="", description="The last failure's reply.")


class DomainActivity(Answer):
    delivered: int
    deferred: int
    failed: int
    failure_ratio: float | None = Field(description="failed / (delivered + failed); null: none")


class Activity(Answer):
    """What the queue went through in the last `minutes`: messages received, and recipients
    by the outcome of their attempts (from the records, which keep finished messages)."""

    minutes: int
    received: int
    received_per_minute: float
    delivered: int
    delivered_per_minute: float
    deferred: int
    failed: int
    failure_ratio: float | None = Field(description="failed / (delivered + failed); null: none")
    by_domain: dict[str, DomainActivity] = Field(
        description="The domains with the most recipients attempted first (at most 20)."
    )
    domains_omitted: int = 0


class StatsAnswer(Answer):
    """Counts by state and domain, the oldest waiting message and age buckets (qshape)."""

    by_state: dict[str, int]
    total: int
    waiting: int
    oldest: Oldest | None
    buckets: list[str] = Field(description="Labels of the age buckets in minutes, newest first.")
    ages: list[int] = Field(description="Waiting messages per age bucket.")
    by_domain: dict[str, DomainAges] = Field(
        description="The domains with the most waiting messages first."
    )
    frozen: bool
    domains_omitted: int = Field(
        default=0, description="Domains left out of by_domain (the least busy) to fit NATS."
    )
    circuits: list[Circuit] = Field(
        default_factory=list, description="Domains whose delivery circuit breaker is not closed."
    )
    activity: Activity | None = Field(
        default=None, description="Asked for with activity_minutes; null otherwise."
    )


class RetryAnswer(ItemAnswer):
    retried: int
    item: queue.Entry | None = Field(
        default=None,
        exclude_if=lambda item: item is None,
        description="The message, when one was retried by id.",
    )


class DeleteAnswer(ItemAnswer):
    deleted: bool
    item: queue.Entry | None = Field(description="What is left, when only recipients went.")


class HoldAnswer(ItemAnswer):
    item: queue.Entry


class ReleaseAnswer(ItemAnswer):
    item: queue.Entry


class FreezeAnswer(Answer):
    frozen: bool


class UnfreezeAnswer(Answer):
    frozen: bool


# -- sizes ------------------------------------------------------------------------------

LIST_RECIPIENTS = 100  # recipients shown per item of a list
RESERVE = 4096  # bytes of a NATS payload kept for what wraps the items


def fit(
    entry: queue.Entry, budget: int, *, max_recipients: int | None = None
) -> tuple[queue.Entry, Omitted | None]:
    """`entry` as JSON of at most `budget` bytes (its recipients cut to `max_recipients`
    first): the oldest attempts go first, then the last recipients; what went is returned."""
    recipients, history = entry.recipients, entry.history
    if max_recipients is not None:
        recipients = recipients[:max_recipients]

    def shaped() -> queue.Entry:
        return entry.model_copy(update={"recipients": recipients, "history": history})

    def size() -> int:
        return len(shaped().model_dump_json())

    while history and size() > budget:
        history = history[1:]
    while len(recipients) > 1 and size() > budget:
        recipients = recipients[: len(recipients) // 2]
    cut = Omitted(
        recipients=len(entry.recipients) - len(recipients),
        history=len(entry.history) - len(history),
    )
    if not (cut.recipients or cut.history):
        return entry, None
    return shaped(), cut


def fit_answer(answer: AnswerT, budget: int) -> AnswerT:
    """`answer` cut to at most `budget` bytes of JSON where it can be, saying what it left
    out: a record's attempts and recipients (`fit`), the least busy domains of the stats."""
    if len(answer.model_dump_json()) <= budget:
        return answer
    item = getattr(answer, "item", None)
    if isinstance(answer, ItemAnswer) and isinstance(item, queue.Entry):
        fitted, omitted = fit(item, budget - 200)
        return answer.model_copy(update={"item": fitted, "omitted": omitted})
    if isinstance(answer, StatsAnswer):
        domains = list(answer.by_domain.items())  # the busiest first
        keep = len(domains)
        while (
            keep
            and len(answer.model_copy(update={"by_domain": dict(domains[:keep])}).model_dump_json())
            > budget - 100
        ):
            keep //= 2
        return answer.model_copy(
            update={"by_domain": dict(domains[:keep]), "domains_omitted": len(domains) - keep}
        )
    return answer


def fit_page(
    entries: list[queue.Entry], budget: int, *, more: bool
) -> tuple[list[queue.Entry], dict[str, Omitted], bool]:
    """As many of `entries` (in order) as fit in `budget` bytes of JSON, each cut to fit
    alone; and whether more remain (`more`: there were more than `entries` to begin with)."""
    items: list[queue.Entry] = []
    omitted: dict[str, Omitted] = {}
    used = 0
    for entry in entries:
        item, cut = fit(entry, budget, max_recipients=LIST_RECIPIENTS)
        size = len(item.model_dump_json()) + 1
        if cut is not None:
            size += len(entry.id) + len(cut.model_dump_json()) + 4
        if items and used + size > budget:
            return items, omitted, True
        items.append(item)
        used += size
        if cut is not None:
            omitted[entry.id] = cut
    return items, omitted, more


# -- calls -------------------------------------------------------------------------------

RequestT = TypeVar("RequestT", bound=Request)
AnswerT = TypeVar("AnswerT", bound=Answer)


@dataclass(frozen=True, slots=True)
class Call(Generic[RequestT, AnswerT]):
    """One call of the API: its subject and the shapes of its request and answer."""

    name: str
    subject: str
    _: KW_ONLY
    request: type[RequestT]
    answer: type[AnswerT]


LIST = Call("list", names.QUERY_LIST_SUBJECT, request=ListRequest, answer=ListAnswer)
GET = Call("get", names.QUERY_GET_SUBJECT, request=GetRequest, answer=GetAnswer)
COUNTS = Call("counts", names.QUERY_COUNTS_SUBJECT, request=CountsRequest, answer=CountsAnswer)
STATS = Call("stats", names.QUERY_STATS_SUBJECT, request=StatsRequest, answer=StatsAnswer)
RETRY = Call("retry", names.QUERY_RETRY_SUBJECT, request=RetryRequest, answer=RetryAnswer)
DELETE = Call("delete", names.QUERY_DELETE_SUBJECT, request=DeleteRequest, answer=DeleteAnswer)
HOLD = Call("hold", names.QUERY_HOLD_SUBJECT, request=HoldRequest, answer=HoldAnswer)
RELEASE = Call("release", names.QUERY_RELEASE_SUBJECT, request=ReleaseRequest, answer=ReleaseAnswer)
FREEZE = Call("freeze", names.QUERY_FREEZE_SUBJECT, request=FreezeRequest, answer=FreezeAnswer)
UNFREEZE = Call(
    "unfreeze", names.QUERY_UNFREEZE_SUBJECT, request=UnfreezeRequest, answer=UnfreezeAnswer
)

CALLS: tuple[Call[Any, Any], ...] = (
    LIST,
    GET,
    COUNTS,
    STATS,
    RETRY,
    DELETE,
    HOLD,
    RELEASE,
    FREEZE,
    UNFREEZE,
)


def reason(error: ValidationError) -> str:
    """One line for whoever made the request, naming each field that is wrong."""
    parts = []
    for problem in error.errors():
        field = ".".join(str(part) for part in problem["loc"])
        if problem["type"] == "query":
            parts.append(problem["msg"])
        elif problem["type"] == "missing":
            parts.append(f"{field} is required")
        elif problem["type"] == "extra_forbidden":
            parts.append(f"unknown field {field!r}")
        else:
            parts.append(f"{field}: {problem['msg']}" if field else problem["msg"])
    return "; ".join(parts)


def parse_request(model: type[RequestT], data: bytes | dict[str, Any]) -> RequestT:
    """A request from its JSON (or from the fields given); `BadQuery` with the reason."""
    if isinstance(data, dict):
        raw: Any = data
    elif not data:
        raw = {}
    else:
        try:
            raw = json.loads(data)
        except json.JSONDecodeError as error:
            raise BadQuery(f"request is not JSON: {error}") from None
    if not isinstance(raw, dict):
        raise BadQuery("request must be a JSON object")
    try:
        return model.model_validate(raw)
    except ValidationError as error:
        raise BadQuery(reason(error)) from None


def parse_answer(model: type[AnswerT], data: bytes) -> AnswerT | ErrorAnswer:
    """An answer from its JSON: the call's answer, or the error the spool gave instead."""
    raw = json.loads(data)
    if isinstance(raw, dict) and "error" in raw:
        return ErrorAnswer.model_validate(raw)
    return model.model_validate(raw)


# -- schemas -----------------------------------------------------------------------------


def schema_files() -> dict[str, Callable[[], dict[str, Any]]]:
    """File name and schema of every request and answer: `queue.<call>.<request|answer>.json`
    (a request as the spool accepts it, an answer as the spool writes it)."""
    files: dict[str, Callable[[], dict[str, Any]]] = {}
    for call in CALLS:
        files[f"queue.{call.name}.request.json"] = call.request.model_json_schema
        files[f"queue.{call.name}.answer.json"] = functools.partial(
            call.answer.model_json_schema, mode="serialization"
        )
    files["queue.error.answer.json"] = ErrorAnswer.model_json_schema
    return files


def export_schemas(directory: Path) -> list[Path]:
    """Write the JSON schema of every request and answer into `directory`."""
    directory.mkdir(parents=True, exist_ok=True)
    written = []
    for name, schema in schema_files().items():
        path = directory / name
        path.write_text(json.dumps(schema(), indent=2, sort_keys=True) + "\n")
        written.append(path)
    return written
