"""Property-based tests (hypothesis) of a strict-mode server over its four hostile surfaces.

* REST bodies: correctly signed requests (so they reach parsing, validation, policy and the operations)
  carrying JSON built from the models' member names, odd values and plain junk, on every REST path;
* query strings: botocore-signed requests with arbitrary query parameters must verify (the server's
  canonical query equals botocore's, whatever the characters), presigned WebSocket URLs with extra
  parameters must connect, and raw junk query strings must be refused cleanly;
* SigV4 headers: a valid signed request whose Authorization / X-Amz-Date / token / content-hash headers
  are mutated field by field or replaced by junk;
* WebSocket frames: JSON-ish and junk text frames and binary frames from a master and a viewer.

Whatever arrives: never a 5xx, every refusal an AWS-shaped JSON error, never a secret (secret keys,
session token, TURN secret) in any response or frame, no error logged by the server, and a well-behaved
client (a thread making a signed request every 20 ms) is served throughout. The number of examples per
surface is `SIGNALITE_FUZZ_EXAMPLES` (default 2500; each surface takes roughly 5-20 s).
"""

from __future__ import annotations

import base64
import errno
import hashlib
import http.client
import json
import logging
import os
import re
import secrets
import shutil
import socket
import struct
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

import pytest
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from signalite.auth.sigv4 import Credential, RequestParts, presign_url, sign_request
from signalite.controlplane.operations import OPERATIONS
from signalite.model.service import route_table
from signalite.testing import SignaliteServer, free_port

EXAMPLES = int(os.environ.get("SIGNALITE_FUZZ_EXAMPLES", "2500"))
FUZZ = settings(
    max_examples=EXAMPLES,
    deadline=None,
    database=None,
    suppress_health_check=list(HealthCheck),
)

REGION = "us-west-2"
ACCOUNT = "111111111111"
KEY = Credential("AKIDFUZZPLAIN", f"fz/{secrets.token_urlsafe(24)}+=", ACCOUNT)
TOKEN_KEY = Credential("ASIAFUZZTOKEN", f"ft/{secrets.token_urlsafe(24)}+=", ACCOUNT,
                       f"IQoJ/{secrets.token_urlsafe(40)}+==")  # fmt: skip
TURN_SECRET = f"turn-{secrets.token_urlsafe(24)}"
SECRETS = [KEY.secret_access_key, TOKEN_KEY.secret_access_key, TOKEN_KEY.session_token or "", TURN_SECRET]
SECRET_BYTES = [s.encode() for s in SECRETS]

ROUTES = route_table()
REST_PATHS = sorted(
    path
    for path, op in ROUTES.items()
    if (op.service == "kinesisvideo" and op.name in OPERATIONS) or op.service == "kinesis-video-signaling"
)
# Errors any REST request may get besides the modeled ones of its operation.
AUTH_ERRORS = {"IncompleteSignatureException", "InvalidSignatureException", "UnrecognizedClientException",
               "MissingAuthenticationTokenException", "AccessDeniedException", "NotAuthorizedException"}  # fmt: skip


# ============================================================================= server, wire, invariants


def start_server(settings_: dict[str, Any]) -> SignaliteServer:
    for _ in range(5):
        server = SignaliteServer(settings={"port": free_port(), **settings_})
        try:
            return server.start()
        except OSError as e:  # the free port was taken meanwhile: pick another
            shutil.rmtree(server.data_dir, ignore_errors=True)
            if e.errno != errno.EADDRINUSE:
                raise
    raise AssertionError("no free port for the server after 5 attempts")


class ErrorLog(logging.Handler):
    """Collects ERROR records of the in-process server's logger."""

    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.records: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(f"{record.name}: {record.getMessage()} {record.exc_info[1]!r}" if record.exc_info
                            else f"{record.name}: {record.getMessage()}")  # fmt: skip


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SignaliteServer]:
    path = tmp_path_factory.mktemp("strict-fuzz") / "credentials.json"
    path.write_text(json.dumps({"credentials": [
        {"access_key_id": KEY.access_key_id, "secret_access_key": KEY.secret_access_key, "account_id": ACCOUNT},
        {"access_key_id": TOKEN_KEY.access_key_id, "secret_access_key": TOKEN_KEY.secret_access_key,
         "account_id": ACCOUNT, "session_token": TOKEN_KEY.session_token},
    ]}))  # fmt: skip
    running = start_server({"credentials": str(path), "limits": "off", "turn_uri": ("turn:127.0.0.1:3478",),
                            "turn_secret": TURN_SECRET})  # fmt: skip
    try:
        yield running
    finally:
        running.stop()


@pytest.fixture
def error_log() -> Iterator[ErrorLog]:
    handler = ErrorLog()
    # Only signalite's own records: a crash in a handler is logged there ("request.crashed", ...). aiohttp's
    # noise about malformed HTTP is checked by test_log_scan.py.
    loggers = [logging.getLogger("signalite")]
    for logger in loggers:
        logger.addHandler(handler)
    yield handler
    for logger in loggers:
        logger.removeHandler(handler)


class Wire:
    """One keep-alive HTTP/1.1 connection; reconnects when the server closed it after an answer."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.conn = self._new()

    def _new(self) -> http.client.HTTPConnection:
        return http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)

    def send(
        self, method: str, target: str, headers: Sequence[tuple[str, str | bytes]], body: bytes
    ) -> tuple[int, dict[str, str], bytes]:
        for attempt in (1, 2):
            try:
                self.conn.putrequest(method, target, skip_host=True, skip_accept_encoding=True)
                for name, value in headers:
                    self.conn.putheader(name, value)
                self.conn.putheader("Content-Length", str(len(body)))
                self.conn.endheaders(body)
                response = self.conn.getresponse()
                data = response.read()
                if response.will_close:
                    self.conn.close()
                    self.conn = self._new()
                return response.status, {k.lower(): v for k, v in response.getheaders()}, data
            except (
                http.client.RemoteDisconnected,
                ConnectionResetError,
                BrokenPipeError,
                http.client.CannotSendRequest,
            ):
                self.conn.close()
                self.conn = self._new()
                if attempt == 2:
                    raise
        raise AssertionError("unreachable")

    def close(self) -> None:
        self.conn.close()


def signed_headers(
    server: SignaliteServer, path: str, query: str, body: bytes, cred: Credential = KEY
) -> list[tuple[str, str]]:
    base = {"host": f"127.0.0.1:{server.port}", "content-type": "application/json"}
    added = sign_request(RequestParts("POST", path, query, base, body), cred, REGION, server.clock.time())
    return list((base | added).items())


def assert_no_secret(*blobs: bytes | str) -> None:
    for blob in blobs:
        data = blob.encode(errors="surrogateescape") if isinstance(blob, str) else blob
        for secret in SECRET_BYTES:
            assert secret not in data, "a secret appeared in the server's output"


def assert_clean_answer(status: int, headers: dict[str, str], body: bytes) -> dict[str, Any] | None:
    """Not a 5xx; an error is an AWS rest-json error; no secret anywhere. Returns the parsed error."""
    assert status < 500, (status, body[:300])
    assert_no_secret(body, json.dumps(headers))
    if status < 400:
        return None
    if status == 400 and not headers.get("content-type", "").startswith("application/json"):
        return None  # refused by the HTTP parser itself (malformed request line or header), before the app
    assert headers.get("content-type", "").startswith("application/json"), (status, headers, body[:200])
    error = json.loads(body)
    assert isinstance(error, dict) and error.get("__type"), error
    assert headers.get("x-amzn-errortype", "").split(":")[0] == error["__type"], (headers, error)
    assert isinstance(error.get("message"), str) and len(error["message"]) <= 2048, error
    return dict(error)


class SteadyClient(threading.Thread):
    """A well-behaved client: a signed request every 20 ms on its own connection, for the whole test."""

    def __init__(self, server: SignaliteServer) -> None:
        super().__init__(daemon=True)
        self.server = server
        self.halt = threading.Event()
        self.statuses: list[int] = []
        self.slowest = 0.0
        self.errors: list[str] = []

    def run(self) -> None:
        wire = Wire(self.server.port)
        while not self.halt.wait(0.02):
            started = time.monotonic()
            try:
                body = b"{}"
                headers = signed_headers(self.server, "/listSignalingChannels", "", body)
                status, _, _ = wire.send("POST", "/listSignalingChannels", headers, body)
                self.statuses.append(status)
            except Exception as e:  # recorded; the test fails on it
                self.errors.append(repr(e))
            self.slowest = max(self.slowest, time.monotonic() - started)
        wire.close()

    def __enter__(self) -> SteadyClient:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.halt.set()
        self.join(10)

    def check(self) -> None:
        assert not self.errors, self.errors[:5]
        assert len(self.statuses) >= 5, "the well-behaved client hardly ran"
        assert set(self.statuses) == {200}, sorted(set(self.statuses))
        assert self.slowest < 5.0, f"a well-behaved request waited {self.slowest:.2f} s"


def finish(server: SignaliteServer, steady: SteadyClient, error_log: ErrorLog) -> None:
    steady.check()
    assert not error_log.records, error_log.records[:5]
    health = http.client.HTTPConnection("127.0.0.1", server.port, timeout=10)
    health.request("GET", "/health")
    response = health.getresponse()
    text = response.read()
    health.close()
    assert response.status == 200 and json.loads(text)["auth_mode"] == "strict"
    assert_no_secret(text)


# ============================================================================= strategies

MEMBERS = ["ChannelName", "ChannelARN", "ChannelType", "SingleMasterConfiguration", "MessageTtlSeconds", "Tags",
           "Key", "Value", "MaxResults", "NextToken", "ChannelNameCondition", "ComparisonOperator",
           "ComparisonValue", "ResourceARN", "TagKeyList", "CurrentVersion", "SingleMasterChannelEndpointConfiguration",
           "Protocols", "Role", "MediaStorageConfiguration", "StreamARN", "Status", "ClientId", "Service", "Username",
           "SenderClientId", "MessagePayload", "StreamName", "__proto__", "", "channelname"]  # fmt: skip
ODD_TEXT = st.text(st.characters(codec="utf-8"), max_size=40) | st.sampled_from(
    ["", " ", "WSS", "HTTPS", "MASTER", "VIEWER", "SINGLE_MASTER", "BEGINS_WITH", "ENABLED", "DISABLED", "TURN",
     "fuzz-ch", "x" * 300, "arn:aws:kinesisvideo:us-west-2:111111111111:channel/fuzz-ch/1",
     "arn:aws:kinesisvideo:us-west-2:222222222222:channel/other/1", "eyJ0eXBlIjoib2ZmZXIifQ==", "\x00", "\ud800"]
)  # fmt: skip
SCALARS = (
    ODD_TEXT
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.booleans()
    | st.none()
)
JSON_VALUES = st.recursive(
    SCALARS,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.sampled_from(MEMBERS) | ODD_TEXT, inner, max_size=5),
    max_leaves=12,
)


def _json_bytes(value: Any) -> bytes:
    return json.dumps(value, ensure_ascii=False).encode("utf-8", "surrogatepass")


BODIES = (
    st.dictionaries(st.sampled_from(MEMBERS), JSON_VALUES, max_size=6).map(_json_bytes)
    | JSON_VALUES.map(_json_bytes)
    | st.binary(max_size=200)
    | st.sampled_from([b"", b"{", b"null", b"[]", b"{}" * 3, b'{"a":1,"a":2}', b"\xef\xbb\xbf{}", b"1e999999"])
)


# ============================================================================= 1. REST bodies


@pytest.fixture(scope="module")
def rest_channel(server: SignaliteServer) -> str:
    wire = Wire(server.port)
    body = json.dumps({"ChannelName": "fuzz-ch"}).encode()
    status, _, data = wire.send("POST", "/createSignalingChannel", signed_headers(server, "/createSignalingChannel",
                                                                                    "", body), body)  # fmt: skip
    wire.close()
    assert status == 200, data
    return str(json.loads(data)["ChannelARN"])


def test_rest_bodies(server: SignaliteServer, rest_channel: str, error_log: ErrorLog) -> None:
    wire = Wire(server.port)
    paths = [*REST_PATHS, "/", "/nope", "/v1/", "/createSignalingChannel/", "/CREATESIGNALINGCHANNEL"]

    @FUZZ
    @given(path=st.sampled_from(paths), body=BODIES, who=st.sampled_from(["plain", "token", "unsigned"]),
           arn=st.booleans())  # fmt: skip
    def one(path: str, body: bytes, who: str, arn: bool) -> None:
        if arn and body.startswith(b"{") and body.endswith(b"}") and len(body) > 2:
            body = body[:-1] + b', "ChannelARN": ' + json.dumps(rest_channel).encode() + b"}"
        if who == "unsigned":
            headers: list[tuple[str, str]] = [
                ("Host", f"127.0.0.1:{server.port}"),
                ("Content-Type", "application/json"),
            ]
        else:
            headers = signed_headers(server, path, "", body, KEY if who == "plain" else TOKEN_KEY)
        status, answer_headers, data = wire.send("POST", path, headers, body)
        error = assert_clean_answer(status, answer_headers, data)
        if who == "unsigned":
            assert error is not None and error["__type"] in ("MissingAuthenticationTokenException",
                                                             "UnknownOperationException"), (status, error)  # fmt: skip
        elif error is not None:
            assert error["__type"] not in AUTH_ERRORS, (path, body[:200], error)  # correctly signed: authenticated
        if path.startswith("/v1/get-ice") and status == 200:
            assert TURN_SECRET not in data.decode()

    with SteadyClient(server) as steady:
        one()
    wire.close()
    finish(server, steady, error_log)


# ============================================================================= 2. query strings

QUERY_TEXT = st.text(st.characters(codec="utf-8", exclude_categories=["Cs"]), max_size=24)
QUERY_KEYS = QUERY_TEXT | st.sampled_from(["X-Amz-Signature", "X-Amz-Date", "X-Amz-Credential", "a", "a", "b", "~",
                                           "!'()*", "%", "+", " ", "="])  # fmt: skip
QUERY_PAIRS = st.lists(st.tuples(QUERY_KEYS, QUERY_TEXT | st.sampled_from(["", "+", "%2B", " ", "/", "="])),
                       max_size=6)  # fmt: skip


def _strict(text: str) -> str:
    return quote(text, safe="-_.~")


def _js(text: str) -> str:
    # encodeURIComponent: leaves A-Z a-z 0-9 - _ . ! ~ * ' ( ) bare
    return quote(text, safe="-_.!~*'()")


def test_query_strings_on_signed_rest_requests(server: SignaliteServer, error_log: ErrorLog) -> None:
    wire = Wire(server.port)
    body = b"{}"
    path = "/listSignalingChannels"

    @FUZZ
    @given(pairs=QUERY_PAIRS, style=st.sampled_from([_strict, _js]), token=st.booleans())
    def one(pairs: list[tuple[str, str]], style: Any, token: bool) -> None:
        # No X-Amz-Algorithm: that would make it a presigned request (and two auth mechanisms at once).
        query = "&".join(f"{style(k)}={style(v)}" for k, v in pairs if k != "X-Amz-Algorithm")
        cred = TOKEN_KEY if token else KEY
        target = path + (f"?{query}" if query else "")
        request = AWSRequest(method="POST", url=f"http://127.0.0.1:{server.port}{target}", data=body,
                             headers={"Content-Type": "application/json"})  # fmt: skip
        SigV4Auth(Credentials(cred.access_key_id, cred.secret_access_key, cred.session_token), "kinesisvideo",
                  REGION).add_auth(request)  # fmt: skip
        headers = [(k, v) for k, v in request.headers.items()] + [("Host", f"127.0.0.1:{server.port}")]
        status, answer_headers, data = wire.send("POST", target, headers, body)
        assert_clean_answer(status, answer_headers, data)
        # botocore signed exactly these bytes: the server must rebuild the same canonical query.
        assert status == 200, (query, data[:300])

    with SteadyClient(server) as steady:
        one()
    wire.close()
    finish(server, steady, error_log)


def handshake(port: int, target: str) -> tuple[int, dict[str, str], bytes]:
    sock = socket.create_connection(("127.0.0.1", port), timeout=10)
    try:
        key = base64.b64encode(os.urandom(16)).decode()
        sock.sendall(
            f"GET {target} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n".encode("utf-8", "surrogateescape")
        )
        data = b""
        while b"\r\n\r\n" not in data:
            chunk = sock.recv(65536)
            if not chunk:
                break
            data += chunk
        head, _, rest = data.partition(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        status = int(lines[0].split()[1]) if lines and lines[0].startswith("HTTP/") else 0
        headers = {k.strip().lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:])}
        if status != 101:
            length = int(headers.get("content-length", "0") or 0)
            while len(rest) < length:
                chunk = sock.recv(65536)
                if not chunk:
                    break
                rest += chunk
        return status, headers, rest
    finally:
        sock.close()


@pytest.fixture(scope="module")
def ws_channel(server: SignaliteServer) -> str:
    wire = Wire(server.port)
    body = json.dumps({"ChannelName": "fuzz-ws"}).encode()
    status, _, data = wire.send("POST", "/createSignalingChannel", signed_headers(server, "/createSignalingChannel",
                                                                                    "", body), body)  # fmt: skip
    wire.close()
    assert status == 200, data
    return str(json.loads(data)["ChannelARN"])


def test_query_strings_on_websocket_handshakes(server: SignaliteServer, ws_channel: str, error_log: ErrorLog) -> None:
    base = f"ws://127.0.0.1:{server.port}/?X-Amz-ChannelARN={quote(ws_channel, safe='')}"

    @FUZZ
    @given(pairs=QUERY_PAIRS, junk=st.text(st.characters(codec="utf-8", exclude_categories=["Cs"]), max_size=60),
           mode=st.sampled_from(["extra-signed", "junk-appended", "junk-only", "token"]))  # fmt: skip
    def one(pairs: list[tuple[str, str]], junk: str, mode: str) -> None:
        extra = "".join(f"&{_strict(k)}={_strict(v)}" for k, v in pairs if not k.startswith("X-Amz-") and k)
        if mode in ("extra-signed", "token"):
            url = presign_url(f"{base}&X-Amz-ClientId=fuzz-viewer{extra}", TOKEN_KEY if mode == "token" else KEY,
                              REGION, server.clock.time())  # fmt: skip
        elif mode == "junk-appended":
            url = presign_url(f"{base}&X-Amz-ClientId=fuzz-viewer", KEY, REGION, server.clock.time()) + "&" + junk
        else:
            url = f"ws://127.0.0.1:{server.port}/?" + junk
        target = url.split(f"127.0.0.1:{server.port}", 1)[1]
        target = re.sub(r"[\x00-\x20\x7f]", lambda m: quote(m.group()), target)  # keep the request line one line
        status, headers, body = handshake(server.port, target)
        assert status != 0, "the server dropped the handshake"
        if status == 101:
            assert mode != "junk-only"
            return
        assert mode not in ("extra-signed", "token"), (status, body[:300])  # a correctly presigned URL connects
        assert_clean_answer(status, headers, body)

    with SteadyClient(server) as steady:
        one()
    finish(server, steady, error_log)


# ============================================================================= 3. SigV4 headers


@dataclass
class Signed:
    headers: dict[str, str]
    body: bytes


def _signed_request(server: SignaliteServer, body: bytes) -> Signed:
    """A request signed with a session token and a signed content hash (every header the mutations touch)."""
    base = {"host": f"127.0.0.1:{server.port}", "content-type": "application/json",
            "x-amz-content-sha256": hashlib.sha256(body).hexdigest()}  # fmt: skip
    added = sign_request(RequestParts("POST", "/listSignalingChannels", "", base, body), TOKEN_KEY, REGION,
                         server.clock.time())  # fmt: skip
    return Signed(base | added, body)


HEADER_JUNK = st.binary(max_size=120).map(lambda b: b.replace(b"\r", b"").replace(b"\n", b""))
AUTH_FIELD_VALUES = st.text(st.characters(codec="latin-1", exclude_characters="\r\n"), max_size=40) | st.sampled_from(
    ["", "aws4_request", "kinesisvideo", "us-west-2", "20200101", "host", "host;x-amz-date", "AKIDFUZZPLAIN",
     "ASIAFUZZTOKEN", "0" * 64, "f" * 64, ";;;", "host;host", "HOST", ",", "=", " ", "/"]
)  # fmt: skip


@st.composite
def mutation(draw: Any) -> tuple[str, Any]:
    kind = draw(st.sampled_from(["auth-junk", "auth-field", "auth-scope", "auth-structure", "signature", "date",
                                 "date-header", "token", "content-sha", "drop"]))  # fmt: skip
    if kind in ("auth-junk", "token", "content-sha", "date"):
        return kind, draw(HEADER_JUNK | AUTH_FIELD_VALUES.map(lambda s: s.encode("latin-1")))
    if kind == "auth-field":
        return kind, (draw(st.sampled_from(["Credential", "SignedHeaders", "Signature"])), draw(AUTH_FIELD_VALUES))
    if kind == "auth-scope":
        return kind, (draw(st.integers(0, 4)), draw(AUTH_FIELD_VALUES.filter(lambda s: "," not in s)))
    if kind == "auth-structure":
        return kind, draw(st.sampled_from(["duplicate", "no-spaces", "extra-commas", "lower-algorithm", "swap",
                                           "tabs", "trailing-comma", "sha1"]))  # fmt: skip
    if kind == "signature":
        return kind, draw(st.text("0123456789abcdefABCDEF", min_size=0, max_size=80))
    if kind == "date-header":
        return kind, draw(st.sampled_from(["Mon, 01 Jan 2024 00:00:00 GMT", "yesterday", "", "20240101T000000Z"]))
    return kind, draw(st.sampled_from(["authorization", "x-amz-date", "x-amz-security-token", "host"]))


def _mutate(signed: Signed, kind: str, arg: Any) -> tuple[list[tuple[str, str | bytes]], bool]:
    """The mutated headers, and whether the result must be refused (it can no longer be valid)."""
    headers: dict[str, str | bytes] = dict(signed.headers)
    auth = str(headers["authorization"])
    algorithm, _, rest = auth.partition(" ")
    fields = dict(part.strip().split("=", 1) for part in rest.split(","))
    must_fail = True
    if kind == "auth-junk":
        headers["authorization"] = arg
    elif kind == "auth-field":
        name, value = arg
        must_fail = value != fields[name]
        fields[name] = value
        headers["authorization"] = f"{algorithm} " + ", ".join(f"{k}={v}" for k, v in fields.items())
    elif kind == "auth-scope":
        index, value = arg
        scope = fields["Credential"].split("/")
        must_fail = scope[index] != value
        scope[index] = value
        fields["Credential"] = "/".join(scope)
        headers["authorization"] = f"{algorithm} " + ", ".join(f"{k}={v}" for k, v in fields.items())
    elif kind == "auth-structure":
        items = [f"{k}={v}" for k, v in fields.items()]
        variants = {
            "duplicate": f"{algorithm} " + ", ".join([*items, items[-1]]),
            "no-spaces": f"{algorithm} " + ",".join(items),
            "extra-commas": f"{algorithm} ,," + ",, ".join(items) + ",",
            "lower-algorithm": f"{algorithm.lower()} " + ", ".join(items),
            "swap": f"{algorithm} " + ", ".join(reversed(items)),
            "tabs": f"{algorithm}\t" + ",\t".join(items),
            "trailing-comma": f"{algorithm} " + ", ".join(items) + ", ",
            "sha1": "AWS4-HMAC-SHA1 " + ", ".join(items),
        }
        headers["authorization"] = variants[arg]
        # Spacing and field order are not signed; the others change what the server must accept.
        must_fail = arg in ("duplicate", "lower-algorithm", "sha1")
    elif kind == "signature":
        must_fail = arg != fields["Signature"]
        fields["Signature"] = arg
        headers["authorization"] = f"{algorithm} " + ", ".join(f"{k}={v}" for k, v in fields.items())
    elif kind == "date":
        must_fail = arg != str(headers["x-amz-date"]).encode()
        headers["x-amz-date"] = arg
    elif kind == "date-header":
        headers.pop("x-amz-date")
        headers["date"] = arg
    elif kind == "token":
        must_fail = arg != str(headers["x-amz-security-token"]).encode()
        headers["x-amz-security-token"] = arg
    elif kind == "content-sha":
        must_fail = arg != str(headers["x-amz-content-sha256"]).encode()
        headers["x-amz-content-sha256"] = arg
    elif kind == "drop":
        headers.pop(arg)
    return list(headers.items()), must_fail


def test_sigv4_headers(server: SignaliteServer, error_log: ErrorLog) -> None:
    wire = Wire(server.port)
    body = b'{"MaxResults": 1}'

    @FUZZ
    @given(change=mutation())
    def one(change: tuple[str, Any]) -> None:
        signed = _signed_request(server, body)
        headers, must_fail = _mutate(signed, *change)
        status, answer_headers, data = wire.send("POST", "/listSignalingChannels", headers, body)
        error = assert_clean_answer(status, answer_headers, data)
        if must_fail:
            assert status != 200, (change, data[:200])
        if error is not None:
            assert error["__type"] in AUTH_ERRORS | {"UnknownOperationException"}, (change, error)
            assert status in (400, 403), (change, status, error)

    with SteadyClient(server) as steady:
        # the unmutated request passes (the oracle is sound)
        signed = _signed_request(server, body)
        assert wire.send("POST", "/listSignalingChannels", list(signed.headers.items()), body)[0] == 200
        one()
    wire.close()
    finish(server, steady, error_log)


# ============================================================================= 4. WebSocket frames


class RawWs:
    """A blocking raw-socket WebSocket client (masked frames out, server frames parsed)."""

    def __init__(self, port: int, target: str) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=10)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)  # no Nagle delay between small frames
        key = base64.b64encode(os.urandom(16)).decode()
        self.sock.sendall(
            f"GET {target} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n".encode()
        )
        data = b""
        while b"\r\n\r\n" not in data:
            chunk = self.sock.recv(1)
            assert chunk, data
            data += chunk
        assert data.startswith(b"HTTP/1.1 101"), data
        self.buffer = b""
        self.closed = False

    def send(self, payload: bytes, opcode: int = 0x1) -> None:
        n = len(payload)
        head = bytes([0x80 | opcode])
        if n < 126:
            head += bytes([0x80 | n])
        elif n < 65536:
            head += bytes([0x80 | 126]) + struct.pack("!H", n)
        else:
            head += bytes([0x80 | 127]) + struct.pack("!Q", n)
        mask = os.urandom(4)
        masked = (int.from_bytes(payload, "big") ^ int.from_bytes((mask * (n // 4 + 1))[:n], "big")).to_bytes(n, "big")
        self.sock.sendall(head + mask + masked)

    def frames(self, timeout: float) -> Iterator[tuple[int, bytes]]:
        """Frames as they arrive until `timeout` passes with nothing new (or the socket closes)."""
        self.sock.settimeout(timeout)
        while True:
            while len(self.buffer) >= 2:
                opcode, n, offset = self.buffer[0] & 0x0F, self.buffer[1] & 0x7F, 2
                if n == 126:
                    if len(self.buffer) < 4:
                        break
                    n, offset = struct.unpack("!H", self.buffer[2:4])[0], 4
                elif n == 127:
                    if len(self.buffer) < 10:
                        break
                    n, offset = struct.unpack("!Q", self.buffer[2:10])[0], 10
                if len(self.buffer) < offset + n:
                    break
                payload, self.buffer = self.buffer[offset : offset + n], self.buffer[offset + n :]
                if opcode == 0x8:
                    self.closed = True
                yield opcode, payload
            if self.closed:
                return
            try:
                chunk = self.sock.recv(65536)
            except TimeoutError:
                return
            except ConnectionResetError:
                self.closed = True
                return
            if not chunk:
                self.closed = True
                return
            self.buffer += chunk

    def close(self) -> None:
        self.sock.close()


DELIVERY_KEYS = {"senderClientId", "messageType", "messagePayload"}
STATUS_KEYS = {"correlationId", "errorType", "statusCode", "description"}


def check_server_frame(opcode: int, payload: bytes) -> dict[str, Any] | None:
    assert_no_secret(payload)
    if opcode != 0x1:
        return None
    frame = json.loads(payload)
    assert isinstance(frame, dict) and frame.get("messageType"), frame
    if frame["messageType"] == "STATUS_RESPONSE":
        assert set(frame) == {"messageType", "statusResponse"}, frame
        assert set(frame["statusResponse"]) <= STATUS_KEYS, frame
        assert str(frame["statusResponse"]["statusCode"]).isdigit(), frame
        assert int(frame["statusResponse"]["statusCode"]) < 500, frame
    else:
        assert set(frame) <= DELIVERY_KEYS, frame
        assert frame["messageType"] in ("SDP_OFFER", "SDP_ANSWER", "ICE_CANDIDATE", "GO_AWAY",
                                        "RECONNECT_ICE_SERVER"), frame  # fmt: skip
    return dict(frame)


FRAME_KEYS = st.sampled_from(["action", "Action", "ACTION", "messagePayload", "MessagePayload", "recipientClientId",
                              "RecipientClientId", "correlationId", "CorrelationId", "IceServerList", "senderClientId",
                              "", "x"])  # fmt: skip
FRAME_VALUES = (
    st.sampled_from(
        [
            "SDP_OFFER",
            "SDP_ANSWER",
            "ICE_CANDIDATE",
            "GO_AWAY",
            "sdp_offer",
            "fuzz-master",
            "fuzz-viewer",
            "eyJ0eXBlIjoib2ZmZXIifQ==",
            "QQ==",
            "=",
            "!!!!",
            "a" * 257,
            "A" * 10240,
            "A" * 10244,
            "AWS_x",
        ]
    )
    | JSON_VALUES
)
FRAMES = (
    st.dictionaries(FRAME_KEYS, FRAME_VALUES, max_size=5).map(lambda d: ("text", json.dumps(d)))
    | st.text(st.characters(codec="utf-8", exclude_categories=["Cs"]), max_size=200).map(lambda t: ("text", t))
    | JSON_VALUES.map(lambda v: ("text", json.dumps(v)))
    | st.binary(max_size=300).map(lambda b: ("binary", b))
)


def test_websocket_frames(server: SignaliteServer, ws_channel: str, error_log: ErrorLog) -> None:
    base = f"ws://127.0.0.1:{server.port}/?X-Amz-ChannelARN={quote(ws_channel, safe='')}"

    def open_peer(client_id: str | None) -> RawWs:
        url = presign_url(base + (f"&X-Amz-ClientId={client_id}" if client_id else ""), KEY, REGION,
                          server.clock.time())  # fmt: skip
        return RawWs(server.port, url.split(f"127.0.0.1:{server.port}", 1)[1])

    peers = {"master": open_peer(None), "viewer": open_peer("fuzz-viewer")}
    counter = iter(range(10**9))

    def barrier(name: str) -> None:
        """Send a frame the server always refuses; read up to its answer, checking everything read."""
        tag = f"barrier-{next(counter)}"
        peers[name].send(
            json.dumps({"action": "NOT_AN_ACTION", "messagePayload": "QQ==", "correlationId": tag}).encode()
        )
        for opcode, payload in peers[name].frames(timeout=5):
            frame = check_server_frame(opcode, payload)
            if frame and frame.get("statusResponse", {}).get("correlationId") == tag:
                return
        raise AssertionError(f"no answer to the barrier on the {name}'s socket (closed: {peers[name].closed})")

    def drain(name: str) -> None:
        for opcode, payload in peers[name].frames(timeout=0.001):
            check_server_frame(opcode, payload)

    @FUZZ
    @given(frame=FRAMES, sender=st.sampled_from(["master", "viewer"]))
    def one(frame: tuple[str, Any], sender: str) -> None:
        kind, content = frame
        data = content.encode() if isinstance(content, str) else content
        if len(data) > 60000:
            return
        peers[sender].send(data, 0x1 if kind == "text" else 0x2)
        barrier(sender)
        drain("master" if sender == "viewer" else "viewer")

    with SteadyClient(server) as steady:
        try:
            barrier("master")
            barrier("viewer")
            one()
            # Both peers are still connected and still talk to each other.
            peers["viewer"].send(json.dumps({"action": "SDP_OFFER", "messagePayload": "Zm9v"}).encode())
            got = [check_server_frame(op, p) for op, p in peers["master"].frames(timeout=2)]
            assert {"senderClientId": "fuzz-viewer", "messageType": "SDP_OFFER", "messagePayload": "Zm9v"} in got, got
        finally:
            for peer in peers.values():
                peer.close()
    finish(server, steady, error_log)
