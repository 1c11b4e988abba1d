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
from signalite.model.validate import validate_input
from signalite.store.base import StoreUnavailable
from signalite.web.auth import Caller

Handler = Callable[[web.BaseRequest, Operation, Caller, dict[str, Any]], Awaitable[Mapping[str, Any]]]
Authenticate = Callable[[web.BaseRequest, bytes], Awaitable[Caller]]
Authorize = Callable[[Operation, Caller, Mapping[str, Any]], Awaitable[None]]
# (operation or "unknown", HTTP status, seconds, error code or None): for metrics.
Observe = Callable[[str, int, float, str | None], None]

JSON_HEADERS = {"Content-Type": "application/json"}


_REQUEST_PREFIX = uuid.uuid4().hex[:20]
_request_counter = itertools.count(1)


def new_request_id() -> str:
    """A unique request id in UUID shape: a random per-process prefix and a counter.

    `uuid4()` costs a getrandom() system call per request; uniqueness is all a request id needs.
    """
    n = next(_request_counter) & 0xFFFFFFFFFFFF
    p = _REQUEST_PREFIX
    return f"{p[:8]}-{p[8:12]}-{p[12:16]}-{p[16:20]}-{n:012x}"


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
        self._routes = route_table()
        self._handlers = handlers
        self._authenticate = authenticate
        self._authorize = authorize
        self._observe = observe

    async def handle(self, request: web.BaseRequest) -> web.StreamResponse:
        started = time.perf_counter()
        response, code = await self._handle(request)
        if self._observe is not None:
            op = self._routes.get(request.path)
            self._observe(op.name if op else "unknown", response.status, time.perf_counter() - started, code)
        return response

    def knows(self, path: str) -> bool:
        return path in self._routes

    async def _handle(self, request: web.BaseRequest) -> tuple[web.Response, str | None]:
        request_id = new_request_id()
        op = self._routes.get(request.path)
        try:
            if op is None or request.method != "POST":
                raise UnknownOperationException(f"Unknown operation: {request.method} {request.path}")
            try:
                body = await request.read()
            except web.HTTPRequestEntityTooLarge:
                raise RequestEntityTooLargeException("The request body is too large.") from None
            except ConnectionError:
                # The client hung up mid-body: nobody is left to answer, and it is no crash.
                event(logging.DEBUG, "request.abandoned", request_id=request_id, path=request.path)
                raise SerializationException("The request body ended early.") from None
            caller = await self._authenticate(request, body)
            params = _parse_body(body)
            validate_input(op, params)
            handler = self._handlers.get(op.service)
            if handler is None:
                raise NotImplementedException(f"{op.name} is not implemented by signalite.")
            await self._authorize(op, caller, params)
            result = await handler(request, op, caller, params)
        except ServiceError as e:
            if e.status >= 500:
                event(logging.WARNING, "request.failed", request_id=request_id, path=request.path, code=e.code)
            else:
                event(logging.INFO, "request.refused", request_id=request_id, path=request.path, code=e.code)
            return error_response(e, request_id), e.code
        except StoreUnavailable:
            event(logging.WARNING, "store.unavailable", request_id=request_id, path=request.path)
            unavailable = ServiceUnavailableException("The database is unavailable; retry shortly.")
            return error_response(unavailable, request_id), unavailable.code
        except Exception:
            logging.getLogger("signalite").exception(
                "request.crashed", extra={"fields": {"request_id": request_id, "path": request.path}}
            )
            return error_response(InternalFailure("An internal error occurred."), request_id), "InternalFailure"
        response = web.Response(
            body=orjson.dumps(result),
            headers={"Content-Type": "application/json", "x-amzn-RequestId": request_id},
        )
        return response, None


def _parse_body(body: bytes) -> dict[str, Any]:
    if not body.strip():
        return {}
    try:
        params = orjson.loads(body)
    except orjson.JSONDecodeError:
        raise SerializationException("The request body is not valid JSON.") from None
    if not isinstance(params, dict):
        raise SerializationException("The request body must be a JSON object.")
    return _without_nulls(params)


def _without_nulls(value: dict[str, Any], depth: int = 0) -> dict[str, Any]:
    """AWS's JSON protocols treat a member set to null as absent; so do we.

    The models nest structures only a few levels deep, so deeper junk is left alone (and, being
    unknown members, ignored) rather than walked: a hostile body can nest a thousand levels.
    """
    if depth >= 8:
        return value
    return {k: _without_nulls(v, depth + 1) if isinstance(v, dict) else v for k, v in value.items() if v is not None}
