"""Strict mode, authentication: SigV4 as real clients sign it, and every way a signed request can go wrong.

One in-process server (`--credentials FILE`, TURN configured, `--limits off` so that no quota interferes)
serves the whole module. Requests come from:

* boto3 / botocore clients (signed header-style, with and without a signed session token);
* the AWS CLI (`.venv/bin/aws` subprocesses, credentials in the environment);
* the AWS SDK for JavaScript v3 (`tests/js/strict_signed.mjs`, Node);
* a request captured from botocore (`AWSRequest` + `SigV4Auth`) and replayed with `http.client`, byte for
  byte and then with exactly one signed part changed (method, path, query, a signed header, body, date,
  region, service, signature...): each change must be refused with the code AWS uses;
* a C-SDK-style signer written here (signs `host;user-agent;x-amz-date`, sends the token unsigned);
* presigned WebSocket URLs (`signalite.auth.sigv4.presign_url`), intact, tampered and expired.

Clock tests move the server's injected clock (`server.clock.offset`) or sign with a shifted time; refusals
must say "Signature expired" / "Signature not yet current" and carry a `Date` header with the server's time
(the KVS C SDK corrects its clock from it). Unit-level SigV4 checks live in tests/unit/auth/test_sigv4.py.
"""

from __future__ import annotations

import asyncio
import base64
import calendar
import email.utils
import errno
import hashlib
import hmac
import http.client
import json
import os
import secrets
import shutil
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any
from urllib.parse import quote

import aiohttp
import boto3
import botocore.config
import botocore.session
import pytest
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials
from botocore.exceptions import ClientError

from signalite.auth.sigv4 import Credential, presign_url
from signalite.testing import SignaliteServer, free_port

REGION = "us-west-2"
ACCOUNT = "111111111111"

# Secrets are random per run (and contain the characters signers get wrong: / + =), so that finding one in
# a response can only mean the server leaked it.
KEY = Credential("AKIDSTRICTAUTH1", f"wJal/{secrets.token_urlsafe(24)}+K7=", ACCOUNT)
TOKEN_KEY = Credential(
    "ASIASTRICTAUTH2", f"tok/{secrets.token_urlsafe(24)}+S=", ACCOUNT, f"IQoJ//{secrets.token_urlsafe(48)}+tok=="
)
TURN_SECRET = f"turn-{secrets.token_urlsafe(24)}"
SECRETS = (KEY.secret_access_key, TOKEN_KEY.secret_access_key, TOKEN_KEY.session_token or "", TURN_SECRET)

BOTO_CONFIG = botocore.config.Config(retries={"max_attempts": 1}, read_timeout=30, connect_timeout=5)
JS_DIR = Path(__file__).resolve().parents[1] / "js"
JS_SCRIPT = JS_DIR / "strict_signed.mjs"
JS_INSTALL_HINT = f"install it with ./scripts/test, or: cd {JS_DIR} && npm install --no-audit --no-fund"
EMPTY_SHA256 = hashlib.sha256(b"").hexdigest()


def credentials_file(directory: Path, *entries: Credential) -> Path:
    path = directory / "credentials.json"
    path.write_text(
        json.dumps(
            {
                "credentials": [
                    {
                        "access_key_id": c.access_key_id,
                        "secret_access_key": c.secret_access_key,
                        "account_id": c.account_id,
                        **({"session_token": c.session_token} if c.session_token else {}),
                    }
                    for c in entries
                ]
            }
        )
    )
    return path


def start_server(settings: dict[str, Any]) -> SignaliteServer:
    """An in-process server on a free port; retried when another process takes the port first."""
    for _ in range(5):
        server = SignaliteServer(settings={"port": free_port(), **settings})
        try:
            return server.start()
        except OSError as e:
            shutil.rmtree(server.data_dir, ignore_errors=True)
            if e.errno != errno.EADDRINUSE:
                raise
    raise AssertionError("no free port for the server after 5 attempts")


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SignaliteServer]:
    directory = tmp_path_factory.mktemp("strict-auth")
    settings = {
        "credentials": str(credentials_file(directory, KEY, TOKEN_KEY)),
        "limits": "off",
        "turn_uri": ("turn:127.0.0.1:3478?transport=udp",),
        "turn_secret": TURN_SECRET,
    }
    running = start_server(settings)
    try:
        yield running
    finally:
        running.stop()


@pytest.fixture
def clock(server: SignaliteServer) -> Iterator[Any]:
    """The server's injected clock; its offset is put back after the test."""
    saved = server.clock.offset
    yield server.clock
    server.clock.offset = saved


def client(server: SignaliteServer, cred: Credential, service: str = "kinesisvideo", **kwargs: Any) -> Any:
    return boto3.client(
        service,
        endpoint_url=kwargs.pop("endpoint_url", server.endpoint_url),
        region_name=kwargs.pop("region", REGION),
        aws_access_key_id=kwargs.pop("akid", cred.access_key_id),
        aws_secret_access_key=kwargs.pop("secret", cred.secret_access_key),
        aws_session_token=kwargs.pop("token", cred.session_token),
        config=BOTO_CONFIG,
    )


@pytest.fixture(scope="module")
def kv(server: SignaliteServer) -> Any:
    return client(server, KEY)


@pytest.fixture(scope="module")
def channel(kv: Any) -> str:
    return str(kv.create_signaling_channel(ChannelName=f"auth-{uuid.uuid4().hex[:8]}")["ChannelARN"])


def unique(prefix: str = "ch") -> str:
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


# ----------------------------------------------------------------------------- raw HTTP


@dataclass(frozen=True)
class Raw:
    """A request as it goes on the wire: method, target (path + query), headers in order, body."""

    method: str
    target: str
    headers: tuple[tuple[str, str], ...]
    body: bytes

    def header(self, name: str) -> str:
        return next(v for k, v in self.headers if k.lower() == name.lower())

    def with_header(self, name: str, value: str | None) -> Raw:
        """Replace (or with None drop) a header; added at the end when absent."""
        found = any(k.lower() == name.lower() for k, _ in self.headers)
        if not found and value is not None:
            return replace(self, headers=(*self.headers, (name, value)))
        kept = tuple((k, value if k.lower() == name.lower() else v) for k, v in self.headers)
        return replace(self, headers=tuple((k, v) for k, v in kept if v is not None))


@dataclass
class Answer:
    status: int
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)

    @property
    def code(self) -> str:
        return self.headers.get("x-amzn-errortype", "").split(":")[0]


def send(port: int, raw: Raw, *, add_host: bool = True) -> Answer:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        conn.putrequest(raw.method, raw.target, skip_host=True, skip_accept_encoding=True)
        names = {k.lower() for k, _ in raw.headers}
        if add_host and "host" not in names:
            conn.putheader("Host", f"127.0.0.1:{port}")
        for k, v in raw.headers:
            conn.putheader(k, v)
        if "content-length" not in names:
            conn.putheader("Content-Length", str(len(raw.body)))
        conn.endheaders(raw.body)
        response = conn.getresponse()
        return Answer(response.status, {k.lower(): v for k, v in response.getheaders()}, response.read())
    finally:
        conn.close()


def botocore_capture(
    port: int,
    cred: Credential,
    *,
    method: str = "POST",
    path: str = "/describeSignalingChannel",
    query: str = "probe=one&x=a%2Fb",
    body: bytes = b"{}",
    region: str = REGION,
    service: str = "kinesisvideo",
    token: str | None = None,
) -> Raw:
    """Sign with botocore's own SigV4Auth, as every boto3 client does, and capture the result."""
    url = f"http://127.0.0.1:{port}{path}" + (f"?{query}" if query else "")
    request = AWSRequest(
        method=method, url=url, data=body, headers={"Content-Type": "application/json", "X-Probe": "signed-value"}
    )
    SigV4Auth(Credentials(cred.access_key_id, cred.secret_access_key, token), service, region).add_auth(request)
    prepared = request.prepare()
    headers = tuple((k, v) for k, v in prepared.headers.items() if k.lower() != "content-length")
    assert "X-Amz-Date" in dict(headers) and "Authorization" in dict(headers)
    return Raw(method, path + (f"?{query}" if query else ""), headers, body)


def c_sdk_sign(
    port: int,
    cred: Credential,
    path: str,
    body: bytes,
    now: float,
    *,
    token: str | None = None,
    region: str = REGION,
) -> Raw:
    """Sign as the KVS C SDK does: `host;user-agent;x-amz-date` signed, the session token sent unsigned.

    Written from the protocol notes (kvs-protocol.md §7.1), independently of signalite's signer.
    """
    amz_date = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime(now))
    host = f"127.0.0.1:{port}"
    user_agent = "AWS-SDK-KVS-CPP-CLIENT/1.10.0 GCC/12 Linux/6 x86_64"
    canonical_headers = f"host:{host}\nuser-agent:{user_agent}\nx-amz-date:{amz_date}\n"
    signed = "host;user-agent;x-amz-date"
    canonical_request = "\n".join(["POST", path, "", canonical_headers, signed, hashlib.sha256(body).hexdigest()])
    scope = f"{amz_date[:8]}/{region}/kinesisvideo/aws4_request"
    string_to_sign = "\n".join(
        ["AWS4-HMAC-SHA256", amz_date, scope, hashlib.sha256(canonical_request.encode()).hexdigest()]
    )
    key = ("AWS4" + cred.secret_access_key).encode()
    for part in (amz_date[:8], region, "kinesisvideo", "aws4_request"):
        key = hmac.new(key, part.encode(), hashlib.sha256).digest()
    signature = hmac.new(key, string_to_sign.encode(), hashlib.sha256).hexdigest()
    headers = [
        ("Host", host),
        ("User-Agent", user_agent),
        ("X-Amz-Date", amz_date),
        ("Content-Type", "application/json"),
        (
            "Authorization",
            f"AWS4-HMAC-SHA256 Credential={cred.access_key_id}/{scope}, SignedHeaders={signed}, Signature={signature}",
        ),
    ]
    if token is not None:
        headers.append(("x-amz-security-token", token))
    return Raw("POST", path, tuple(headers), body)


def assert_no_secret(*texts: str | bytes) -> None:
    for text in texts:
        blob = text.decode(errors="replace") if isinstance(text, bytes) else text
        for secret in SECRETS:
            assert secret not in blob, "a secret appeared in a response"


def assert_date_close(headers: dict[str, str], expected: float, slack: float = 3.0) -> None:
    value = headers.get("date")
    assert value, f"no Date header in {headers}"
    ts = email.utils.parsedate_to_datetime(value).timestamp()
    assert abs(ts - expected) <= slack, f"Date header {value!r} is {ts - expected:+.1f} s from the server's clock"


def assert_refused(answer: Answer, status: int, code: str, words: str | None = None) -> dict[str, Any]:
    assert answer.status == status, (answer.status, answer.headers, answer.body[:500])
    assert answer.code == code, (answer.headers, answer.body[:500])
    assert answer.headers.get("content-type", "").startswith("application/json"), answer.headers
    body = answer.json()
    assert body.get("__type", "").split("#")[-1] == code, body
    message = body.get("message") or body.get("Message") or ""
    assert message, body
    if words is not None:
        assert words in message, message
    assert "date" in answer.headers
    assert_no_secret(answer.body, json.dumps(answer.headers))
    return dict(body)


def error_of(exc: ClientError) -> tuple[str, int, str]:
    return (
        exc.response["Error"]["Code"],
        exc.response["ResponseMetadata"]["HTTPStatusCode"],
        exc.response["Error"].get("Message", ""),
    )


# ============================================================================= /health


def test_health_reports_strict_mode_and_no_secret(server: SignaliteServer) -> None:
    answer = send(server.port, Raw("GET", "/health", (), b""))
    assert answer.status == 200
    body = answer.json()
    assert body["auth_mode"] == "strict"
    assert_no_secret(answer.body, json.dumps(answer.headers))
    for akid in (KEY.access_key_id, TOKEN_KEY.access_key_id):
        assert akid not in answer.body.decode()  # who may log in is not public either


def test_open_mode_health_says_open(tmp_path: Path) -> None:
    open_server = start_server({})
    try:
        body = send(open_server.port, Raw("GET", "/health", (), b"")).json()
    finally:
        open_server.stop()
    assert body["auth_mode"] == "open"


# ============================================================================= real clients pass


def test_boto3_signed_requests_pass(server: SignaliteServer, kv: Any) -> None:
    name = unique("boto")
    arn = kv.create_signaling_channel(ChannelName=name, Tags=[{"Key": "k", "Value": "v"}])["ChannelARN"]
    assert arn.startswith(f"arn:aws:kinesisvideo:{REGION}:{ACCOUNT}:channel/{name}/")
    info = kv.describe_signaling_channel(ChannelName=name)["ChannelInfo"]
    assert info["ChannelARN"] == arn
    assert kv.describe_signaling_channel(ChannelARN=arn)["ChannelInfo"]["ChannelName"] == name
    listed = kv.list_signaling_channels(ChannelNameCondition={"ComparisonOperator": "BEGINS_WITH",
                                                              "ComparisonValue": name})  # fmt: skip
    assert [c["ChannelARN"] for c in listed["ChannelInfoList"]] == [arn]
    kv.tag_resource(ResourceARN=arn, Tags=[{"Key": "k2", "Value": "v2"}])
    assert kv.list_tags_for_resource(ResourceARN=arn)["Tags"] == {"k": "v", "k2": "v2"}
    endpoints = kv.get_signaling_channel_endpoint(
        ChannelARN=arn, SingleMasterChannelEndpointConfiguration={"Protocols": ["WSS", "HTTPS"], "Role": "MASTER"}
    )["ResourceEndpointList"]
    https = next(e["ResourceEndpoint"] for e in endpoints if e["Protocol"] == "HTTPS")
    signaling = client(server, KEY, "kinesis-video-signaling", endpoint_url=https)
    ice = signaling.get_ice_server_config(ChannelARN=arn, ClientId="viewer-1")["IceServerList"]
    assert ice and ice[0]["Uris"] == ["turn:127.0.0.1:3478?transport=udp"]
    assert TURN_SECRET not in json.dumps(ice)


def test_boto3_with_signed_session_token_passes(server: SignaliteServer) -> None:
    kv = client(server, TOKEN_KEY, region="eu-central-1")  # the region comes from the signature's scope
    name = unique("tok")
    arn = kv.create_signaling_channel(ChannelName=name)["ChannelARN"]
    assert arn.startswith(f"arn:aws:kinesisvideo:eu-central-1:{ACCOUNT}:channel/{name}/")
    assert kv.describe_signaling_channel(ChannelARN=arn)["ChannelInfo"]["ChannelName"] == name
    signaling = client(server, TOKEN_KEY, "kinesis-video-signaling", region="eu-central-1")
    assert signaling.get_ice_server_config(ChannelARN=arn)["IceServerList"]
    kv.delete_signaling_channel(ChannelARN=arn)


def aws_cli() -> str:
    found = Path(sys.executable).parent / "aws"
    assert found.exists(), f"the AWS CLI is not installed in the venv ({found}); ./scripts/test installs it"
    return str(found)


def run_cli(server: SignaliteServer, cred: Credential, *args: str, secret: str | None = None) -> subprocess.Popen[str]:
    env = {
        k: v for k, v in os.environ.items() if not k.startswith("AWS_")
    } | {
        "AWS_ACCESS_KEY_ID": cred.access_key_id,
        "AWS_SECRET_ACCESS_KEY": secret or cred.secret_access_key,
        "AWS_DEFAULT_REGION": REGION,
        "AWS_CONFIG_FILE": os.devnull,
        "AWS_SHARED_CREDENTIALS_FILE": os.devnull,
        "AWS_EC2_METADATA_DISABLED": "true",
        "AWS_MAX_ATTEMPTS": "1",
        "AWS_PAGER": "",
    }  # fmt: skip
    if cred.session_token:
        env["AWS_SESSION_TOKEN"] = cred.session_token
    return subprocess.Popen(
        [aws_cli(), *args, "--endpoint-url", server.endpoint_url, "--output", "json"],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip


def finish(process: subprocess.Popen[str]) -> tuple[int, str, str]:
    out, err = process.communicate(timeout=120)
    return process.returncode, out, err


def test_aws_cli_signed_requests_pass(server: SignaliteServer, kv: Any, channel: str) -> None:
    name = unique("cli")
    created = run_cli(server, TOKEN_KEY, "kinesisvideo", "create-signaling-channel", "--channel-name", name)
    # The CLI takes about a second to start: run the independent calls side by side.
    described = run_cli(server, KEY, "kinesisvideo", "describe-signaling-channel", "--channel-arn", channel)
    wrong = run_cli(server, KEY, "kinesisvideo", "list-signaling-channels", secret="not-the-secret")
    code, out, err = finish(created)
    assert code == 0, err
    arn = json.loads(out)["ChannelARN"]
    assert arn.startswith(f"arn:aws:kinesisvideo:{REGION}:{ACCOUNT}:channel/{name}/")
    code, out, err = finish(described)
    assert code == 0, err
    assert json.loads(out)["ChannelInfo"]["ChannelARN"] == channel
    code, out, err = finish(wrong)
    assert code != 0
    assert "InvalidSignatureException" in err, err
    assert_no_secret(out, err)

    listed = run_cli(server, TOKEN_KEY, "kinesisvideo", "list-signaling-channels")
    ice = run_cli(server, KEY, "kinesis-video-signaling", "get-ice-server-config", "--channel-arn", arn)
    code, out, err = finish(listed)
    assert code == 0, err
    assert arn in [c["ChannelARN"] for c in json.loads(out)["ChannelInfoList"]]
    code, out, err = finish(ice)
    assert code == 0, err
    assert json.loads(out)["IceServerList"][0]["Uris"] == ["turn:127.0.0.1:3478?transport=udp"]
    assert kv.describe_signaling_channel(ChannelName=name)["ChannelInfo"]["ChannelARN"] == arn


def node() -> str:
    found = shutil.which("node")
    assert found, "node is not on PATH: the JS SDK test needs Node.js >= 18 (./scripts/test expects it)"
    return found


def test_js_v3_signed_requests_pass(server: SignaliteServer, kv: Any) -> None:
    package = JS_DIR / "node_modules" / "@aws-sdk" / "client-kinesis-video" / "package.json"
    assert package.exists(), f"@aws-sdk/client-kinesis-video is not installed; {JS_INSTALL_HINT}"
    name = unique("js")
    env = dict(os.environ) | {
        "SIGNALITE_ENDPOINT": server.endpoint_url,
        "SIGNALITE_REGION": REGION,
        "SIGNALITE_CHANNEL": name,
        "SIGNALITE_KEY": json.dumps({"accessKeyId": KEY.access_key_id, "secretAccessKey": KEY.secret_access_key}),
        "SIGNALITE_TOKEN_KEY": json.dumps(
            {
                "accessKeyId": TOKEN_KEY.access_key_id,
                "secretAccessKey": TOKEN_KEY.secret_access_key,
                "sessionToken": TOKEN_KEY.session_token,
            }
        ),
    }
    done = subprocess.run(
        [node(), str(JS_SCRIPT)], cwd=JS_DIR, env=env, capture_output=True, text=True, timeout=120, check=False
    )
    assert done.returncode == 0, f"node failed ({done.returncode}); {JS_INSTALL_HINT}\n{done.stderr}"
    result = json.loads(done.stdout.strip().splitlines()[-1])

    arn = result["create"]["ChannelARN"]
    assert arn.startswith(f"arn:aws:kinesisvideo:{REGION}:{ACCOUNT}:channel/{name}/")
    assert result["create"]["httpStatusCode"] == 200
    assert result["describe"] == {"ChannelARN": arn, "ChannelName": name, "ChannelStatus": "ACTIVE"}
    assert result["list"] == [arn]
    assert {e["Protocol"] for e in result["endpoints"]} == {"WSS", "HTTPS"}
    assert result["tags"] == {"made-by": "js-v3"}
    assert result["describeWithPlainKey"] == arn
    assert result["wrongSecret"]["name"] == "InvalidSignatureException"
    assert result["wrongSecret"]["httpStatusCode"] == 403
    assert result["unknownKey"]["name"] == "UnrecognizedClientException"
    assert result["unknownKey"]["httpStatusCode"] == 403
    assert result["missingToken"]["name"] == "UnrecognizedClientException"
    assert result["wrongToken"]["name"] == "UnrecognizedClientException"
    for failure in ("wrongSecret", "unknownKey", "missingToken", "wrongToken"):
        assert_no_secret(result[failure]["message"])
    assert kv.describe_signaling_channel(ChannelARN=arn)["ChannelInfo"]["ChannelName"] == name


# ============================================================================= a captured request, tampered


@pytest.fixture(scope="module")
def body(channel: str) -> bytes:
    return json.dumps({"ChannelARN": channel}).encode()


def test_captured_botocore_request_passes_unchanged(server: SignaliteServer, channel: str, body: bytes) -> None:
    raw = botocore_capture(server.port, KEY, body=body)
    answer = send(server.port, raw)
    assert answer.status == 200, answer.body
    assert answer.json()["ChannelInfo"]["ChannelARN"] == channel
    # Unsigned headers may be added or changed freely (proxies do), and header names are case-insensitive.
    assert send(server.port, raw.with_header("X-Forwarded-For", "10.0.0.1")).status == 200
    assert send(server.port, raw.with_header("User-Agent", "something else")).status == 200
    renamed = Raw(raw.method, raw.target, tuple((k.upper(), v) for k, v in raw.headers), raw.body)
    assert send(server.port, renamed).status == 200
    # The same request signed with a session token (botocore signs x-amz-security-token) passes too.
    with_token = botocore_capture(server.port, TOKEN_KEY, body=body, token=TOKEN_KEY.session_token)
    assert "x-amz-security-token" in with_token.header("Authorization")
    assert send(server.port, with_token).status == 200


def _auth(raw: Raw) -> str:
    return raw.header("Authorization")


def _retarget(raw: Raw, target: str) -> Raw:
    return replace(raw, target=target)


def _shift_amz_date(raw: Raw, seconds: int) -> Raw:
    amz = raw.header("X-Amz-Date")
    ts = calendar.timegm(time.strptime(amz, "%Y%m%dT%H%M%SZ")) + seconds
    return raw.with_header("X-Amz-Date", time.strftime("%Y%m%dT%H%M%SZ", time.gmtime(ts)))


def _replace_in_auth(raw: Raw, old: str, new: str) -> Raw:
    auth = _auth(raw)
    assert old in auth, (old, auth)
    return raw.with_header("Authorization", auth.replace(old, new, 1))


def _flip_signature(raw: Raw) -> Raw:
    auth = _auth(raw)
    last = auth[-1]
    return raw.with_header("Authorization", auth[:-1] + ("0" if last != "0" else "1"))


# name -> (how to build the tampered request from (port, body), expected code)
TAMPERINGS: dict[str, Any] = {
    "method (signed PUT, sent POST)": (
        lambda port, body: replace(botocore_capture(port, KEY, method="PUT", body=body), method="POST"),
        "InvalidSignatureException",
    ),
    "path (signed /listSignalingChannels)": (
        lambda port, body: _retarget(
            botocore_capture(port, KEY, path="/listSignalingChannels", body=body),
            "/describeSignalingChannel?probe=one&x=a%2Fb",
        ),
        "InvalidSignatureException",
    ),
    "query value": (
        lambda port, body: _retarget(
            botocore_capture(port, KEY, body=body), "/describeSignalingChannel?probe=two&x=a%2Fb"
        ),
        "InvalidSignatureException",
    ),
    "query parameter added": (
        lambda port, body: _retarget(
            botocore_capture(port, KEY, body=body), "/describeSignalingChannel?probe=one&x=a%2Fb&extra=1"
        ),
        "InvalidSignatureException",
    ),
    "query parameter removed": (
        lambda port, body: _retarget(botocore_capture(port, KEY, body=body), "/describeSignalingChannel?probe=one"),
        "InvalidSignatureException",
    ),
    "query removed": (
        lambda port, body: _retarget(botocore_capture(port, KEY, body=body), "/describeSignalingChannel"),
        "InvalidSignatureException",
    ),
    "query key case": (
        lambda port, body: _retarget(
            botocore_capture(port, KEY, body=body), "/describeSignalingChannel?Probe=one&x=a%2Fb"
        ),
        "InvalidSignatureException",
    ),
    "signed custom header value": (
        lambda port, body: botocore_capture(port, KEY, body=body).with_header("X-Probe", "tampered"),
        "InvalidSignatureException",
    ),
    "signed custom header dropped": (
        lambda port, body: botocore_capture(port, KEY, body=body).with_header("X-Probe", None),
        "InvalidSignatureException",
    ),
    "content-type": (
        lambda port, body: botocore_capture(port, KEY, body=body).with_header(
            "Content-Type", "application/x-amz-json-1.1"
        ),
        "InvalidSignatureException",
    ),
    "host": (
        lambda port, body: botocore_capture(port, KEY, body=body).with_header("Host", f"localhost:{port}"),
        "InvalidSignatureException",
    ),
    "body: one byte": (
        lambda port, body: replace(botocore_capture(port, KEY, body=body), body=body.replace(b'"}', b'x"}')),
        "InvalidSignatureException",
    ),
    "body: trailing whitespace": (
        lambda port, body: replace(botocore_capture(port, KEY, body=body), body=body + b" "),
        "InvalidSignatureException",
    ),
    "body: removed": (
        lambda port, body: replace(botocore_capture(port, KEY, body=body), body=b""),
        "InvalidSignatureException",
    ),
    "x-amz-date +1 s": (
        lambda port, body: _shift_amz_date(botocore_capture(port, KEY, body=body), 1),
        "InvalidSignatureException",
    ),
    "x-amz-date -1 s": (
        lambda port, body: _shift_amz_date(botocore_capture(port, KEY, body=body), -1),
        "InvalidSignatureException",
    ),
    "scope region": (
        lambda port, body: _replace_in_auth(botocore_capture(port, KEY, body=body), f"/{REGION}/", "/us-east-1/"),
        "InvalidSignatureException",
    ),
    "signed for another region": (
        lambda port, body: botocore_capture(port, KEY, body=body, region="us-east-1").with_header(
            "Authorization",
            _auth(botocore_capture(port, KEY, body=body, region="us-east-1")).replace("/us-east-1/", f"/{REGION}/"),
        ),
        "InvalidSignatureException",
    ),
    "scope service": (
        lambda port, body: _replace_in_auth(
            botocore_capture(port, KEY, body=body), "/kinesisvideo/", "/kinesis-video-signaling/"
        ),
        "InvalidSignatureException",
    ),
    "signed for another service": (
        lambda port, body: botocore_capture(port, KEY, body=body, service="kinesis"),
        "InvalidSignatureException",
    ),
    "scope date": (
        lambda port, body: _replace_in_auth(
            botocore_capture(port, KEY, body=body),
            f"/{time.strftime('%Y%m%d', time.gmtime())}/",
            f"/{time.strftime('%Y%m%d', time.gmtime(time.time() - 86400 * 2))}/",
        ),
        "InvalidSignatureException",
    ),
    "signed headers list": (
        lambda port, body: _replace_in_auth(botocore_capture(port, KEY, body=body), ";x-probe", ""),
        "InvalidSignatureException",
    ),
    "signature": (
        lambda port, body: _flip_signature(botocore_capture(port, KEY, body=body)),
        "InvalidSignatureException",
    ),
    "access key of another known credential": (
        lambda port, body: _replace_in_auth(
            botocore_capture(port, KEY, body=body), f"Credential={KEY.access_key_id}/",
            f"Credential={TOKEN_KEY.access_key_id}/",
        ).with_header("X-Amz-Security-Token", TOKEN_KEY.session_token),
        "InvalidSignatureException",
    ),
    "signed session token changed": (
        lambda port, body: botocore_capture(
            port, TOKEN_KEY, body=body, token=TOKEN_KEY.session_token
        ).with_header("X-Amz-Security-Token", (TOKEN_KEY.session_token or "") + "x"),
        "UnrecognizedClientException",
    ),
}  # fmt: skip


@pytest.mark.parametrize("name", list(TAMPERINGS))
def test_changing_one_signed_part_is_refused(server: SignaliteServer, body: bytes, name: str) -> None:
    build, code = TAMPERINGS[name]
    answer = send(server.port, build(server.port, body))
    refusal = assert_refused(answer, 403, code)
    if code == "InvalidSignatureException" and "scope" not in name and "service" not in name:
        assert "signature" in refusal["message"].lower() or "Header" in refusal["message"], refusal


def test_a_tampered_request_cannot_be_fixed_by_retrying(server: SignaliteServer, body: bytes) -> None:
    # The signature check is not a one-off: the intact request still passes after refusals.
    raw = botocore_capture(server.port, KEY, body=body)
    for _ in range(3):
        assert send(server.port, replace(raw, body=body + b" ")).status == 403
    assert send(server.port, raw).status == 200


# ============================================================================= who is calling


def test_unknown_access_key_is_unrecognized(server: SignaliteServer) -> None:
    stranger = Credential("AKIDNOBODYKNOWS", "some-secret", ACCOUNT)
    with pytest.raises(ClientError) as info:
        client(server, stranger).list_signaling_channels()
    code, status, message = error_of(info.value)
    assert (code, status) == ("UnrecognizedClientException", 403)
    assert message == "The security token included in the request is invalid."


def test_wrong_secret_is_invalid_signature(server: SignaliteServer) -> None:
    with pytest.raises(ClientError) as info:
        client(server, KEY, secret=KEY.secret_access_key + "x").list_signaling_channels()
    code, status, message = error_of(info.value)
    assert (code, status) == ("InvalidSignatureException", 403)
    assert "signature" in message.lower()
    assert_no_secret(message)


@pytest.mark.parametrize(
    ("cred", "token"),
    [
        (TOKEN_KEY, None),  # the key has a token; none sent
        (TOKEN_KEY, "IQoJ-a-different-token"),  # wrong token
        (TOKEN_KEY, (TOKEN_KEY.session_token or "")[:-1]),  # a prefix of the right one
        (KEY, "IQoJ-a-token-for-a-key-that-has-none"),  # a token the key does not have
    ],
    ids=["missing", "wrong", "prefix", "unexpected"],
)
def test_bad_session_token_is_unrecognized(server: SignaliteServer, cred: Credential, token: str | None) -> None:
    with pytest.raises(ClientError) as info:
        client(server, cred, token=token).list_signaling_channels()
    assert error_of(info.value)[:2] == ("UnrecognizedClientException", 403)
    with pytest.raises(ClientError) as info:
        client(server, cred, "kinesis-video-signaling", token=token).get_ice_server_config(
            ChannelARN=f"arn:aws:kinesisvideo:{REGION}:{ACCOUNT}:channel/x/1"
        )
    assert error_of(info.value)[:2] == ("UnrecognizedClientException", 403)


@pytest.mark.parametrize(
    ("path", "body"),
    [
        ("/listSignalingChannels", b"{}"),
        ("/createSignalingChannel", b'{"ChannelName": "unsigned"}'),
        ("/v1/get-ice-server-config", b'{"ChannelARN": "arn:aws:kinesisvideo:us-west-2:111111111111:channel/x/1"}'),
        ("/v1/send-alexa-offer-to-master", b"{}"),
    ],
)
def test_no_authentication_is_missing_token(server: SignaliteServer, path: str, body: bytes) -> None:
    answer = send(server.port, Raw("POST", path, (("Content-Type", "application/json"),), body))
    assert_refused(answer, 403, "MissingAuthenticationTokenException", "Missing Authentication Token")


def test_unsigned_boto3_client_is_missing_token(server: SignaliteServer) -> None:
    unsigned = boto3.client(
        "kinesisvideo",
        endpoint_url=server.endpoint_url,
        region_name=REGION,
        config=botocore.config.Config(signature_version=botocore.UNSIGNED, retries={"max_attempts": 1}),
    )
    with pytest.raises(ClientError) as info:
        unsigned.list_signaling_channels()
    assert error_of(info.value)[:2] == ("MissingAuthenticationTokenException", 403)


@pytest.mark.parametrize(
    "authorization",
    [
        "AWS4-HMAC-SHA256",
        "AWS4-HMAC-SHA256 garbage",
        "AWS4-HMAC-SHA256 Credential=AKIDSTRICTAUTH1/20240101/us-west-2/kinesisvideo/aws4_request",
        "AWS4-HMAC-SHA1 Credential=a/b/c/d/aws4_request, SignedHeaders=host, Signature=00",
        "Bearer eyJhbGciOi",
        "AWS4-HMAC-SHA256 Credential=AKIDSTRICTAUTH1/2024/us-west-2/kinesisvideo/aws4_request, "
        "SignedHeaders=host, Signature=00",
        "AWS4-HMAC-SHA256 Credential=AKIDSTRICTAUTH1/20240101/us-west-2/kinesisvideo/aws4_request, "
        "SignedHeaders=content-type, Signature=00",  # host not signed
    ],
)
def test_malformed_authorization_is_a_4xx_auth_error(server: SignaliteServer, authorization: str) -> None:
    raw = Raw(
        "POST",
        "/listSignalingChannels",
        (("Content-Type", "application/json"), ("X-Amz-Date", time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())),
         ("Authorization", authorization)),
        b"{}",
    )  # fmt: skip
    answer = send(server.port, raw)
    assert answer.status in (400, 403), (answer.status, answer.body)
    assert answer.code in ("IncompleteSignatureException", "InvalidSignatureException"), answer.headers
    assert_refused(answer, answer.status, answer.code)


def test_c_sdk_style_unsigned_session_token_passes(server: SignaliteServer, channel: str) -> None:
    body = json.dumps({"ChannelARN": channel}).encode()
    now = server.clock.time()
    ok = send(server.port, c_sdk_sign(server.port, TOKEN_KEY, "/describeSignalingChannel", body, now,
                                      token=TOKEN_KEY.session_token))  # fmt: skip
    assert ok.status == 200, ok.body
    assert ok.json()["ChannelInfo"]["ChannelARN"] == channel
    ice = send(server.port, c_sdk_sign(server.port, TOKEN_KEY, "/v1/get-ice-server-config",
                                       json.dumps({"ChannelARN": channel, "ClientId": "c-sdk"}).encode(), now,
                                       token=TOKEN_KEY.session_token))  # fmt: skip
    assert ice.status == 200, ice.body
    assert ice.json()["IceServerList"]
    plain = send(server.port, c_sdk_sign(server.port, KEY, "/describeSignalingChannel", body, now))
    assert plain.status == 200, plain.body

    wrong = c_sdk_sign(server.port, TOKEN_KEY, "/describeSignalingChannel", body, now, token="IQoJ-not-it")
    assert_refused(send(server.port, wrong), 403, "UnrecognizedClientException")
    missing = c_sdk_sign(server.port, TOKEN_KEY, "/describeSignalingChannel", body, now)
    assert_refused(send(server.port, missing), 403, "UnrecognizedClientException")
    # The user-agent is signed by the C SDK: changing it breaks the signature.
    ua = c_sdk_sign(server.port, KEY, "/describeSignalingChannel", body, now).with_header("User-Agent", "other")
    assert_refused(send(server.port, ua), 403, "InvalidSignatureException")


# ============================================================================= clock


@pytest.mark.parametrize(
    ("offset", "words"),
    [(301.0, "Signature expired"), (3600.0, "Signature expired"), (-301.0, "Signature not yet current"),
     (-86400.0, "Signature not yet current")],
)  # fmt: skip
def test_skewed_server_clock_refuses_with_the_words(
    server: SignaliteServer, clock: Any, kv: Any, offset: float, words: str
) -> None:
    clock.offset = offset
    with pytest.raises(ClientError) as info:
        kv.list_signaling_channels()
    code, status, message = error_of(info.value)
    assert (code, status) == ("InvalidSignatureException", 403)
    assert words in message, message


@pytest.mark.parametrize("offset", [400.0, -400.0])
def test_clock_refusal_carries_the_servers_time_in_date(
    server: SignaliteServer, clock: Any, kv: Any, offset: float
) -> None:
    # The KVS C SDK corrects its clock from the Date header of a "Signature expired" refusal, so the Date
    # must be the time the server judged the request by: its (here: injected) clock.
    clock.offset = offset
    with pytest.raises(ClientError) as info:
        kv.list_signaling_channels()
    assert error_of(info.value)[:2] == ("InvalidSignatureException", 403)
    assert_date_close(info.value.response["ResponseMetadata"]["HTTPHeaders"], clock.time())


@pytest.mark.parametrize("offset", [290.0, -290.0, 0.0])
def test_skew_within_five_minutes_passes(server: SignaliteServer, clock: Any, kv: Any, offset: float) -> None:
    clock.offset = offset
    assert "ChannelInfoList" in kv.list_signaling_channels()


@pytest.mark.parametrize(
    ("shift", "words"),
    [(-310.0, "Signature expired"), (-7 * 86400.0, "Signature expired"), (310.0, "Signature not yet current")],
)
def test_request_signed_at_a_shifted_time_is_refused(
    server: SignaliteServer, channel: str, shift: float, words: str
) -> None:
    body = json.dumps({"ChannelARN": channel}).encode()
    answer = send(server.port, c_sdk_sign(server.port, KEY, "/describeSignalingChannel", body, time.time() + shift))
    assert_refused(answer, 403, "InvalidSignatureException", words)
    assert_date_close(answer.headers, server.clock.time())


def test_expired_message_names_the_times(server: SignaliteServer, channel: str) -> None:
    body = json.dumps({"ChannelARN": channel}).encode()
    signed_at = time.time() - 600
    answer = send(server.port, c_sdk_sign(server.port, KEY, "/describeSignalingChannel", body, signed_at))
    message = assert_refused(answer, 403, "InvalidSignatureException", "Signature expired")["message"]
    assert time.strftime("%Y%m%dT%H%M", time.gmtime(signed_at)) in message  # the request's own timestamp


# ============================================================================= presigned WebSocket URLs


def ws_base(server: SignaliteServer) -> str:
    return f"ws://127.0.0.1:{server.port}/"


def connect_url(server: SignaliteServer, arn: str, client_id: str | None = None) -> str:
    url = f"{ws_base(server)}?X-Amz-ChannelARN={quote(arn, safe='')}"
    if client_id is not None:
        url += f"&X-Amz-ClientId={client_id}"
    return url


def presigned(
    server: SignaliteServer,
    arn: str,
    client_id: str | None = None,
    *,
    cred: Credential = KEY,
    now: float | None = None,
    expires: int = 299,
    region: str = REGION,
) -> str:
    return presign_url(connect_url(server, arn, client_id), cred, region, server.clock.time() if now is None else now,
                       expires)  # fmt: skip


def handshake(port: int, url: str, *, host: str | None = None) -> Answer:
    """A raw WebSocket upgrade of `url` (its path and query); returns the answer's status, headers and body."""
    target = url.split(f"127.0.0.1:{port}", 1)[1]
    key = base64.b64encode(os.urandom(16)).decode()
    raw = Raw(
        "GET",
        target,
        (("Host", host or f"127.0.0.1:{port}"), ("Upgrade", "websocket"), ("Connection", "Upgrade"),
         ("Sec-WebSocket-Key", key), ("Sec-WebSocket-Version", "13")),
        b"",
    )  # fmt: skip
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        conn.putrequest(raw.method, raw.target, skip_host=True, skip_accept_encoding=True)
        for k, v in raw.headers:
            conn.putheader(k, v)
        conn.endheaders()
        response = conn.getresponse()
        headers = {k.lower(): v for k, v in response.getheaders()}
        payload = b"" if response.status == 101 else response.read()
        return Answer(response.status, headers, payload)
    finally:
        conn.close()


def set_param(url: str, key: str, value: str | None) -> str:
    """Replace (None: remove) one raw query parameter, keeping the rest byte-identical; append when absent."""
    base, _, query = url.partition("?")
    pieces, found = [], False
    for piece in query.split("&"):
        if piece.partition("=")[0] == key:
            found = True
            if value is not None:
                pieces.append(f"{key}={value}")
        else:
            pieces.append(piece)
    if not found and value is not None:
        pieces.append(f"{key}={value}")
    return f"{base}?{'&'.join(pieces)}"


def get_param(url: str, key: str) -> str:
    return next(p.partition("=")[2] for p in url.partition("?")[2].split("&") if p.partition("=")[0] == key)


@pytest.fixture(scope="module")
def second_channel(kv: Any) -> str:
    return str(kv.create_signaling_channel(ChannelName=unique("auth2"))["ChannelARN"])


async def test_presigned_master_and_viewer_connect_and_talk(server: SignaliteServer, channel: str) -> None:
    async with aiohttp.ClientSession() as session:
        master = await session.ws_connect(presigned(server, channel), autoping=False)
        viewer = await session.ws_connect(
            presigned(server, channel, "viewer-tok", cred=TOKEN_KEY, expires=604800), autoping=False
        )
        payload = "eyJ0eXBlIjoib2ZmZXIiLCJzZHAiOiJ2PTAifQ=="
        await viewer.send_str(json.dumps({"action": "SDP_OFFER", "messagePayload": payload}))
        got = json.loads(await asyncio.wait_for(master.receive_str(), 5))
        assert got == {"senderClientId": "viewer-tok", "messageType": "SDP_OFFER", "messagePayload": payload}
        await viewer.close()
        await master.close()


def test_presigned_url_in_another_region_scope_passes(server: SignaliteServer, channel: str) -> None:
    # The scope's region is the client's business (take it from the scope); the ARN decides the channel.
    assert handshake(server.port, presigned(server, channel, "v-eu", region="eu-west-1")).status == 101


@pytest.mark.parametrize(
    ("name", "tamper", "code"),
    [
        ("channel arn", lambda url, other: set_param(url, "X-Amz-ChannelARN", quote(other, safe="")),
         "InvalidSignatureException"),
        ("client id changed", lambda url, other: set_param(url, "X-Amz-ClientId", "someone-else"),
         "InvalidSignatureException"),
        ("client id removed (becomes master)", lambda url, other: set_param(url, "X-Amz-ClientId", None),
         "InvalidSignatureException"),
        ("extra parameter", lambda url, other: set_param(url, "X-Amz-Extra", "1"), "InvalidSignatureException"),
        ("date +1 s", lambda url, other: set_param(url, "X-Amz-Date", _plus_one(get_param(url, "X-Amz-Date"))),
         "InvalidSignatureException"),
        ("expires", lambda url, other: set_param(url, "X-Amz-Expires", "298"), "InvalidSignatureException"),
        ("signature", lambda url, other: set_param(url, "X-Amz-Signature", _flip(get_param(url, "X-Amz-Signature"))),
         "InvalidSignatureException"),
        ("signature removed", lambda url, other: set_param(url, "X-Amz-Signature", None),
         "IncompleteSignatureException"),
        ("credential region", lambda url, other: set_param(
            url, "X-Amz-Credential", get_param(url, "X-Amz-Credential").replace(REGION, "us-east-1")),
         "InvalidSignatureException"),
        ("credential service", lambda url, other: set_param(
            url, "X-Amz-Credential", get_param(url, "X-Amz-Credential").replace("kinesisvideo", "kinesis")),
         "InvalidSignatureException"),
        ("unknown key", lambda url, other: set_param(
            url, "X-Amz-Credential", get_param(url, "X-Amz-Credential").replace(KEY.access_key_id, "AKIDWHOISTHIS")),
         "UnrecognizedClientException"),
        ("unexpected token", lambda url, other: set_param(url, "X-Amz-Security-Token", "IQoJ-extra"),
         "UnrecognizedClientException"),
        ("no auth at all", lambda url, other: connect_url_from(url), "MissingAuthenticationTokenException"),
    ],
)  # fmt: skip
def test_tampered_presigned_url_is_refused_with_403_and_json(
    server: SignaliteServer, channel: str, second_channel: str, name: str, tamper: Any, code: str
) -> None:
    url = presigned(server, channel, "viewer-1")
    assert handshake(server.port, url).status == 101  # the intact URL works
    # Every credential refusal of a handshake is a 403 (kvs-protocol.md §5.3), even a malformed signature.
    assert_refused(handshake(server.port, tamper(url, second_channel)), 403, code)


def _plus_one(amz_date: str) -> str:
    ts = calendar.timegm(time.strptime(amz_date, "%Y%m%dT%H%M%SZ")) + 1
    return time.strftime("%Y%m%dT%H%M%SZ", time.gmtime(ts))


def _flip(signature: str) -> str:
    return signature[:-1] + ("0" if signature[-1] != "0" else "1")


def connect_url_from(url: str) -> str:
    """The URL with every SigV4 parameter removed."""
    base, _, query = url.partition("?")
    kept = [p for p in query.split("&") if not p.startswith("X-Amz-") or p.split("=")[0] in
            ("X-Amz-ChannelARN", "X-Amz-ClientId")]  # fmt: skip
    return f"{base}?{'&'.join(kept)}"


def test_presigned_token_must_match(server: SignaliteServer, channel: str) -> None:
    good = presigned(server, channel, "tok-viewer", cred=TOKEN_KEY)
    assert handshake(server.port, good).status == 101
    for token in (None, quote("IQoJ-wrong", safe="")):
        # Token changes also change the signature; the token check comes first and names the cause.
        url = set_param(good, "X-Amz-Security-Token", token)
        assert_refused(handshake(server.port, url), 403, "UnrecognizedClientException")
    no_token = presigned(server, channel, "tok-viewer", cred=replace(TOKEN_KEY, session_token=None))
    assert_refused(handshake(server.port, no_token), 403, "UnrecognizedClientException")


def test_presigned_url_for_another_host_is_refused(server: SignaliteServer, channel: str) -> None:
    url = presigned(server, channel, "host-viewer")
    assert handshake(server.port, url).status == 101
    assert_refused(handshake(server.port, url, host=f"localhost:{server.port}"), 403, "InvalidSignatureException")
    assert_refused(handshake(server.port, url, host="127.0.0.1"), 403, "InvalidSignatureException")


@pytest.mark.parametrize(
    ("signed_ago", "expires", "code", "words"),
    [
        (300.0, 299, "AccessDeniedException", "Signature expired"),  # past X-Amz-Expires
        (3 * 3600.0, 3600, "AccessDeniedException", "Signature expired"),
        (8 * 86400.0, 604800, "AccessDeniedException", "Signature expired"),
        (-400.0, 299, "InvalidSignatureException", "Signature not yet current"),  # dated in the future
    ],
)
def test_expired_or_future_presigned_url_is_refused(
    server: SignaliteServer, channel: str, signed_ago: float, expires: int, code: str, words: str
) -> None:
    url = presigned(server, channel, "late-viewer", now=time.time() - signed_ago, expires=expires)
    answer = handshake(server.port, url)
    assert_refused(answer, 403, code, words)
    assert_date_close(answer.headers, server.clock.time())


@pytest.mark.parametrize("offset", [400.0, -400.0])
def test_handshake_clock_refusal_carries_the_servers_time_in_date(
    server: SignaliteServer, clock: Any, channel: str, offset: float
) -> None:
    # As on REST: the Date of a refused handshake is the (here: injected) clock the URL was judged by.
    url = presigned(server, channel, "skewed-viewer", now=time.time())
    clock.offset = offset
    answer = handshake(server.port, url)
    assert answer.status == 403, (answer.status, answer.body[:300])
    assert_date_close(answer.headers, clock.time())


def test_presigned_url_valid_until_its_expiry(server: SignaliteServer, clock: Any, channel: str) -> None:
    url = presigned(server, channel, "edge-viewer", expires=60)
    clock.offset += 55
    assert handshake(server.port, url).status == 101
    clock.offset += 10
    assert_refused(handshake(server.port, url), 403, "AccessDeniedException", "Signature expired")


@pytest.mark.parametrize("expires", ["0", "604801", "-1", "abc", "99999999999"])
def test_presigned_expires_out_of_range_is_refused(server: SignaliteServer, channel: str, expires: str) -> None:
    url = set_param(presigned(server, channel, "range-viewer"), "X-Amz-Expires", expires)
    answer = handshake(server.port, url)
    assert_refused(answer, 403, answer.code)
    assert answer.code in ("AccessDeniedException", "IncompleteSignatureException"), answer.headers


async def test_refused_handshake_is_visible_to_a_websocket_client(server: SignaliteServer, channel: str) -> None:
    url = set_param(presigned(server, channel, "aio-viewer"), "X-Amz-ClientId", "aio-other")
    async with aiohttp.ClientSession() as session:
        with pytest.raises(aiohttp.WSServerHandshakeError) as info:
            await session.ws_connect(url)
    assert info.value.status == 403
