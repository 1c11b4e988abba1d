"""The strict-mode Gatekeeper on aiohttp requests: what it reads of a request, and what it concludes.

`request_parts` hands SigV4 a view of the request's headers instead of a copy: it must read exactly
as the copy did (lower-case names, repeated headers joined with ","). `authenticate` remembers the
Caller per (key, region) and `authorize_connect` skips the policy when there is none: verdicts,
codes and messages must be what the general SigV4 path gives for the same bytes.
"""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import quote

import orjson
import pytest
from aiohttp.test_utils import make_mocked_request
from hypothesis import given
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
    assert run(gate.authorize_connect(ws_request(connect_url()), ARN, Role.VIEWER)) == ACCOUNT


def test_authorize_connect_refusals(tmp_path: Path) -> None:
    gate = gatekeeper(identities(tmp_path))
    with pytest.raises(ServiceError) as info:
        run(gate.authorize_connect(ws_request(connect_url(tamper=True)), ARN, Role.VIEWER))
    assert (info.value.code, info.value.status) == ("InvalidSignatureException", 403)
    assert "does not match" in info.value.message
    other = ARN.replace(ACCOUNT, "444455556666")
    with pytest.raises(ServiceError) as info:
        run(gate.authorize_connect(ws_request(connect_url(other)), other, Role.VIEWER))
    assert info.value.code == "ResourceNotFoundException"
    late = gatekeeper(identities(tmp_path), now=T0 + 300)
    with pytest.raises(ServiceError) as info:
        run(late.authorize_connect(ws_request(connect_url()), ARN, Role.VIEWER))
    assert (info.value.code, info.value.status) == ("AccessDeniedException", 403)


@pytest.mark.parametrize(("role", "allowed"), [(Role.VIEWER, True), (Role.MASTER, False)])
def test_authorize_connect_with_a_policy(tmp_path: Path, role: Role, allowed: bool) -> None:
    policy = {"Statement": [{"Effect": "Allow", "Action": "kinesisvideo:ConnectAsViewer", "Resource": ARN}]}
    gate = gatekeeper(identities(tmp_path, policy))
    if allowed:
        assert run(gate.authorize_connect(ws_request(connect_url()), ARN, role)) == ACCOUNT
        return
    with pytest.raises(ServiceError) as info:
        run(gate.authorize_connect(ws_request(connect_url()), ARN, role))
    assert (info.value.code, info.value.status) == ("AccessDeniedException", 403)
    assert info.value.message == f"User {KEY} is not authorized to perform kinesisvideo:ConnectAsMaster on {ARN}"
