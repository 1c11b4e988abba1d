"""The REST adapter's hot-path shortcuts give the same answers as the plain way.

Body reading (take the buffered body at EOF instead of read()'s loop), body parsing (skip the null
stripping when the bytes hold no `null`), request ids, and RestApi.handle end to end with stub
authentication and handlers: status, headers, body and the metrics observation.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Mapping
from typing import Any
from unittest import mock

import orjson
import pytest
from aiohttp import streams, web
from aiohttp.test_utils import make_mocked_request
from hypothesis import given
from hypothesis import strategies as st

from signalite.model.errors import (
    RequestEntityTooLargeException,
    ResourceNotFoundException,
    SerializationException,
    ServiceError,
)
from signalite.model.service import Operation
from signalite.web.auth import Caller
from signalite.web.rest import RestApi, _parse_body, _read_body, _without_nulls, new_request_id

# -- parsing -------------------------------------------------------------------------------------------


def reference_parse(body: bytes) -> dict[str, Any]:
    """_parse_body as it was: strip first, parse, always drop nulls."""
    if not body.strip():
        return {}
    try:
        params = orjson.loads(body)
    except orjson.JSONDecodeError:
        raise SerializationException("The request body is not valid JSON.") from None
    if not isinstance(params, dict):
        raise SerializationException("The request body must be a JSON object.")
    return _without_nulls(params)


def parse_outcome(fn: Any, body: bytes) -> Any:
    try:
        return ("ok", fn(body))
    except ServiceError as e:
        return ("error", e.code, e.message)


JSON = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**63), 2**63 - 1) | st.floats(allow_nan=False) | st.text(max_size=6),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3),
    max_leaves=12,
)


@given(value=JSON, pad=st.sampled_from([b"", b" ", b"\n", b"\t \r\n", b"\x0b", b"\x0c"]))
def test_parse_body_matches_the_reference(value: Any, pad: bytes) -> None:
    body = pad + orjson.dumps(value) + pad
    assert parse_outcome(_parse_body, body) == parse_outcome(reference_parse, body)


@pytest.mark.parametrize(
    "body",
    [
        b"", b" ", b"\r\n", b"\x0b", b"\x0b{}", b"{}", b"[]", b"null", b"1", b'"x"', b"{", b"\xff", b"{}x",
        b'{"a": null}', b'{"a": "null"}', b'{"a": {"b": null, "c": 1}}', b'{"nullable": 1}', b'{"a": [null]}',
        b'{"ChannelName": "bench-00042"}', b'{"a":' + b'{"a":' * 20 + b"null" + b"}" * 21,
    ],
)  # fmt: skip
def test_parse_body_chosen_cases(body: bytes) -> None:
    assert parse_outcome(_parse_body, body) == parse_outcome(reference_parse, body)


# -- request ids ------------------------------------------------------------------------------------------


def test_request_ids_are_uuid_shaped_and_distinct() -> None:
    ids = [new_request_id() for _ in range(1000)]
    assert len(set(ids)) == len(ids)
    shape = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")
    assert all(shape.fullmatch(i) for i in ids)
    assert len({i[:24] for i in ids}) == 1  # one per-process prefix, then the counter
    assert int(ids[1][24:], 16) == int(ids[0][24:], 16) + 1


# -- reading -------------------------------------------------------------------------------------------------


def request_with(chunks: list[bytes], *, eof: bool = True, client_max_size: int = 1024**2) -> web.BaseRequest:
    loop = asyncio.get_running_loop()
    payload = streams.StreamReader(mock.Mock(_reading_paused=False), 2**16, loop=loop)
    for chunk in chunks:
        payload.feed_data(chunk)
    if eof:
        payload.feed_eof()
    return make_mocked_request("POST", "/describeSignalingChannel", payload=payload, client_max_size=client_max_size)


@pytest.mark.parametrize("chunks", [[], [b""], [b'{"a": 1}'], [b'{"a":', b" 1}"], [b"x" * 5000, b"y" * 3]])
async def test_read_body_at_eof_equals_read(chunks: list[bytes]) -> None:
    assert await _read_body(request_with(chunks)) == await request_with(chunks).read()


async def test_read_body_refuses_what_read_refuses() -> None:
    body = [b"x" * 100]
    assert await _read_body(request_with(body, client_max_size=100)) == b"x" * 100
    with pytest.raises(RequestEntityTooLargeException):
        await _read_body(request_with(body, client_max_size=99))
    with pytest.raises(web.HTTPRequestEntityTooLarge):
        await request_with(body, client_max_size=99).read()
    assert await _read_body(request_with(body, client_max_size=0)) == b"x" * 100  # 0: no limit, as read()


async def test_read_body_waits_for_a_body_still_arriving() -> None:
    request = request_with([b'{"a":'], eof=False)
    reading = asyncio.ensure_future(_read_body(request))
    await asyncio.sleep(0)
    assert not reading.done()
    request.content.feed_data(b" 1}")
    request.content.feed_eof()
    assert await reading == b'{"a": 1}'


# -- RestApi.handle -------------------------------------------------------------------------------------------


class Stubs:
    def __init__(self, result: Mapping[str, Any] | Exception) -> None:
        self.result = result
        self.observed: list[tuple[str, int, str | None]] = []
        self.calls: list[tuple[str, dict[str, Any]]] = []

    async def authenticate(self, request: web.BaseRequest, body: bytes) -> Caller:
        return Caller("000000000000", "us-east-1")

    async def authorize(self, op: Operation, caller: Caller, params: Mapping[str, Any]) -> None:
        return None

    async def handler(
        self, request: web.BaseRequest, op: Operation, caller: Caller, params: dict[str, Any]
    ) -> Mapping[str, Any]:
        self.calls.append((op.name, params))
        if isinstance(self.result, Exception):
            raise self.result
        return self.result

    def observe(self, operation: str, status: int, seconds: float, code: str | None) -> None:
        assert seconds >= 0
        self.observed.append((operation, status, code))

    def api(self) -> RestApi:
        handlers = {"kinesisvideo": self.handler, "kinesis-video-signaling": self.handler}
        return RestApi(handlers, self.authenticate, self.authorize, self.observe)


def post(path: str, body: bytes, method: str = "POST") -> web.BaseRequest:
    loop = asyncio.get_running_loop()
    payload = streams.StreamReader(mock.Mock(_reading_paused=False), 2**16, loop=loop)
    payload.feed_data(body)
    payload.feed_eof()
    return make_mocked_request(method, path, payload=payload)


def answer(response: web.StreamResponse) -> tuple[int, dict[str, str], Any]:
    assert isinstance(response, web.Response) and isinstance(response.body, bytes)
    return response.status, dict(response.headers), orjson.loads(response.body)


async def test_success_answers_json_with_a_request_id() -> None:
    stubs = Stubs({"ChannelInfo": {"ChannelName": "bench-00042"}})
    status, headers, body = answer(
        await stubs.api().handle(post("/describeSignalingChannel", b'{"ChannelName": "bench-00042", "X": null}'))
    )
    assert status == 200 and body == {"ChannelInfo": {"ChannelName": "bench-00042"}}
    assert headers["Content-Type"] == "application/json"
    assert re.fullmatch(r"[0-9a-f-]{36}", headers["x-amzn-RequestId"])
    assert "x-amzn-ErrorType" not in headers
    assert stubs.calls == [("DescribeSignalingChannel", {"ChannelName": "bench-00042"})]
    assert stubs.observed == [("DescribeSignalingChannel", 200, None)]


@pytest.mark.parametrize(
    ("path", "body", "status", "code", "observed_as", "message"),
    [
        ("/describeSignalingChannel", b"{", 400, "SerializationException", "DescribeSignalingChannel",
         "The request body is not valid JSON."),
        ("/describeSignalingChannel", b"[1]", 400, "SerializationException", "DescribeSignalingChannel",
         "The request body must be a JSON object."),
        ("/describeSignalingChannel", b'{"ChannelName": "a b"}', 400, "InvalidArgumentException",
         "DescribeSignalingChannel", "1 validation error detected: Value 'a b' at 'channelName' failed to satisfy "
         "constraint: Member must satisfy regular expression pattern: [a-zA-Z0-9_.-]+"),
        ("/nope", b"{}", 404, "UnknownOperationException", "unknown", "Unknown operation: POST /nope"),
        ("/joinStorageSession", b'{"channelArn": "arn:aws:kinesisvideo:us-east-1:1:channel/a/1"}', 501,
         "NotImplementedException", "JoinStorageSession", "JoinStorageSession is not implemented by signalite."),
    ],
)  # fmt: skip
async def test_refusals_are_aws_shaped(
    path: str, body: bytes, status: int, code: str, observed_as: str, message: str
) -> None:
    stubs = Stubs({})
    got_status, headers, got = answer(await stubs.api().handle(post(path, body)))
    assert (got_status, headers["x-amzn-ErrorType"], headers["Content-Type"]) == (status, code, "application/json")
    assert got == {"__type": code, "message": message, "Message": message}
    assert stubs.observed == [(observed_as, status, code)]
    assert stubs.calls == []


async def test_errors_from_the_handler_and_crashes() -> None:
    stubs = Stubs(ResourceNotFoundException("The requested channel is not found or not active."))
    status, headers, body = answer(await stubs.api().handle(post("/describeSignalingChannel", b'{"ChannelName": "a"}')))
    assert (status, headers["x-amzn-ErrorType"]) == (404, "ResourceNotFoundException")
    assert body["message"] == "The requested channel is not found or not active."
    stubs = Stubs(RuntimeError("boom"))
    status, headers, body = answer(await stubs.api().handle(post("/describeSignalingChannel", b'{"ChannelName": "a"}')))
    assert (status, headers["x-amzn-ErrorType"], body["message"]) == (
        500,
        "InternalFailure",
        "An internal error occurred.",
    )
    assert stubs.observed == [("DescribeSignalingChannel", 500, "InternalFailure")]


async def test_a_body_over_the_limit_is_413() -> None:
    stubs = Stubs({})
    loop = asyncio.get_running_loop()
    payload = streams.StreamReader(mock.Mock(_reading_paused=False), 2**16, loop=loop)
    payload.feed_data(b'{"ChannelName": "a"}')
    payload.feed_eof()
    request = make_mocked_request("POST", "/describeSignalingChannel", payload=payload, client_max_size=5)
    status, headers, _ = answer(await stubs.api().handle(request))
    assert (status, headers["x-amzn-ErrorType"]) == (413, "RequestEntityTooLargeException")
