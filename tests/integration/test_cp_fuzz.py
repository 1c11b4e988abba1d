"""Property-based fuzzing of every implemented control-plane operation over raw HTTP.

Bodies are drawn from the operation's input shape in the botocore model (mostly valid members, some
pointing at real channels and streams, some broken: wrong types, nulls, out-of-range numbers, huge or
odd unicode strings, nested junk) and from plain junk (non-object JSON, invalid UTF-8, truncated or
deeply nested JSON). Whatever arrives, the server must answer 200 with a JSON object, or a 4xx whose
`x-amzn-ErrorType` the operation models (or one of the protocol-level errors), never a 5xx, and must
still be healthy afterwards.

Requests go over one keep-alive `http.client` connection, unsigned (so they land in the server's
default region, us-east-1, away from the other tests' us-west-2 resources); botocore is not used
because it would validate the input on the client side.
"""

from __future__ import annotations

import base64
import http.client
import json
import string
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from botocore.loaders import Loader
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from signalite.controlplane.operations import OPERATIONS
from signalite.model.service import Operation, load_service, route_table

IMPLEMENTED: list[Operation] = sorted(
    (op for op in route_table().values() if op.service == "kinesisvideo" and op.name in OPERATIONS),
    key=lambda op: op.name,
)
PROTOCOL_ERRORS = frozenset({"SerializationException", "InvalidArgumentException", "UnknownOperationException"})
MAX_BODY = 1024 * 1024
SHAPES = load_service("kinesisvideo").shapes
_RAW_MODEL = Loader().load_service_model("kinesisvideo", "service-2")
OUTPUT_SHAPES = {name: op["output"]["shape"] for name, op in _RAW_MODEL["operations"].items() if "output" in op}

FUZZ = settings(
    max_examples=60,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.filter_too_much],
)

# -- the wire -------------------------------------------------------------------------------------


class Wire:
    """One keep-alive HTTP/1.1 connection that reconnects when the server closed it."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)

    def post(self, path: str, body: bytes, content_type: str | None = "application/json") -> tuple[int, dict, bytes]:
        headers = {"Content-Type": content_type} if content_type else {}
        for attempt in (1, 2):
            try:
                self.conn.request("POST", path, body=body, headers=headers)
                response = self.conn.getresponse()
                data = response.read()
                if response.getheader("Connection", "").lower() == "close":
                    self.conn.close()
                return response.status, {k.lower(): v for k, v in response.getheaders()}, data
            except (http.client.RemoteDisconnected, ConnectionResetError, BrokenPipeError):
                self.conn.close()
                self.conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
                if attempt == 2:
                    raise
        raise AssertionError("unreachable")

    def close(self) -> None:
        self.conn.close()


@pytest.fixture(scope="module")
def wire(server: Any) -> Iterator[Wire]:
    w = Wire(server.port)
    yield w
    w.close()


def check_response(op: Operation, params: Any, body: bytes, status: int, headers: dict, data: bytes) -> None:
    """The property every response must have."""
    code = headers.get("x-amzn-errortype", "").split(":")[0]
    shown = body[:300]
    assert status < 500, f"{op.name}: {status} {code} for {shown!r}: {data[:300]!r}"
    assert headers.get("x-amzn-requestid"), f"{op.name}: no request id"
    if status == 200:
        result = json.loads(data)
        assert isinstance(result, dict), f"{op.name}: 200 with {data[:200]!r}"
        modeled = set(SHAPES[OUTPUT_SHAPES[op.name]]["members"]) if op.name in OUTPUT_SHAPES else set()
        assert set(result) <= modeled, f"{op.name}: unmodeled output members {set(result) - modeled}"
        return
    assert 400 <= status < 500, f"{op.name}: status {status}"
    allowed = op.errors | PROTOCOL_ERRORS
    if len(body) > MAX_BODY:
        allowed = allowed | {"RequestEntityTooLargeException"}
    assert code in allowed, f"{op.name}: {status} {code} (not modeled) for {shown!r}: {data[:300]!r}"
    error = json.loads(data)
    assert isinstance(error, dict) and error.get("__type", code) == code, data[:300]
    assert isinstance(error.get("message", error.get("Message")), str), data[:300]


# -- real resources for the fuzzer to hit ----------------------------------------------------------


class Seeds:
    def __init__(self) -> None:
        self.channel_names: list[str] = []
        self.channel_arns: list[str] = []
        self.stream_names: list[str] = []
        self.stream_arns: list[str] = []
        self.versions: list[str] = []


@pytest.fixture(scope="module")
def seeds(wire: Wire) -> Seeds:
    s = Seeds()
    tag = uuid.uuid4().hex[:6]

    def call(path: str, body: dict[str, Any]) -> dict[str, Any]:
        status, _, data = wire.post(path, json.dumps(body).encode())
        assert status == 200, (path, body, data)
        return dict(json.loads(data))

    for i in range(4):
        name = f"fuzz-seed-{tag}-c{i}"
        s.channel_names.append(name)
        s.channel_arns.append(call("/createSignalingChannel", {"ChannelName": name})["ChannelARN"])
    for i, retention in enumerate((0, 0, 24, 48)):
        name = f"fuzz-seed-{tag}-s{i}"
        s.stream_names.append(name)
        s.stream_arns.append(
            call("/createStream", {"StreamName": name, "DataRetentionInHours": retention})["StreamARN"]
        )
    call("/updateMediaStorageConfiguration", {
        "ChannelARN": s.channel_arns[0],
        "MediaStorageConfiguration": {"Status": "ENABLED", "StreamARN": s.stream_arns[2]},
    })  # fmt: skip
    for arn in s.channel_arns:
        s.versions.append(call("/describeSignalingChannel", {"ChannelARN": arn})["ChannelInfo"]["Version"])
    for arn in s.stream_arns:
        s.versions.append(call("/describeStream", {"StreamARN": arn})["StreamInfo"]["Version"])
    # ARNs that name things in other regions/accounts, of other kinds, or nothing at all.
    first = s.channel_arns[0]
    s.channel_arns += [
        first.replace(":us-east-1:", ":us-west-2:"),
        first.replace(":000000000000:", ":111122223333:"),
        first.replace(":channel/", ":stream/"),
        first.replace(":channel/", ":widget/"),
        first.rsplit("/", 1)[0] + "/1",
    ]
    return s


# -- strategies from the model ---------------------------------------------------------------------

NAME_CHARS = string.ascii_letters + string.digits + "_.-"
TAG_EXTRA = "_.:/=+-@"


def junk() -> st.SearchStrategy[Any]:
    leaves = (
        st.none()
        | st.booleans()
        | st.integers(min_value=-(2**70), max_value=2**70)
        | st.floats(allow_nan=False, allow_infinity=False)
        | st.text(max_size=20)
        | st.sampled_from(["", " ", "\u0000", "é", "😀" * 3, "<script>", "'; DROP TABLE channels; --", "\u202e"])
    )
    return st.recursive(
        leaves, lambda kids: st.lists(kids, max_size=4) | st.dictionaries(st.text(max_size=8), kids, max_size=4),
        max_leaves=10,
    )  # fmt: skip


def huge_string() -> st.SearchStrategy[str]:
    return st.tuples(st.sampled_from(["a", "é", "😀", "\u0000", "-"]), st.integers(250, 300_000)).map(
        lambda t: t[0] * t[1]
    )


def mostly(good: st.SearchStrategy[Any], bad: st.SearchStrategy[Any], bad_in_20: int = 1) -> st.SearchStrategy[Any]:
    """`good` most of the time, `bad` in about `bad_in_20` draws out of 20."""
    return st.integers(0, 19).flatmap(lambda i: bad if i < bad_in_20 else good)


def string_strategy(shape_name: str, shape: dict[str, Any], seeds: Seeds) -> st.SearchStrategy[str]:
    lo, hi = shape.get("min", 0), shape.get("max", 64)
    cap = min(hi, 40)
    if "enum" in shape:
        return st.sampled_from(shape["enum"])
    if shape_name == "ChannelName":
        return st.sampled_from(seeds.channel_names) | st.text(NAME_CHARS, min_size=max(lo, 1), max_size=cap)
    if shape_name == "StreamName":
        return st.sampled_from(seeds.stream_names) | st.text(NAME_CHARS, min_size=max(lo, 1), max_size=cap)
    if shape_name == "ResourceARN":
        made = st.builds(
            lambda kind, name, ms: f"arn:aws:kinesisvideo:us-east-1:000000000000:{kind}/{name}/{ms}",
            st.sampled_from(["channel", "stream", "x"]),
            st.sampled_from(seeds.channel_names + seeds.stream_names) | st.text(NAME_CHARS, min_size=1, max_size=10),
            st.integers(0, 2**64),
        )
        return st.sampled_from(seeds.channel_arns) | st.sampled_from(seeds.stream_arns) | made
    if shape_name == "Version":
        return st.sampled_from(seeds.versions) | st.text(string.ascii_letters + string.digits, min_size=1, max_size=64)
    if shape_name == "NextToken":
        names = st.sampled_from(seeds.channel_names + seeds.stream_names) | st.text(max_size=10)
        tokens = names.map(lambda n: base64.b64encode(json.dumps({"after": n}).encode()).decode())
        other = st.binary(max_size=30).map(lambda b: base64.b64encode(b).decode())
        return tokens | other | st.text(string.ascii_letters + string.digits + "+/=", max_size=cap)
    pattern = shape.get("pattern", "")
    if "\\p{" in pattern:  # TagKey / TagValue: letters, separators, numbers and a few symbols
        chars = st.characters(categories=["L", "Z", "N"]) | st.sampled_from(TAG_EXTRA)
        return st.text(chars, min_size=lo, max_size=cap)
    if pattern and pattern != ".+":
        return st.from_regex(pattern, fullmatch=True).filter(lambda s: lo <= len(s) <= hi)
    return st.text(min_size=max(lo, 1), max_size=cap)


def broken_string(shape: dict[str, Any]) -> st.SearchStrategy[Any]:
    hi = shape.get("max", 64)
    return st.one_of(
        st.just(""),
        st.text(min_size=1, max_size=30),  # mostly outside any pattern
        st.just("x" * (hi + 1)),
        huge_string(),
        st.sampled_from(["SINGLE_master", "wss", "ENABLED ", "arn:aws:kinesisvideo:::/", "AAAA", "!!", "é" * 10]),
        junk(),
    )


def value_strategy(shape_name: str, seeds: Seeds, depth: int = 0) -> st.SearchStrategy[Any]:
    shape = SHAPES[shape_name]
    kind = shape["type"]
    lo, hi = shape.get("min"), shape.get("max")
    if kind == "structure":
        return structure_strategy(shape_name, seeds, depth)
    if kind == "string":
        return mostly(string_strategy(shape_name, shape, seeds), broken_string(shape))
    if kind in ("integer", "long"):
        low = lo if lo is not None else -5
        high = hi if hi is not None else 100_000
        edges = st.sampled_from([low - 1, high + 1, 0, -1, 2**31, 2**63 - 1, 2**63, -(2**63) - 1, 2**64, 10**30])
        return mostly(st.integers(low, high), edges | junk() | st.floats(allow_nan=False, allow_infinity=False))
    if kind == "boolean":
        return mostly(st.booleans(), junk())
    if kind == "timestamp":
        return mostly(st.integers(0, 2**33) | st.floats(0, 2e9), junk())
    if kind == "list":
        member = value_strategy(shape["member"]["shape"], seeds, depth + 1)
        low, high = lo or 0, hi if hi is not None else 10
        good = st.lists(member, min_size=low, max_size=min(high, 6))
        too_many = st.lists(member, min_size=high + 1, max_size=high + 1) if high <= 60 else st.nothing()
        return mostly(good, too_many | st.just([]) | junk())
    if kind == "map":
        key = value_strategy(shape["key"]["shape"], seeds, depth + 1).filter(lambda k: isinstance(k, str))
        value = value_strategy(shape["value"]["shape"], seeds, depth + 1)
        low, high = lo or 0, hi if hi is not None else 10
        good = st.dictionaries(key, value, min_size=low, max_size=min(high, 6))
        too_many = st.dictionaries(st.text(NAME_CHARS, min_size=1, max_size=8), st.just("v"),
                                   min_size=high + 1, max_size=high + 1)  # fmt: skip
        return mostly(good, too_many | st.just({}) | junk())
    return junk()


def structure_strategy(shape_name: str, seeds: Seeds, depth: int = 0) -> st.SearchStrategy[Any]:
    shape = SHAPES[shape_name]
    members = shape["members"]
    required = set(shape.get("required", ()))
    values = {name: value_strategy(m["shape"], seeds, depth + 1) for name, m in members.items()}
    nulls = {name: st.none() for name in members}
    unknown = st.dictionaries(st.text(min_size=1, max_size=12).filter(lambda k: k not in members), junk(), max_size=3)
    complete = st.fixed_dictionaries(
        {n: v for n, v in values.items() if n in required},
        optional={n: v for n, v in values.items() if n not in required},
    )
    partial = st.fixed_dictionaries({}, optional=values)
    with_nulls = st.fixed_dictionaries({}, optional={n: values[n] | nulls[n] for n in members})
    good = st.one_of(complete, complete, complete, partial, with_nulls)
    extra = st.tuples(good, unknown).map(lambda t: {**t[1], **t[0]})
    return mostly(good, extra | junk(), bad_in_20=2 if depth == 0 else 1)


def encode(params: Any, ascii_only: bool) -> bytes:
    return json.dumps(params, ensure_ascii=ascii_only).encode("utf-8", "surrogatepass")


# -- the properties --------------------------------------------------------------------------------


def test_every_operation_is_routed() -> None:
    assert {op.name for op in IMPLEMENTED} == set(OPERATIONS)
    assert len(IMPLEMENTED) >= 21


@pytest.mark.parametrize("op", IMPLEMENTED, ids=lambda op: op.name)
@FUZZ
@given(data=st.data())
def test_model_shaped_bodies(op: Operation, wire: Wire, seeds: Seeds, data: st.DataObject) -> None:
    assert op.input_shape is not None
    params = data.draw(structure_strategy(op.input_shape, seeds), label="params")
    body = encode(params, data.draw(st.booleans(), label="ascii"))
    status, headers, response = wire.post(op.path, body)
    check_response(op, params, body, status, headers, response)


def raw_bodies() -> st.SearchStrategy[bytes]:
    valid_prefix = st.sampled_from([b'{"ChannelName": "abc"', b'{"ChannelARN": ["', b'{"Tags": [{"Key": "', b"[", b"{"])
    return st.one_of(
        junk().map(lambda v: json.dumps(v).encode()),  # any JSON value, mostly not an object
        st.binary(max_size=200),  # invalid UTF-8 and friends
        st.tuples(valid_prefix, st.binary(max_size=20)).map(lambda t: t[0] + t[1]),  # truncated / corrupted
        st.integers(1, 20_000).map(lambda n: b"[" * n + b"]" * n),  # nesting bombs
        st.integers(1, 20_000).map(lambda n: b'{"a":' * n + b"1" + b"}" * n),
        st.sampled_from(
            [
                b"",
                b" ",
                b"\n",
                b"null",
                b"true",
                b"0",
                b'""',
                b"[]",
                b"{}",
                b"\xef\xbb\xbf{}",
                b"{}{}",
                b"{} x",
                b'{"ChannelName": "a", "ChannelName": "b"}',
                b'{"MaxResults": 1e400}',
                b'{"MaxResults": -0}',
                b'{"MaxResults": 12345678901234567890123}',
                b'{"ChannelName": "\\ud800"}',
                b'{"\xff": 1}',
                b'{"ChannelName": "a\x00b"}',
                b"{'ChannelName': 'a'}",
                b'{"ChannelName": NaN}',
            ]
        ),
    )  # fmt: skip


@pytest.mark.parametrize("op", IMPLEMENTED, ids=lambda op: op.name)
@settings(FUZZ, max_examples=25)
@given(body=raw_bodies(), content_type=st.sampled_from(["application/json", "application/x-amz-json-1.1", None]))
def test_junk_bodies(op: Operation, wire: Wire, body: bytes, content_type: str | None) -> None:
    status, headers, response = wire.post(op.path, body, content_type)
    check_response(op, None, body, status, headers, response)


@FUZZ
@given(path=st.text(alphabet=string.ascii_letters + "/-_.%", max_size=30))
def test_unknown_paths(wire: Wire, path: str) -> None:
    path = "/" + path.lstrip("/")
    assume(path not in route_table())
    status, headers, _ = wire.post(path, b"{}")
    assert status == 404 and headers.get("x-amzn-errortype", "").startswith("UnknownOperationException")


def test_oversized_body_for_every_operation(wire: Wire) -> None:
    body = b'{"ChannelName":"' + b"a" * MAX_BODY + b'"}'
    for op in IMPLEMENTED:
        status, headers, _ = wire.post(op.path, body)
        assert status == 413, op.name
        assert headers.get("x-amzn-errortype", "").startswith("RequestEntityTooLargeException")


# -- regressions for what the fuzzer found --------------------------------------------------------


def _null_cases() -> Iterator[Any]:
    cases: list[tuple[str, str, Callable[[str], dict[str, Any]]]] = [
        ("create-smc-null", "/createSignalingChannel",
         lambda n: {"ChannelName": n, "SingleMasterConfiguration": None}),
        ("create-tags-null", "/createSignalingChannel", lambda n: {"ChannelName": n, "Tags": None}),
        ("create-ttl-null", "/createSignalingChannel",
         lambda n: {"ChannelName": n, "SingleMasterConfiguration": {"MessageTtlSeconds": None}}),
        ("stream-retention-null", "/createStream", lambda n: {"StreamName": n, "DataRetentionInHours": None}),
        ("stream-tags-null", "/createStream", lambda n: {"StreamName": n, "Tags": None}),
        ("stream-kms-null", "/createStream", lambda n: {"StreamName": n, "KmsKeyId": None}),
        ("list-max-null", "/listSignalingChannels", lambda n: {"MaxResults": None}),
        ("list-streams-max-null", "/listStreams", lambda n: {"MaxResults": None}),
    ]  # fmt: skip
    for case_id, path, make in cases:
        yield pytest.param(path, make, id=case_id)


@pytest.mark.parametrize(("path", "make"), list(_null_cases()))
def test_null_member_is_absent(wire: Wire, path: str, make: Any) -> None:
    """AWS JSON services treat `"Member": null` like a missing member (so does signalite's validator)."""
    name = f"fuzz-null-{uuid.uuid4().hex[:10]}"
    params = make(name)
    status, headers, data = wire.post(path, json.dumps(params).encode())
    code = headers.get("x-amzn-errortype", "")
    assert status == 200 or code == "InvalidArgumentException", f"{status} {code}: {data[:200]!r}"
    if status == 200 and path == "/createSignalingChannel":
        status, _, data = wire.post("/describeSignalingChannel", json.dumps({"ChannelName": name}).encode())
        info = json.loads(data)["ChannelInfo"]
        assert info["SingleMasterConfiguration"]["MessageTtlSeconds"] == 60


def test_update_with_null_configuration(wire: Wire) -> None:
    name = f"fuzz-null-{uuid.uuid4().hex[:10]}"
    _, _, data = wire.post("/createSignalingChannel", json.dumps({"ChannelName": name}).encode())
    arn = json.loads(data)["ChannelARN"]
    outcomes = []
    for config in (None, {"MessageTtlSeconds": None}):
        _, _, data = wire.post("/describeSignalingChannel", json.dumps({"ChannelARN": arn}).encode())
        version = json.loads(data)["ChannelInfo"]["Version"]
        body = {"ChannelARN": arn, "CurrentVersion": version, "SingleMasterConfiguration": config}
        status, headers, data = wire.post("/updateSignalingChannel", json.dumps(body).encode())
        outcomes.append((status, headers.get("x-amzn-errortype"), data[:120]))
    assert all(s == 200 or c == "InvalidArgumentException" for s, c, _ in outcomes), outcomes


def test_health_after_fuzzing(server: Any, wire: Wire) -> None:
    assert server.process.poll() is None, "the server process died"
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=10)
    conn.request("GET", "/health")
    response = conn.getresponse()
    body = json.loads(response.read())
    conn.close()
    assert response.status == 200 and body["status"] == "ok"
    # And it still does real work.
    name = f"fuzz-after-{uuid.uuid4().hex[:10]}"
    status, _, data = wire.post("/createSignalingChannel", json.dumps({"ChannelName": name}).encode())
    assert status == 200, data
    status, _, data = wire.post("/describeSignalingChannel", json.dumps({"ChannelName": name}).encode())
    assert status == 200 and json.loads(data)["ChannelInfo"]["ChannelStatus"] == "ACTIVE"
