"""The rest-json adapter: every modeled POST path of the three services, on one port.

Per request: find the operation by path, read the bounded body, parse JSON, validate against the
service model, run the operation, and write either the JSON result or an AWS-shaped error
(`x-amzn-ErrorType: <Code>`, `{"__type","message","Message"}`) that boto3 and the JS SDK turn into
the modeled exception class. An unexpected exception is logged with its request id and answered
with a JSON InternalFailure — never a traceback.
"""

from __future__ import annotations

import itertools
import logging
import time
import uuid
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any

import orjson
from aiohttp import web

from signalite.log import event
from signalite.model.errors import (
    InternalFailure,
    NotImplementedException,
    RequestEntityTooLargeException,
    SerializationException,
    ServiceError,
    ServiceUnavailableException,
    UnknownOperationException,
)
from signalite.model.service import Operation, route_table
from signalite.model.validate import Validator, operation_validator
from signalite.store.base import StoreUnavailable
from signalite.web.auth import Caller

Handler = Callable[[web.BaseRequest, Operation, Caller, dict[str, Any]], Awaitable[Mapping[str, Any]]]
Authenticate = Callable[[web.BaseRequest, bytes], Awaitable[Caller]]
Authorize = Callable[[Operation, Caller, Mapping[str, Any]], Awaitable[None]]
# (operation or "unknown", HTTP status, seconds, error code or None): for metrics.
Observe = Callable[[str, int, float, str | None], None]

JSON_HEADERS = {"Content-Type": "application/json"}


_REQUEST_PREFIX = uuid.uuid4().hex[:20]
# The constant part of every request id, dashes included, formatted once.
_REQUEST_ID_HEAD = f"{_REQUEST_PREFIX[:8]}-{_REQUEST_PREFIX[8:12]}-{_REQUEST_PREFIX[12:16]}-{_REQUEST_PREFIX[16:20]}-"
_request_counter = itertools.count(1)


def new_request_id() -> str:
    """A unique request id in UUID shape: a random per-process prefix and a counter.

    `uuid4()` costs a getrandom() system call per request; uniqueness is all a request id needs.
    """
    return f"{_REQUEST_ID_HEAD}{next(_request_counter) & 0xFFFFFFFFFFFF:012x}"


def error_response(error: ServiceError, request_id: str | None = None) -> web.Response:
    """An AWS rest-json error response."""
    if request_id is None:
        request_id = new_request_id()
    # A message may quote client bytes that are not UTF-8 (aiohttp hands them over as surrogate
    # escapes); show them escaped rather than fail to encode the error.
    message = error.message.encode("utf-8", "backslashreplace").decode("utf-8")
    body = orjson.dumps({"__type": error.code, "message": message, "Message": message})
    return web.Response(
        status=error.status,
        body=body,
        headers={
            "Content-Type": "application/json",
            "x-amzn-RequestId": request_id,
            "x-amzn-ErrorType": error.code,
        },
    )


@dataclass(frozen=True, slots=True)
class _Route:
    """What one modeled path needs per request, resolved once."""

    op: Operation
    validate: Validator
    handler: Handler | None


class RestApi:
    """Dispatches modeled POST paths to the handler of their service."""

    def __init__(
        self,
        handlers: Mapping[str, Handler],
        authenticate: Authenticate,
        authorize: Authorize,
        observe: Observe | None = None,
    ) -> None:
        # handlers: service name -> handler for that service's operations.
        self._routes = {
            path: _Route(op, operation_validator(op), handlers.get(op.service)) for path, op in route_table().items()
        }
        self._authenticate = authenticate
        self._authorize = authorize
        self._observe = observe

    def knows(self, path: str) -> bool:
        return path in self._routes

    async def handle(self, request: web.BaseRequest) -> web.Response:
        started = time.perf_counter()
        request_id = new_request_id()
        route = self._routes.get(request.path)
        code: str | None = None
        try:
            if route is None or request.method != "POST":
                raise UnknownOperationException(f"Unknown operation: {request.method} {request.path}")
            op = route.op
            try:
                body = await _read_body(request)
            except web.HTTPRequestEntityTooLarge:
                raise RequestEntityTooLargeException("The request body is too large.") from None
            except ConnectionError:
                # The client hung up mid-body: nobody is left to answer, and it is no crash.
                event(logging.DEBUG, "request.abandoned", request_id=request_id, path=request.path)
                raise SerializationException("The request body ended early.") from None
            caller = await self._authenticate(request, body)
            params = _parse_body(body)
            route.validate(params)
            handler = route.handler
            if handler is None:
                raise NotImplementedException(f"{op.name} is not implemented by signalite.")
            await self._authorize(op, caller, params)
            result = await handler(request, op, caller, params)
        except ServiceError as e:
            if e.status >= 500:
                event(logging.WARNING, "request.failed", request_id=request_id, path=request.path, code=e.code)
            else:
                event(logging.INFO, "request.refused", request_id=request_id, path=request.path, code=e.code)
            response, code = error_response(e, request_id), e.code
        except StoreUnavailable:
            event(logging.WARNING, "store.unavailable", request_id=request_id, path=request.path)
            unavailable = ServiceUnavailableException("The database is unavailable; retry shortly.")
            response, code = error_response(unavailable, request_id), unavailable.code
        except Exception:
            logging.getLogger("signalite").exception(
                "request.crashed", extra={"fields": {"request_id": request_id, "path": request.path}}
            )
            response, code = (
                error_response(InternalFailure("An internal error occurred."), request_id),
                "InternalFailure",
            )
        else:
            response = web.Response(
                body=orjson.dumps(result),
                headers={"Content-Type": "application/json", "x-amzn-RequestId": request_id},
            )
        if self._observe is not None:
            self._observe(route.op.name if route else "unknown", response.status, time.perf_counter() - started, code)
        return response


async def _read_body(request: web.BaseRequest) -> bytes:
    """The request body, as `request.read()` returns it.

    The usual small request arrives whole with its headers, so its payload stream is already at
    EOF: take the buffered bytes at once rather than through read()'s chunk loop (two awaits and a
    bytearray copy). Anything still arriving goes through read().
    """
    payload = request.content
    if not payload.is_eof():
        return await request.read()
    body = payload.read_nowait()
    limit = request.client_max_size
    if limit and len(body) > limit:  # read()'s own test
        raise RequestEntityTooLargeException("The request body is too large.")
    return body if type(body) is bytes else bytes(body)


def _parse_body(body: bytes) -> dict[str, Any]:
    try:
        params = orjson.loads(body)
    except orjson.JSONDecodeError:
        if not body.strip():  # an empty (or blank) body means no members
            return {}
        raise SerializationException("The request body is not valid JSON.") from None
    if not isinstance(params, dict):
        raise SerializationException("The request body must be a JSON object.")
    # A JSON null can only be spelled `null`: a body without those four bytes has none to drop.
    return _without_nulls(params) if b"null" in body else params


def _without_nulls(value: dict[str, Any], depth: int = 0) -> dict[str, Any]:
    """AWS's JSON protocols treat a member set to null as absent; so do we.

    The models nest structures only a few levels deep, so deeper junk is left alone (and, being
    unknown members, ignored) rather than walked: a hostile body can nest a thousand levels.
    """
    if depth >= 8:
        return value
    return {k: _without_nulls(v, depth + 1) if isinstance(v, dict) else v for k, v in value.items() if v is not None}
