"""AWS Signature Version 4: verify what SDKs sign, and sign the same way for our own tools.

Theory of operation
-------------------
A SigV4 signature is ``hex(HMAC-SHA256(kSigning, StringToSign))`` where::

    kSigning     = HMAC(HMAC(HMAC(HMAC("AWS4" + secret, yyyymmdd), region), service), "aws4_request")
    StringToSign = "AWS4-HMAC-SHA256" \\n X-Amz-Date \\n yyyymmdd/region/service/aws4_request \\n
                   hex(SHA256(CanonicalRequest))
    CanonicalRequest = METHOD \\n CanonicalURI \\n CanonicalQuery \\n CanonicalHeaders \\n
                       SignedHeaders \\n PayloadHash

The server cannot know the canonical request the client built; it rebuilds it from the bytes it
received and checks that the client's signature matches. Every rule below exists so that what the
real clients (botocore, AWS SDK for JS v3, the KVS WebRTC JS SDK, the KVS WebRTC C SDK) computed is
rebuilt exactly:

* **Canonical URI.** botocore and JS v3 take the already-percent-encoded path, drop ``.``/``..``/empty
  segments and percent-encode it *again* (``%`` becomes ``%25``); the KVS JS and C SDKs sign the raw
  path as written. For the paths this service uses (``/createSignalingChannel``, ``/v1/...``, ``/``)
  both forms are identical. When they differ and the raw path contains no ``%`` we also try the raw
  form; a raw path with ``%`` is only tried double-encoded, so ``/a%2520b`` can never verify with a
  signature made for ``/a%20b``.
* **Canonical query.** Each key and value is percent-decoded and re-encoded with strict RFC 3986
  (only ``A-Za-z0-9-_.~`` left bare), then pairs are sorted by key, then value. This makes the KVS JS
  SDK's ``encodeURIComponent`` output (``/`` as ``%2F``, keys unencoded) verify. Because
  ``encodeURIComponent`` leaves ``!'()*`` bare and signs them bare, the raw pairs, sorted, are tried
  as a second form when it differs; both forms only ever authenticate the bytes actually received.
  ``+`` is a literal plus, never a space (no SigV4 client encodes a space as ``+``).
* **Canonical headers.** Exactly the headers named in ``SignedHeaders`` (which must include ``host``),
  values trimmed with inner whitespace runs collapsed, in the order the client listed them. Unsigned
  headers are ignored, so proxies may add or change them freely.
* **Payload.** SHA-256 of the exact body bytes. If an ``x-amz-content-sha256`` header is present it
  must equal that hash; ``UNSIGNED-PAYLOAD`` (and ``STREAMING-*``) is refused, because none of the
  clients of these JSON services sends it and accepting it would leave the body unauthenticated.
  Presigned URLs hash the (empty) body too, i.e. ``sha256("")``, as the KVS SDKs do.
* **Session token.** ``x-amz-security-token`` may be signed (botocore, JS v3) or not (the C SDK);
  either way it must equal the token configured for the access key, and a token sent for a key
  that has none is refused. In a presigned URL ``X-Amz-Security-Token`` is an ordinary, signed
  query parameter.
* **Time.** Header-signed requests must be within ``max_skew`` (5 min) of ``now`` either way. A
  presigned URL is valid from ``X-Amz-Date - max_skew`` to ``X-Amz-Date + X-Amz-Expires`` inclusive,
  with ``1 <= X-Amz-Expires <= 604800``.

Checks run cheapest-first and in the order AWS reports them: shape of the auth data (400
``IncompleteSignatureException``), scope and clock (403 ``InvalidSignatureException``; the clock
messages contain ``Signature expired`` / ``Signature not yet current`` because the KVS C SDK looks
for those words to correct its clock), key and token (403 ``UnrecognizedClientException``), then
the HMAC itself, compared in constant time. An expired presigned URL is 403
``AccessDeniedException``, as the KVS WebSocket documentation lists for "token expired"; an
``X-Amz-Expires`` outside 1..604800 is refused the same way. Messages never contain a secret, a
token, a signature we computed or the canonical request.

The derived signing key depends only on (secret, date, region, service), so it is cached: a
presigned-URL check then costs two SHA-256 and one HMAC over a few hundred bytes.

Cost. Strict mode verifies every request, so the common cases take fast paths (see "fast paths"
below): a REST call without a query string, and a connect URL laid out as the KVS SDKs write it,
are checked from cached parses of what repeats between requests (the Authorization header without
its signature, the credential scope, the timestamp) against the one canonical form those clients
sign. A fast path only ever accepts; anything else, including every failure, goes to the general
path, which alone words the errors. Nothing is cached on a signature or a verdict. A server calls
the fast paths first on the raw target and its parser's headers (`accept_request`,
`accept_presigned`), so the usual request builds no `RequestParts`.
"""

from __future__ import annotations

import email.utils
import functools
import hashlib
import hmac
import importlib
import re
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TypeVar
from urllib.parse import quote, unquote, unquote_to_bytes, urlsplit

from signalite.model.errors import ServiceError

__all__ = [
    "ALGORITHM",
    "AuthError",
    "Credential",
    "HeaderValues",
    "RequestParts",
    "Scope",
    "SecretLookup",
    "Verified",
    "accept_presigned",
    "accept_request",
    "presign_url",
    "scope_from_request",
    "sign_request",
    "verify_presigned",
    "verify_request",
]

ALGORITHM = "AWS4-HMAC-SHA256"
TERMINATOR = "aws4_request"
DEFAULT_SERVICE = "kinesisvideo"
MAX_EXPIRES = 604800
EMPTY_SHA256 = hashlib.sha256(b"").hexdigest()


def _small_sha256() -> Callable[[bytes], hashlib._Hash]:
    """CPython's own SHA-256 (`_sha2`, 3.12+; `_sha256` before), else hashlib's (OpenSSL).

    The fast paths hash a few hundred bytes four times per request. OpenSSL 3 spends more on its
    EVP layers (a context and a provider context allocated per object, copy and digest) than on
    the hashing at that size, and that code is large: in a busy server, with cold caches, it costs
    several times what a hot loop shows (hashing only the body with OpenSSL, the rest with this,
    cost a strict GetSignalingChannelEndpoint 7 us more server CPU than this alone, though in a
    hot loop OpenSSL is the faster). CPython's is one small function and an inline state.
    """
    for name in ("_sha2", "_sha256"):
        try:
            sha256: Callable[[bytes], hashlib._Hash] = importlib.import_module(name).sha256
        except (ImportError, AttributeError):
            continue
        if sha256(b"abc").hexdigest() == _ABC_SHA256:
            return sha256
    return hashlib.sha256


_ABC_SHA256 = "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"  # FIPS 180-2, B.1
_sha256 = _small_sha256()
# Past this many bytes OpenSSL's faster hashing (SHA extensions) outweighs its overhead: longer
# inputs are hashed by hashlib.
_SMALL = 512

# Headers our own signer leaves out, as botocore does (hop-by-hop or rewritten by proxies).
_UNSIGNABLE_HEADERS = frozenset(
    {
        "authorization",
        "baggage",
        "connection",
        "expect",
        "keep-alive",
        "proxy-authenticate",
        "proxy-authorization",
        "te",
        "traceparent",
        "tracestate",
        "trailer",
        "transfer-encoding",
        "upgrade",
        "user-agent",
        "x-amzn-trace-id",
    }
)

_PRESIGN_REQUIRED = (
    "X-Amz-Algorithm",
    "X-Amz-Credential",
    "X-Amz-Signature",
    "X-Amz-Date",
    "X-Amz-SignedHeaders",
    "X-Amz-Expires",
)
_PRESIGN_AUTH_KEYS = frozenset((*_PRESIGN_REQUIRED, "X-Amz-Security-Token"))

_AMZ_DATE_RE = re.compile(r"[0-9]{8}T[0-9]{6}Z")
_SCOPE_DATE_RE = re.compile(r"[0-9]{8}")
# Regions end up in ARNs, so keep them to what an ARN segment can safely hold.
_REGION_RE = re.compile(r"[A-Za-z0-9-]{1,64}")
_ACCESS_KEY_RE = re.compile(r"[A-Za-z0-9_+=.@-]{1,128}")
_HEADER_NAME_RE = re.compile(r"[a-z0-9!#$%&'*+.^_`|~-]+")
# A query component that strict re-encoding would leave unchanged: unreserved characters and
# upper-case %XX escapes of bytes that are *not* unreserved.
# Possessive runs keep this linear and ~10x faster on a 1 KB session token than a per-character loop.
_CANONICAL_RE = re.compile(r"(?:[A-Za-z0-9_.~-]++|%(?:[0189A-F][0-9A-F]|2[0-9A-CF]|3[A-F]|40|5[B-E]|60|7[B-DF]))*+")
_canonical = _CANONICAL_RE.fullmatch
_EXPIRES_RE = re.compile(r"[0-9]{1,10}")

_MSG_MISMATCH = (
    "The request signature we calculated does not match the signature you provided. "
    "Check your AWS Secret Access Key and signing method. Consult the service documentation for details."
)
_MSG_UNRECOGNIZED = "The security token included in the request is invalid."


# --------------------------------------------------------------------------- data


@dataclass(frozen=True, slots=True)
class RequestParts:
    """A request as received: raw path and query, lower-cased header names, exact body."""

    method: str
    path: str
    query: str
    headers: Mapping[str, str]
    body: bytes = b""


@dataclass(frozen=True, slots=True)
class Scope:
    """The credential scope a client signed with."""

    access_key_id: str
    date: str
    region: str
    service: str


@dataclass(frozen=True, slots=True)
class Credential:
    """A known key pair; the secret and the session token are kept out of repr()."""

    access_key_id: str
    secret_access_key: str = field(repr=False)
    account_id: str
    session_token: str | None = field(default=None, repr=False)


SecretLookup = Callable[[str], Credential | None]

# Every value of a header by its lower-case name, or None when it is absent: the shape of multidict's
# `getall(name, None)`, so that a server can hand its parser's headers over as they are.
HeaderValues = Callable[[str, None], list[str] | None]


@dataclass(frozen=True, slots=True)
class Verified:
    """The outcome of a successful verification."""

    credential: Credential
    scope: Scope


class AuthError(ServiceError):
    """An authentication failure, named and numbered as AWS reports it."""

    def __init__(self, code: str, status: int, message: str) -> None:
        super().__init__(message, code=code, status=status)


def _incomplete(message: str) -> AuthError:
    return AuthError("IncompleteSignatureException", 400, message)


def _invalid(message: str = _MSG_MISMATCH) -> AuthError:
    return AuthError("InvalidSignatureException", 403, message)


def _unrecognized() -> AuthError:
    return AuthError("UnrecognizedClientException", 403, _MSG_UNRECOGNIZED)


def _missing() -> AuthError:
    return AuthError("MissingAuthenticationTokenException", 403, "Missing Authentication Token")


def _access_denied(message: str) -> AuthError:
    return AuthError("AccessDeniedException", 403, message)


def _clip(text: str, limit: int = 64) -> str:
    # Client-supplied text echoed in a message: bounded, so an error can't be used to amplify.
    return text if len(text) <= limit else text[:limit] + "..."


# --------------------------------------------------------------------------- small helpers


def _amz_date(ts: float) -> str:
    return time.strftime("%Y%m%dT%H%M%SZ", time.gmtime(ts))


def _parse_amz_date(value: str) -> float:
    if not _AMZ_DATE_RE.fullmatch(value):
        raise ValueError(value)
    dt = datetime(
        int(value[0:4]),
        int(value[4:6]),
        int(value[6:8]),
        int(value[9:11]),
        int(value[11:13]),
        int(value[13:15]),
        tzinfo=UTC,
    )
    return dt.timestamp()


def _skew_text(max_skew: float) -> str:
    return f"{max_skew / 60:g} min" if max_skew % 60 == 0 else f"{max_skew:g} s"


def _utf8(text: str) -> bytes:
    # aiohttp hands undecodable header bytes over as surrogate escapes; give the same bytes back.
    try:
        return text.encode("utf-8", "surrogateescape")
    except UnicodeEncodeError:
        return text.encode("utf-8", "replace")


@functools.lru_cache(maxsize=1024)
def _signing_key(secret: str, date: str, region: str, service: str) -> bytes:
    # Cached because every WebSocket connect needs it and it only changes daily. The cache holds
    # secrets in process memory (as the lookup already does); it is never logged or exposed.
    k = hmac.digest(_utf8("AWS4" + secret), _utf8(date), "sha256")
    k = hmac.digest(k, _utf8(region), "sha256")
    k = hmac.digest(k, _utf8(service), "sha256")
    return hmac.digest(k, TERMINATOR.encode(), "sha256")


# HMAC's pads (RFC 2104) as translation tables, as the hmac module builds them.
_IPAD = bytes(x ^ 0x36 for x in range(256))
_OPAD = bytes(x ^ 0x5C for x in range(256))


@functools.lru_cache(maxsize=1024)
def _signing_pads(secret: str, date: str, region: str, service: str) -> tuple[hashlib._Hash, hashlib._Hash]:
    """HMAC-SHA256 with the signing key, half done: the SHA-256 states after the inner and the outer pad.

    Copying them saves the per-call key setup that OpenSSL 3's HMAC costs (about half of a one-shot
    `hmac.digest` over a string to sign). They are only ever copied, never updated.
    """
    block = _signing_key(secret, date, region, service).ljust(64, b"\0")  # 32 bytes: below SHA-256's block
    return _sha256(block.translate(_IPAD)), _sha256(block.translate(_OPAD))


def _signature(key: bytes, amz_date: str, scope: Scope, canonical_request: str) -> str:
    string_to_sign = "\n".join(
        (
            ALGORITHM,
            amz_date,
            f"{scope.date}/{scope.region}/{scope.service}/{TERMINATOR}",
            hashlib.sha256(_utf8(canonical_request)).hexdigest(),
        )
    )
    return hmac.new(key, _utf8(string_to_sign), hashlib.sha256).hexdigest()


def _remove_dot_segments(path: str) -> str:
    # RFC 3986 5.2.4 plus the AWS rule that empty segments ("//") vanish; same as botocore / JS v3.
    out: list[str] = []
    for segment in path.split("/"):
        if not segment or segment == ".":
            continue
        if segment == "..":
            if out:
                out.pop()
        else:
            out.append(segment)
    lead = "/" if path.startswith("/") else ""
    trail = "/" if path.endswith("/") and out else ""
    return lead + "/".join(out) + trail


def _canonical_uri(path: str) -> str:
    """The botocore / JS v3 form: normalised, then percent-encoded again (safe: ``/`` and ``~``)."""
    return quote(_remove_dot_segments(path or "/") or "/", safe="/~")


def _canonical_uris(path: str) -> list[str]:
    primary = _canonical_uri(path)
    raw = path or "/"
    if raw != primary and "%" not in raw:
        return [primary, raw]
    return [primary]


# (raw key, raw value, decoded key): keys are decoded once, values only when needed.
_Pair = tuple[str, str, str]


def _split_query(query: str) -> list[_Pair]:
    pairs: list[_Pair] = []
    for piece in query.split("&") if query else ():
        if piece:
            key, _, value = piece.partition("=")
            pairs.append((key, value, unquote(key) if "%" in key else key))
    return pairs


def _strict(component: str) -> str:
    """Percent-decode, then encode with only RFC 3986 unreserved characters left bare.

    The reference for what `_query_forms` does inline (and what the tests check the regex against).
    """
    if _canonical(component):
        return component  # already canonical: the common case, one C-level regex match
    return quote(unquote_to_bytes(component), safe="-_.~")


def _query_forms(pairs: Sequence[_Pair]) -> Iterator[str]:
    """The strict canonical query, then (lazily, if different) the raw pairs sorted as received."""
    # _strict inlined: this runs on every WebSocket connect.
    encoded = [
        (
            k if _canonical(k) else quote(unquote_to_bytes(k), safe="-_.~"),
            v if _canonical(v) else quote(unquote_to_bytes(v), safe="-_.~"),
        )
        for k, v, _ in pairs
    ]
    encoded.sort()
    strict = "&".join([f"{k}={v}" for k, v in encoded])
    yield strict
    raw = "&".join(f"{k}={v}" for k, v in sorted((k, v) for k, v, _ in pairs))
    if raw != strict:
        yield raw


def _strict_query(params: Iterable[tuple[str, str]]) -> str:
    """Encode decoded (key, value) pairs in canonical order: what our signers emit."""
    encoded = sorted((quote(k, safe="-_.~"), quote(v, safe="-_.~")) for k, v in params)
    return "&".join(f"{k}={v}" for k, v in encoded)


def _parse_credential(value: str) -> Scope:
    parts = value.rsplit("/", 4)
    if len(parts) != 5:
        raise _incomplete(
            "Credential must have exactly 5 slash-delimited elements, e.g. keyid/date/region/service/aws4_request."
        )
    access_key_id, date, region, service, terminator = parts
    if not _ACCESS_KEY_RE.fullmatch(access_key_id):
        raise _incomplete("Credential has a malformed access key id.")
    if not _SCOPE_DATE_RE.fullmatch(date):
        raise _incomplete(f"Credential scope date must be yyyymmdd, got '{_clip(date)}'.")
    if terminator != TERMINATOR:
        raise _invalid(
            f"Credential should be scoped with a valid terminator: 'aws4_request', not '{_clip(terminator)}'."
        )
    if not _REGION_RE.fullmatch(region):
        raise _invalid("Credential should be scoped to a valid region.")
    return Scope(access_key_id=access_key_id, date=date, region=region, service=service)


def _parse_authorization(value: str) -> dict[str, str]:
    algorithm, _, rest = value.strip().partition(" ")
    if algorithm != ALGORITHM:
        raise _incomplete(f"Unsupported AWS 'algorithm': '{_clip(algorithm)}'; expected '{ALGORITHM}'.")
    fields: dict[str, str] = {}
    for item in rest.split(","):
        item = item.strip()
        if not item:
            continue
        name, sep, val = item.partition("=")
        name = name.strip()
        if not sep or name in fields:
            raise _incomplete("Authorization header is malformed: expected 'Name=value' pairs separated by ','.")
        fields[name] = val.strip()
    missing = [n for n in ("Credential", "Signature", "SignedHeaders") if not fields.get(n)]
    if missing:
        raise _incomplete(" ".join(f"Authorization header requires '{n}' parameter." for n in missing))
    return fields


def _parse_signed_headers(value: str) -> list[str]:
    if value == "host":
        return ["host"]  # every presigned URL the KVS SDKs make
    names = [n.strip().lower() for n in value.split(";")]
    if not all(_HEADER_NAME_RE.fullmatch(n) for n in names):
        raise _incomplete("SignedHeaders is malformed: expected ';'-separated lower-case header names.")
    if "host" not in names:
        raise _incomplete("'Host' or ':authority' must be a 'SignedHeader' in the AWS Authorization.")
    return names


def _canonical_headers(headers: Mapping[str, str], signed: Sequence[str]) -> str:
    lines = []
    for name in signed:
        value = headers.get(name)
        if value is None:
            raise _invalid(f"Header '{_clip(name)}' is listed in SignedHeaders but missing from the request.")
        # Trimall: strip and collapse whitespace runs, exactly as botocore and JS v3 do.
        lines.append(f"{name}:{' '.join(value.split())}\n")
    return "".join(lines)


def _check_service(scope: Scope, service: str) -> None:
    if scope.service != service:
        raise _invalid(f"Credential should be scoped to correct service: '{service}'.")


def _check_scope_date(scope: Scope, amz_date: str) -> None:
    if scope.date != amz_date[:8]:
        raise _invalid(
            "Date in Credential scope does not match YYYYMMDD from ISO-8601 version of date from HTTP: "
            f"'{scope.date}' != '{amz_date[:8]}', from '{amz_date}'."
        )


def _check_clock(ts: float, amz_date: str, now: float, max_skew: float) -> None:
    if ts < now - max_skew:
        raise _invalid(
            f"Signature expired: {amz_date} is now earlier than {_amz_date(now - max_skew)} "
            f"({_amz_date(now)} - {_skew_text(max_skew)}.)"
        )
    _check_not_future(ts, amz_date, now, max_skew)


def _check_not_future(ts: float, amz_date: str, now: float, max_skew: float) -> None:
    if ts > now + max_skew:
        raise _invalid(
            f"Signature not yet current: {amz_date} is still later than {_amz_date(now + max_skew)} "
            f"({_amz_date(now)} + {_skew_text(max_skew)}.)"
        )


def _lookup(lookup: SecretLookup, access_key_id: str) -> Credential:
    credential = lookup(access_key_id)
    if credential is None:
        raise _unrecognized()
    return credential


def _token_ok(credential: Credential, sent: str | None) -> bool:
    expected = credential.session_token or None
    sent = sent or None  # an empty header is the same as none
    if expected is None:
        return sent is None
    return sent is not None and hmac.compare_digest(_utf8(sent), _utf8(expected))


def _check_token(credential: Credential, sent: str | None) -> None:
    if not _token_ok(credential, sent):
        raise _unrecognized()


def _check_signature(
    credential: Credential,
    scope: Scope,
    amz_date: str,
    canonical_requests: Iterable[str],
    provided: str,
) -> None:
    key = _signing_key(credential.secret_access_key, scope.date, scope.region, scope.service)
    given = _utf8(provided)
    for canonical_request in canonical_requests:
        if hmac.compare_digest(_signature(key, amz_date, scope, canonical_request).encode(), given):
            return
    raise _invalid()


def _canonical_requests(
    method: str, path: str, pairs: Sequence[_Pair], headers_block: str, signed_line: str, payload: str
) -> Iterator[str]:
    # A generator, so alternative forms are only built and hashed when the first did not match.
    for uri in _canonical_uris(path):
        for query in _query_forms(pairs):
            yield "\n".join((method.upper(), uri, query, headers_block, signed_line, payload))


def _request_time(headers: Mapping[str, str]) -> tuple[str, float]:
    """(ISO-8601 basic timestamp as it goes into StringToSign, epoch seconds)."""
    value = headers.get("x-amz-date")
    if value is not None:
        value = value.strip()
        try:
            return value, _parse_amz_date(value)
        except ValueError:
            raise _incomplete(
                f"X-Amz-Date must be in ISO-8601 basic format (yyyymmddTHHMMSSZ), got '{_clip(value)}'."
            ) from None
    value = headers.get("date")
    if value is None:
        raise _incomplete("Authorization header requires existence of either a 'X-Amz-Date' or a 'Date' header.")
    value = value.strip()
    try:
        return value, _parse_amz_date(value)
    except ValueError:
        pass
    try:
        dt = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        raise _incomplete(f"Date header is not a valid HTTP date, got '{_clip(value)}'.") from None
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=UTC)
    ts = dt.timestamp()
    # botocore signs the ISO-8601 basic form of an RFC 1123 Date header.
    return _amz_date(ts), ts


def _payload_hash(headers: Mapping[str, str], body: bytes) -> str:
    actual = hashlib.sha256(body).hexdigest()
    declared = headers.get("x-amz-content-sha256")
    if declared is None:
        return actual
    declared = declared.strip()
    if declared == "UNSIGNED-PAYLOAD" or declared.startswith("STREAMING-"):
        raise _invalid(
            f"x-amz-content-sha256 '{_clip(declared)}' is not accepted by this service: "
            "sign the SHA-256 of the request body."
        )
    if declared.lower() != actual:
        raise _invalid("The provided 'x-amz-content-sha256' header does not match what was computed.")
    return declared  # clients put the header value, verbatim, into the canonical request


def _query_params(pairs: Iterable[_Pair]) -> dict[str, list[str]]:
    """Decoded values of the SigV4 query parameters (other parameters are not needed decoded)."""
    found: dict[str, list[str]] = {}
    for _, raw_value, key in pairs:
        if key in _PRESIGN_AUTH_KEYS:
            found.setdefault(key, []).append(unquote(raw_value))
    return found


# --------------------------------------------------------------------------- fast paths
#
# What real clients send in the common case is verified by `_fast_request` (a header-signed REST
# call without a query string: botocore, JS v3, the C SDK) and `_fast_presigned` (a connect URL laid
# out as the KVS SDKs and `presign_url` write it) from cached parses, without splitting, decoding,
# re-encoding and sorting the query. They can only *accept*: when a precondition does not hold or
# any check fails they return None and the general path above decides, and words the error. A fast
# path runs the same checks and accepts only a signature over one of the canonical requests the
# general path tries (REST: the first; connect: the raw-pairs form, which is also the first when
# the query is strictly encoded), so it can make a request cheaper, never change a verdict.
# tests/unit/auth/test_sigv4_fast.py checks that against the general path on varied inputs.
#
# The caches hold parses of client-sent text (an Authorization header without its signature, a
# credential scope, a SignedHeaders list, a timestamp, an expiry, a path) and what follows from
# them with a key (its HMAC pads, the `Verified` to return): never a signature or a verdict. A parse
# is the same whichever request brought it; headers and scopes are only kept once they name a known
# key. Each cache is bounded; past _CACHE_MAX entries the oldest goes.

_CACHE_MAX = 512
_K = TypeVar("_K")
_V = TypeVar("_V")


def _remember(cache: dict[_K, _V], key: _K, value: _V) -> _V:
    if len(cache) >= _CACHE_MAX:
        cache.pop(next(iter(cache)), None)  # dicts keep insertion order: the oldest first
    cache[key] = value
    return value


class _Scoped:
    """A credential scope with what a request signed in it needs, memoised for the last key seen."""

    __slots__ = ("bound", "dated", "line", "scope")

    def __init__(self, scope: Scope) -> None:
        self.scope = scope
        self.line = f"{scope.date}/{scope.region}/{scope.service}/{TERMINATOR}"  # as in the string to sign
        # (credential, inner pad state, outer pad state, Verified): one attribute, replaced whole.
        self.bound: _Bound | None = None
        # (X-Amz-Date, the `bound` it was made from, its inner state after the string to sign's
        # first three lines): they repeat for as long as the timestamp does. Replaced whole.
        self.dated: tuple[str, _Bound, hashlib._Hash] | None = None

    def bind(self, credential: Credential) -> _Bound:
        scope = self.scope
        inner, outer = _signing_pads(credential.secret_access_key, scope.date, scope.region, scope.service)
        self.bound = bound = (credential, inner, outer, Verified(credential=credential, scope=scope))
        return bound

    def date(self, bound: _Bound, amz_date: str) -> tuple[str, _Bound, hashlib._Hash]:
        mac = bound[1].copy()
        mac.update(f"{ALGORITHM}\n{amz_date}\n{self.line}\n".encode())
        self.dated = dated = (amz_date, bound, mac)
        return dated


_Bound = tuple[Credential, "hashlib._Hash", "hashlib._Hash", Verified]
_AuthHead = tuple[_Scoped, tuple[str, ...], str]  # (scope, signed header names, "a;b;c")


# Authorization header up to and including its last "Signature=" -> (scope, names, "a;b;c").
_AUTH_HEADERS: dict[str, _AuthHead] = {}
# The last of them a request of a known key came with, and its parse (one slot, replaced whole).
_LAST_HEAD: list[tuple[str, _AuthHead] | None] = [None]
# The last header-signed canonical request less its payload hash, and the SHA-256 state after it
# (one slot, replaced whole; only ever copied): within a second a client's calls share it.
_LAST_REQUEST: list[tuple[str, hashlib._Hash] | None] = [None]
# Presigned X-Amz-Credential / X-Amz-SignedHeaders, as sent (still percent-encoded) -> parse.
_PRESIGN_SCOPES: dict[str, _Scoped] = {}
_PRESIGN_SIGNED: dict[str, tuple[tuple[str, ...], str]] = {}
_TIMES: dict[str, float] = {}  # X-Amz-Date -> epoch seconds
_EXPIRES: dict[str, int] = {}  # X-Amz-Expires -> seconds, when a whole number in 1..MAX_EXPIRES
_URIS: dict[str, str] = {}  # raw path -> its botocore canonical form

# Stand-in signatures for parsing a cached header: 64 lower-case hex digits, like every signature a
# fast path can accept (it only accepts one equal to the one it computed). Two, so that one that
# happens to equal a field elsewhere in the header cannot pass for its Signature field.
_HEX_STANDINS = ("0" * 64, "f" * 64)

# The query of a connect URL as the KVS SDKs (and `presign_url`) write it: these parameters, in
# canonical order, each once, the signature in its sorted place or last. Less its signature piece
# such a query *is* one of the canonical queries the general path tries: the raw pairs, sorted (and,
# when every value is strictly encoded, also the strict form). Keys are literal, so each is what it
# decodes to; values are decoded as the general path decodes them.
# Groups: credential, date, expires, token, signature, signed headers, signature (when last).
_KVS_QUERY_RE = re.compile(
    "X-Amz-Algorithm=AWS4-HMAC-SHA256"
    "(?:&X-Amz-ChannelARN=[^&]*+)?"
    "(?:&X-Amz-ClientId=[^&]*+)?"
    "&X-Amz-Credential=([^&]*+)"
    "&X-Amz-Date=([^&]*+)"
    "&X-Amz-Expires=([^&]*+)"
    "(?:&X-Amz-Security-Token=([^&]*+))?"
    "(?:&X-Amz-Signature=([^&]*+))?"
    "&X-Amz-SignedHeaders=([^&]*+)"
    "(?:&X-Amz-Signature=([^&]*+))?"
)


def _amz_time(value: str) -> float | None:
    """Epoch seconds of an X-Amz-Date, or None when it is malformed."""
    ts = _TIMES.get(value)
    if ts is None:
        try:
            ts = _remember(_TIMES, value, _parse_amz_date(value))
        except ValueError:
            return None
    return ts


def _uri(path: str) -> str:
    uri = _URIS.get(path)
    return _remember(_URIS, path, _canonical_uri(path)) if uri is None else uri


def _parse_auth_head(head: str) -> _AuthHead | None:
    """What an Authorization header of `head` + <64 hex digits> says, or None when it is bad.

    Parsed with two stand-in signatures: when each comes out as the Signature field, that field is
    the header's last and holds exactly what follows `head`, so any other 64-hex-digit signature in
    its place would too (hex holds none of ",", "=" or whitespace), and every other field is the
    same whatever the signature.
    """
    one, other = _HEX_STANDINS
    try:
        fields = _parse_authorization(head + one)
        if fields["Signature"] != one or _parse_authorization(head + other)["Signature"] != other:
            return None
        scope = _parse_credential(fields["Credential"])
        signed = _parse_signed_headers(fields["SignedHeaders"])
    except AuthError:
        return None
    return _Scoped(scope), tuple(signed), ";".join(signed)


def _fast_accept(
    scoped: _Scoped,
    credential: Credential,
    amz_date: str,
    request: str,
    payload: str,
    provided: str,
    remember: bool,
) -> Verified | None:
    """The Verified for `credential` when `provided` signs the canonical request `request` + `payload`.

    `remember`: keep the SHA-256 state after `request` for the next call (one slot), for requests
    whose canonical request repeats but for the payload hash (a client's calls within a second).
    """
    bound = scoped.bound
    if bound is None or bound[0] is not credential:
        bound = scoped.bind(credential)
    last = _LAST_REQUEST[0]
    if last is not None and last[0] == request:
        state = last[1].copy()
    else:
        try:
            data = request.encode("utf-8", "surrogateescape")
        except UnicodeEncodeError:
            return None  # the general path knows how to hash it
        state = (_sha256 if len(data) <= _SMALL else hashlib.sha256)(data)
        if remember:
            _LAST_REQUEST[0] = (request, state.copy())
    state.update(payload.encode())  # hex digits (a declared one is checked to be)
    request_hash = state.hexdigest()
    # HMAC-SHA256(kSigning, StringToSign), from the precomputed pad states (RFC 2104), the inner one
    # already past the string to sign's algorithm, timestamp and scope lines.
    dated = scoped.dated
    if dated is None or dated[1] is not bound or dated[0] != amz_date:
        dated = scoped.date(bound, amz_date)
    mac = dated[2].copy()
    mac.update(request_hash.encode())
    digest = mac.digest()
    mac = bound[2].copy()
    mac.update(digest)
    if provided.isascii() and hmac.compare_digest(mac.hexdigest(), provided):
        return bound[3]
    return None


def _mapping_values(headers: Mapping[str, str]) -> HeaderValues:
    """A mapping's headers as `HeaderValues` (a mapping holds one value per name: repeats come joined)."""
    get = headers.get

    def values(name: str, default: None) -> list[str] | None:
        value = get(name)
        return default if value is None else [value]

    return values


def accept_request(
    method: str,
    path: str,
    values: HeaderValues,
    body: bytes,
    lookup: SecretLookup,
    now: float,
    service: str = DEFAULT_SERVICE,
    max_skew: float = 300.0,
) -> Verified | None:
    """`verify_request`'s fast path, from the raw parts of a request without a query string.

    The `Verified` that `verify_request` would return, or None when the fast path cannot tell: then
    call `verify_request`, which alone refuses (and words why). A server calls this first and so
    builds no `RequestParts`: `values` may be its parser's `headers.getall`. Each header read must
    have come once; a repeated one is left to the general path, which joins the values.
    """
    found = values("authorization", None)
    if found is None or len(found) != 1:
        return None
    auth = found[0]
    last = _LAST_HEAD[0]
    if last is not None and auth.startswith(last[0]):
        # The usual case: the header the previous request of a known key came with, but for the
        # signature. What follows the head can only be accepted if it is the 64 hex digits we
        # compute, so this reads the header exactly as the search below would.
        head, parsed = last
        cut = len(head)
        fresh = False
    else:
        cut = auth.rfind("Signature=") + 10
        if cut < 10:
            return None
        head = auth[:cut]
        known = _AUTH_HEADERS.get(head)
        fresh = known is None
        if known is None:
            known = _parse_auth_head(head)
            if known is None:
                return None
        parsed = known
        last = None
    scoped, signed, signed_line = parsed
    scope = scoped.scope
    found = values("x-amz-date", None)
    if scope.service != service or found is None or len(found) != 1:
        return None
    amz_date = found[0].strip()
    ts = _TIMES.get(amz_date) or _amz_time(amz_date)  # the get: no call in the common case
    if ts is None or scope.date != amz_date[:8] or not now - max_skew <= ts <= now + max_skew:
        return None
    credential = lookup(scope.access_key_id)
    if credential is None:
        return None
    found = values("x-amz-security-token", None)
    if found is not None or credential.session_token:
        if found is not None and len(found) != 1:
            return None
        if not _token_ok(credential, None if found is None else found[0]):
            return None
    if fresh:  # only now: headers naming unknown keys must not crowd out the known ones
        _remember(_AUTH_HEADERS, head, parsed)
    if last is None:
        _LAST_HEAD[0] = (head, parsed)
    lines = []
    for name in signed:
        if name == "x-amz-date":  # read and checked above: 16 characters, no whitespace to trim
            lines.append(f"x-amz-date:{amz_date}\n")
            continue
        found = values(name, None)
        if found is None or len(found) != 1:
            return None
        lines.append(f"{name}:{' '.join(found[0].split())}\n")
    payload = (_sha256 if len(body) <= _SMALL else hashlib.sha256)(body).hexdigest()
    found = values("x-amz-content-sha256", None)
    if found is not None:
        if len(found) != 1:
            return None
        declared = found[0].strip()
        if declared.lower() != payload:
            return None
        payload = declared
    uri = _URIS.get(path) or _uri(path)
    # The canonical request less its last line, the payload hash.
    request = f"{method.upper()}\n{uri}\n\n{''.join(lines)}\n{signed_line}\n"
    return _fast_accept(scoped, credential, amz_date, request, payload, auth[cut:], True)


def _fast_request(
    parts: RequestParts, lookup: SecretLookup, now: float, service: str, max_skew: float
) -> Verified | None:
    """`verify_request` for a header-signed request without a query string; None: ask the general path."""
    if parts.query:
        return None
    return accept_request(
        parts.method, parts.path, _mapping_values(parts.headers), parts.body, lookup, now, service, max_skew
    )


def accept_presigned(
    method: str,
    path: str,
    query: str,
    values: HeaderValues,
    body: bytes,
    lookup: SecretLookup,
    now: float,
    service: str = DEFAULT_SERVICE,
    max_skew: float = 300.0,
) -> Verified | None:
    """`verify_presigned`'s fast path, from a request's raw parts (see `accept_request`).

    For a connect URL as the KVS SDKs write it: the `Verified` that `verify_presigned` would
    return, or None: then call `verify_presigned`.
    """
    match = _KVS_QUERY_RE.fullmatch(query)
    if match is None:
        return None
    credential_raw, amz_date, expires_raw, token, provided, signed_raw, provided_last = match.groups()
    if provided is None:
        if provided_last is None:
            return None
        provided = provided_last
        group = 7
    elif provided_last is None:
        group = 5
    else:
        return None  # two signatures: the general path refuses the repeated parameter
    scoped = _PRESIGN_SCOPES.get(credential_raw)
    fresh = scoped is None
    if scoped is None:
        try:
            scoped = _Scoped(_parse_credential(unquote(credential_raw)))
        except AuthError:
            return None
    signed_names = _PRESIGN_SIGNED.get(signed_raw)
    if signed_names is None:
        try:
            names = _parse_signed_headers(unquote(signed_raw))
        except AuthError:
            return None
        signed_names = _remember(_PRESIGN_SIGNED, signed_raw, (tuple(names), ";".join(names)))
    signed, signed_line = signed_names
    scope = scoped.scope
    ts = _TIMES.get(amz_date) or _amz_time(amz_date)
    expires = _EXPIRES.get(expires_raw)
    if expires is None:
        if not _EXPIRES_RE.fullmatch(expires_raw) or not 1 <= int(expires_raw) <= MAX_EXPIRES:
            return None
        expires = _remember(_EXPIRES, expires_raw, int(expires_raw))
    if (
        scope.service != service
        or ts is None
        or scope.date != amz_date[:8]
        or ts > now + max_skew
        or now > ts + expires
    ):
        return None
    credential = lookup(scope.access_key_id)
    if credential is None:
        return None
    if (token or credential.session_token) and not _token_ok(credential, None if token is None else unquote(token)):
        return None
    if fresh:  # only now: scopes of unknown keys must not crowd out the known ones
        _remember(_PRESIGN_SCOPES, credential_raw, scoped)
    lines = []
    for name in signed:
        found = values(name, None)
        if found is None or len(found) != 1:
            return None
        lines.append(f"{name}:{' '.join(found[0].split())}\n")
    # The canonical query: the query as received, less its "&X-Amz-Signature=..." piece (never the first).
    start, end = match.span(group)
    canonical_query = query[: start - 17] + query[end:]
    payload = (_sha256 if len(body) <= _SMALL else hashlib.sha256)(body).hexdigest() if body else EMPTY_SHA256
    uri = _URIS.get(path) or _uri(path)
    request = f"{method.upper()}\n{uri}\n{canonical_query}\n{''.join(lines)}\n{signed_line}\n"
    return _fast_accept(scoped, credential, amz_date, request, payload, provided, False)


def _fast_presigned(
    parts: RequestParts, lookup: SecretLookup, now: float, service: str, max_skew: float
) -> Verified | None:
    """`verify_presigned` for a connect URL as the KVS SDKs write it; None: ask the general path."""
    return accept_presigned(
        parts.method,
        parts.path,
        parts.query,
        _mapping_values(parts.headers),
        parts.body,
        lookup,
        now,
        service,
        max_skew,
    )


# --------------------------------------------------------------------------- public API


def scope_from_request(parts: RequestParts) -> Scope | None:
    """The credential scope the client claims (header or presigned query); None when absent or bad.

    Nothing is verified: open mode uses this to pick the region. Never raises.
    """
    try:
        auth = parts.headers.get("authorization")
        if auth:
            return _parse_credential(_parse_authorization(auth)["Credential"])
        values = _query_params(_split_query(parts.query)).get("X-Amz-Credential")
        if values and len(values) == 1:
            return _parse_credential(values[0])
    except Exception:
        return None
    return None


def verify_request(
    parts: RequestParts,
    lookup: SecretLookup,
    now: float,
    *,
    service: str = DEFAULT_SERVICE,
    max_skew: float = 300.0,
) -> Verified:
    """Verify a header-signed request (``Authorization: AWS4-HMAC-SHA256 ...``).

    A request without an Authorization header but with ``X-Amz-Algorithm`` in its query is checked
    as a presigned URL instead. Raises `AuthError`.
    """
    return _fast_request(parts, lookup, now, service, max_skew) or _verify_request(
        parts, lookup, now, service, max_skew
    )


def _verify_request(parts: RequestParts, lookup: SecretLookup, now: float, service: str, max_skew: float) -> Verified:
    """The general path of `verify_request`: every form, every check, and the error if one fails."""
    pairs = _split_query(parts.query)
    auth = parts.headers.get("authorization")
    query_auth = any(key == "X-Amz-Algorithm" for _, _, key in pairs)
    if not auth:
        if query_auth:
            return _verify_presigned(parts, pairs, lookup, now, service, max_skew)
        raise _missing()
    if query_auth:
        raise _incomplete(
            "Only one auth mechanism allowed; only the X-Amz-Algorithm query parameter "
            "or the Authorization header should be specified."
        )

    fields = _parse_authorization(auth)
    scope = _parse_credential(fields["Credential"])
    signed = _parse_signed_headers(fields["SignedHeaders"])
    _check_service(scope, service)
    amz_date, ts = _request_time(parts.headers)
    _check_scope_date(scope, amz_date)
    _check_clock(ts, amz_date, now, max_skew)

    credential = _lookup(lookup, scope.access_key_id)
    _check_token(credential, parts.headers.get("x-amz-security-token"))

    requests = _canonical_requests(
        parts.method,
        parts.path,
        pairs,
        _canonical_headers(parts.headers, signed),
        ";".join(signed),
        _payload_hash(parts.headers, parts.body),
    )
    _check_signature(credential, scope, amz_date, requests, fields["Signature"])
    return Verified(credential=credential, scope=scope)


def verify_presigned(
    parts: RequestParts,
    lookup: SecretLookup,
    now: float,
    *,
    service: str = DEFAULT_SERVICE,
    max_skew: float = 300.0,
) -> Verified:
    """Verify a presigned URL (the WebSocket connect). Any Authorization header is ignored.

    Raises `AuthError`.
    """
    return _fast_presigned(parts, lookup, now, service, max_skew) or _verify_presigned(
        parts, _split_query(parts.query), lookup, now, service, max_skew
    )


def _verify_presigned(
    parts: RequestParts,
    pairs: list[_Pair],
    lookup: SecretLookup,
    now: float,
    service: str,
    max_skew: float,
) -> Verified:
    params = _query_params(pairs)
    if "X-Amz-Algorithm" not in params:
        raise _missing()
    if any(len(v) > 1 for v in params.values()):
        raise _incomplete("Each X-Amz-* authentication query parameter may appear only once.")
    if any(name not in params for name in _PRESIGN_REQUIRED):
        raise _incomplete(
            "AWS query-string parameters must include 'X-Amz-Algorithm', 'X-Amz-Credential', "
            "'X-Amz-Signature', 'X-Amz-Date', 'X-Amz-SignedHeaders', 'X-Amz-Expires'. "
            "Re-examine the query-string parameters."
        )
    p = {k: v[0] for k, v in params.items()}
    if p["X-Amz-Algorithm"] != ALGORITHM:
        raise _incomplete(f"Unsupported AWS 'algorithm': '{_clip(p['X-Amz-Algorithm'])}'; expected '{ALGORITHM}'.")
    scope = _parse_credential(p["X-Amz-Credential"])
    signed = _parse_signed_headers(p["X-Amz-SignedHeaders"])
    _check_service(scope, service)

    amz_date = p["X-Amz-Date"]
    try:
        ts = _parse_amz_date(amz_date)
    except ValueError:
        raise _incomplete(
            f"X-Amz-Date must be in ISO-8601 basic format (yyyymmddTHHMMSSZ), got '{_clip(amz_date)}'."
        ) from None
    _check_scope_date(scope, amz_date)
    if not _EXPIRES_RE.fullmatch(p["X-Amz-Expires"]):
        raise _incomplete("X-Amz-Expires must be a whole number of seconds.")
    expires = int(p["X-Amz-Expires"])
    if not 1 <= expires <= MAX_EXPIRES:
        raise _access_denied(f"X-Amz-Expires must be between 1 and {MAX_EXPIRES} seconds, got {expires}.")
    _check_not_future(ts, amz_date, now, max_skew)
    if now > ts + expires:
        raise _access_denied(
            f"Signature expired: {_amz_date(ts + expires)} is now earlier than {_amz_date(now)} "
            f"(X-Amz-Date {amz_date} + X-Amz-Expires {expires} s)."
        )

    credential = _lookup(lookup, scope.access_key_id)
    _check_token(credential, p.get("X-Amz-Security-Token"))

    unsigned = [pair for pair in pairs if pair[2] != "X-Amz-Signature"]
    requests = _canonical_requests(
        parts.method,
        parts.path,
        unsigned,
        _canonical_headers(parts.headers, signed),
        ";".join(signed),
        hashlib.sha256(parts.body).hexdigest() if parts.body else EMPTY_SHA256,
    )
    _check_signature(credential, scope, amz_date, requests, p["X-Amz-Signature"])
    return Verified(credential=credential, scope=scope)


def presign_url(
    url: str,
    credential: Credential,
    region: str,
    now: float,
    expires: int = 299,
    *,
    service: str = DEFAULT_SERVICE,
) -> str:
    """Presign a ws/wss (or http/https) GET URL the way the KVS SDKs do; only ``host`` is signed.

    Query parameters already in `url` are kept and signed. The output lists every parameter in
    canonical order, so for the KVS JS SDK's inputs it is byte-identical to that SDK's URL.
    """
    if not 1 <= expires <= MAX_EXPIRES:
        raise ValueError(f"expires must be in 1..{MAX_EXPIRES}")
    split = urlsplit(url)
    if not split.scheme or not split.netloc:
        raise ValueError("url must be absolute, e.g. wss://host/path")
    existing = [(key, unquote(v)) for _, v, key in _split_query(split.query)]
    if any(k in _PRESIGN_AUTH_KEYS for k, _ in existing):
        raise ValueError("url is already presigned")
    amz_date = _amz_date(now)
    scope = Scope(credential.access_key_id, amz_date[:8], region, service)
    params = [
        *existing,
        ("X-Amz-Algorithm", ALGORITHM),
        ("X-Amz-Credential", f"{scope.access_key_id}/{scope.date}/{region}/{service}/{TERMINATOR}"),
        ("X-Amz-Date", amz_date),
        ("X-Amz-Expires", str(expires)),
        ("X-Amz-SignedHeaders", "host"),
    ]
    if credential.session_token:
        params.append(("X-Amz-Security-Token", credential.session_token))
    path = split.path or "/"
    canonical_request = "\n".join(
        ("GET", _canonical_uri(path), _strict_query(params), f"host:{split.netloc}\n", "host", EMPTY_SHA256)
    )
    key = _signing_key(credential.secret_access_key, scope.date, region, service)
    params.append(("X-Amz-Signature", _signature(key, amz_date, scope, canonical_request)))
    return f"{split.scheme}://{split.netloc}{path}?{_strict_query(params)}"


def sign_request(
    parts: RequestParts,
    credential: Credential,
    region: str,
    now: float,
    *,
    service: str = DEFAULT_SERVICE,
) -> dict[str, str]:
    """Header-sign `parts` like botocore; returns the headers to add (lower-case names).

    Every header in `parts.headers` is signed except hop-by-hop ones and user-agent; `host` must be
    present. The session token, if any, is sent and signed.
    """
    amz_date = _amz_date(now)
    added = {"x-amz-date": amz_date}
    if credential.session_token:
        added["x-amz-security-token"] = credential.session_token
    headers = {k.lower(): v for k, v in parts.headers.items()} | added
    if "host" not in headers:
        raise ValueError("parts.headers must contain 'host'")
    signed = sorted(name for name in headers if name not in _UNSIGNABLE_HEADERS)
    scope = Scope(credential.access_key_id, amz_date[:8], region, service)
    canonical_request = "\n".join(
        (
            parts.method.upper(),
            _canonical_uri(parts.path),
            next(_query_forms(_split_query(parts.query))),
            _canonical_headers(headers, signed),
            ";".join(signed),
            hashlib.sha256(parts.body).hexdigest(),
        )
    )
    key = _signing_key(credential.secret_access_key, scope.date, region, service)
    signature = _signature(key, amz_date, scope, canonical_request)
    added["authorization"] = (
        f"{ALGORITHM} Credential={scope.access_key_id}/{scope.date}/{region}/{service}/{TERMINATOR}, "
        f"SignedHeaders={';'.join(signed)}, Signature={signature}"
    )
    return added
