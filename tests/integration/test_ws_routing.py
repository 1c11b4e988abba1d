"""Frames and routing on the signaling WebSocket (kvs-protocol.md §5.4-§5.6): who receives what, the exact
outbound frames, member spellings, bad frames, the newest-connection rule, the TTL buffer, per-connection
message rates and pings. Time-dependent rules move the server's clock with `advance()`.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import os
import socket
import sys
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import aiofastnet
import aiohttp
import pytest

from signalite.web.fastws import FastSocket

sys.path.insert(0, str(Path(__file__).parent))

from wsutil import (
    DELIVERY_KEYS,
    Harness,
    assert_refused,
    assert_status,
    barrier,
    connect,
    expect_close,
    frame,
    handshake,
    ice_payload,
    parse_server_frames,
    ping_pong,
    raw_ws_connect,
    recv,
    recv_json,
    recv_text,
    running,
    sdp_payload,
    wait_connections,
    ws_frame,
)

WS = aiohttp.ClientWebSocketResponse


@pytest.fixture(params=["auto", "aiohttp"])
def h(request: pytest.FixtureRequest) -> Iterator[Harness]:
    # Every test runs on both WebSocket paths: picows (ordinary upgrades) and aiohttp (web/fastws.py).
    with running({"limits": "aws", "websocket_stack": request.param}) as harness:
        yield harness


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as s:
        yield s


async def open_channel(
    h: Harness, session: aiohttp.ClientSession, viewers: tuple[str, ...] = ("v1", "v2"), ttl: int | None = None
) -> tuple[str, WS, dict[str, WS]]:
    arn = h.create_channel(ttl=ttl)
    master = await connect(session, h.ws_url(arn))
    sockets = {cid: await connect(session, h.ws_url(arn, cid)) for cid in viewers}
    return arn, master, sockets


def assert_from_viewer(obj: dict[str, Any], sender: str, message_type: str, payload: str) -> None:
    assert obj == {"senderClientId": sender, "messageType": message_type, "messagePayload": payload}


def assert_from_master(obj: dict[str, Any], message_type: str, payload: str) -> None:
    # senderClientId towards a viewer is optional (open question 2 of kvs-protocol.md); nothing else may appear.
    assert set(obj) <= DELIVERY_KEYS and {"messageType", "messagePayload"} <= set(obj), obj
    assert obj["messageType"] == message_type and obj["messagePayload"] == payload, obj
    if "senderClientId" in obj:
        assert isinstance(obj["senderClientId"], str) and obj["senderClientId"], obj


async def exchange(master: WS, viewer: WS, cid: str, tag: str = "") -> None:
    """One ICE candidate each way: proves both sockets are alive and routed."""
    up, down = ice_payload(hash(tag) % 1000), ice_payload(hash(tag + "down") % 1000)
    await viewer.send_str(frame("ICE_CANDIDATE", up))
    assert_from_viewer(await recv_json(master), cid, "ICE_CANDIDATE", up)
    await master.send_str(frame("ICE_CANDIDATE", down, recipient=cid))
    assert_from_master(await recv_json(viewer), "ICE_CANDIDATE", down)


# -- routing ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("action", ["SDP_OFFER", "SDP_ANSWER", "ICE_CANDIDATE"])
async def test_viewer_message_goes_to_master_with_sender_client_id(
    h: Harness, session: aiohttp.ClientSession, action: str
) -> None:
    _, master, viewers = await open_channel(h, session)
    payload = sdp_payload() if action != "ICE_CANDIDATE" else ice_payload(3)
    await viewers["v1"].send_str(frame(action, payload))
    assert_from_viewer(await recv_json(master), "v1", action, payload)
    await barrier(viewers["v1"])  # no echo, no ack on success
    await barrier(viewers["v2"])


async def test_recipient_named_by_a_viewer_is_ignored(h: Harness, session: aiohttp.ClientSession) -> None:
    _, master, viewers = await open_channel(h, session)
    for recipient in ("v2", "v1", "nobody-here"):
        payload = sdp_payload(tag=recipient)
        await viewers["v1"].send_str(frame("SDP_OFFER", payload, recipient=recipient, correlation="c1"))
        assert_from_viewer(await recv_json(master), "v1", "SDP_OFFER", payload)
    await barrier(viewers["v1"])
    await barrier(viewers["v2"])  # viewer-to-viewer is never honoured


@pytest.mark.parametrize("action", ["SDP_OFFER", "SDP_ANSWER", "ICE_CANDIDATE"])
async def test_master_message_goes_to_the_named_viewer(h: Harness, session: aiohttp.ClientSession, action: str) -> None:
    _, master, viewers = await open_channel(h, session)
    payload = sdp_payload("answer") if action != "ICE_CANDIDATE" else ice_payload(1)
    await master.send_str(frame(action, payload, recipient="v2"))
    assert_from_master(await recv_json(viewers["v2"]), action, payload)
    await barrier(master)
    await barrier(viewers["v1"])


async def test_master_without_recipient_gets_status_only_with_correlation_id(
    h: Harness, session: aiohttp.ClientSession
) -> None:
    _, master, viewers = await open_channel(h, session)
    await master.send_str(frame("SDP_ANSWER", sdp_payload("answer")))  # no correlationId: silently dropped
    await master.send_str(json.dumps({"action": "SDP_ANSWER", "messagePayload": "QQ==", "recipientClientId": ""}))
    await barrier(master)
    await master.send_str(frame("SDP_ANSWER", sdp_payload("answer"), correlation="no-recipient-1"))
    assert_status(await recv_json(master), "no-recipient-1", "InvalidArgumentException")
    for viewer in viewers.values():
        await barrier(viewer)
    await exchange(master, viewers["v1"], "v1")


async def test_payload_is_relayed_byte_for_byte(h: Harness, session: aiohttp.ClientSession) -> None:
    _, master, viewers = await open_channel(h, session)
    payloads = [
        base64.b64encode(os.urandom(333)).decode(),  # with '+', '/' and padding (most likely)
        base64.b64encode(os.urandom(301)).decode().rstrip("="),  # unpadded, as atob accepts
        "A" * 10240,  # the largest accepted payload
        sdp_payload(),
    ]
    for payload in payloads:
        await viewers["v1"].send_str(frame("SDP_OFFER", payload))
        raw = await recv_text(master)
        assert f'"messagePayload":"{payload}"' in raw.replace(" ", ""), raw[:200]
        assert_from_viewer(json.loads(raw), "v1", "SDP_OFFER", payload)
        await master.send_str(frame("SDP_ANSWER", payload, recipient="v1"))
        raw = await recv_text(viewers["v1"])
        assert_from_master(json.loads(raw), "SDP_ANSWER", payload)
        h.advance(1.0)  # keep clear of the 5 SDP messages/s rate


async def test_c_sdk_pascal_case_members_and_unknown_members(h: Harness, session: aiohttp.ClientSession) -> None:
    _, master, viewers = await open_channel(h, session)
    ice_servers = [{"Password": "p", "Ttl": 300, "Uris": ["turn:127.0.0.1:3478?transport=udp"], "Username": "u"}]
    # The C SDK viewer always sends RecipientClientId (a placeholder) and, on offers, its IceServerList.
    offer = sdp_payload()
    await viewers["v1"].send_str(
        json.dumps(
            {
                "action": "SDP_OFFER",
                "RecipientClientId": "ConsumerViewer",
                "MessagePayload": offer,
                "CorrelationId": "c-1",
                "IceServerList": ice_servers,
            }
        )
    )
    assert_from_viewer(await recv_json(master), "v1", "SDP_OFFER", offer)
    answer = sdp_payload("answer")
    await master.send_str(
        json.dumps({"action": "SDP_ANSWER", "RecipientClientId": "v1", "MessagePayload": answer, "CorrelationId": "a"})
    )
    assert_from_master(await recv_json(viewers["v1"]), "SDP_ANSWER", answer)
    # Members matched case-insensitively, anything unknown ignored.
    candidate = ice_payload(7)
    await master.send_str(
        json.dumps(
            {
                "action": "ICE_CANDIDATE",
                "recipientclientid": "v2",
                "MESSAGEPAYLOAD": candidate,
                "someFutureMember": {"x": [1, 2]},
                "IceServerList": ice_servers,
            }
        )
    )
    assert_from_master(await recv_json(viewers["v2"]), "ICE_CANDIDATE", candidate)
    # A PascalCase CorrelationId is echoed in the STATUS_RESPONSE of a refused frame.
    await viewers["v2"].send_str(json.dumps({"action": "SDP_OFFER", "MessagePayload": "%%%", "CorrelationId": "pc-9"}))
    assert_status(await recv_json(viewers["v2"]), "pc-9", "InvalidArgumentException")
    await barrier(master)
    await barrier(viewers["v1"])


# -- bad frames ---------------------------------------------------------------------------------------------

LONG = "A" * 10244  # 10241+ characters of valid base64: only the length is wrong

BAD_FRAMES: list[tuple[str, str | bytes, bool]] = [
    # (case, frame sent by viewer v1, a STATUS_RESPONSE comes back)
    ("not-json", "this is not json", False),
    ("truncated-json", '{"action":"SDP_OFFER","messagePayload":"QQ=="', False),
    ("json-array", '[{"action":"SDP_OFFER","messagePayload":"QQ=="}]', False),
    ("json-string", '"SDP_OFFER"', False),
    ("empty-text", "", False),
    ("binary", json.dumps({"action": "SDP_OFFER", "messagePayload": "QQ==", "correlationId": "b"}).encode(), False),
    ("unknown-action", frame("SDP_PRANSWER", "QQ==", correlation="c"), True),
    ("unknown-action-no-cid", frame("SDP_PRANSWER", "QQ=="), False),
    ("go-away-action", frame("GO_AWAY", "QQ==", correlation="c"), True),
    ("lowercase-action", frame("sdp_offer", "QQ==", correlation="c"), True),
    ("missing-action", json.dumps({"messagePayload": "QQ==", "correlationId": "c"}), True),
    ("missing-payload", json.dumps({"action": "SDP_OFFER", "correlationId": "c"}), True),
    ("empty-payload", frame("SDP_OFFER", "", correlation="c"), True),
    ("payload-not-string", json.dumps({"action": "SDP_OFFER", "messagePayload": 12, "correlationId": "c"}), True),
    ("payload-over-10k", frame("SDP_OFFER", LONG, correlation="c"), True),
    ("payload-over-10k-no-cid", frame("SDP_OFFER", LONG), False),
    ("payload-not-base64", frame("SDP_OFFER", "not base64!", correlation="c"), True),
    ("payload-bad-padding", frame("SDP_OFFER", "QQ=", correlation="c"), True),
    ("payload-inner-padding", frame("SDP_OFFER", "QQ==QQ==", correlation="c"), True),
    ("payload-4n+1", frame("SDP_OFFER", "QUJDR", correlation="c"), True),
    ("payload-json-raw", frame("SDP_OFFER", '{"type":"offer"}', correlation="c"), True),
    ("payload-not-base64-no-cid", frame("ICE_CANDIDATE", "***"), False),
    ("bad-correlation-id", frame("SDP_PRANSWER", "QQ==", correlation="has space"), False),
    ("long-correlation-id", frame("SDP_PRANSWER", "QQ==", correlation="c" * 257), False),
    ("bad-recipient", frame("SDP_OFFER", "QQ==", recipient="no/slash", correlation="c"), True),
]


@pytest.mark.parametrize(("case", "bad", "answered"), BAD_FRAMES, ids=[c[0] for c in BAD_FRAMES])
async def test_bad_frame_gets_status_where_allowed_and_affects_nobody_else(
    h: Harness, session: aiohttp.ClientSession, case: str, bad: str | bytes, answered: bool
) -> None:
    _, master, viewers = await open_channel(h, session)
    sender = viewers["v1"]
    if isinstance(bad, bytes):
        await sender.send_bytes(bad)
    else:
        await sender.send_str(bad)
    if answered:
        assert_status(await recv_json(sender), "c", "InvalidArgumentException")
    await barrier(sender)  # nothing (else) came back, and the sender is still connected
    await barrier(master)  # nothing was relayed
    await barrier(viewers["v2"])
    # Everyone keeps exchanging, the sender included.
    await exchange(master, viewers["v2"], "v2", case)
    await exchange(master, sender, "v1", case)


async def test_many_bad_frames_from_the_master_do_not_disturb_viewers(
    h: Harness, session: aiohttp.ClientSession
) -> None:
    _, master, viewers = await open_channel(h, session)
    for i, (_, bad, answered) in enumerate(BAD_FRAMES):
        if isinstance(bad, bytes):
            await master.send_bytes(bad)
        else:
            await master.send_str(bad)
        if answered:
            assert_status(await recv_json(master), "c", "InvalidArgumentException")
        await barrier(master, f"m-{i}")
    for cid, viewer in viewers.items():
        await barrier(viewer)
        await exchange(master, viewer, cid)


# -- newest connection wins ---------------------------------------------------------------------------------


async def test_newest_master_wins_and_old_one_is_closed(h: Harness, session: aiohttp.ClientSession) -> None:
    arn, old_master, viewers = await open_channel(h, session, ("v1",))
    new_master = await connect(session, h.ws_url(arn))
    assert await expect_close(old_master) == 1000
    payload = sdp_payload()
    await viewers["v1"].send_str(frame("SDP_OFFER", payload))
    assert_from_viewer(await recv_json(new_master), "v1", "SDP_OFFER", payload)
    await exchange(new_master, viewers["v1"], "v1")


async def test_newest_viewer_with_same_client_id_wins(h: Harness, session: aiohttp.ClientSession) -> None:
    arn, master, viewers = await open_channel(h, session, ("v1", "v2"))
    newer = await connect(session, h.ws_url(arn, "v1"))
    assert await expect_close(viewers["v1"]) == 1000
    payload = sdp_payload("answer")
    await master.send_str(frame("SDP_ANSWER", payload, recipient="v1"))
    assert_from_master(await recv_json(newer), "SDP_ANSWER", payload)
    await exchange(master, newer, "v1")
    await exchange(master, viewers["v2"], "v2")  # the other viewer is untouched
    await barrier(master)


# -- undelivered messages: replacement, TTL, order ----------------------------------------------------------


async def test_newer_pending_offer_replaces_the_older(h: Harness, session: aiohttp.ClientSession) -> None:
    arn = h.create_channel()
    master = await connect(session, h.ws_url(arn))
    old, new = sdp_payload(tag="old"), sdp_payload(tag="new")
    await master.send_str(frame("SDP_OFFER", old, recipient="late"))
    await master.send_str(frame("SDP_OFFER", new, recipient="late"))
    old_answer, new_answer = sdp_payload("answer", "old"), sdp_payload("answer", "new")
    await master.send_str(frame("SDP_ANSWER", old_answer, recipient="late2"))
    await master.send_str(frame("SDP_ANSWER", new_answer, recipient="late2"))
    await barrier(master)
    late = await connect(session, h.ws_url(arn, "late"))
    assert_from_master(await recv_json(late), "SDP_OFFER", new)
    await barrier(late)
    late2 = await connect(session, h.ws_url(arn, "late2"))
    assert_from_master(await recv_json(late2), "SDP_ANSWER", new_answer)
    await barrier(late2)


async def test_pending_offers_to_an_absent_master_replace_per_sender(
    h: Harness, session: aiohttp.ClientSession
) -> None:
    arn = h.create_channel()
    v1 = await connect(session, h.ws_url(arn, "v1"))
    v2 = await connect(session, h.ws_url(arn, "v2"))
    first, second, other = sdp_payload(tag="1"), sdp_payload(tag="2"), sdp_payload(tag="other")
    # Barriers order the three sends across the two sockets.
    await v1.send_str(frame("SDP_OFFER", first))
    await barrier(v1)
    await v2.send_str(frame("SDP_OFFER", other))
    await barrier(v2)
    await v1.send_str(frame("SDP_OFFER", second))
    await barrier(v1)
    master = await connect(session, h.ws_url(arn))
    got = [await recv_json(master), await recv_json(master)]
    assert_from_viewer(got[0], "v2", "SDP_OFFER", other)  # a newer offer takes the newest place
    assert_from_viewer(got[1], "v1", "SDP_OFFER", second)
    await barrier(master)


@pytest.mark.parametrize("ttl", [5, 60])
async def test_undelivered_messages_wait_for_ttl_and_arrive_in_order(
    h: Harness, session: aiohttp.ClientSession, ttl: int
) -> None:
    arn = h.create_channel(ttl=ttl)
    info = h.kv.describe_signaling_channel(ChannelARN=arn)["ChannelInfo"]
    assert info["SingleMasterConfiguration"]["MessageTtlSeconds"] == ttl
    master = await connect(session, h.ws_url(arn))
    sent = [("SDP_OFFER", sdp_payload())] + [("ICE_CANDIDATE", ice_payload(i)) for i in range(5)]
    for action, payload in sent:
        await master.send_str(frame(action, payload, recipient="late", correlation="c"))
    await barrier(master)  # no STATUS_RESPONSE: buffering is not an error
    h.advance(ttl - 1)
    late = await connect(session, h.ws_url(arn, "late"))
    for action, payload in sent:
        assert_from_master(await recv_json(late), action, payload)
    await barrier(late)
    # Delivered once only.
    await late.close()
    again = await connect(session, h.ws_url(arn, "late"))
    await barrier(again)


@pytest.mark.parametrize("ttl", [5, 60])
async def test_undelivered_messages_are_dropped_after_ttl(h: Harness, session: aiohttp.ClientSession, ttl: int) -> None:
    arn = h.create_channel(ttl=ttl)
    master = await connect(session, h.ws_url(arn))
    await master.send_str(frame("SDP_OFFER", sdp_payload(), recipient="late"))
    await master.send_str(frame("ICE_CANDIDATE", ice_payload(1), recipient="late"))
    v1 = await connect(session, h.ws_url(arn, "v1"))
    await master.close()
    await wait_connections(h, 1)
    await v1.send_str(frame("SDP_ANSWER", sdp_payload("answer")))  # to the absent master
    await barrier(v1)
    h.advance(ttl + 1)
    late = await connect(session, h.ws_url(arn, "late"))
    await barrier(late)
    master = await connect(session, h.ws_url(arn))
    await barrier(master)
    await exchange(master, late, "late")


async def test_ttl_change_applies_to_messages_sent_afterwards(h: Harness, session: aiohttp.ClientSession) -> None:
    arn = h.create_channel(ttl=60)
    master = await connect(session, h.ws_url(arn))
    kept, dropped, short_lived = sdp_payload(tag="kept"), ice_payload(1), ice_payload(2)
    await master.send_str(frame("SDP_OFFER", kept, recipient="a"))  # under TTL 60
    await master.send_str(frame("ICE_CANDIDATE", dropped, recipient="b"))  # under TTL 60
    await barrier(master)
    version = h.kv.describe_signaling_channel(ChannelARN=arn)["ChannelInfo"]["Version"]
    h.kv.update_signaling_channel(
        ChannelARN=arn, CurrentVersion=version, SingleMasterConfiguration={"MessageTtlSeconds": 5}
    )
    await master.send_str(frame("ICE_CANDIDATE", short_lived, recipient="a"))  # under TTL 5
    await barrier(master)
    h.advance(10)
    a = await connect(session, h.ws_url(arn, "a"))
    assert_from_master(await recv_json(a), "SDP_OFFER", kept)
    await barrier(a)  # the one sent after the change has expired
    h.advance(51)  # 61 s after the first messages
    b = await connect(session, h.ws_url(arn, "b"))
    await barrier(b)

    # And the other way: a longer TTL keeps later messages longer.
    version = h.kv.describe_signaling_channel(ChannelARN=arn)["ChannelInfo"]["Version"]
    h.kv.update_signaling_channel(
        ChannelARN=arn, CurrentVersion=version, SingleMasterConfiguration={"MessageTtlSeconds": 120}
    )
    later = ice_payload(3)
    await master.send_str(frame("ICE_CANDIDATE", later, recipient="c"))
    await barrier(master)
    h.advance(100)
    c = await connect(session, h.ws_url(arn, "c"))
    assert_from_master(await recv_json(c), "ICE_CANDIDATE", later)


# -- rates ----------------------------------------------------------------------------------------------------


async def send_burst(ws: WS, frames: list[str]) -> None:
    for text in frames:
        await ws.send_str(text)


async def test_sixth_sdp_message_within_a_second_is_refused(h: Harness, session: aiohttp.ClientSession) -> None:
    _, master, viewers = await open_channel(h, session)
    v1 = viewers["v1"]
    payloads = [sdp_payload(tag=str(i)) for i in range(7)]
    actions = ["SDP_OFFER", "SDP_ANSWER"] * 4  # offers and answers share one budget
    await send_burst(v1, [frame(actions[i], payloads[i], correlation=f"sdp-{i}") for i in range(6)])
    for i in range(5):
        assert_from_viewer(await recv_json(master), "v1", actions[i], payloads[i])
    assert_status(await recv_json(v1), "sdp-5", "ClientLimitExceededException")
    await barrier(master)
    # Without a correlationId an over-rate message is dropped silently.
    await v1.send_str(frame("SDP_OFFER", payloads[6]))
    await barrier(v1)
    await barrier(master)
    # ICE has its own budget, and the other viewer is not affected.
    await exchange(master, v1, "v1")
    await viewers["v2"].send_str(frame("SDP_OFFER", payloads[0], correlation="v2"))
    assert_from_viewer(await recv_json(master), "v2", "SDP_OFFER", payloads[0])
    # A second later the budget is back.
    h.advance(1.0)
    await send_burst(v1, [frame("SDP_OFFER", payloads[i], correlation=f"again-{i}") for i in range(5)])
    for i in range(5):
        assert_from_viewer(await recv_json(master), "v1", "SDP_OFFER", payloads[i])
    await barrier(v1)


async def test_twenty_first_ice_candidate_within_a_second_is_refused(
    h: Harness, session: aiohttp.ClientSession
) -> None:
    _, master, viewers = await open_channel(h, session, ("v1",))
    candidates = [ice_payload(i) for i in range(21)]
    await send_burst(master, [frame("ICE_CANDIDATE", c, recipient="v1", correlation=f"ice-{i}") for i, c in
                              enumerate(candidates)])  # fmt: skip
    for i in range(20):
        assert_from_master(await recv_json(viewers["v1"]), "ICE_CANDIDATE", candidates[i])
    assert_status(await recv_json(master), "ice-20", "ClientLimitExceededException")
    await barrier(viewers["v1"])
    # SDP has its own budget.
    answer = sdp_payload("answer")
    await master.send_str(frame("SDP_ANSWER", answer, recipient="v1", correlation="sdp"))
    assert_from_master(await recv_json(viewers["v1"]), "SDP_ANSWER", answer)
    h.advance(1.0)
    await send_burst(master, [frame("ICE_CANDIDATE", c, recipient="v1", correlation="x") for c in candidates[:20]])
    for c in candidates[:20]:
        assert_from_master(await recv_json(viewers["v1"]), "ICE_CANDIDATE", c)
    await barrier(master)


async def test_limits_off_has_no_message_rate() -> None:
    with running({"limits": "off"}) as h:
        async with aiohttp.ClientSession() as session:
            _, master, viewers = await open_channel(h, session, ("v1",))
            payloads = [sdp_payload(tag=str(i)) for i in range(30)]
            await send_burst(viewers["v1"], [frame("SDP_OFFER", p, correlation="c") for p in payloads])
            for p in payloads:
                assert_from_viewer(await recv_json(master), "v1", "SDP_OFFER", p)
            await barrier(viewers["v1"])


# -- pings ----------------------------------------------------------------------------------------------------


async def test_websocket_ping_is_answered_with_pong(h: Harness, session: aiohttp.ClientSession) -> None:
    arn = h.create_channel()
    master = await connect(session, h.ws_url(arn), autoping=False)
    viewer = await connect(session, h.ws_url(arn, "v1"), autoping=False)
    await ping_pong(master, b"kvs-c-sdk-ping")
    await ping_pong(viewer, b"")
    await ping_pong(viewer, os.urandom(100))
    payload = sdp_payload()
    await viewer.send_str(frame("SDP_OFFER", payload))
    msg = await recv(master)
    assert msg.type is aiohttp.WSMsgType.TEXT
    assert_from_viewer(json.loads(msg.data), "v1", "SDP_OFFER", payload)


# -- direct dispatch ------------------------------------------------------------------------------------


async def test_text_frames_are_dispatched_directly_on_a_single_node(h: Harness, session: aiohttp.ClientSession) -> None:
    # Plain upgrades are served by picows (web/fastws.py); with --websocket-stack aiohttp, text frames
    # skip the receive() round trip (websocket._DirectQueue). Either fails when a dependency upgrade
    # silently turns its path off.
    arn = h.create_channel()
    master = await connect(session, h.ws_url(arn))
    await connect(session, h.ws_url(arn, "v1"))
    await wait_connections(h, 2)

    async def paths() -> list[str]:
        conns = h.server.server.sockets.connections.values()
        return [
            "picows" if isinstance(c.ws, FastSocket)
            else "direct" if getattr(c.ws, "direct", None) is not None and c.ws.direct.on_text is not None
            else "queue"
            for c in conns
        ]  # fmt: skip

    stack = h.server.server.settings.websocket_stack
    assert h.server.call(paths) == (["picows", "picows"] if stack == "auto" else ["direct", "direct"])
    await barrier(master)


async def test_plain_connections_ride_aiofastnet_transports(h: Harness, session: aiohttp.ClientSession) -> None:
    # Without TLS the listener is aiofastnet's (web/guard.py): a connect costs a fifth less CPU on its
    # transports than on uvloop's (bench/README.md). This fails when a dependency change turns it off.
    arn = h.create_channel()
    await connect(session, h.ws_url(arn))
    await wait_connections(h, 1)

    async def transports() -> list[bool]:
        return [isinstance(c.transport, aiofastnet.Transport) for c in h.server.server.sockets.connections.values()]

    assert h.server.call(transports) == [True]


async def test_picows_sockets_keep_nothing_of_their_handshake(h: Harness, session: aiohttp.ClientSession) -> None:
    # picows keeps the upgrade request and the 101 response on the transport for the socket's life;
    # web/fastws.py empties them once the handshake is over (1.5 KiB of every idle connection).
    if h.server.server.settings.websocket_stack != "auto":
        pytest.skip("the aiohttp path keeps no picows transport")
    arn = h.create_channel()
    await connect(session, h.ws_url(arn, "v1"))
    await wait_connections(h, 1)

    async def kept() -> list[tuple[int, int, bytes]]:
        return [
            (len(c.ws.transport.request.headers), len(c.ws.transport.response.headers), c.ws.transport.request.path)
            for c in h.server.server.sockets.connections.values()
            if isinstance(c.ws, FastSocket)
        ]

    assert h.server.call(kept) == [(0, 0, b"/")]


async def test_frames_keep_their_order_when_pings_come_between(h: Harness, session: aiohttp.ClientSession) -> None:
    # One write with text, ping, text, ping, text: the first text goes straight to the hub, the
    # ping waits in aiohttp's queue, and the texts behind it must wait too, or they would overtake it.
    arn = h.create_channel()
    master = await connect(session, h.ws_url(arn))
    sock = raw_ws_connect(h.port, {"X-Amz-ChannelARN": arn, "X-Amz-ClientId": "v1"})
    try:
        await wait_connections(h, 2)
        payloads = [ice_payload(i) for i in range(3)]
        burst = b"".join(
            ws_frame(frame("ICE_CANDIDATE", p).encode()) + (ws_frame(b"p%d" % i, opcode=0x9) if i < 2 else b"")
            for i, p in enumerate(payloads)
        )
        sock.sendall(burst)
        for p in payloads:
            assert_from_viewer(await recv_json(master), "v1", "ICE_CANDIDATE", p)
        data = b""
        while True:
            frames, _ = parse_server_frames(data)
            if len(frames) >= 2:
                break
            chunk = sock.recv(4096)
            assert chunk, "the server closed the connection"
            data += chunk
        assert frames[:2] == [(0xA, b"p0"), (0xA, b"p1")]
    finally:
        sock.close()


@contextlib.asynccontextmanager
async def raw_master_and_viewers(
    h: Harness, session: aiohttp.ClientSession, cids: tuple[str, ...] = ("v1", "v2")
) -> AsyncIterator[tuple[socket.socket, dict[str, WS]]]:
    """A master on a raw socket (so that a burst of its frames reaches the server in one write) and
    aiohttp viewers, all connected."""
    arn = h.create_channel()
    master = raw_ws_connect(h.port, {"X-Amz-ChannelARN": arn})
    try:
        viewers = {cid: await connect(session, h.ws_url(arn, cid)) for cid in cids}
        await wait_connections(h, 1 + len(cids))
        yield master, viewers
    finally:
        master.close()


def ice_burst(sent: list[tuple[str, str]]) -> bytes:
    """The master's ICE_CANDIDATE frames, one (recipient, payload) each, as one block of bytes."""
    return b"".join(ws_frame(frame("ICE_CANDIDATE", p, recipient=cid).encode()) for cid, p in sent)


async def test_frames_queued_in_one_iteration_leave_in_one_write_per_connection(
    h: Harness, session: aiohttp.ClientSession
) -> None:
    # A burst from the master that the server reads at once: every frame for a viewer leaves in one
    # write, and one callback at the end of the loop iteration writes for every viewer (web/websocket.py
    # SignalingSockets._queue), not one per message.
    sockets = h.server.server.sockets
    flushes: list[list[tuple[str | None, int]]] = []
    async with raw_master_and_viewers(h, session) as (master, viewers):

        async def spy() -> None:
            flush_all = sockets._flush_all

            def counted() -> None:
                flushes.append([(c.client_id, len(c.outgoing or ()) // 2) for c in sockets._unflushed])
                flush_all()

            sockets._flush_all = counted

        h.server.call(spy)
        sent = [(cid, ice_payload(i)) for i in range(2) for cid in ("v1", "v2")]
        burst = ice_burst(sent)
        assert len(burst) < 2048  # one read of the server's smallest buffer
        master.sendall(burst)
        for cid, p in sent:
            assert_from_master(await recv_json(viewers[cid]), "ICE_CANDIDATE", p)
        assert flushes == [[("v1", 2), ("v2", 2)]]


async def test_a_failed_write_to_one_connection_does_not_hold_back_the_others(
    h: Harness, session: aiohttp.ClientSession
) -> None:
    # Frames for several connections leave from one callback per loop iteration; a write that raises
    # (a stand-in transport: a real one fails this way only on a bug) costs that connection's frames only.
    sockets = h.server.server.sockets
    async with raw_master_and_viewers(h, session) as (master, viewers):

        class Broken:
            def is_closing(self) -> bool:
                return False

            def get_write_buffer_size(self) -> int:
                return 0

            def write(self, data: bytes) -> None:
                raise RuntimeError("a write that fails")

        async def break_v1() -> Any:
            conn = next(c for c in sockets.connections.values() if c.client_id == "v1")
            real, conn.transport = conn.transport, Broken()
            return conn, real

        conn, real = h.server.call(break_v1)
        sent = [(cid, ice_payload(i)) for i in range(2) for cid in ("v1", "v2")]
        master.sendall(ice_burst(sent))
        for cid, p in sent:
            if cid == "v2":
                assert_from_master(await recv_json(viewers["v2"]), "ICE_CANDIDATE", p)

        async def repair() -> None:
            conn.transport = real

        h.server.call(repair)
        later = ice_payload(9)
        master.sendall(ice_burst([("v1", later)]))
        assert_from_master(await recv_json(viewers["v1"]), "ICE_CANDIDATE", later)  # v1 is not stuck


async def test_a_usual_connect_is_admitted_without_a_task(h: Harness, session: aiohttp.ClientSession) -> None:
    # On one node, once the channel is in the store's memory, nothing in an admission waits: the
    # picows path admits in the guard's callback. So are refusals that need no lookup.
    if h.server.server.settings.websocket_stack != "auto":
        pytest.skip("aiohttp admits in its own request handler")
    arn = h.create_channel()
    sockets = h.server.server.sockets
    answers: list[Any] = []
    now = sockets.admit_upgrade_now

    def spy(upgrade: Any) -> Any:
        answers.append(now(upgrade))
        return answers[-1]

    async def no_task(upgrade: Any) -> Any:
        raise AssertionError("admitted through a task")

    sockets.admit_upgrade_now = spy
    master = await connect(session, h.ws_url(arn))  # the first lookup: a new channel is not in memory yet
    assert answers == [None]
    sockets.admit_upgrade = no_task
    viewer = await connect(session, h.ws_url(arn, "quick"))
    other = await connect(session, h.ws_url(arn, "other"))
    offer = sdp_payload("offer")
    await viewer.send_str(frame("SDP_OFFER", offer))
    assert_from_viewer(await recv_json(master), "quick", "SDP_OFFER", offer)
    await master.send_str(frame("SDP_ANSWER", sdp_payload("answer"), recipient="other"))
    assert (await recv_json(other))["messageType"] == "SDP_ANSWER"
    assert [type(a) for a in answers[1:]] == [FastSocket, FastSocket]
    parts = arn.split(":")
    parts[4] = "999999999999"  # another account's channel: refused on what the ARN says, no lookup needed
    assert_refused(handshake(h.port, {"X-Amz-ChannelARN": ":".join(parts)}), 404, "ResourceNotFoundException")
    assert isinstance(answers[-1], bytes) and answers[-1].startswith(b"HTTP/1.1 404")


async def test_frames_sent_before_the_101_are_not_lost(h: Harness, session: aiohttp.ClientSession) -> None:
    # A client may send its first frames right behind the upgrade request, without waiting for the
    # 101: they reach the server while the handshake is still being admitted, and must be kept.
    arn = h.create_channel()
    master = await connect(session, h.ws_url(arn))
    payloads = [ice_payload(i) for i in range(3)]
    sockets = h.server.server.sockets
    admit = sockets.admit_upgrade

    async def slow_admission(upgrade: Any) -> Any:  # (the picows path) widen the window to hit it surely
        await asyncio.sleep(0.3)
        return await admit(upgrade)

    sockets.admit_upgrade = slow_admission
    sockets.admit_upgrade_now = lambda upgrade: None  # the task path, which can take its time
    key = base64.b64encode(os.urandom(16)).decode()
    query = urlencode({"X-Amz-ChannelARN": arn, "X-Amz-ClientId": "eager"})
    with socket.create_connection(("127.0.0.1", h.port), timeout=10) as sock:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        sock.sendall(
            (
                f"GET /?{query} HTTP/1.1\r\nHost: 127.0.0.1:{h.port}\r\nUpgrade: websocket\r\n"
                f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n"
            ).encode()
        )
        await asyncio.sleep(0.1)  # the request is read alone, and its admission is under way
        for p in payloads:
            sock.sendall(ws_frame(frame("ICE_CANDIDATE", p).encode()))
        for p in payloads:
            assert_from_viewer(await recv_json(master), "eager", "ICE_CANDIDATE", p)
        data = b""
        while b"\r\n\r\n" not in data:
            data += sock.recv(4096)
        assert data.startswith(b"HTTP/1.1 101"), data
