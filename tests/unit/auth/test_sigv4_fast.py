"""The SigV4 fast paths against the general path: they may only ever accept what it accepts.

`verify_request` / `verify_presigned` first try `_fast_request` / `_fast_presigned`, which accept a
common-case request from cached parses or return None, and then the general path. So the public
functions must reach exactly the general path's verdict (same Verified, or the same error code,
status and message) on every input, and a fast path must never accept what the general path
refuses. Inputs are varied on every axis a fast path takes a shortcut on, and each is signed over
several candidate canonical forms (the general path's, the raw query as received, a naively
sorted one, other URI forms), so that a fast path that built a different canonical request than
the general path would be caught accepting a signature the general path refuses.
"""

from __future__ import annotations

import hashlib
import hmac
import itertools
from calendar import timegm
from collections.abc import Callable
from dataclasses import replace
from functools import partial
from time import strptime
from typing import Any
from urllib.parse import quote

import pytest
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from signalite.auth import sigv4
from signalite.auth.sigv4 import (
    AuthError,
    Credential,
    RequestParts,
    presign_url,
    sign_request,
    verify_presigned,
    verify_request,
)

SECRET = "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY"
TOKEN = "IQoJb3JpZ2luX2VjEXAMPLE//token+with/slashes=="
CRED = Credential("AKIDEXAMPLE", SECRET, "111122223333")
CRED_TOKEN = Credential("ASIAEXAMPLE", "otherSecret/xyz", "111122223333", session_token=TOKEN)
KEYS = {c.access_key_id: c for c in (CRED, CRED_TOKEN)}
T0 = 1700000000.0  # 2023-11-14T22:13:20Z
AMZ_DATE = "20231114T221320Z"
REGION = "us-west-2"
SERVICE = "kinesisvideo"
HOST = "r-abc.signalite.test"
ARN = "arn:aws:kinesisvideo:us-west-2:111122223333:channel/demo/1700000000000"
EMPTY = hashlib.sha256(b"").hexdigest()


def lookup(akid: str) -> Credential | None:
    return KEYS.get(akid)


Outcome = tuple[Any, ...]


def outcome(fn: Callable[[], sigv4.Verified]) -> Outcome:
    try:
        v = fn()
    except AuthError as e:
        return ("error", e.code, e.status, e.message)
    return ("ok", v.credential, v.scope)


def general_request(parts: RequestParts, now: float) -> sigv4.Verified:
    return sigv4._verify_request(parts, lookup, now, SERVICE, 300.0)


def general_presigned(parts: RequestParts, now: float) -> sigv4.Verified:
    return sigv4._verify_presigned(parts, sigv4._split_query(parts.query), lookup, now, SERVICE, 300.0)


def check_request(parts: RequestParts, now: float) -> tuple[Outcome, bool]:
    """verify_request's verdict equals the general path's; returns it and whether the fast path decided."""
    reference = outcome(lambda: general_request(parts, now))
    assert outcome(lambda: verify_request(parts, lookup, now)) == reference
    fast = sigv4._fast_request(parts, lookup, now, SERVICE, 300.0)
    if fast is not None:
        assert reference == ("ok", fast.credential, fast.scope)
    return reference, fast is not None


def check_presigned(parts: RequestParts, now: float) -> tuple[Outcome, bool]:
    reference = outcome(lambda: general_presigned(parts, now))
    assert outcome(lambda: verify_presigned(parts, lookup, now)) == reference
    if not parts.headers.get("authorization"):
        assert outcome(lambda: verify_request(parts, lookup, now)) == outcome(lambda: general_request(parts, now))
    fast = sigv4._fast_presigned(parts, lookup, now, SERVICE, 300.0)
    if fast is not None:
        assert reference == ("ok", fast.credential, fast.scope)
    return reference, fast is not None


def ref_signature(
    secret: str,
    amz_date: str,
    canonical_request: str,
    region: str = REGION,
    service: str = SERVICE,
    scope_date: str | None = None,
) -> str:
    """SigV4 from the primitives, independent of the code under test (scoped to `scope_date` if given)."""

    def mac(key: bytes, msg: str) -> bytes:
        return hmac.new(key, msg.encode("utf-8", "surrogateescape"), hashlib.sha256).digest()

    day = amz_date[:8] if scope_date is None else scope_date
    key = mac(mac(mac(mac(("AWS4" + secret).encode(), day), region), service), "aws4_request")
    digest = hashlib.sha256(canonical_request.encode("utf-8", "surrogateescape")).hexdigest()
    sts = f"AWS4-HMAC-SHA256\n{amz_date}\n{day}/{region}/{service}/aws4_request\n{digest}"
    return hmac.new(key, sts.encode(), hashlib.sha256).hexdigest()


# ----------------------------------------------------------------------------- the fast paths are taken


def test_fast_request_takes_botocore_requests() -> None:
    for cred in (CRED, CRED_TOKEN):
        req = AWSRequest(
            method="POST",
            url="https://kinesisvideo.us-west-2.amazonaws.com/describeSignalingChannel",
            data=b'{"ChannelName":"demo"}',
            headers={"Content-Type": "application/json"},
        )
        SigV4Auth(
            Credentials(cred.access_key_id, cred.secret_access_key, cred.session_token), SERVICE, REGION
        ).add_auth(req)
        headers = {k.lower(): v for k, v in req.headers.items()}
        headers.update(
            {
                "host": "kinesisvideo.us-west-2.amazonaws.com",
                "user-agent": "Boto3/1.34.0 md/Botocore#1.34.0",
                "amz-sdk-invocation-id": "5b6f6c0e-0000-4000-8000-000000000000",
                "amz-sdk-request": "attempt=1; max=3",
                "content-length": "22",
            }
        )
        parts = RequestParts("POST", "/describeSignalingChannel", "", headers, b'{"ChannelName":"demo"}')
        now = float(timegm(strptime(headers["x-amz-date"], "%Y%m%dT%H%M%SZ")))
        verdict, fast = check_request(parts, now)
        assert verdict[0] == "ok" and fast


@pytest.mark.parametrize("cred", [CRED, CRED_TOKEN])
def test_fast_request_takes_sign_request_output(cred: Credential) -> None:
    headers = {"host": HOST, "content-type": "application/json"}
    parts = RequestParts("POST", "/getSignalingChannelEndpoint", "", headers, b"{}")
    signed = replace(parts, headers={**headers, **sign_request(parts, cred, REGION, T0)})
    verdict, fast = check_request(signed, T0)
    assert verdict[0] == "ok" and fast


@pytest.mark.parametrize("cred", [CRED, CRED_TOKEN])
def test_fast_presigned_takes_presign_url_output(cred: Credential) -> None:
    url = presign_url(f"wss://{HOST}/?X-Amz-ChannelARN={quote(ARN, safe='')}&X-Amz-ClientId=v-1", cred, REGION, T0)
    target = url.split(HOST, 1)[1]
    path, _, query = target.partition("?")
    verdict, fast = check_presigned(RequestParts("GET", path, query, {"host": HOST}), T0)
    assert verdict[0] == "ok" and fast


@pytest.mark.parametrize("cred", [CRED, CRED_TOKEN])
def test_fast_presigned_takes_the_signature_last(cred: Credential) -> None:
    """Most SigV4 presigners append X-Amz-Signature to the canonical query instead of sorting it in."""
    url = presign_url(f"wss://{HOST}/?X-Amz-ChannelARN={quote(ARN, safe='')}", cred, REGION, T0)
    pieces = url.partition("?")[2].split("&")
    last = "&".join(
        [
            *(p for p in pieces if not p.startswith("X-Amz-Signature=")),
            *(p for p in pieces if p.startswith("X-Amz-Signature=")),
        ]
    )
    assert last.rpartition("&")[2].startswith("X-Amz-Signature=")
    verdict, fast = check_presigned(RequestParts("GET", "/", last, {"host": HOST}), T0)
    assert verdict[0] == "ok" and fast


@pytest.mark.parametrize(
    "query",
    [
        "b=2&a=1",  # parameters the KVS SDKs do not send
        "X-Amz-TestParam=x",  # a parameter the KVS SDKs do not send
        "X-Amz-ClientId=v%2F1&X-Amz-ClientId=v-2",  # repeated
    ],
)
def test_other_queries_go_to_the_general_path_and_still_verify(query: str) -> None:
    url = presign_url(f"wss://{HOST}/?{query}", CRED, REGION, T0)
    verdict, fast = check_presigned(RequestParts("GET", "/", url.partition("?")[2], {"host": HOST}), T0)
    assert verdict[0] == "ok" and not fast
    shuffled = "&".join(reversed(url.partition("?")[2].split("&")))
    verdict, fast = check_presigned(RequestParts("GET", "/", shuffled, {"host": HOST}), T0)
    assert verdict[0] == "ok" and not fast


@pytest.mark.parametrize(
    ("offset", "code"),
    [
        (-301.0, "InvalidSignatureException"),  # not yet current
        (-300.0, None),
        (0.0, None),
        (299.0, None),
        (300.0, "AccessDeniedException"),  # expired
        (86400.0, "AccessDeniedException"),
    ],
)
def test_presigned_clock_boundaries(offset: float, code: str | None) -> None:
    url = presign_url(f"wss://{HOST}/?X-Amz-ClientId=v-1", CRED_TOKEN, REGION, T0, 299)
    verdict, fast = check_presigned(RequestParts("GET", "/", url.partition("?")[2], {"host": HOST}), T0 + offset)
    assert (verdict[1] if verdict[0] == "error" else None) == code
    assert fast == (code is None)


@pytest.mark.parametrize(
    ("offset", "code"),
    [(-301.0, "InvalidSignatureException"), (-300.0, None), (300.0, None), (301.0, "InvalidSignatureException")],
)
def test_header_signed_clock_boundaries(offset: float, code: str | None) -> None:
    headers = {"host": HOST, "content-type": "application/json"}
    parts = RequestParts("POST", "/describeSignalingChannel", "", headers, b"{}")
    signed = replace(parts, headers={**headers, **sign_request(parts, CRED_TOKEN, REGION, T0)})
    verdict, fast = check_request(signed, T0 + offset)
    assert (verdict[1] if verdict[0] == "error" else None) == code
    assert fast == (code is None)


def test_a_key_that_prefixes_another_sorts_as_pairs() -> None:
    # ("a", ...) sorts before ("a-b", ...), though "a=..." sorts after "a-b=..." as a string.
    url = presign_url(f"wss://{HOST}/?a=1&a-b=2&a.c=3&a0=4", CRED, REGION, T0)
    query = url.partition("?")[2]
    assert query.index("a=1") < query.index("a-b=2")
    verdict, _ = check_presigned(RequestParts("GET", "/", query, {"host": HOST}), T0)
    assert verdict[0] == "ok"
    # Signed over the string-sorted order instead: refused by both.
    pieces = sorted(p for p in query.split("&") if not p.startswith("X-Amz-Signature="))
    canonical = "\n".join(("GET", "/", "&".join(pieces), f"host:{HOST}\n", "host", EMPTY))
    sig = ref_signature(SECRET, AMZ_DATE, canonical)
    forged = "&".join(p if not p.startswith("X-Amz-Signature=") else f"X-Amz-Signature={sig}" for p in query.split("&"))
    verdict, fast = check_presigned(RequestParts("GET", "/", forged, {"host": HOST}), T0)
    assert verdict[0] == "error" and not fast


@pytest.mark.parametrize(
    "extra",
    [
        "X-Amz-%53ignature=0",
        "X-Amz-Signature=0",  # a second signature, in its sorted place (the real one goes last)
        "X-Amz-%44ate=20231114T221320Z",
        "X-Amz-%43redential=AKIDOTHER%2F20231114%2Fus-west-2%2Fkinesisvideo%2Faws4_request",
        "X-Amz-Expire%73=1",
        "X-Amz-Security-T%6Fken=x",
        "x-amz-date=20231114T221320Z",
        "a=%2f",
        "a=%41",
        "a=%zz",
        "a=%",
        "a=b+c",
        "a=%00",
        "a=b%20c",
        "a=\x00",
        "a=\u00fc",
        "a=1&a\x00=2",  # "\x00" sorts below the "=" stand-in
        "a=1&a\x01=2",
        "a=1&a b=2",
    ],
)
def test_a_query_signed_as_received_verifies_only_as_the_general_path_says(extra: str) -> None:
    """A parameter the general path decodes (a repeated auth key, escapes, odd bytes), signed as received."""
    url = presign_url(f"wss://{HOST}/?X-Amz-ClientId=v-1", CRED, REGION, T0)
    query = url.partition("?")[2]
    pieces = sorted([*(p for p in query.split("&") if not p.startswith("X-Amz-Signature=")), *extra.split("&")])
    for canonical_query in ("&".join(pieces), *query_forms("&".join(pieces))):
        canonical = "\n".join(("GET", "/", canonical_query, f"host:{HOST}\n", "host", EMPTY))
        sig = ref_signature(SECRET, AMZ_DATE, canonical)
        check_presigned(RequestParts("GET", "/", "&".join([*pieces, f"X-Amz-Signature={sig}"]), {"host": HOST}), T0)


def test_a_signature_field_hidden_in_another_field_is_not_taken() -> None:
    """The cached header parse is only used when the header's last field really is its Signature."""
    headers = {"host": HOST, "x-amz-date": AMZ_DATE}
    canonical = "\n".join(("POST", "/", "", f"host:{HOST}\nx-amz-date:{AMZ_DATE}\n", "host;x-amz-date", EMPTY))
    sig = ref_signature(SECRET, AMZ_DATE, canonical)
    scope = f"AKIDEXAMPLE/20231114/{REGION}/{SERVICE}/aws4_request"
    for auth, ok in [
        # The real signature first, a look-alike last: the general path accepts (unknown fields are ignored).
        (
            f"AWS4-HMAC-SHA256 Signature={sig}, Credential={scope}, SignedHeaders=host;x-amz-date, Foo=Signature={sig}",
            True,
        ),
        # A wrong signature first, the right one hidden last: refused by both.
        (
            f"AWS4-HMAC-SHA256 Signature={'0' * 64}, Credential={scope}, SignedHeaders=host;x-amz-date, "
            f"X=Signature={sig}",
            False,
        ),
        (f"AWS4-HMAC-SHA256 Credential={scope}, SignedHeaders=host;x-amz-date, XSignature={sig}", False),
        (f"AWS4-HMAC-SHA256 Credential={scope}, SignedHeaders=host;x-amz-date, Signature ={sig}", True),
        (f"AWS4-HMAC-SHA256 Credential={scope},SignedHeaders=host;x-amz-date,Signature={sig}", True),
        (f"AWS4-HMAC-SHA256 Credential={scope}, SignedHeaders=host;x-amz-date, Signature={sig} ", True),
        (f"AWS4-HMAC-SHA256 Credential={scope}, SignedHeaders=host;x-amz-date, Signature={sig.upper()}", False),
        (
            f"AWS4-HMAC-SHA256 Credential={scope}, SignedHeaders=host;x-amz-date, Signature={sig}, Signature={sig}",
            False,
        ),
    ]:
        parts = RequestParts("POST", "/", "", {**headers, "authorization": auth})
        verdict, _ = check_request(parts, T0)
        assert (verdict[0] == "ok") is ok, (auth, verdict)


# ----------------------------------------------------------------------------- header-signed, varied

PATHS = [
    "/describeSignalingChannel",
    "/v1/get-ice-server-config",
    "/",
    "",
    "/a/./b",
    "/a/../b",
    "/..",
    "/.",
    "/a/",
    "//x",
    "/x//y",
    "/a%20b",
    "/a%2Fb",
    "/a%2fb",
    "/a b",
    "/\u00fc",
    "/a+b",
    "/a;b=c",
    "/~user",
    "/a%7Eb",
    "/...",
    "/A-Z_0.9~",
    "a/b",
]


def uri_forms(path: str) -> list[str]:
    """URI forms a signer might have used: the general path's, the raw path, normalised-only, encoded-only."""
    normalised = sigv4._remove_dot_segments(path or "/") or "/"
    return list(dict.fromkeys([sigv4._canonical_uri(path), path or "/", normalised, quote(path or "/", safe="/~")]))


def query_forms(query: str) -> list[str]:
    pairs = sigv4._split_query(query)
    forms = list(sigv4._query_forms(pairs))
    pieces = [p for p in query.split("&") if p]
    # Also: as received, naively string-sorted, and none at all.
    return list(dict.fromkeys([*forms, query, "&".join(sorted(pieces)), ""]))


class Picker:
    """Varies a few axes of a request per example, so most examples stay near one that verifies.

    Each call is one axis (numbered in call order); a handful of axes, drawn up front, take one of
    their other values.
    """

    def __init__(self, draw: st.DrawFn) -> None:
        self.draw = draw
        self.chosen = draw(st.sets(st.integers(0, 27), max_size=3))
        self.n = 0

    def __call__(self, usual: Any, *others: Any) -> Any:
        self.n += 1
        return self.draw(st.sampled_from(others)) if self.n - 1 in self.chosen else usual

    def sometimes(self) -> bool:
        self.n += 1
        return self.n - 1 in self.chosen


@st.composite
def rest_requests(draw: st.DrawFn) -> tuple[RequestParts, float]:
    pick = Picker(draw)
    cred = draw(st.sampled_from([CRED, CRED_TOKEN]))
    path = pick(
        "/describeSignalingChannel",
        *PATHS,
        draw(st.text(st.sampled_from("/.a%2F~-_ +\u00fc"), max_size=10).map(lambda s: "/" + s)),
    )
    query = pick("", "a=b", "b=1&a=2", "X-Amz-Algorithm=AWS4-HMAC-SHA256", "x=%41", "a=1&&b")
    body = pick(b'{"ChannelName":"demo"}', b"", b"\x00\xff")
    content_type = pick("application/json", " application/json ", "a  b\tc", "\u00fcber", "\udcff")
    amz_date = pick(AMZ_DATE, f" {AMZ_DATE} ", "20231114T221321Z", "20231131T000000Z", "bad", "")
    use_date_header = pick.sometimes()
    payload_header = pick(None, "lower", "upper", "UNSIGNED-PAYLOAD", "STREAMING-X", "0" * 64)
    token = pick("right", "none", "wrong", "empty")
    sign_token = draw(st.booleans())
    region = pick(REGION, "us-east-1", "bad region")
    service = pick(SERVICE, "kinesis-video-signaling", "kinesisvideo ")
    scope_date = pick("same", "20231113", "2023111")

    headers = {"host": HOST, "content-type": content_type, "user-agent": "test/1.0"}
    if use_date_header:
        headers["date"] = "Tue, 14 Nov 2023 22:13:20 GMT"
    else:
        headers["x-amz-date"] = amz_date
    actual = hashlib.sha256(body).hexdigest()
    if payload_header is not None:
        headers["x-amz-content-sha256"] = {"lower": actual, "upper": actual.upper()}.get(payload_header, payload_header)
    if token == "right" and cred.session_token:
        headers["x-amz-security-token"] = cred.session_token
    elif token == "wrong":
        headers["x-amz-security-token"] = "nope"
    elif token == "empty":
        headers["x-amz-security-token"] = ""
    signed = sorted(n for n in headers if n != "user-agent" and (sign_token or n != "x-amz-security-token"))
    signed = pick(signed, [*signed, "x-missing"], [n for n in signed if n != "host"], ["Host", *signed[1:]])
    date_value = amz_date.strip() if not use_date_header else AMZ_DATE
    block = "".join(f"{n}:{' '.join(headers.get(n, '').split())}\n" for n in signed)
    payload = headers.get("x-amz-content-sha256", actual).strip()
    method = pick("POST", "post", "GET")
    canonical = "\n".join(
        (
            method.upper(),
            draw(st.sampled_from(uri_forms(path))),
            draw(st.sampled_from(query_forms(query))),
            block,
            ";".join(signed),
            payload,
        )
    )
    sig_date = date_value if len(date_value) == 16 else AMZ_DATE
    day = date_value[:8] if scope_date == "same" else scope_date
    sig = ref_signature(cred.secret_access_key, sig_date, canonical, region, service, day)
    sig = pick(sig, sig[:-1] + ("0" if sig[-1] != "0" else "1"), sig.upper(), sig[:-1], "")
    form = pick(
        "AWS4-HMAC-SHA256 Credential={c}, SignedHeaders={s}, Signature={g}",
        "AWS4-HMAC-SHA256 Credential={c},SignedHeaders={s},Signature={g}",
        "AWS4-HMAC-SHA256 Signature={g}, Credential={c}, SignedHeaders={s}",
        "AWS4-HMAC-SHA256 Credential={c}, SignedHeaders={s}, Extra=x, Signature={g}",
        "AWS4-HMAC-SHA256  Credential={c} , SignedHeaders={s} , Signature={g} ",
        "AWS4-HMAC-SHA256 Credential={c}, SignedHeaders={s}, Signature={g}, Signature={g}",
        "AWS4-HMAC-SHA1 Credential={c}, SignedHeaders={s}, Signature={g}",
        "AWS4-HMAC-SHA256 Credential={c}, SignedHeaders={s}",
        "AWS4-HMAC-SHA256 Credential={c}, SignedHeaders={s}, Signature=",
    )
    headers["authorization"] = form.format(
        c=f"{cred.access_key_id}/{day}/{region}/{service}/aws4_request", s=";".join(signed), g=sig
    )
    now = T0 + pick(0.0, 299.0, 300.0, 301.0, -300.0, -301.0)
    return RequestParts(method, path, query, headers, body), now


@settings(max_examples=1500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(rest_requests())
def test_header_signed_fast_path_agrees_with_the_general_path(case: tuple[RequestParts, float]) -> None:
    check_request(*case)


# ----------------------------------------------------------------------------- presigned, varied

# How a client may have written a key or value in the URL.
ENCODERS: dict[str, Callable[[str], str]] = {
    "strict": lambda s: quote(s, safe="-_.~"),
    "js": lambda s: quote(s, safe="-_.!~*'()"),
    "lowerhex": lambda s: quote(s, safe="-_.~").replace("%2F", "%2f").replace("%3A", "%3a"),
    "bare": lambda s: s.replace("&", "%26").replace("=", "%3D").replace("%", "%25") if "%" in s else s,
    "overencoded": lambda s: "".join(f"%{b:02X}" for b in s.encode()),
}
VALUES = st.text(st.sampled_from("aZ09-_.~%/:+=!*'() \u00fc&\x00\x01"), max_size=8)


@st.composite
def presigned_requests(draw: st.DrawFn) -> tuple[RequestParts, float]:
    pick = Picker(draw)
    cred = draw(st.sampled_from([CRED, CRED_TOKEN]))
    client = pick("v-1", "viewer 1", "\u00fc", "a+b", "x=y&z")
    params = [("X-Amz-ChannelARN", ARN), ("X-Amz-ClientId", client)]
    if pick.sometimes():  # parameters the KVS SDKs do not send
        keys = st.sampled_from(["a", "a-b", "a\x00", "b", "X-Amz-Extra", "X-Amz-Signature", "a0", "~", ""])
        params += draw(st.lists(st.tuples(keys, VALUES), max_size=3))
    if pick.sometimes():
        params = params[:1]  # a master: no client id
    amz_date = pick(AMZ_DATE, "20231114T221919Z", "20231131T000000Z", "2023111T221320Z", "20231114T221320z")
    signed_headers = pick("host", "host;x-extra", "Host", "x-extra", "host;;x")
    region = pick(REGION, "x y", "us-east-1")
    service = pick(SERVICE, "kinesis-video-signaling")
    day = pick(amz_date[:8], "20231113")  # a credential scope of another day, signed consistently
    auth = [
        ("X-Amz-Algorithm", pick("AWS4-HMAC-SHA256", "AWS4-HMAC-SHA1", "aws4-hmac-sha256")),
        ("X-Amz-Credential", f"{cred.access_key_id}/{day}/{region}/{service}/aws4_request"),
        ("X-Amz-Date", amz_date),
        ("X-Amz-Expires", pick("299", "1", "0", "604800", "604801", "x", "0299", "")),
        ("X-Amz-SignedHeaders", signed_headers),
    ]
    token = pick("right", "none", "wrong", "empty")
    if token == "right" and cred.session_token:
        auth.append(("X-Amz-Security-Token", cred.session_token))
    elif token in ("wrong", "empty"):
        auth.append(("X-Amz-Security-Token", "nope" if token == "wrong" else ""))
    everything = params + auth
    drop = pick(None, *range(len(everything)))
    if drop is not None:
        everything.pop(drop)
    if pick.sometimes():
        everything.append(draw(st.sampled_from(everything)))  # a repeated parameter
    encoder = pick("strict", *ENCODERS)
    pieces = [
        f"{ENCODERS[encoder](k) if encoder != 'overencoded' else quote(k, safe='-_.~')}={ENCODERS[encoder](v)}"
        for k, v in everything
    ]
    if pick.sometimes():
        pieces.append(pick("flag", "a=b=c", "=v"))  # a piece without exactly one "=", or without a key
    order = pick("sorted", "reversed", "asis")
    if order == "sorted":
        pieces.sort()
    elif order == "reversed":
        pieces.reverse()
    query = "&".join(pieces)
    path = pick("/", "", "/a/../", "//", "/a%2Fb", "/~x", "/x/", "/a b", "/%7E")
    host = pick(HOST, f" {HOST} ", "other.test")
    with_extra = "x-extra" in signed_headers
    canonical = "\n".join(
        (
            "GET",
            draw(st.sampled_from(uri_forms(path))),
            draw(st.sampled_from(query_forms(query))),
            f"host:{HOST}\n" + ("x-extra:x y\n" if with_extra else ""),
            "host;x-extra" if with_extra else "host",
            EMPTY,
        )
    )
    sig_date = amz_date if len(amz_date) == 16 else AMZ_DATE
    sig = ref_signature(cred.secret_access_key, sig_date, canonical, region, service, day)
    sig = pick(sig, sig[:-1] + ("0" if sig[-1] != "0" else "1"), sig.upper(), "")
    at = pick(sum(p < "X-Amz-Signature=" for p in pieces), len(pieces), draw(st.integers(0, len(pieces))))
    sig_piece = pick(f"X-Amz-Signature={sig}", f"X-Amz-%53ignature={sig}", f"x-amz-signature={sig}")
    with_sig = [*pieces[:at], sig_piece, *pieces[at:]]
    if pick.sometimes():
        with_sig.insert(draw(st.integers(0, len(with_sig))), "")  # an empty piece
    now = T0 + pick(0.0, 298.0, 299.0, 300.0, -300.0, -301.0, 600.0)
    return RequestParts("GET", path, "&".join(with_sig), {"host": host, "x-extra": "  x  y "}), now


@settings(max_examples=1500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(presigned_requests())
def test_presigned_fast_path_agrees_with_the_general_path(case: tuple[RequestParts, float]) -> None:
    check_presigned(*case)


@given(st.text(st.sampled_from("aZ09-_.~%/:+=!*'() \u00fc&2fF3A"), max_size=30))
def test_presigned_fast_path_on_any_query(query: str) -> None:
    check_presigned(RequestParts("GET", "/", query, {"host": HOST}), T0)


# ----------------------------------------------------------------------------- the pieces


def test_signing_pads_compute_hmac() -> None:
    inner, outer = sigv4._signing_pads(SECRET, "20231114", REGION, SERVICE)
    key = sigv4._signing_key(SECRET, "20231114", REGION, SERVICE)
    for msg in (b"", b"x", b"y" * 200):
        mac = inner.copy()
        mac.update(msg)
        digest = mac.digest()
        mac = outer.copy()
        mac.update(digest)
        assert mac.hexdigest() == hmac.new(key, msg, hashlib.sha256).hexdigest()
    assert inner.copy().hexdigest() == sigv4._signing_pads(SECRET, "20231114", REGION, SERVICE)[0].hexdigest()


@pytest.mark.parametrize("size", [0, 1, 55, 56, 63, 64, 65, 200, 511, 512, 513, 5000])
def test_the_small_input_sha256_is_sha256(size: int) -> None:
    data = bytes(range(256)) * (size // 256) + bytes(range(size % 256))
    assert sigv4._sha256(data).hexdigest() == hashlib.sha256(data).hexdigest()
    state = sigv4._sha256(data[: size // 2])
    copy = state.copy()
    copy.update(data[size // 2 :])
    assert copy.digest() == hashlib.sha256(data).digest()
    assert state.hexdigest() == hashlib.sha256(data[: size // 2]).hexdigest()  # the copy left it alone


@pytest.mark.parametrize("size", [0, 100, sigv4._SMALL, sigv4._SMALL + 1, 20_000])
def test_fast_request_takes_any_body_and_header_length(size: int) -> None:
    """Short inputs are hashed by CPython's SHA-256, long ones by OpenSSL's: both verify."""
    body = b"x" * size
    for extra in ("", "y" * size):
        headers = {"host": HOST, "content-type": "application/json", "x-long": extra}
        parts = RequestParts("POST", "/describeSignalingChannel", "", headers, body)
        signed = replace(parts, headers={**headers, **sign_request(parts, CRED, REGION, T0)})
        verdict, fast = check_request(signed, T0)
        assert verdict[0] == "ok" and fast
        tampered = replace(signed, body=body + b"!")
        verdict, fast = check_request(tampered, T0)
        assert verdict[1] == "InvalidSignatureException" and not fast


@pytest.mark.parametrize(
    "tail",
    [
        "{sig}",
        "{sig} ",
        "{SIG}",
        "{sig}, Signature={sig}",
        "{other}, Signature={sig}",
        "{sig}, Extra=x",
        "{sig}0",
        "{short}",
        "",
        "{other}",
    ],
)
def test_the_remembered_header_head_reads_as_the_search_does(tail: str) -> None:
    """After a request, its header head is remembered: what follows it in the next header is taken
    as the signature only when the search for the last "Signature=" would take it too."""
    headers = {"host": HOST, "content-type": "application/json"}
    parts = RequestParts("POST", "/describeSignalingChannel", "", headers, b"{}")
    signed = replace(parts, headers={**headers, **sign_request(parts, CRED, REGION, T0)})
    verdict, fast = check_request(signed, T0)
    assert verdict[0] == "ok" and fast
    auth = signed.headers["authorization"]
    head, sig = auth[: auth.rindex("Signature=") + 10], auth[auth.rindex("Signature=") + 10 :]
    assert sigv4._LAST_HEAD[0] is not None and sigv4._LAST_HEAD[0][0] == head
    other = "0" * 64 if sig != "0" * 64 else "1" * 64
    text = tail.format(sig=sig, SIG=sig.upper(), other=other, short=sig[:-1])
    variant = replace(signed, headers={**signed.headers, "authorization": head + text})
    check_request(variant, T0)


def test_the_remembered_canonical_request_takes_only_its_own_payload() -> None:
    """Requests alike but for the body share the hashed canonical request before its payload line."""
    headers = {"host": HOST, "content-type": "application/json"}
    requests = []
    for body in (b'{"ChannelName":"a"}', b'{"ChannelName":"b"}', b"", b'{"ChannelName":"a"}'):
        parts = RequestParts("POST", "/describeSignalingChannel", "", headers, body)
        requests.append(replace(parts, headers={**headers, **sign_request(parts, CRED, REGION, T0)}))
    for one in requests:
        verdict, fast = check_request(one, T0)
        assert verdict[0] == "ok" and fast
        assert sigv4._LAST_REQUEST[0] is not None
        assert sigv4._LAST_REQUEST[0][0].startswith("POST\n/describeSignalingChannel\n\n")
    for one, other in itertools.pairwise(requests):
        swapped = replace(one, body=other.body)  # another body under this request's signature
        verdict, fast = check_request(swapped, T0)
        assert (verdict[0] == "ok") is (swapped.body == one.body)


def test_memoised_states_follow_the_key_and_the_timestamp() -> None:
    """The HMAC states kept per scope are the current key's, for the request's own timestamp."""
    old = Credential("AKIDROTATED", "old/secret", "111122223333")
    new = Credential("AKIDROTATED", "new/secret", "111122223333")
    current = {"AKIDROTATED": old}
    headers = {"host": HOST, "content-type": "application/json"}

    def signed(cred: Credential, at: float) -> RequestParts:
        parts = RequestParts("POST", "/describeSignalingChannel", "", headers, b"{}")
        return replace(parts, headers={**headers, **sign_request(parts, cred, REGION, at)})

    steps = [(old, 0), (old, 1), (old, 0), (new, 1), (old, 1), (new, 2), (old, 2), (new, 0)]
    for step, (swap, offset) in enumerate(steps):
        current["AKIDROTATED"] = swap  # a reload: the same key id, another secret
        for cred in (old, new):
            parts = signed(cred, T0 + offset)
            fast = sigv4._fast_request(parts, current.get, T0 + offset, SERVICE, 300.0)
            if cred is swap:
                assert fast is not None and fast.credential is swap, step
            else:
                assert fast is None, step
                with pytest.raises(AuthError):
                    verify_request(parts, current.get, T0 + offset)


def test_caches_are_bounded_and_keep_only_known_keys() -> None:
    sigv4._AUTH_HEADERS.clear()
    sigv4._PRESIGN_SCOPES.clear()
    for i in range(sigv4._CACHE_MAX + 50):
        for key, code in (("AKIDEXAMPLE", "InvalidSignatureException"), (f"AKID{i}", "UnrecognizedClientException")):
            auth = (
                f"AWS4-HMAC-SHA256 Credential={key}/20231114/r{i}/{SERVICE}/aws4_request, SignedHeaders=host, "
                f"Signature={'a' * 64}"
            )
            headers = {"host": HOST, "x-amz-date": f"20231114T2213{i % 60:02d}Z", "authorization": auth}
            parts = RequestParts("POST", f"/p{i}", "", headers)
            assert outcome(partial(verify_request, parts, lookup, T0))[1] == code
            query = (
                f"X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Credential={key}%2F20231114%2Fr{i}%2Fkinesisvideo"
                f"%2Faws4_request&X-Amz-Date={AMZ_DATE}&X-Amz-Expires={i + 1}&X-Amz-Signature=00"
                "&X-Amz-SignedHeaders=host"
            )
            parts = RequestParts("GET", "/", query, {"host": HOST})
            assert outcome(partial(verify_presigned, parts, lookup, T0))[1] == code
    caches: list[dict[str, Any]] = [
        sigv4._AUTH_HEADERS,
        sigv4._PRESIGN_SCOPES,
        sigv4._TIMES,
        sigv4._EXPIRES,
        sigv4._URIS,
    ]
    for cache in caches:
        assert 0 < len(cache) <= sigv4._CACHE_MAX
    assert all("AKIDEXAMPLE/" in head for head in sigv4._AUTH_HEADERS)
    last = sigv4._LAST_HEAD[0]
    assert last is not None and "AKIDEXAMPLE/" in last[0]
    assert all(scoped.scope.access_key_id == "AKIDEXAMPLE" for scoped in sigv4._PRESIGN_SCOPES.values())


def test_nothing_is_cached_from_a_bad_header() -> None:
    before = dict(sigv4._AUTH_HEADERS)
    auth = (
        f"AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20231114/{REGION}/{SERVICE}/aws4_requesx, SignedHeaders=host, "
        f"Signature={'a' * 64}"
    )
    parts = RequestParts("POST", "/", "", {"host": HOST, "x-amz-date": AMZ_DATE, "authorization": auth})
    assert outcome(lambda: verify_request(parts, lookup, T0))[1] == "InvalidSignatureException"
    assert before == sigv4._AUTH_HEADERS


@given(st.text(st.sampled_from("0123456789TZ -"), min_size=14, max_size=17))
def test_cached_timestamps_match_the_parser(value: str) -> None:
    try:
        expected: float | None = sigv4._parse_amz_date(value)
    except ValueError:
        expected = None
    assert sigv4._amz_time(value) == expected
    assert sigv4._amz_time(value) == expected  # and from the cache
