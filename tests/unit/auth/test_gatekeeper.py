"""The strict-mode Gatekeeper on aiohttp requests: what it reads of a request, and what it concludes.

`request_parts` hands SigV4 a view of the request's headers instead of a copy: it must read exactly
as the copy did (lower-case names, repeated headers joined with ","). `authenticate` remembers the
Caller per (key, region) and `authorize_connect` skips the policy when there is none: verdicts,
codes and messages must be what the general SigV4 path gives for the same bytes.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
from collections.abc import Coroutine
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import quote

import orjson
import pytest
from aiohttp.test_utils import make_mocked_request
from hypothesis import given, settings
from hypothesis import strategies as st
from multidict import CIMultiDict, CIMultiDictProxy
from yarl import URL

from signalite.auth import sigv4
from signalite.auth.credentials import Identity, load_credentials
from signalite.auth.sigv4 import AuthError, Credential, RequestParts, presign_url, sign_request
from signalite.controlplane.quotas import RateTable, RequestQuotas
from signalite.model.errors import ServiceError
from signalite.signaling.hub import Role
from signalite.web import auth as web_auth
from signalite.web.auth import Caller, Gatekeeper, HeaderView, request_parts

ACCOUNT = "111122223333"
KEY = "AKIDGATEKEEPER01"
SECRET = "gatekeeper-secret/abc+def"
T0 = 1700000000.0
HOST = "127.0.0.1:4567"
ARN = f"arn:aws:kinesisvideo:us-west-2:{ACCOUNT}:channel/demo/1700000000000"
CRED = Credential(KEY, SECRET, ACCOUNT)

T = TypeVar("T")


def run(coro: Coroutine[Any, Any, T]) -> T:
    return asyncio.new_event_loop().run_until_complete(coro)


def identities(tmp_path: Path, policy: dict[str, Any] | None = None) -> dict[str, Identity]:
    entry: dict[str, Any] = {"access_key_id": KEY, "secret_access_key": SECRET, "account_id": ACCOUNT}
    if policy is not None:
        entry["policy"] = policy
    path = tmp_path / "creds.json"
    path.write_bytes(orjson.dumps({"credentials": [entry]}))
    return dict(load_credentials(path))


def gatekeeper(ids: dict[str, Identity] | None, now: float = T0) -> Gatekeeper:
    return Gatekeeper(
        identities=ids,
        default_account="000000000000",
        default_region="us-east-1",
        store=None,  # type: ignore[arg-type]  # not reached: no policy needs a channel lookup here
        quotas=RequestQuotas(RateTable.for_mode("off")),
        clock=lambda: now,
    )


def rest_request(region: str = "us-west-2", *, tamper: bool = False, extra: tuple[tuple[str, str], ...] = ()) -> Any:
    body = b'{"ChannelName":"demo"}'
    headers = {"host": HOST, "content-type": "application/json"}
    added = sign_request(RequestParts("POST", "/describeSignalingChannel", "", headers, body), CRED, region, T0)
    auth = added["authorization"]
    if tamper:
        auth = auth[:-1] + ("0" if auth[-1] != "0" else "1")
    wire = CIMultiDict(
        [
            ("Host", HOST),
            ("Content-Type", "application/json"),
            ("X-Amz-Date", added["x-amz-date"]),
            ("Authorization", auth),
            ("User-Agent", "Boto3/1.34.0"),
            *extra,
        ]
    )
    return make_mocked_request("POST", "/describeSignalingChannel", headers=wire), body


def ws_request(url: str) -> Any:
    target = url.split(HOST, 1)[1]
    headers = CIMultiDict({"Host": HOST, "Upgrade": "websocket", "Connection": "Upgrade"})
    return make_mocked_request("GET", target, headers=headers).clone(rel_url=URL(target, encoded=True))


def copied_headers(request: Any) -> dict[str, str]:
    """What request_parts used to build: a dict copy, lower-case names, repeats joined with ","."""
    headers: dict[str, str] = {}
    for name, value in request.headers.items():
        key = name.lower()
        headers[key] = f"{headers[key]},{value}" if key in headers else value
    return headers


# ----------------------------------------------------------------------------- the header view


@given(
    st.lists(
        st.tuples(st.sampled_from(["Host", "host", "X-Amz-Date", "x-amz-date", "Via", "X-A", "x-a"]), st.text()),
        max_size=8,
    )
)
def test_header_view_reads_as_the_copy_did(pairs: list[tuple[str, str]]) -> None:
    proxy = CIMultiDictProxy(CIMultiDict(pairs))
    view = HeaderView(proxy)
    copy: dict[str, str] = {}
    for name, value in proxy.items():
        key = name.lower()
        copy[key] = f"{copy[key]},{value}" if key in copy else value
    assert dict(view) == copy
    assert len(view) == len(copy)
    assert list(view) == list(copy)
    for name in ("host", "x-amz-date", "via", "x-a", "absent"):
        assert view.get(name) == copy.get(name)
        assert (name in view) is (name in copy)
        if name in copy:
            assert view[name] == copy[name]
        else:
            with pytest.raises(KeyError):
                view[name]


def test_request_parts_keeps_the_raw_target_and_body() -> None:
    url = presign_url(f"ws://{HOST}/a%2Fb/?X-Amz-ClientId=v%20{quote('ü')}", CRED, "us-west-2", T0)
    request = ws_request(url)
    parts = request_parts(request, b"body")
    assert (parts.method, parts.path, parts.body) == ("GET", "/a%2Fb/", b"body")
    assert parts.query == url.partition("?")[2]
    assert dict(parts.headers) == copied_headers(request)


# ----------------------------------------------------------------------------- REST


def test_authenticate_strict(tmp_path: Path) -> None:
    gate = gatekeeper(identities(tmp_path))
    request, body = rest_request()
    caller = run(gate.authenticate(request, body))
    assert caller == Caller(ACCOUNT, "us-west-2", None, KEY)
    again, body = rest_request()
    assert run(gate.authenticate(again, body)) is caller  # remembered per (key, region)
    other, body = rest_request("eu-west-1")
    assert run(gate.authenticate(other, body)) == Caller(ACCOUNT, "eu-west-1", None, KEY)


@pytest.mark.parametrize(
    ("make", "code"),
    [
        (lambda: rest_request(tamper=True), "InvalidSignatureException"),
        (lambda: rest_request(extra=(("Content-Type", "text/plain"),)), "InvalidSignatureException"),  # repeated
        (lambda: rest_request(extra=(("X-Amz-Security-Token", "x"),)), "UnrecognizedClientException"),
    ],
)
def test_authenticate_refuses_as_the_general_path_does(tmp_path: Path, make: Any, code: str) -> None:
    gate = gatekeeper(identities(tmp_path))
    request, body = make()
    with pytest.raises(AuthError) as info:
        run(gate.authenticate(request, body))
    assert info.value.code == code
    parts = RequestParts("POST", "/describeSignalingChannel", "", copied_headers(request), body)
    with pytest.raises(AuthError) as general:
        sigv4._verify_request(parts, {KEY: CRED}.get, T0, "kinesisvideo", 300.0)
    assert (info.value.code, info.value.status, info.value.message) == (
        general.value.code,
        general.value.status,
        general.value.message,
    )


# What a client may have signed a repeated header as: its first value, or all of them joined (the
# general path's reading). The fast path reads each header once and leaves a repeated one alone.
_WIRE = {
    "host": "Host",
    "content-type": "Content-Type",
    "x-amz-date": "X-Amz-Date",
    "x-amz-content-sha256": "X-Amz-Content-Sha256",
    "x-amz-security-token": "X-Amz-Security-Token",
    "authorization": "Authorization",
}


def _authorization(values: dict[str, str], body: bytes) -> str:
    """Sign `values` (lower-case names, every one signed) independently of the code under test."""
    signed = sorted(values)
    block = "".join(f"{n}:{' '.join(values[n].split())}\n" for n in signed)
    payload = values.get("x-amz-content-sha256", hashlib.sha256(body).hexdigest()).strip()
    canonical = "\n".join(("POST", "/describeSignalingChannel", "", block, ";".join(signed), payload))
    amz_date = values["x-amz-date"]
    day = amz_date[:8]

    def mac(key: bytes, msg: str) -> bytes:
        return hmac.new(key, msg.encode(), hashlib.sha256).digest()

    key = mac(mac(mac(mac(("AWS4" + SECRET).encode(), day), "us-west-2"), "kinesisvideo"), "aws4_request")
    digest = hashlib.sha256(canonical.encode()).hexdigest()
    sts = f"AWS4-HMAC-SHA256\n{amz_date}\n{day}/us-west-2/kinesisvideo/aws4_request\n{digest}"
    signature = hmac.new(key, sts.encode(), hashlib.sha256).hexdigest()
    scope = f"{KEY}/{day}/us-west-2/kinesisvideo/aws4_request"
    return f"AWS4-HMAC-SHA256 Credential={scope}, SignedHeaders={';'.join(signed)}, Signature={signature}"


@settings(max_examples=300, deadline=None)
@given(
    repeated=st.sampled_from([None, *_WIRE]),
    second=st.sampled_from(["same", "other", "blank"]),
    signed_as=st.sampled_from(["first", "joined"]),
    payload_header=st.booleans(),
    target=st.sampled_from(
        ["/describeSignalingChannel", "/describeSignalingChannel?", "/describeSignalingChannel?a=b"]
    ),
)
def test_authenticate_reads_the_wire_as_the_general_path_does(
    tmp_path_factory: pytest.TempPathFactory,
    repeated: str | None,
    second: str,
    signed_as: str,
    payload_header: bool,
    target: str,
) -> None:
    body = b'{"ChannelName":"demo"}'
    amz_date = "20231114T221320Z"  # T0
    first = {"host": HOST, "content-type": "application/json", "x-amz-date": amz_date}
    if payload_header:
        first["x-amz-content-sha256"] = hashlib.sha256(body).hexdigest()
    if repeated == "x-amz-security-token":
        first["x-amz-security-token"] = "token"
    others = {
        "host": "other.example:1",
        "content-type": "text/plain",
        "x-amz-date": "20231114T221321Z",
        "x-amz-content-sha256": hashlib.sha256(b"").hexdigest(),
        "x-amz-security-token": "token2",
    }
    extra = None
    if repeated is not None:
        extra = {"same": first.get(repeated), "other": others.get(repeated), "blank": ""}[second]
    values = dict(first)
    if repeated in values and extra is not None and signed_as == "joined":
        values[repeated] = f"{values[repeated]},{extra}"
    auth = _authorization(values, body)
    if repeated == "authorization" and extra is None:
        extra = auth if second == "same" else auth[:-1] + ("0" if auth[-1] != "0" else "1")
    wire = CIMultiDict([(_WIRE[name], value) for name, value in [*first.items(), ("authorization", auth)]])
    if repeated is not None and extra is not None:
        wire.add(repeated.upper(), extra)  # the same header, spelt otherwise
    request = make_mocked_request("POST", target, headers=wire)
    path, _, query = target.partition("?")
    gate = gatekeeper(identities(tmp_path_factory.mktemp("ids")))

    def outcome(fn: Any) -> tuple[Any, ...]:
        try:
            result = fn()
        except AuthError as e:
            return ("error", e.code, e.status, e.message)
        return ("ok", result)

    parts = RequestParts("POST", path, query, copied_headers(request), body)
    general = outcome(lambda: sigv4._verify_request(parts, {KEY: CRED}.get, T0, "kinesisvideo", 300.0))
    got = outcome(lambda: run(gate.authenticate(request, body)))
    if general[0] == "ok":
        assert got == ("ok", Caller(ACCOUNT, "us-west-2", None, KEY))
    else:
        assert got == general
    if not query:
        fast = sigv4.accept_request("POST", path, request.headers.getall, body, {KEY: CRED}.get, T0)
        if fast is not None:
            assert general == ("ok", fast)
        if repeated is None:
            assert fast is not None  # the usual request takes the fast path


def test_the_caller_memo_is_bounded(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(web_auth, "_MAX_CALLERS", 8)
    gate = gatekeeper(identities(tmp_path))
    for i in range(20):
        request, body = rest_request(f"r{i}")
        assert run(gate.authenticate(request, body)).region == f"r{i}"
        assert len(gate._callers) <= 8


def test_authenticate_open_mode_is_untouched() -> None:
    request, body = rest_request(tamper=True)
    assert run(gatekeeper(None).authenticate(request, body)) == Caller("000000000000", "us-west-2")


# ----------------------------------------------------------------------------- WebSocket


def connect_url(arn: str = ARN, *, tamper: bool = False) -> str:
    url = presign_url(f"ws://{HOST}/?X-Amz-ChannelARN={quote(arn, safe='')}&X-Amz-ClientId=v1", CRED, "us-west-2", T0)
    if tamper:
        at = url.index("X-Amz-Signature=") + len("X-Amz-Signature=")
        url = url[:at] + ("0" if url[at] != "0" else "1") + url[at + 1 :]
    return url


def test_authorize_connect_strict(tmp_path: Path) -> None:
    gate = gatekeeper(identities(tmp_path))
    assert gate.authorize_connect(ws_request(connect_url()), ARN, Role.VIEWER) == ACCOUNT


def test_authorize_connect_refusals(tmp_path: Path) -> None:
    gate = gatekeeper(identities(tmp_path))
    with pytest.raises(ServiceError) as info:
        gate.authorize_connect(ws_request(connect_url(tamper=True)), ARN, Role.VIEWER)
    assert (info.value.code, info.value.status) == ("InvalidSignatureException", 403)
    assert "does not match" in info.value.message
    other = ARN.replace(ACCOUNT, "444455556666")
    with pytest.raises(ServiceError) as info:
        gate.authorize_connect(ws_request(connect_url(other)), other, Role.VIEWER)
    assert info.value.code == "ResourceNotFoundException"
    late = gatekeeper(identities(tmp_path), now=T0 + 300)
    with pytest.raises(ServiceError) as info:
        late.authorize_connect(ws_request(connect_url()), ARN, Role.VIEWER)
    assert (info.value.code, info.value.status) == ("AccessDeniedException", 403)


@pytest.mark.parametrize(("role", "allowed"), [(Role.VIEWER, True), (Role.MASTER, False)])
def test_authorize_connect_with_a_policy(tmp_path: Path, role: Role, allowed: bool) -> None:
    policy = {"Statement": [{"Effect": "Allow", "Action": "kinesisvideo:ConnectAsViewer", "Resource": ARN}]}
    gate = gatekeeper(identities(tmp_path, policy))
    if allowed:
        assert gate.authorize_connect(ws_request(connect_url()), ARN, role) == ACCOUNT
        return
    with pytest.raises(ServiceError) as info:
        gate.authorize_connect(ws_request(connect_url()), ARN, role)
    assert (info.value.code, info.value.status) == ("AccessDeniedException", 403)
    assert info.value.message == f"User {KEY} is not authorized to perform kinesisvideo:ConnectAsMaster on {ARN}"


@pytest.mark.parametrize("second", [None, HOST, "other.example:1", ""])
@pytest.mark.parametrize("signed_as", ["first", "joined"])
def test_authorize_connect_reads_the_wire_as_the_general_path_does(
    tmp_path: Path, second: str | None, signed_as: str
) -> None:
    host = HOST if second is None or signed_as == "first" else f"{HOST},{second}"
    url = presign_url(f"ws://{host}/?X-Amz-ChannelARN={quote(ARN, safe='')}&X-Amz-ClientId=v1", CRED, "us-west-2", T0)
    target = url.split(host, 1)[1]
    wire = CIMultiDict([("Host", HOST), ("Upgrade", "websocket"), ("Connection", "Upgrade")])
    if second is not None:
        wire.add("HOST", second)
    request = make_mocked_request("GET", target, headers=wire).clone(rel_url=URL(target, encoded=True))
    path, _, query = target.partition("?")
    parts = RequestParts("GET", path, query, copied_headers(request), b"")
    try:
        sigv4._verify_presigned(parts, sigv4._split_query(query), {KEY: CRED}.get, T0, "kinesisvideo", 300.0)
        general: tuple[Any, ...] = ("ok",)
    except AuthError as e:
        general = ("error", e.code, e.message)
    gate = gatekeeper(identities(tmp_path))
    try:
        assert gate.authorize_connect(request, ARN, Role.VIEWER) == ACCOUNT
        got: tuple[Any, ...] = ("ok",)
    except ServiceError as e:
        assert e.status == 403
        got = ("error", e.code, e.message)
    assert got == general
    fast = sigv4.accept_presigned("GET", path, query, request.headers.getall, b"", {KEY: CRED}.get, T0)
    if fast is not None:
        assert general == ("ok",)
    assert (fast is not None) is (second is None)
