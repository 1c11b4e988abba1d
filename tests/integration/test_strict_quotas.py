"""Strict mode, request-rate quotas (kvs-protocol.md §5.7) driven by the injected clock.

Each test gets its own in-process server whose clock is *frozen* (a `ShiftedClock` whose time only moves
when the test calls `server.advance(seconds)`), so "six requests in the same second" is exact however slow
the machine is. Requests are signed (SigV4, `signalite.auth.sigv4.sign_request`, at the server's time) and
sent on a keep-alive `http.client` connection; one test uses boto3 to check the modeled exception.

Checked: per-channel and per-account token buckets with AWS's values, refill with time, isolation between
channels, operations and accounts, that a refused request (bad signature, denied by policy) spends no
quota, the WebSocket connect rate under presigned URLs, and `--limits relaxed|off`.
"""

from __future__ import annotations

import base64
import errno
import http.client
import json
import os
import shutil
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import boto3
import botocore.config
import pytest

from signalite.auth.sigv4 import Credential, RequestParts, presign_url, sign_request
from signalite.testing import ShiftedClock, SignaliteServer, free_port

REGION = "us-west-2"
A = Credential("AKIDQUOTAA", "quota-secret-a/+", "111111111111")
B = Credential("AKIDQUOTAB", "quota-secret-b/+", "222222222222")
A_NO_DESCRIBE = Credential("AKIDQUOTADENIED", "quota-secret-d", "111111111111")
THROTTLED = "ClientLimitExceededException"


class FrozenClock(ShiftedClock):
    """The server's clocks stand still; `SignaliteServer.advance()` moves them (via `offset`)."""

    def __init__(self) -> None:
        super().__init__()
        self._wall = time.time()
        self._mono = time.monotonic()

    def time(self) -> float:
        return self._wall + self.offset

    def monotonic(self) -> float:
        return self._mono + self.offset


def start(tmp_path: Path, limits: str = "aws") -> SignaliteServer:
    path = tmp_path / "credentials.json"
    path.write_text(
        json.dumps(
            {
                "credentials": [
                    {"access_key_id": A.access_key_id, "secret_access_key": A.secret_access_key,
                     "account_id": A.account_id},
                    {"access_key_id": B.access_key_id, "secret_access_key": B.secret_access_key,
                     "account_id": B.account_id},
                    {"access_key_id": A_NO_DESCRIBE.access_key_id,
                     "secret_access_key": A_NO_DESCRIBE.secret_access_key, "account_id": A_NO_DESCRIBE.account_id,
                     "policy": {"Statement": [{"Effect": "Allow", "Action": "*", "Resource": "*"},
                                              {"Effect": "Deny", "Action": "kinesisvideo:Describe*"}]}},
                ]
            }
        )
    )  # fmt: skip
    for _ in range(5):
        server = SignaliteServer(settings={"port": free_port(), "credentials": str(path), "limits": limits})
        server.clock = FrozenClock()  # before start(): the server takes its clock functions from here
        try:
            return server.start()
        except OSError as e:  # the free port was taken meanwhile (tests run in parallel): pick another
            shutil.rmtree(server.data_dir, ignore_errors=True)
            if e.errno != errno.EADDRINUSE:
                raise
    raise AssertionError("no free port for the server after 5 attempts")


@pytest.fixture
def server(tmp_path: Path) -> Iterator[SignaliteServer]:
    running = start(tmp_path)
    try:
        yield running
    finally:
        running.stop()


class Api:
    """Signed REST calls on one keep-alive connection, signed at the server's (frozen) time."""

    def __init__(self, server: SignaliteServer) -> None:
        self.server = server
        self.conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=30)

    def call(self, cred: Credential, path: str, params: dict[str, Any], *, tamper: bool = False) -> tuple[int, Any]:
        body = json.dumps(params).encode()
        headers = {"host": f"127.0.0.1:{self.server.port}", "content-type": "application/json"}
        headers |= sign_request(RequestParts("POST", path, "", headers, body), cred, REGION, self.server.clock.time())
        if tamper:
            body += b" "
        self.conn.request("POST", path, body=body, headers=headers)
        response = self.conn.getresponse()
        data = response.read()
        payload: Any = json.loads(data) if data else None
        if response.status >= 400:
            assert response.getheader("x-amzn-ErrorType") == payload["__type"], (response.status, payload)
        return response.status, payload

    def code(self, cred: Credential, path: str, params: dict[str, Any], **kwargs: Any) -> str:
        status, payload = self.call(cred, path, params, **kwargs)
        if status == 200:
            return "ok"
        if payload["__type"] == THROTTLED:
            assert status == 400
            assert "Rate exceeded" in payload["message"]
        return str(payload["__type"])

    def create(self, cred: Credential, name: str) -> str:
        status, payload = self.call(cred, "/createSignalingChannel", {"ChannelName": name})
        assert status == 200, payload
        return str(payload["ChannelARN"])

    def describe(self, cred: Credential, **params: str) -> str:
        return self.code(cred, "/describeSignalingChannel", params)

    def close(self) -> None:
        self.conn.close()


@pytest.fixture
def api(server: SignaliteServer) -> Iterator[Api]:
    client = Api(server)
    yield client
    client.close()


def unique(prefix: str = "q") -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


# ============================================================================= per channel


def test_describe_is_five_per_second_per_channel(server: SignaliteServer, api: Api) -> None:
    arn = api.create(A, unique())
    other = api.create(A, unique())
    assert [api.describe(A, ChannelARN=arn) for _ in range(6)] == ["ok"] * 5 + [THROTTLED]
    assert [api.describe(A, ChannelARN=other) for _ in range(6)] == ["ok"] * 5 + [THROTTLED]
    assert api.describe(A, ChannelARN=arn) == THROTTLED  # still the same instant
    server.advance(1)
    assert [api.describe(A, ChannelARN=arn) for _ in range(6)] == ["ok"] * 5 + [THROTTLED]
    server.advance(0.21)  # one token refills every 1/5 s (a hair more: clocks are floats)
    assert [api.describe(A, ChannelARN=arn) for _ in range(2)] == ["ok", THROTTLED]
    server.advance(0.1)  # half a token
    assert api.describe(A, ChannelARN=arn) == THROTTLED
    server.advance(60)  # the bucket holds at most one second's worth
    assert [api.describe(A, ChannelARN=arn) for _ in range(6)] == ["ok"] * 5 + [THROTTLED]


def test_throttling_is_the_modeled_exception_for_boto3(server: SignaliteServer, api: Api) -> None:
    arn = api.create(A, unique())
    kv = boto3.client("kinesisvideo", endpoint_url=server.endpoint_url, region_name=REGION,
                      aws_access_key_id=A.access_key_id, aws_secret_access_key=A.secret_access_key,
                      config=botocore.config.Config(retries={"max_attempts": 1}))  # fmt: skip
    for _ in range(5):
        kv.describe_signaling_channel(ChannelARN=arn)
    with pytest.raises(kv.exceptions.ClientLimitExceededException) as info:
        kv.describe_signaling_channel(ChannelARN=arn)
    assert info.value.response["ResponseMetadata"]["HTTPStatusCode"] == 400


@pytest.mark.parametrize(
    ("path", "params"),
    [
        ("/TagResource", lambda arn: {"ResourceARN": arn, "Tags": [{"Key": "k", "Value": "v"}]}),
        ("/ListTagsForResource", lambda arn: {"ResourceARN": arn}),
        ("/UntagResource", lambda arn: {"ResourceARN": arn, "TagKeyList": ["k"]}),
        ("/describeMediaStorageConfiguration", lambda arn: {"ChannelARN": arn}),
        ("/updateMediaStorageConfiguration",
         lambda arn: {"ChannelARN": arn, "MediaStorageConfiguration": {"Status": "DISABLED"}}),
    ],
)  # fmt: skip
def test_other_per_channel_operations_are_five_per_second_each(
    server: SignaliteServer, api: Api, path: str, params: Any
) -> None:
    arn = api.create(A, unique())
    assert [api.code(A, path, params(arn)) for _ in range(6)] == ["ok"] * 5 + [THROTTLED]
    # Operations have buckets of their own: Describe on the same channel is untouched.
    assert [api.describe(A, ChannelARN=arn) for _ in range(5)] == ["ok"] * 5
    server.advance(1)
    assert api.code(A, path, params(arn)) == "ok"


def test_update_and_delete_are_five_per_second_per_channel(server: SignaliteServer, api: Api) -> None:
    arn = api.create(A, unique())
    results = []
    for _ in range(6):
        status, payload = api.call(A, "/describeSignalingChannel", {"ChannelARN": arn})
        version = payload["ChannelInfo"]["Version"] if status == 200 else "0"
        results.append(api.code(A, "/updateSignalingChannel", {"ChannelARN": arn, "CurrentVersion": version}))
        server.advance(0.25)  # Describe and Update each get a token (and a bit) back per step
    assert results == ["ok"] * 6
    assert [api.code(A, "/updateSignalingChannel", {"ChannelARN": arn, "CurrentVersion": "x"})
            for _ in range(6)] == ["VersionMismatchException"] * 5 + [THROTTLED]  # fmt: skip
    # Delete: the bucket is per channel, so deleting six different channels in one instant is fine ...
    arns = [api.create(A, unique()) for _ in range(6)]
    assert [api.code(A, "/deleteSignalingChannel", {"ChannelARN": a}) for a in arns] == ["ok"] * 6
    # ... while six deletes of one (missing) channel are not.
    gone = arns[0]
    assert [api.code(A, "/deleteSignalingChannel", {"ChannelARN": gone})
            for _ in range(5)] == ["ResourceNotFoundException"] * 4 + [THROTTLED]  # fmt: skip


def test_get_endpoint_has_no_per_channel_quota(server: SignaliteServer, api: Api) -> None:
    arn = api.create(A, unique())
    params = {"ChannelARN": arn, "SingleMasterChannelEndpointConfiguration": {"Protocols": ["WSS"], "Role": "MASTER"}}
    assert [api.code(A, "/getSignalingChannelEndpoint", params) for _ in range(30)] == ["ok"] * 30


def test_send_alexa_offer_is_five_per_second_per_channel(server: SignaliteServer, api: Api) -> None:
    arn = api.create(A, unique())  # no master: an authorized offer is answered "not found" at once
    params = {"ChannelARN": arn, "SenderClientId": "alexa", "MessagePayload": "eyJ0eXBlIjoib2ZmZXIifQ=="}
    results = [api.code(A, "/v1/send-alexa-offer-to-master", params) for _ in range(6)]
    assert results == ["ResourceNotFoundException"] * 5 + [THROTTLED]
    server.advance(1)
    assert api.code(A, "/v1/send-alexa-offer-to-master", params) == "ResourceNotFoundException"


# ============================================================================= per account


def test_create_is_fifty_per_second_per_account(server: SignaliteServer, api: Api) -> None:
    prefix = unique("burst")
    results = [api.code(A, "/createSignalingChannel", {"ChannelName": f"{prefix}-{i}"}) for i in range(51)]
    assert results == ["ok"] * 50 + [THROTTLED]
    # Another account has its own bucket.
    assert api.code(B, "/createSignalingChannel", {"ChannelName": f"{prefix}-b"}) == "ok"
    server.advance(1)
    assert api.code(A, "/createSignalingChannel", {"ChannelName": f"{prefix}-late"}) == "ok"
    listed = api.call(A, "/listSignalingChannels", {"ChannelNameCondition": {
        "ComparisonOperator": "BEGINS_WITH", "ComparisonValue": prefix}})[1]["ChannelInfoList"]  # fmt: skip
    assert len(listed) == 51  # the throttled create created nothing


def test_describe_is_three_hundred_per_second_per_account(server: SignaliteServer, api: Api) -> None:
    arns = [api.create(A, unique("acct")) for _ in range(50)]
    server.advance(1)
    arns += [api.create(A, unique("acct")) for _ in range(11)]
    server.advance(1)
    results = [api.describe(A, ChannelARN=arn) for arn in arns[:60] for _ in range(5)]
    assert results == ["ok"] * 300
    assert api.describe(A, ChannelARN=arns[60]) == THROTTLED  # its channel bucket is full; the account's is not
    assert api.describe(B, ChannelName="anything") == "ResourceNotFoundException"  # another account: not throttled
    server.advance(1)
    assert api.describe(A, ChannelARN=arns[60]) == "ok"


def test_list_is_fifty_per_second_per_account(server: SignaliteServer, api: Api) -> None:
    assert [api.code(A, "/listSignalingChannels", {}) for _ in range(51)] == ["ok"] * 50 + [THROTTLED]
    assert api.code(B, "/listSignalingChannels", {}) == "ok"


# ============================================================================= what must not count


def test_refused_requests_spend_no_quota(server: SignaliteServer, api: Api) -> None:
    arn = api.create(A, unique())
    # Bad signatures, policy denials and missing auth are refused before the quota is consulted.
    for _ in range(10):
        tampered = api.code(A, "/describeSignalingChannel", {"ChannelARN": arn}, tamper=True)
        assert tampered == "InvalidSignatureException"
        assert api.describe(A_NO_DESCRIBE, ChannelARN=arn) == "AccessDeniedException"
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=10)
    for _ in range(10):
        conn.request("POST", "/describeSignalingChannel", body=json.dumps({"ChannelARN": arn}),
                     headers={"content-type": "application/json"})  # fmt: skip
        response = conn.getresponse()
        assert response.status == 403 and response.read()
    conn.close()
    assert [api.describe(A, ChannelARN=arn) for _ in range(6)] == ["ok"] * 5 + [THROTTLED]


def test_name_and_arn_of_one_channel_share_its_quota(server: SignaliteServer, api: Api) -> None:
    # AWS's quota is per channel, however the request names it.
    name = unique("both")
    arn = api.create(A, name)
    results = [api.describe(A, ChannelARN=arn) if i % 2 else api.describe(A, ChannelName=name) for i in range(6)]
    assert results == ["ok"] * 5 + [THROTTLED]


def test_same_channel_name_in_another_account_has_its_own_quota(server: SignaliteServer, api: Api) -> None:
    name = unique("twin")
    api.create(A, name)
    api.create(B, name)
    assert [api.describe(A, ChannelName=name) for _ in range(6)] == ["ok"] * 5 + [THROTTLED]
    # B's channel of the same name is another channel: A's burst must not throttle it.
    assert [api.describe(B, ChannelName=name) for _ in range(5)] == ["ok"] * 5


def test_another_account_cannot_spend_a_channels_quota(server: SignaliteServer, api: Api) -> None:
    arn = api.create(A, unique("victim"))
    # B knows A's ARN but cannot see the channel; its requests must not throttle A.
    assert [api.describe(B, ChannelARN=arn) for _ in range(10)][:5] == ["ResourceNotFoundException"] * 5
    assert [api.describe(A, ChannelARN=arn) for _ in range(5)] == ["ok"] * 5


# ============================================================================= WebSocket connects


def handshake(server: SignaliteServer, url: str) -> tuple[int, str]:
    target = url.split(f"127.0.0.1:{server.port}", 1)[1]
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=10)
    try:
        conn.putrequest("GET", target, skip_host=True, skip_accept_encoding=True)
        for k, v in (("Host", f"127.0.0.1:{server.port}"), ("Upgrade", "websocket"), ("Connection", "Upgrade"),
                     ("Sec-WebSocket-Key", base64.b64encode(os.urandom(16)).decode()),
                     ("Sec-WebSocket-Version", "13")):  # fmt: skip
            conn.putheader(k, v)
        conn.endheaders()
        response = conn.getresponse()
        return response.status, response.getheader("x-amzn-ErrorType") or ""
    finally:
        conn.close()


def test_connect_as_master_three_per_second_and_bad_signatures_do_not_count(server: SignaliteServer, api: Api) -> None:
    arn = api.create(A, unique("ws"))
    url = f"ws://127.0.0.1:{server.port}/?X-Amz-ChannelARN={quote(arn, safe='')}"

    def signed(cred: Credential = A) -> str:
        return presign_url(url, cred, REGION, server.clock.time())

    for _ in range(5):  # refused before the hub: no connect token spent
        tampered = signed().replace("X-Amz-Expires=299", "X-Amz-Expires=298")
        assert handshake(server, tampered) == (403, "InvalidSignatureException")
        assert handshake(server, signed(B)) == (404, "ResourceNotFoundException")
    assert [handshake(server, signed()) for _ in range(4)] == [(101, "")] * 3 + [(400, THROTTLED)]
    # Viewers have a bucket of their own.
    viewer = presign_url(f"{url}&X-Amz-ClientId=v1", A, REGION, server.clock.time())
    assert handshake(server, viewer) == (101, "")
    server.advance(1)
    assert handshake(server, signed()) == (101, "")


# ============================================================================= modes


def test_limits_off_removes_the_quotas(tmp_path: Path) -> None:
    server = start(tmp_path, limits="off")
    api = Api(server)
    try:
        prefix = unique("off")
        assert all(api.code(A, "/createSignalingChannel", {"ChannelName": f"{prefix}-{i}"}) == "ok" for i in range(60))
        arn = api.create(A, unique("off"))
        assert [api.describe(A, ChannelARN=arn) for _ in range(40)] == ["ok"] * 40
        params = {"ChannelARN": arn, "SenderClientId": "alexa", "MessagePayload": "eyJ0eXBlIjoib2ZmZXIifQ=="}
        assert all(api.code(A, "/v1/send-alexa-offer-to-master", params) == "ResourceNotFoundException"
                   for _ in range(10))  # fmt: skip
        url = f"ws://127.0.0.1:{server.port}/?X-Amz-ChannelARN={quote(arn, safe='')}"
        assert all(handshake(server, presign_url(url, A, REGION, server.clock.time()))[0] == 101 for _ in range(8))
    finally:
        api.close()
        server.stop()


def test_limits_relaxed_is_ten_times(tmp_path: Path) -> None:
    server = start(tmp_path, limits="relaxed")
    api = Api(server)
    try:
        arn = api.create(A, unique("relaxed"))
        assert [api.describe(A, ChannelARN=arn) for _ in range(51)] == ["ok"] * 50 + [THROTTLED]
    finally:
        api.close()
        server.stop()
