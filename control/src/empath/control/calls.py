"""What every call of the control API shares: the application's keys, the route description
each area's table is made of, reading a call's parameters, asking the spool, and answers.

A handler that cannot go on raises `Problem`; the `problems` middleware turns it into the
JSON error answer (`{"error": reason}`) with its status, so every refusal looks the same.
"""

from __future__ import annotations

import json
import logging
import re
import typing
from collections.abc import Awaitable, Callable
from dataclasses import KW_ONLY, dataclass
from typing import Any, TypeVar

import nats.errors
from aiohttp import web
from pydantic import (
    BaseModel,
    ConfigDict,
    ValidationError,
    ValidatorFunctionWrapHandler,
    WrapValidator,
)
from pydantic_core import PydanticCustomError

from empath.control import audit, link, tokens
from empath.core import ids, queries, store

log = logging.getLogger("empath.control")

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

LINK: web.AppKey[link.Link] = web.AppKey("link", link.Link)
OBJECTS: web.AppKey[store.ObjectStore] = web.AppKey("objects", store.ObjectStore)
TOKENS: web.AppKey[tokens.Tokens] = web.AppKey("tokens", tokens.Tokens)
AUDIT: web.AppKey[audit.AuditLog] = web.AppKey("audit", audit.AuditLog)
STARTED: web.AppKey[float] = web.AppKey("started", float)
DOCUMENT: web.AppKey[dict[str, Any]] = web.AppKey("document", dict)

SPOOL_TIMEOUT = 10.0
# A JSON body of the API is a few short fields (a target, a domain, some recipients): this
# bounds what a call makes the service read and parse.
MAX_BODY = 64 * 1024


class Model(BaseModel):
    """Base of the control API's own answers: exactly these fields, so the document's schemas
    say precisely what a client gets."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class Parameters(BaseModel):
    """Base of what a call takes (a JSON body or query parameters): the handlers read them with
    these models (`body_of`, `query_parameters`) and the document is made from the same, so the
    two cannot differ. Fields they do not know are ignored."""

    model_config = ConfigDict(frozen=True)


ParametersT = TypeVar("ParametersT", bound=Parameters)


def on_wrong_type(reason: str) -> WrapValidator:
    """Answer `reason` when a field is not of its JSON type at all (a number for a string), and
    the field's own reason when it is of its type but wrong."""

    def validate(value: Any, handler: ValidatorFunctionWrapHandler) -> Any:
        try:
            return handler(value)
        except ValidationError as error:
            if any(problem["type"].endswith("_type") for problem in error.errors()):
                raise PydanticCustomError("query", reason) from None
            raise

    return WrapValidator(validate)


class ProblemAnswer(Model):
    """Every refusal: the status says what kind, `error` says why."""

    error: str


class Problem(Exception):
    """Stop handling a call and answer `status` with `reason`."""

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason


@dataclass(frozen=True, slots=True)
class Route:
    """One call: how aiohttp routes it, and what the OpenAPI document says about it."""

    method: str
    path: str
    _: KW_ONLY
    handler: Handler
    summary: str
    answer: type[BaseModel]
    body: type[BaseModel] | None = None  # a JSON request body (optional for the caller)
    query: type[BaseModel] | None = None  # query parameters, one per field
    refusals: tuple[int, ...] = (400, 503)  # error statuses besides 401
    open: bool = False  # answered without the token
    reads_message: bool = False  # shows a message's content: audited like a change

    @property
    def mutating(self) -> bool:
        return self.method in MUTATING

    @property
    def audited(self) -> bool:
        return self.mutating or self.reads_message

    def definition(self) -> web.RouteDef:
        if self.method == "GET":  # answers HEAD too, as aiohttp's GET routes do
            return web.get(self.path, self.handler)
        return web.route(self.method, self.path, self.handler)


MUTATING = {"POST", "PUT", "PATCH", "DELETE"}


def path_parameters(path: str) -> list[str]:
    """The names of a route path's variable parts (`/api/v1/queue/{id}` -> ["id"])."""
    return re.findall(r"\{(\w+)\}", path)


def problem(status: int, reason: str) -> web.Response:
    return reply(ProblemAnswer(error=reason), status=status)


def reply(answer: BaseModel, *, status: int = 200) -> web.Response:
    return web.json_response(text=answer.model_dump_json(), status=status)


@web.middleware
async def problems(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Refusals as JSON answers; a failure nobody foresaw is logged with its traceback here
    and answered 500 with one line, never with the traceback."""
    try:
        return await handler(request)
    except Problem as refused:
        return problem(refused.status, refused.reason)
    except nats.errors.Error as error:  # NATS lost or restarting: the call may work again
        return problem(503, f"NATS: {error!r}")
    except web.HTTPRequestEntityTooLarge:
        return problem(413, f"the body is larger than {MAX_BODY} bytes")
    except web.HTTPException:
        raise
    except Exception:
        log.exception("%s %s failed", request.method, request.path)
        return problem(500, "internal error (logged by the control service)")


def message_id(request: web.Request) -> str:
    value = request.match_info["id"]
    if not ids.is_valid(value):
        raise Problem(400, f"not a queue id: {value!r}")
    return value


def number(request: web.Request, name: str, *, integer: bool = False) -> float | int | None:
    raw = request.query.get(name)
    if raw is None:
        return None
    try:
        return int(raw) if integer else float(raw)
    except ValueError:
        raise Problem(400, f"{name} must be a number, got {raw!r}") from None


async def body_of(request: web.Request, model: type[ParametersT]) -> ParametersT:
    """The call's JSON body (none: `{}`) read into `model`; 400 with the reason."""
    return _parameters(model, await json_body(request))


def query_parameters(request: web.Request, model: type[ParametersT]) -> ParametersT:
    """The call's query parameters read into `model`: a list field takes every value given
    (`?recipient=a&recipient=b`), any other field the last one; 400 with the reason."""
    fields = {}
    for name, field in model.model_fields.items():
        values = request.query.getall(name, [])
        if values:
            fields[name] = values if _is_list(field.annotation) else values[-1]
    return _parameters(model, fields)


def _is_list(annotation: Any) -> bool:
    return typing.get_origin(annotation) is list or any(
        _is_list(argument) for argument in typing.get_args(annotation)
    )


def _parameters(model: type[ParametersT], fields: dict[str, Any]) -> ParametersT:
    try:
        return model.model_validate(fields)
    except ValidationError as error:
        raise Problem(400, queries.reason(error)) from None


async def json_body(request: web.Request) -> dict[str, Any]:
    if not request.can_read_body:
        return {}
    raw = await request.read()  # aiohttp refuses more than the app's client_max_size: 413
    if not raw.strip():
        return {}
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as error:
        raise Problem(400, f"body is not UTF-8: {error.reason} at byte {error.start}") from None
    try:
        body = json.loads(text)
    except json.JSONDecodeError as error:
        raise Problem(400, f"body is not JSON: {error}") from None
    except RecursionError:
        raise Problem(400, "body is not JSON this API takes: nested too deeply") from None
    if not isinstance(body, dict):
        raise Problem(400, "body must be a JSON object")
    return body


def query_of(model: type[queries.RequestT], **fields: Any) -> queries.RequestT:
    """A spool request from what the HTTP call gave (None: not given); 400 when it is wrong,
    with the reason the spool itself would give."""
    try:
        return queries.parse_request(
            model, {name: value for name, value in fields.items() if value is not None}
        )
    except queries.BadQuery as error:
        raise Problem(400, str(error)) from None


async def ask(
    request: web.Request,
    call: queries.Call[queries.RequestT, queries.AnswerT],
    query: queries.RequestT,
) -> queries.AnswerT:
    """Put a queue call to the spool (NATS request/reply) and return its answer; the spool's
    refusals become `Problem`s with its code."""
    connection = request.app[LINK]
    down = connection.problem()
    if down is not None:
        raise Problem(503, down)
    try:
        message = await connection.bus.nc.request(
            call.subject, query.model_dump_json(exclude_unset=True).encode(), SPOOL_TIMEOUT
        )
    except nats.errors.NoRespondersError:
        raise Problem(503, "no spool is running") from None
    except nats.errors.MaxPayloadError:
        raise Problem(400, "the request is larger than NATS carries") from None
    except (nats.errors.Error, OSError) as error:
        raise Problem(503, f"the spool did not answer: {error!r}") from None
    try:
        answer = queries.parse_answer(call.answer, message.data)
    except ValueError as error:  # not JSON, or not the answer's shape: another version?
        raise Problem(503, f"the spool's answer does not fit: {error}") from None
    if isinstance(answer, queries.ErrorAnswer):
        raise Problem(answer.code, answer.error)
    return answer
