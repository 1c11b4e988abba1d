"""The kinesis-video-signaling HTTPS API (issue 3, item 4) through boto3 on the HTTPS endpoint that
GetSignalingChannelEndpoint hands out: GetIceServerConfig's TURN REST credentials (what coturn's
use-auth-secret accepts) and SendAlexaOfferToMaster against a real WebSocket master.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import re
import sys
import time
import urllib.request
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import botocore.exceptions
import pytest

sys.path.insert(0, str(Path(__file__).parent))

from wsutil import (
    Harness,
    barrier,
    connect,
    frame,
    missing_arn,
    recv_json,
    running,
    sdp_payload,
)

SECRET = "coturn-static-auth-secret"
URIS = [
    "turn:127.0.0.1:3478?transport=udp",
    "turn:127.0.0.1:3478?transport=tcp",
    "turns:127.0.0.1:5349?transport=tcp",
    "turn:localhost:3478?transport=udp",
    "turn:localhost:3478?transport=tcp",
]
USERNAME = re.compile(r"(\d+):([A-Za-z0-9_.-]+)")


@pytest.fixture
def turn() -> Iterator[Harness]:
    with running({"turn_uri": URIS, "turn_secret": SECRET, "turn_ttl": 600}) as harness:
        yield harness


@pytest.fixture
def h() -> Iterator[Harness]:
    with running({"limits": "aws"}) as harness:
        yield harness


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as s:
        yield s


def expected_password(secret: str, username: str) -> str:
    return base64.b64encode(hmac.new(secret.encode(), username.encode(), hashlib.sha1).digest()).decode()


def error_of(info: pytest.ExceptionInfo[botocore.exceptions.ClientError]) -> tuple[str, int]:
    response: Any = info.value.response
    return response["Error"]["Code"], response["ResponseMetadata"]["HTTPStatusCode"]


# -- GetIceServerConfig ----------------------------------------------------------------------------------------


def check_servers(servers: list[dict[str, Any]], uris: list[str], ttl: int, secret: str) -> list[str]:
    """The KVS/C-SDK constraints and the TURN REST rules; returns the usernames."""
    assert 1 <= len(servers) <= 5, servers
    flat = [u for s in servers for u in s["Uris"]]
    assert flat == uris[:20], flat
    usernames = []
    for server in servers:
        assert set(server) == {"Uris", "Username", "Password", "Ttl"}, server
        assert 1 <= len(server["Uris"]) <= 4, server
        assert isinstance(server["Ttl"], int) and server["Ttl"] == ttl, server
        assert USERNAME.fullmatch(server["Username"]), server["Username"]
        assert len(server["Username"]) <= 256
        assert server["Password"] == expected_password(secret, server["Username"]), server
        usernames.append(server["Username"])
    return usernames


def test_get_ice_server_config_mints_turn_rest_credentials(turn: Harness) -> None:
    arn = turn.create_channel()
    signaling = turn.signaling(arn)
    before = int(time.time())
    servers = signaling.get_ice_server_config(ChannelARN=arn)["IceServerList"]  # the JS SDK example's call
    after = int(time.time()) + 1
    assert [len(s["Uris"]) for s in servers] == [4, 1]
    for username in check_servers(servers, URIS, 600, SECRET):
        expiry = int(USERNAME.fullmatch(username).group(1))  # type: ignore[union-attr]
        assert before + 600 <= expiry <= after + 600, (before, expiry)


def test_expiry_follows_the_server_clock(turn: Harness) -> None:
    arn = turn.create_channel()
    signaling = turn.signaling(arn)
    turn.advance(10_000)
    before = int(time.time()) + 10_000
    servers = signaling.get_ice_server_config(ChannelARN=arn)["IceServerList"]
    after = int(time.time()) + 10_001
    expiry = int(servers[0]["Username"].split(":")[0])
    assert before + 600 <= expiry <= after + 600


def test_c_sdk_request_with_client_id_and_service(turn: Harness) -> None:
    arn = turn.create_channel()
    signaling = turn.signaling(arn)
    servers = signaling.get_ice_server_config(ChannelARN=arn, ClientId="ConsumerViewer_42", Service="TURN")[
        "IceServerList"
    ]
    for username in check_servers(servers, URIS, 600, SECRET):
        assert username.split(":", 1)[1] == "ConsumerViewer_42", username


def test_c_sdk_raw_request_on_the_concatenated_url(turn: Harness) -> None:
    """The C SDK posts to `<HTTPS endpoint>/v1/get-ice-server-config` (plain concatenation)."""
    arn = turn.create_channel()
    url = turn.endpoints(arn, "VIEWER")["HTTPS"] + "/v1/get-ice-server-config"
    body = json.dumps({"ChannelARN": arn, "ClientId": "viewer-7", "Service": "TURN"}).encode()
    request = urllib.request.Request(url, data=body, method="POST", headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=10) as r:
        assert r.status == 200
        assert r.headers["Content-Type"].startswith("application/json")
        data = json.loads(r.read())
    assert set(data) == {"IceServerList"}
    check_servers(data["IceServerList"], URIS, 600, SECRET)


@pytest.mark.parametrize("count", [1, 4, 9, 25])
def test_uris_are_grouped_four_per_server_five_servers_at_most(count: int) -> None:
    uris = [f"turn:127.0.0.1:{3478 + i}?transport=udp" for i in range(count)]
    with running({"turn_uri": uris, "turn_secret": "x"}) as h:
        arn = h.create_channel()
        servers = h.signaling(arn).get_ice_server_config(ChannelARN=arn)["IceServerList"]
        check_servers(servers, uris, 300, "x")  # default --turn-ttl 300
        assert len(servers) == min(5, -(-count // 4))


def test_no_turn_configured_gives_an_empty_list(h: Harness) -> None:
    arn = h.create_channel()
    response = h.signaling(arn).get_ice_server_config(ChannelARN=arn)
    assert response["IceServerList"] == []


@pytest.mark.parametrize("kind", ["unknown", "deleted"])
def test_get_ice_server_config_for_a_missing_channel_is_not_found(turn: Harness, kind: str) -> None:
    arn = turn.create_channel()
    signaling = turn.signaling(arn)
    if kind == "deleted":
        turn.delete_channel(arn)
        target = arn
    else:
        target = missing_arn("never-created")
    with pytest.raises(botocore.exceptions.ClientError) as info:
        signaling.get_ice_server_config(ChannelARN=target)
    assert error_of(info) == ("ResourceNotFoundException", 404)


def test_get_ice_server_config_with_a_malformed_arn_is_invalid_argument(turn: Harness) -> None:
    arn = turn.create_channel()
    with pytest.raises(botocore.exceptions.ClientError) as info:
        turn.signaling(arn).get_ice_server_config(ChannelARN="not-an-arn")
    assert error_of(info) == ("InvalidArgumentException", 400)


# -- SendAlexaOfferToMaster -------------------------------------------------------------------------------------


async def test_send_alexa_offer_returns_the_masters_answer(h: Harness, session: aiohttp.ClientSession) -> None:
    arn = h.create_channel()
    signaling = h.signaling(arn)
    master = await connect(session, h.ws_url(arn))
    viewer = await connect(session, h.ws_url(arn, "other-viewer"))
    offer, answer = sdp_payload("offer", "alexa"), sdp_payload("answer", "alexa")
    call = asyncio.create_task(
        asyncio.to_thread(
            signaling.send_alexa_offer_to_master, ChannelARN=arn, SenderClientId="alexa-device-1", MessagePayload=offer
        )
    )
    got = await recv_json(master, timeout=10)
    assert got == {"senderClientId": "alexa-device-1", "messageType": "SDP_OFFER", "messagePayload": offer}
    # An answer to someone else is not taken for the answer; candidates are not answers either.
    await master.send_str(frame("SDP_ANSWER", sdp_payload("answer", "not-this"), recipient="other-viewer"))
    assert (await recv_json(viewer))["messageType"] == "SDP_ANSWER"
    await master.send_str(frame("ICE_CANDIDATE", "QQ==", recipient="alexa-device-1"))
    await master.send_str(frame("SDP_ANSWER", answer, recipient="alexa-device-1"))
    result = await asyncio.wait_for(call, 15)
    assert result["Answer"] == answer
    await barrier(master)


def test_send_alexa_offer_without_a_master_is_not_found(h: Harness) -> None:
    arn = h.create_channel()
    with pytest.raises(botocore.exceptions.ClientError) as info:
        h.signaling(arn).send_alexa_offer_to_master(
            ChannelARN=arn, SenderClientId="alexa-device-1", MessagePayload=sdp_payload()
        )
    assert error_of(info) == ("ResourceNotFoundException", 404)


def test_send_alexa_offer_to_a_missing_channel_is_not_found(h: Harness) -> None:
    arn = h.create_channel()
    with pytest.raises(botocore.exceptions.ClientError) as info:
        h.signaling(arn).send_alexa_offer_to_master(
            ChannelARN=missing_arn("gone"), SenderClientId="alexa-device-1", MessagePayload=sdp_payload()
        )
    assert error_of(info) == ("ResourceNotFoundException", 404)


@pytest.mark.parametrize(
    ("sender", "payload"),
    [("alexa-device-1", "not base64!"), ("bad sender", "QQ==")],
)
async def test_send_alexa_offer_with_invalid_input_is_invalid_argument(
    h: Harness, session: aiohttp.ClientSession, sender: str, payload: str
) -> None:
    arn = h.create_channel()
    master = await connect(session, h.ws_url(arn))
    signaling = h.signaling(arn)
    with pytest.raises(botocore.exceptions.ClientError) as info:
        await asyncio.to_thread(
            signaling.send_alexa_offer_to_master, ChannelARN=arn, SenderClientId=sender, MessagePayload=payload
        )
    assert error_of(info) == ("InvalidArgumentException", 400)
    await barrier(master)  # nothing reached the master


async def test_send_alexa_offer_when_the_master_never_answers_fails_with_a_modeled_error(
    h: Harness, session: aiohttp.ClientSession
) -> None:
    arn = h.create_channel()
    master = await connect(session, h.ws_url(arn))
    signaling = h.signaling(arn)
    started = time.monotonic()
    with pytest.raises(botocore.exceptions.ClientError) as info:
        call = asyncio.to_thread(
            signaling.send_alexa_offer_to_master, ChannelARN=arn, SenderClientId="alexa-x", MessagePayload="QQ=="
        )
        task = asyncio.create_task(call)
        assert (await recv_json(master))["senderClientId"] == "alexa-x"
        await task
    code, status = error_of(info)
    modeled = {"ClientLimitExceededException", "ResourceNotFoundException", "InvalidArgumentException"}
    assert code in modeled and 400 <= status < 500, (code, status)
    assert time.monotonic() - started < 30  # bounded wait
