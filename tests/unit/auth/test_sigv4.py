"""SigV4 verification against what real signers produce.

Signers used as oracles: the KVS WebRTC JS SDK's own test vectors, botocore (`SigV4Auth` directly and a
whole boto3 client), a port of the JS SDK's `getSignedURL`, and a C-SDK-style signer written here from
the protocol notes. Our own `presign_url` / `sign_request` are checked against those, never only
against our own verifier.
"""

from __future__ import annotations

import datetime
import hashlib
import hmac
from calendar import timegm
from collections.abc import Callable, Mapping
from dataclasses import replace
from time import strptime
from typing import Any
from unittest import mock
from urllib.parse import quote, unquote_to_bytes, urlsplit

import boto3
import pytest
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials
from hypothesis import given
from hypothesis import strategies as st

from signalite.auth.sigv4 import (
    AuthError,
    Credential,
    RequestParts,
    Scope,
    _strict,  # the fast path is worth testing directly
    presign_url,
    scope_from_request,
    sign_request,
    verify_presigned,
    verify_request,
)

# ----------------------------------------------------------------------------- fixtures / helpers

SECRET = "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY"
TOKEN = "IQoJb3JpZ2luX2VjEXAMPLE//token+with/slashes=="
CRED = Credential("AKIDEXAMPLE", SECRET, "111122223333")
CRED_TOKEN = Credential("ASIAEXAMPLE", "otherSecret/xyz", "111122223333", session_token=TOKEN)
CRED_OTHER = Credential("AKIDOTHER", "a-different-secret", "444455556666")
KEYS = {c.access_key_id: c for c in (CRED, CRED_TOKEN, CRED_OTHER)}


def lookup(akid: str) -> Credential | None:
    return KEYS.get(akid)


ARN = "arn:aws:kinesisvideo:us-west-2:111122223333:channel/demo/1700000000000"
T0 = 1700000000.0  # 2023-11-14T22:13:20Z


def epoch(amz_date: str) -> float:
    return float(timegm(strptime(amz_date, "%Y%m%dT%H%M%SZ")))


def parts_from_url(url: str, headers: Mapping[str, str] | None = None, method: str = "GET") -> RequestParts:
    split = urlsplit(url)
    hdrs = {"host": split.netloc, **(headers or {})}
    return RequestParts(method, split.path or "/", split.query, hdrs, b"")


def with_query_param(url: str, key: str, value: str | None) -> str:
    """Replace (or with None remove) one raw query parameter, keeping everything else byte-identical."""
    base, _, query = url.partition("?")
    out = []
    for piece in query.split("&"):
        k = piece.partition("=")[0]
        if k == key:
            if value is not None:
                out.append(f"{k}={value}")
        else:
            out.append(piece)
    return base + "?" + "&".join(out)


def raises(fn: Callable[[], object], code: str, status: int, contains: str = "") -> AuthError:
    with pytest.raises(AuthError) as info:
        fn()
    err = info.value
    assert (err.code, err.status) == (code, status), err.message
    assert contains in err.message
    # Whatever went wrong, no secret or token is ever echoed.
    for cred in KEYS.values():
        assert cred.secret_access_key not in err.message
        assert not cred.session_token or cred.session_token not in err.message
    return err


def botocore_sign(
    url: str,
    body: bytes,
    cred: Credential,
    *,
    headers: dict[str, str] | None = None,
    region: str = "us-west-2",
    service: str = "kinesisvideo",
    method: str = "POST",
) -> tuple[RequestParts, float]:
    """Sign with botocore's SigV4Auth; return what a server would receive and the signing time."""
    req = AWSRequest(
        method=method,
        url=url,
        data=body,
        headers=headers if headers is not None else {"Content-Type": "application/x-amz-json-1.1"},
    )
    SigV4Auth(Credentials(cred.access_key_id, cred.secret_access_key, cred.session_token), service, region).add_auth(
        req
    )
    split = urlsplit(url)
    received = {k.lower(): v for k, v in req.headers.items()}
    # What urllib3 adds on the wire, unsigned.
    received.setdefault("host", split.netloc)
    received["user-agent"] = "Boto3/1.x test"
    received["content-length"] = str(len(body))
    when = epoch(received["x-amz-date"]) if "x-amz-date" in received else T0
    return RequestParts(method, split.path, split.query, received, body), when


# Independent SigV4 primitives for the C-SDK and JS-SDK style signers below.
def _hmac(key: bytes, msg: str) -> bytes:
    return hmac.new(key, msg.encode(), hashlib.sha256).digest()


def ref_signature(secret: str, amz_date: str, region: str, service: str, canonical_request: str) -> str:
    k = _hmac(_hmac(_hmac(_hmac(("AWS4" + secret).encode(), amz_date[:8]), region), service), "aws4_request")
    sts = "\n".join(
        [
            "AWS4-HMAC-SHA256",
            amz_date,
            f"{amz_date[:8]}/{region}/{service}/aws4_request",
            hashlib.sha256(canonical_request.encode()).hexdigest(),
        ]
    )
    return hmac.new(k, sts.encode(), hashlib.sha256).hexdigest()


def encode_uri_component(value: str) -> str:
    # JavaScript's encodeURIComponent: leaves A-Za-z0-9 - _ . ! ~ * ' ( ) bare.
    return quote(value, safe="-_.!~*'()")


def js_signed_url(endpoint: str, query: dict[str, str], cred: Credential, region: str, now: float) -> str:
    """A line-by-line port of the KVS WebRTC JS SDK's SigV4RequestSigner.getSignedURL."""
    from time import gmtime, strftime

    amz_date = strftime("%Y%m%dT%H%M%SZ", gmtime(now))
    rest = endpoint[len("wss://") :]
    host, slash, path = rest.partition("/")
    path = "/" + path if slash else "/"
    scope = f"{amz_date[:8]}/{region}/kinesisvideo/aws4_request"
    params = {
        **query,
        "X-Amz-Algorithm": "AWS4-HMAC-SHA256",
        "X-Amz-Credential": f"{cred.access_key_id}/{scope}",
        "X-Amz-Date": amz_date,
        "X-Amz-Expires": "299",
        "X-Amz-SignedHeaders": "host",
    }
    if cred.session_token:
        params["X-Amz-Security-Token"] = cred.session_token

    def qs(p: dict[str, str]) -> str:
        return "&".join(f"{k}={encode_uri_component(p[k])}" for k in sorted(p))

    canonical = "\n".join(["GET", path, qs(params), f"host:{host}\n", "host", hashlib.sha256(b"").hexdigest()])
    params["X-Amz-Signature"] = ref_signature(cred.secret_access_key, amz_date, region, "kinesisvideo", canonical)
    return f"wss://{host}{path}?{qs(params)}"


def c_sdk_request(cred: Credential, now: float, body: bytes, path: str = "/describeSignalingChannel") -> RequestParts:
    """A request as the KVS C SDK sends it: host;user-agent;x-amz-date signed, token unsigned."""
    from time import gmtime, strftime

    amz_date = strftime("%Y%m%dT%H%M%SZ", gmtime(now))
    host = "kinesisvideo.us-west-2.amazonaws.com"
    ua = "AWS-WEBRTC-KVS-AGENT/1.10.0 (C SDK)"
    canonical = "\n".join(
        [
            "POST",
            path,
            "",
            f"host:{host}\nuser-agent:{ua}\nx-amz-date:{amz_date}\n",
            "host;user-agent;x-amz-date",
            hashlib.sha256(body).hexdigest(),
        ]
    )
    sig = ref_signature(cred.secret_access_key, amz_date, "us-west-2", "kinesisvideo", canonical)
    headers = {
        "host": host,
        "user-agent": ua,
        "x-amz-date": amz_date,
        "content-type": "application/json",
        "content-length": str(len(body)),
        "authorization": (
            f"AWS4-HMAC-SHA256 Credential={cred.access_key_id}/{amz_date[:8]}/us-west-2/kinesisvideo/"
            f"aws4_request, SignedHeaders=host;user-agent;x-amz-date, Signature={sig}"
        ),
    }
    if cred.session_token:
        headers["x-amz-security-token"] = cred.session_token
    return RequestParts("POST", path, "", headers, body)


# ----------------------------------------------------------------------------- KVS JS SDK vectors

JS_CRED = Credential("AKIA4F7WJQR7FMMWMNXI", "FakeSecretKey", "000000000000", session_token="FakeSessionToken")
JS_NOW = 1575158400.0  # 2019-12-01T00:00:00Z
JS_URL = (
    "wss://kvs.awsamazon.com/?X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Credential=AKIA4F7WJQR7FMMWMNXI%2F20191201"
    "%2Fus-west-2%2Fkinesisvideo%2Faws4_request&X-Amz-Date=20191201T000000Z&X-Amz-Expires=299"
    "&X-Amz-Security-Token=FakeSessionToken"
    "&X-Amz-Signature=fc268038be276315822b4f73eafd28ee3a5632a2a35fdb0a88db9a42b13d6c92"
    "&X-Amz-SignedHeaders=host&X-Amz-TestParam=test-param-value"
)


def js_lookup(akid: str) -> Credential | None:
    return JS_CRED if akid == JS_CRED.access_key_id else None


def test_js_sdk_vector_presign_reproduces_url_byte_for_byte() -> None:
    url = presign_url("wss://kvs.awsamazon.com?X-Amz-TestParam=test-param-value", JS_CRED, "us-west-2", JS_NOW)
    assert url == JS_URL
    assert "X-Amz-Signature=fc268038be276315822b4f73eafd28ee3a5632a2a35fdb0a88db9a42b13d6c92" in url


def test_js_sdk_vector_verifies() -> None:
    v = verify_presigned(parts_from_url(JS_URL), js_lookup, JS_NOW)
    assert v.credential is JS_CRED
    assert v.scope == Scope("AKIA4F7WJQR7FMMWMNXI", "20191201", "us-west-2", "kinesisvideo")


@pytest.mark.parametrize(
    ("endpoint", "cred", "service", "signature"),
    [
        # The other vectors in SigV4RequestSigner.spec.ts: no token, a path, a service override.
        (
            "wss://kvs.awsamazon.com",
            replace(JS_CRED, session_token=None),
            "kinesisvideo",
            "be1e78950d956a8a9a1997417099ddbd7455619f3d08c4ad20e1e272179ca695",
        ),
        (
            "wss://kvs.awsamazon.com/path/path/path",
            JS_CRED,
            "kinesisvideo",
            "0bf3df6ca23d8d82f688e8dbfb90d69e74843d40038541b1721c545eef7612a4",
        ),
        (
            "wss://kvs.awsamazon.com",
            JS_CRED,
            "firehose",
            "f15308513d21a381d38b7607a0439f25fc2e6c9f5ff56a48c1664b486e6234d5",
        ),
    ],
)
def test_js_sdk_other_vectors(endpoint: str, cred: Credential, service: str, signature: str) -> None:
    url = presign_url(endpoint + "?X-Amz-TestParam=test-param-value", cred, "us-west-2", JS_NOW, service=service)
    assert f"X-Amz-Signature={signature}&" in url
    v = verify_presigned(parts_from_url(url), lambda _k: cred, JS_NOW, service=service)
    assert v.scope.service == service


def test_js_vector_with_tampered_test_param_fails() -> None:
    url = with_query_param(JS_URL, "X-Amz-TestParam", "test-param-valuX")
    raises(lambda: verify_presigned(parts_from_url(url), js_lookup, JS_NOW), "InvalidSignatureException", 403)


# ----------------------------------------------------------------------------- botocore, header-signed

BODY = b'{"ChannelName":"x"}'
CP_URL = "http://127.0.0.1:4567/createSignalingChannel"


@pytest.mark.parametrize("cred", [CRED, CRED_TOKEN], ids=["static", "session-token"])
def test_botocore_signed_request_verifies(cred: Credential) -> None:
    parts, now = botocore_sign(CP_URL, BODY, cred)
    v = verify_request(parts, lookup, now)
    assert v.credential is cred
    assert v.scope == Scope(cred.access_key_id, parts.headers["x-amz-date"][:8], "us-west-2", "kinesisvideo")
    if cred.session_token:
        assert "x-amz-security-token" in parts.headers["authorization"]  # botocore signs the token


def test_botocore_signed_with_frozen_clock_gives_expected_date() -> None:
    frozen = datetime.datetime(2019, 12, 1, 0, 0, 0)
    with mock.patch("botocore.auth.get_current_datetime", return_value=frozen):
        parts, now = botocore_sign(CP_URL, BODY, CRED)
    assert parts.headers["x-amz-date"] == "20191201T000000Z"
    assert now == JS_NOW
    verify_request(parts, lookup, JS_NOW)


def test_botocore_date_header_instead_of_x_amz_date() -> None:
    # With a Date header botocore signs an RFC 1123 Date and sends no X-Amz-Date.
    parts, _ = botocore_sign(CP_URL, BODY, CRED, headers={"Content-Type": "application/x-amz-json-1.1", "Date": "x"})
    assert "x-amz-date" not in parts.headers
    assert parts.headers["date"][3:5] == ", "  # RFC 2822, e.g. "Tue, 14 Nov 2023 22:13:20 -0000"
    verify_request(parts, lookup, epoch_from_http_date(parts.headers["date"]))


def epoch_from_http_date(value: str) -> float:
    from email.utils import parsedate_to_datetime

    dt = parsedate_to_datetime(value)
    return (dt if dt.tzinfo else dt.replace(tzinfo=datetime.UTC)).timestamp()


def test_botocore_path_is_double_encoded_and_normalised() -> None:
    # botocore re-encodes the already-encoded path (%20 -> %2520) and drops //, . segments.
    for path in ("/v1/a%20b", "/v1//x/./y/../z", "/v1/a:b@c"):
        parts, now = botocore_sign("http://127.0.0.1:4567" + path, BODY, CRED)
        assert parts.path == path
        verify_request(parts, lookup, now)


def test_botocore_query_string_verifies() -> None:
    parts, now = botocore_sign(CP_URL + "?b=x%20y&a=1%3A2&a=0&c=", BODY, CRED)
    verify_request(parts, lookup, now)
    # The same values encoded differently by a proxy still verify: the query is re-canonicalised.
    verify_request(replace(parts, query="a=1:2&c&b=x%20y&a=0"), lookup, now)
    raises(
        lambda: verify_request(replace(parts, query="b=x%20y&a=1%3A2&c="), lookup, now),
        "InvalidSignatureException",
        403,
    )


class _Captured(Exception):
    def __init__(self, request: Any) -> None:
        super().__init__("captured")
        self.request = request


def _capture(request: Any, **_: Any) -> None:
    raise _Captured(request)


def _boto3_request(service: str, call: Callable[[Any], object], cred: Credential) -> tuple[RequestParts, float]:
    client = boto3.client(
        service,
        region_name="eu-central-1",
        endpoint_url="http://127.0.0.1:4567",
        aws_access_key_id=cred.access_key_id,
        aws_secret_access_key=cred.secret_access_key,
        aws_session_token=cred.session_token,
    )
    client.meta.events.register("before-send", _capture)
    with pytest.raises(_Captured) as info:
        call(client)
    req = info.value.request
    split = urlsplit(req.url)
    headers = {k.lower(): v.decode() if isinstance(v, bytes) else v for k, v in req.headers.items()}
    headers.setdefault("host", split.netloc)
    body = req.body or b""
    if isinstance(body, str):
        body = body.encode()
    return RequestParts(req.method, split.path, split.query, headers, body), epoch(headers["x-amz-date"])


@pytest.mark.parametrize("cred", [CRED, CRED_TOKEN], ids=["static", "session-token"])
def test_real_boto3_clients_verify(cred: Credential) -> None:
    calls: list[tuple[str, Callable[[Any], object]]] = [
        ("kinesisvideo", lambda c: c.create_signaling_channel(ChannelName="demo", Tags=[{"Key": "k", "Value": "v"}])),
        ("kinesisvideo", lambda c: c.list_signaling_channels(MaxResults=10)),
        ("kinesis-video-signaling", lambda c: c.get_ice_server_config(ChannelARN=ARN, ClientId="viewer-1")),
        ("kinesis-video-webrtc-storage", lambda c: c.join_storage_session(channelArn=ARN)),
    ]
    for service, call in calls:
        parts, now = _boto3_request(service, call, cred)
        v = verify_request(parts, lookup, now)
        assert v.scope.region == "eu-central-1"
        assert v.scope.service == "kinesisvideo"  # all three services sign as kinesisvideo


# ----------------------------------------------------------------------------- C SDK style


@pytest.mark.parametrize("cred", [CRED, CRED_TOKEN], ids=["static", "session-token"])
def test_c_sdk_style_unsigned_token_verifies(cred: Credential) -> None:
    parts = c_sdk_request(cred, T0, b'{"ChannelName":"demo"}')
    assert "x-amz-security-token" not in parts.headers["authorization"]
    assert verify_request(parts, lookup, T0).credential is cred
    # content-type and content-length are unsigned in this style: they may change in transit.
    verify_request(replace(parts, headers={**parts.headers, "content-type": "text/plain"}), lookup, T0)


def test_c_sdk_style_wrong_or_missing_token() -> None:
    parts = c_sdk_request(CRED_TOKEN, T0, b"{}")
    wrong = {**parts.headers, "x-amz-security-token": TOKEN + "x"}
    raises(lambda: verify_request(replace(parts, headers=wrong), lookup, T0), "UnrecognizedClientException", 403)
    missing = {k: v for k, v in parts.headers.items() if k != "x-amz-security-token"}
    raises(lambda: verify_request(replace(parts, headers=missing), lookup, T0), "UnrecognizedClientException", 403)


def test_token_sent_for_a_key_without_one_is_refused() -> None:
    parts = c_sdk_request(CRED, T0, b"{}")
    extra = {**parts.headers, "x-amz-security-token": "anything"}
    raises(
        lambda: verify_request(replace(parts, headers=extra), lookup, T0),
        "UnrecognizedClientException",
        403,
        "The security token included in the request is invalid.",
    )


# ----------------------------------------------------------------------------- tampering


def _set_header(parts: RequestParts, name: str, value: str) -> RequestParts:
    return replace(parts, headers={**parts.headers, name: value})


def _edit_auth(parts: RequestParts, old: str, new: str) -> RequestParts:
    auth = parts.headers["authorization"]
    assert old in auth
    return _set_header(parts, "authorization", auth.replace(old, new, 1))


def _flip_last_hex(parts: RequestParts) -> RequestParts:
    auth = parts.headers["authorization"]
    return _set_header(parts, "authorization", auth[:-1] + ("0" if auth[-1] != "0" else "1"))


SIGNED, SIGNED_NOW = botocore_sign(CP_URL, BODY, CRED_TOKEN)
_DATE = SIGNED.headers["x-amz-date"]

TAMPERS: list[tuple[str, Callable[[RequestParts], RequestParts], str, str]] = [
    ("method", lambda p: replace(p, method="PUT"), "InvalidSignatureException", "does not match"),
    ("path", lambda p: replace(p, path="/createSignalingChannex"), "InvalidSignatureException", "does not match"),
    ("query", lambda p: replace(p, query="a=b"), "InvalidSignatureException", "does not match"),
    ("host", lambda p: _set_header(p, "host", "127.0.0.1:4568"), "InvalidSignatureException", "does not match"),
    (
        "content-type",
        lambda p: _set_header(p, "content-type", "application/json"),
        "InvalidSignatureException",
        "does not match",
    ),
    ("body", lambda p: replace(p, body=b'{"ChannelName":"y"}'), "InvalidSignatureException", "does not match"),
    (
        "date+1s",
        lambda p: _set_header(p, "x-amz-date", _DATE[:-3] + f"{(int(_DATE[-3:-1]) + 1) % 60:02d}Z"),
        "InvalidSignatureException",
        "",
    ),
    ("region", lambda p: _edit_auth(p, "/us-west-2/", "/us-east-1/"), "InvalidSignatureException", "does not match"),
    (
        "service",
        lambda p: _edit_auth(p, "/kinesisvideo/", "/kinesis/"),
        "InvalidSignatureException",
        "Credential should be scoped to correct service: 'kinesisvideo'.",
    ),
    (
        "unknown key",
        lambda p: _edit_auth(p, "Credential=ASIAEXAMPLE", "Credential=ASIAEXAMPLF"),
        "UnrecognizedClientException",
        "security token included in the request is invalid",
    ),
    (
        "another known key",
        lambda p: _set_header(
            _edit_auth(p, "Credential=ASIAEXAMPLE", "Credential=AKIDOTHER"), "x-amz-security-token", ""
        ),
        "InvalidSignatureException",
        "does not match",
    ),
    ("signature", _flip_last_hex, "InvalidSignatureException", "does not match"),
    (
        "signed header list",
        lambda p: _edit_auth(p, "SignedHeaders=content-type;", "SignedHeaders="),
        "InvalidSignatureException",
        "does not match",
    ),
    ("token", lambda p: _set_header(p, "x-amz-security-token", TOKEN[:-1]), "UnrecognizedClientException", ""),
]


def test_untampered_baseline_verifies() -> None:
    assert "content-type;host;x-amz-date;x-amz-security-token" in SIGNED.headers["authorization"]
    verify_request(SIGNED, lookup, SIGNED_NOW)


@pytest.mark.parametrize(("name", "tamper", "code", "words"), TAMPERS, ids=[t[0] for t in TAMPERS])
def test_any_single_signed_change_fails(
    name: str, tamper: Callable[[RequestParts], RequestParts], code: str, words: str
) -> None:
    tampered = tamper(SIGNED)
    assert tampered != SIGNED
    raises(lambda: verify_request(tampered, lookup, SIGNED_NOW), code, 403, words)


def test_mismatch_message_is_the_aws_one() -> None:
    err = raises(lambda: verify_request(_flip_last_hex(SIGNED), lookup, SIGNED_NOW), "InvalidSignatureException", 403)
    assert err.message == (
        "The request signature we calculated does not match the signature you provided. Check your AWS Secret "
        "Access Key and signing method. Consult the service documentation for details."
    )


def test_unsigned_headers_may_change_freely() -> None:
    headers = {
        **SIGNED.headers,
        "user-agent": "something else",
        "x-forwarded-for": "10.0.0.1",
        "content-length": "999",
        "x-amzn-trace-id": "Root=1-abc",
    }
    verify_request(replace(SIGNED, headers=headers), lookup, SIGNED_NOW)


def test_signed_header_whitespace_is_trimmed_and_collapsed() -> None:
    parts, now = botocore_sign(
        CP_URL, BODY, CRED, headers={"Content-Type": "application/x-amz-json-1.1", "X-Custom": "a   b  c "}
    )
    assert "x-custom" in parts.headers["authorization"]
    verify_request(_set_header(parts, "x-custom", "  a b    c"), lookup, now)
    raises(
        lambda: verify_request(_set_header(parts, "x-custom", "a b c d"), lookup, now), "InvalidSignatureException", 403
    )


def test_signed_header_missing_from_request() -> None:
    headers = {k: v for k, v in SIGNED.headers.items() if k != "content-type"}
    raises(
        lambda: verify_request(replace(SIGNED, headers=headers), lookup, SIGNED_NOW),
        "InvalidSignatureException",
        403,
        "'content-type' is listed in SignedHeaders but missing",
    )


# ----------------------------------------------------------------------------- clock


def test_clock_window_header_signed() -> None:
    ts = epoch(_DATE)
    for delta in (-300, -299, 0, 299, 300):
        verify_request(SIGNED, lookup, ts + delta)
    raises(lambda: verify_request(SIGNED, lookup, ts + 301), "InvalidSignatureException", 403, "Signature expired")
    raises(
        lambda: verify_request(SIGNED, lookup, ts - 301), "InvalidSignatureException", 403, "Signature not yet current"
    )


def test_clock_messages_use_aws_wording() -> None:
    with mock.patch("botocore.auth.get_current_datetime", return_value=datetime.datetime(2019, 12, 1)):
        parts, _ = botocore_sign(CP_URL, BODY, CRED)
    err = raises(lambda: verify_request(parts, lookup, JS_NOW + 600), "InvalidSignatureException", 403)
    assert err.message == (
        "Signature expired: 20191201T000000Z is now earlier than 20191201T000500Z (20191201T001000Z - 5 min.)"
    )
    err = raises(lambda: verify_request(parts, lookup, JS_NOW - 600), "InvalidSignatureException", 403)
    assert err.message == (
        "Signature not yet current: 20191201T000000Z is still later than 20191130T235500Z (20191130T235000Z + 5 min.)"
    )


def test_clock_is_checked_before_the_key_and_signature() -> None:
    # The C SDK corrects its clock on these words, so they win over a bad signature.
    raises(
        lambda: verify_request(_flip_last_hex(SIGNED), lookup, SIGNED_NOW + 3600),
        "InvalidSignatureException",
        403,
        "Signature expired",
    )


def test_scope_date_must_match_x_amz_date() -> None:
    parts = _edit_auth(SIGNED, f"/{_DATE[:8]}/", "/20000101/")
    raises(
        lambda: verify_request(parts, lookup, SIGNED_NOW), "InvalidSignatureException", 403, "Date in Credential scope"
    )


# ----------------------------------------------------------------------------- malformed / missing


def test_no_auth_at_all() -> None:
    parts = RequestParts("POST", "/createSignalingChannel", "", {"host": "h"}, BODY)
    raises(
        lambda: verify_request(parts, lookup, T0),
        "MissingAuthenticationTokenException",
        403,
        "Missing Authentication Token",
    )
    raises(lambda: verify_presigned(parts, lookup, T0), "MissingAuthenticationTokenException", 403)


@pytest.mark.parametrize(
    "auth",
    [
        "Bearer abc",
        "AWS4-HMAC-SHA256",
        "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20231114/us-west-2/kinesisvideo/aws4_request",
        "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/us-west-2/kinesisvideo/aws4_request, SignedHeaders=host, Signature=00",
        "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/2023-11-14/us-west-2/kinesisvideo/aws4_request, "
        "SignedHeaders=host, Signature=00",
        "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20231114/us-west-2/kinesisvideo/aws4_request, "
        "SignedHeaders=x-amz-date, Signature=00",
        "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20231114/us-west-2/kinesisvideo/aws4_request, "
        "SignedHeaders=host, SignedHeaders=host, Signature=00",
        "AWS4-HMAC-SHA256 Credential, SignedHeaders=host, Signature=00",
    ],
)
def test_malformed_authorization_is_400(auth: str) -> None:
    parts = RequestParts("POST", "/", "", {"host": "h", "x-amz-date": "20231114T221320Z", "authorization": auth}, b"")
    raises(lambda: verify_request(parts, lookup, T0), "IncompleteSignatureException", 400)


def test_missing_or_bad_timestamp_is_400() -> None:
    no_date = {k: v for k, v in SIGNED.headers.items() if k != "x-amz-date"}
    raises(
        lambda: verify_request(replace(SIGNED, headers=no_date), lookup, SIGNED_NOW),
        "IncompleteSignatureException",
        400,
        "X-Amz-Date",
    )
    raises(
        lambda: verify_request(_set_header(SIGNED, "x-amz-date", "2023-11-14T22:13:20Z"), lookup, SIGNED_NOW),
        "IncompleteSignatureException",
        400,
    )


def test_bad_terminator_and_region() -> None:
    raises(
        lambda: verify_request(_edit_auth(SIGNED, "/aws4_request", "/aws5_request"), lookup, SIGNED_NOW),
        "InvalidSignatureException",
        403,
        "terminator",
    )
    raises(
        lambda: verify_request(_edit_auth(SIGNED, "/us-west-2/", "/us:west/"), lookup, SIGNED_NOW),
        "InvalidSignatureException",
        403,
        "valid region",
    )


def test_content_sha256_header() -> None:
    good = hashlib.sha256(BODY).hexdigest()
    parts, now = botocore_sign(
        CP_URL, BODY, CRED, headers={"Content-Type": "application/x-amz-json-1.1", "X-Amz-Content-SHA256": good}
    )
    assert "x-amz-content-sha256" in parts.headers["authorization"]
    verify_request(parts, lookup, now)
    # botocore puts the header value into the canonical request as-is: UNSIGNED-PAYLOAD would sign
    # correctly, and is still refused because it leaves the body unauthenticated.
    parts, now = botocore_sign(
        CP_URL,
        BODY,
        CRED,
        headers={"Content-Type": "application/x-amz-json-1.1", "X-Amz-Content-SHA256": "UNSIGNED-PAYLOAD"},
    )
    raises(lambda: verify_request(parts, lookup, now), "InvalidSignatureException", 403, "UNSIGNED-PAYLOAD")
    bad = hashlib.sha256(b"other").hexdigest()
    parts, now = botocore_sign(
        CP_URL, BODY, CRED, headers={"Content-Type": "application/x-amz-json-1.1", "X-Amz-Content-SHA256": bad}
    )
    raises(lambda: verify_request(parts, lookup, now), "InvalidSignatureException", 403, "x-amz-content-sha256")


def test_header_and_query_auth_together_is_refused() -> None:
    parts = replace(SIGNED, query="X-Amz-Algorithm=AWS4-HMAC-SHA256")
    raises(lambda: verify_request(parts, lookup, SIGNED_NOW), "IncompleteSignatureException", 400, "Only one auth")


# ----------------------------------------------------------------------------- presigned


def _ws_url(cred: Credential = CRED_TOKEN, expires: int = 299, now: float = T0) -> str:
    return presign_url(
        f"wss://r-abc.signalite.test/?X-Amz-ChannelARN={quote(ARN, safe='')}&X-Amz-ClientId=viewer-1",
        cred,
        "us-west-2",
        now,
        expires,
    )


def test_presigned_roundtrip_and_contents() -> None:
    url = _ws_url()
    split = urlsplit(url)
    assert split.path == "/"
    assert "X-Amz-Security-Token=" + quote(TOKEN, safe="") in url
    assert "X-Amz-ChannelARN=" + quote(ARN, safe="-_.~") in url
    v = verify_presigned(parts_from_url(url), lookup, T0)
    assert v.credential is CRED_TOKEN
    assert v.scope.region == "us-west-2"
    # The same URL is accepted by verify_request, which falls back to query auth.
    assert verify_request(parts_from_url(url), lookup, T0).credential is CRED_TOKEN


@pytest.mark.parametrize("expires", [1, 299, 604800])
def test_presigned_expiry_boundary(expires: int) -> None:
    parts = parts_from_url(_ws_url(expires=expires))
    verify_presigned(parts, lookup, T0 + expires)
    raises(lambda: verify_presigned(parts, lookup, T0 + expires + 1), "AccessDeniedException", 403, "Signature expired")


def test_presigned_not_yet_current() -> None:
    parts = parts_from_url(_ws_url())
    verify_presigned(parts, lookup, T0 - 300)
    raises(
        lambda: verify_presigned(parts, lookup, T0 - 301), "InvalidSignatureException", 403, "Signature not yet current"
    )


@pytest.mark.parametrize("expires", ["0", "604801"])
def test_presigned_expires_out_of_range(expires: str) -> None:
    # The range is checked before the signature, so the refusal names the real problem.
    url = with_query_param(_ws_url(), "X-Amz-Expires", expires)
    raises(
        lambda: verify_presigned(parts_from_url(url), lookup, T0), "AccessDeniedException", 403, "between 1 and 604800"
    )
    with pytest.raises(ValueError):
        presign_url("wss://h/", CRED, "us-west-2", T0, int(expires))


def test_presigned_expires_not_a_number() -> None:
    url = with_query_param(_ws_url(), "X-Amz-Expires", "2e2")
    raises(lambda: verify_presigned(parts_from_url(url), lookup, T0), "IncompleteSignatureException", 400)


@pytest.mark.parametrize("cred", [CRED, CRED_TOKEN], ids=["static", "session-token"])
def test_presigned_js_sdk_encoding(cred: Credential) -> None:
    query = {"X-Amz-ChannelARN": ARN, "X-Amz-ClientId": "lqz3k1-8f2a"}
    url = js_signed_url("wss://r-abc.signalite.test", query, cred, "us-west-2", T0)
    assert "%3A" in url and "%2F" in url  # encodeURIComponent escapes ':' and '/'
    assert verify_presigned(parts_from_url(url), lookup, T0).credential is cred
    # With a path, as an operator-configured public URL might have.
    url = js_signed_url("wss://r-abc.signalite.test/ws/kvs", query, cred, "us-west-2", T0)
    verify_presigned(parts_from_url(url), lookup, T0)


def test_presigned_js_sdk_encoding_of_sub_delims() -> None:
    # encodeURIComponent leaves !'()* bare and signs them bare; strict SigV4 would escape them.
    query = {"X-Amz-ChannelARN": ARN, "X-Amz-ClientId": "it's(a)*test!"}
    url = js_signed_url("wss://r-abc.signalite.test", query, CRED, "us-west-2", T0)
    assert "it's(a)*test!" in url
    verify_presigned(parts_from_url(url), lookup, T0)
    bad = url.replace("it's(a)*test!", "it's(b)*test!")
    raises(lambda: verify_presigned(parts_from_url(bad), lookup, T0), "InvalidSignatureException", 403)


def test_presigned_strictly_signed_but_sent_with_bare_colons() -> None:
    # A client (or proxy) that leaves ':' unescaped on the wire: decoding normalises it.
    url = _ws_url()
    loose = url.replace("%3A", ":")
    assert loose != url
    verify_presigned(parts_from_url(loose), lookup, T0)


def test_presigned_params_in_any_order() -> None:
    base, _, query = _ws_url().partition("?")
    shuffled = "&".join(reversed(query.split("&")))
    verify_presigned(parts_from_url(base + "?" + shuffled), lookup, T0)


@pytest.mark.parametrize(
    ("param", "code", "status"),
    [
        ("X-Amz-Algorithm", "MissingAuthenticationTokenException", 403),
        ("X-Amz-Credential", "IncompleteSignatureException", 400),
        ("X-Amz-Date", "IncompleteSignatureException", 400),
        ("X-Amz-Expires", "IncompleteSignatureException", 400),
        ("X-Amz-SignedHeaders", "IncompleteSignatureException", 400),
        ("X-Amz-Signature", "IncompleteSignatureException", 400),
        ("X-Amz-Security-Token", "UnrecognizedClientException", 403),
    ],
)
def test_presigned_missing_param(param: str, code: str, status: int) -> None:
    url = with_query_param(_ws_url(), param, None)
    assert f"{param}=" not in url
    raises(lambda: verify_presigned(parts_from_url(url), lookup, T0), code, status)


@pytest.mark.parametrize(
    ("param", "value", "code"),
    [
        ("X-Amz-ChannelARN", quote(ARN.replace("demo", "demx"), safe=""), "InvalidSignatureException"),
        ("X-Amz-ClientId", "viewer-2", "InvalidSignatureException"),
        ("X-Amz-Date", "20231114T221321Z", "InvalidSignatureException"),
        ("X-Amz-Expires", "300", "InvalidSignatureException"),
        ("X-Amz-Security-Token", quote(TOKEN + "x", safe=""), "UnrecognizedClientException"),
        ("X-Amz-Signature", "0" * 64, "InvalidSignatureException"),
        (
            "X-Amz-Credential",
            quote("ASIAEXAMPLE/20231114/us-east-1/kinesisvideo/aws4_request", safe=""),
            "InvalidSignatureException",
        ),
        (
            "X-Amz-Credential",
            quote("ASIAEXAMPLE/20231114/us-west-2/kinesis/aws4_request", safe=""),
            "InvalidSignatureException",
        ),
        (
            "X-Amz-Credential",
            quote("ASIAUNKNOWN/20231114/us-west-2/kinesisvideo/aws4_request", safe=""),
            "UnrecognizedClientException",
        ),
    ],
)
def test_presigned_tampering(param: str, value: str, code: str) -> None:
    url = with_query_param(_ws_url(), param, value)
    assert url != _ws_url()
    raises(lambda: verify_presigned(parts_from_url(url), lookup, T0), code, 403)


def test_presigned_extra_param_or_other_host_or_path_fails() -> None:
    url = _ws_url()
    raises(lambda: verify_presigned(parts_from_url(url + "&extra=1"), lookup, T0), "InvalidSignatureException", 403)
    raises(
        lambda: verify_presigned(parts_from_url(url.replace("r-abc.", "r-abd.")), lookup, T0),
        "InvalidSignatureException",
        403,
    )
    raises(
        lambda: verify_presigned(parts_from_url(url.replace(".test/?", ".test/x?")), lookup, T0),
        "InvalidSignatureException",
        403,
    )


def test_presigned_duplicate_auth_param_refused() -> None:
    url = _ws_url() + "&X-Amz-Signature=" + "0" * 64
    raises(lambda: verify_presigned(parts_from_url(url), lookup, T0), "IncompleteSignatureException", 400)


def test_presigned_ignores_authorization_header_and_unsigned_headers() -> None:
    parts = parts_from_url(
        _ws_url(), {"authorization": "garbage", "origin": "https://x", "sec-websocket-key": "abc==", "user-agent": "x"}
    )
    verify_presigned(parts, lookup, T0)


def test_presigned_token_for_key_without_token_refused() -> None:
    url = _ws_url(cred=CRED) + "&X-Amz-Security-Token=abc"
    raises(lambda: verify_presigned(parts_from_url(url), lookup, T0), "UnrecognizedClientException", 403)


def test_presign_url_rejects_bad_input() -> None:
    with pytest.raises(ValueError):
        presign_url("/relative", CRED, "us-west-2", T0)
    with pytest.raises(ValueError):
        presign_url(_ws_url(), CRED, "us-west-2", T0)


# ----------------------------------------------------------------------------- sign_request, scope, repr


@pytest.mark.parametrize("cred", [CRED, CRED_TOKEN], ids=["static", "session-token"])
def test_sign_request_roundtrip(cred: Credential) -> None:
    parts = RequestParts(
        "POST",
        "/v1/get-ice-server-config",
        "",
        {"host": "127.0.0.1:4567", "content-type": "application/json", "user-agent": "bench"},
        b'{"ChannelARN":"x"}',
    )
    added = sign_request(parts, cred, "ap-south-1", T0)
    assert set(added) == {"authorization", "x-amz-date"} | ({"x-amz-security-token"} if cred.session_token else set())
    assert "SignedHeaders=content-type;host;x-amz-date" in added["authorization"]
    assert "user-agent" not in added["authorization"]
    signed = replace(parts, headers={**parts.headers, **added})
    v = verify_request(signed, lookup, T0)
    assert v.scope.region == "ap-south-1"
    raises(lambda: verify_request(replace(signed, body=b"{}"), lookup, T0), "InvalidSignatureException", 403)


def test_sign_request_matches_botocore() -> None:
    # Same request, same clock: our signer and botocore produce the same Authorization header.
    with mock.patch("botocore.auth.get_current_datetime", return_value=datetime.datetime(2023, 11, 14, 22, 13, 20)):
        theirs, now = botocore_sign(CP_URL, BODY, CRED_TOKEN)
    assert now == T0
    base = {"host": "127.0.0.1:4567", "content-type": "application/x-amz-json-1.1"}
    ours = sign_request(RequestParts("POST", "/createSignalingChannel", "", base, BODY), CRED_TOKEN, "us-west-2", T0)
    assert ours["authorization"] == theirs.headers["authorization"]


def test_scope_from_request() -> None:
    assert scope_from_request(SIGNED) == Scope("ASIAEXAMPLE", _DATE[:8], "us-west-2", "kinesisvideo")
    assert scope_from_request(parts_from_url(JS_URL)) == Scope(
        "AKIA4F7WJQR7FMMWMNXI", "20191201", "us-west-2", "kinesisvideo"
    )
    # Best effort: the service is reported, not judged.
    other = _edit_auth(SIGNED, "/kinesisvideo/", "/s3/")
    assert scope_from_request(other) == Scope("ASIAEXAMPLE", _DATE[:8], "us-west-2", "s3")
    assert scope_from_request(RequestParts("GET", "/", "", {}, b"")) is None
    assert scope_from_request(RequestParts("GET", "/", "X-Amz-Credential=%ZZ/x", {}, b"")) is None
    assert (
        scope_from_request(RequestParts("GET", "/", "X-Amz-Credential=a/b/c/d/e&X-Amz-Credential=f", {}, b"")) is None
    )
    # A region that could corrupt an ARN is never handed out.
    evil = with_query_param(JS_URL, "X-Amz-Credential", "AKIA%2F20191201%2Fus%3Awest%2Fkinesisvideo%2Faws4_request")
    assert scope_from_request(parts_from_url(evil)) is None


def test_credential_repr_hides_secret_and_token() -> None:
    text = repr(CRED_TOKEN) + str(CRED_TOKEN) + repr(verify_request(SIGNED, lookup, SIGNED_NOW))
    assert "ASIAEXAMPLE" in text
    assert CRED_TOKEN.secret_access_key not in text
    assert TOKEN not in text


def test_auth_error_fields() -> None:
    err = raises(lambda: verify_request(_flip_last_hex(SIGNED), lookup, SIGNED_NOW), "InvalidSignatureException", 403)
    assert isinstance(err, Exception)
    assert err.message in str(err)


# ----------------------------------------------------------------------------- canonical query fast path


def test_strict_fast_path_agrees_on_every_escape() -> None:
    for byte in range(256):
        for escaped in (f"%{byte:02X}", f"%{byte:02x}", chr(byte)):
            assert _strict(escaped) == quote(unquote_to_bytes(escaped), safe="-_.~"), escaped


@given(st.text(alphabet=st.sampled_from("aZ09-_.~%/:+=!*'() ü2fF3A"), max_size=24))
def test_strict_equals_decode_then_encode(text: str) -> None:
    assert _strict(text) == quote(unquote_to_bytes(text), safe="-_.~")
