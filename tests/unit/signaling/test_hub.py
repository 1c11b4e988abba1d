import base64
from dataclasses import FrozenInstanceError
from typing import Any

import orjson
import pytest

from signalite.signaling.hub import (
    CLOSE_NORMAL,
    Action,
    BufferedInfo,
    ChannelRef,
    Close,
    ConnectionInfo,
    ConnectRefused,
    Hub,
    Role,
    Send,
    SignalingLimits,
)
from signalite.signaling.protocol import MessageType

ARN = "arn:aws:kinesisvideo:us-west-2:000000000000:channel/demo/1700000000000"
ARN2 = "arn:aws:kinesisvideo:us-west-2:000000000000:channel/other/1700000000001"
CH = ChannelRef(ARN, 60)
CH2 = ChannelRef(ARN2, 60)

OFFER = base64.b64encode(b'{"type":"offer","sdp":"v=0\\r\\n"}').decode()
ANSWER = base64.b64encode(b'{"type":"answer","sdp":"v=0\\r\\n"}').decode()
ICE = base64.b64encode(b'{"candidate":"candidate:1 1 udp 1 10.0.0.1 9 typ host","sdpMid":"0"}').decode()

MASTER, V1, V2, V3 = 1, 2, 3, 4

NO_RATES = SignalingLimits(
    connects_per_second_per_channel=None, sdp_messages_per_second=None, ice_messages_per_second=None
)


def frame(action: str, payload: str = OFFER, **members: Any) -> str:
    return orjson.dumps({"action": action, "messagePayload": payload, **members}).decode()


def decoded(actions: list[Action]) -> list[tuple[int, dict[str, Any]]]:
    """Sends as (connection, JSON object); fails on anything else."""
    out = []
    for a in actions:
        assert isinstance(a, Send), a
        assert type(a.frame) is str
        out.append((a.connection, orjson.loads(a.frame)))
    return out


def status(actions: list[Action]) -> tuple[int, dict[str, Any]]:
    [(conn, obj)] = decoded(actions)
    assert obj["messageType"] == "STATUS_RESPONSE"
    assert set(obj) == {"messageType", "statusResponse"}
    assert set(obj["statusResponse"]) == {"correlationId", "errorType", "statusCode", "description"}
    return conn, obj["statusResponse"]


@pytest.fixture
def hub() -> Hub:
    """A channel with a master and viewers v1, v2 connected at t=0, AWS limits."""
    h = Hub(SignalingLimits.aws())
    assert h.connect(MASTER, CH, Role.MASTER, None, 0.0) == []
    assert h.connect(V1, CH, Role.VIEWER, "v1", 0.0) == []
    assert h.connect(V2, CH, Role.VIEWER, "v2", 0.0) == []
    return h


# --- routing -----------------------------------------------------------------------------------


def test_viewer_message_goes_to_master_with_sender_client_id(hub: Hub):
    out = hub.receive(V1, frame("SDP_OFFER", OFFER), 1.0)
    assert out == [Send(MASTER, '{"senderClientId":"v1","messageType":"SDP_OFFER","messagePayload":"' + OFFER + '"}')]
    [(_, obj)] = decoded(out)
    assert set(obj) == {"senderClientId", "messageType", "messagePayload"}


def test_viewer_recipient_is_ignored(hub: Hub):
    # v1 names v2 (and an unknown id): the message still goes to the master, never viewer to viewer.
    for recipient in ("v2", "nobody"):
        out = decoded(hub.receive(V1, frame("ICE_CANDIDATE", ICE, recipientClientId=recipient), 1.0))
        assert out == [(MASTER, {"senderClientId": "v1", "messageType": "ICE_CANDIDATE", "messagePayload": ICE})]


def test_master_message_goes_to_named_viewer_without_sender(hub: Hub):
    out = hub.receive(MASTER, frame("SDP_ANSWER", ANSWER, recipientClientId="v2"), 1.0)
    assert out == [Send(V2, '{"messageType":"SDP_ANSWER","messagePayload":"' + ANSWER + '"}')]
    [(_, obj)] = decoded(out)
    assert set(obj) == {"messageType", "messagePayload"}


def test_c_sdk_pascal_case_frames_are_routed(hub: Hub):
    text = orjson.dumps(
        {"action": "SDP_ANSWER", "RecipientClientId": "v1", "MessagePayload": ANSWER, "IceServerList": []}
    ).decode()
    assert decoded(hub.receive(MASTER, text, 1.0)) == [(V1, {"messageType": "SDP_ANSWER", "messagePayload": ANSWER})]


def test_payload_is_relayed_verbatim_without_padding(hub: Hub):
    unpadded = ICE.rstrip("=") or "QUJD"
    [(_, obj)] = decoded(hub.receive(V1, frame("ICE_CANDIDATE", unpadded), 1.0))
    assert obj["messagePayload"] == unpadded


def test_success_is_not_acknowledged(hub: Hub):
    out = hub.receive(V1, frame("SDP_OFFER", correlationId="c1"), 1.0)
    assert [a.connection for a in out] == [MASTER]  # nothing back to the sender


def test_master_without_recipient_is_refused(hub: Hub):
    conn, resp = status(hub.receive(MASTER, frame("SDP_ANSWER", correlationId="c-7"), 1.0))
    assert conn == MASTER
    assert resp == {
        "correlationId": "c-7",
        "errorType": "InvalidArgumentException",
        "statusCode": "400",
        "description": resp["description"],
    }
    assert "recipientClientId" in resp["description"]
    assert hub.receive(MASTER, frame("SDP_ANSWER"), 1.0) == []  # same, silently without correlationId
    assert hub.stats["rejected"] == 2
    assert hub.stats["status_responses.InvalidArgumentException"] == 1


def test_channels_are_separate(hub: Hub):
    hub.connect(10, CH2, Role.MASTER, None, 0.0)
    hub.connect(11, CH2, Role.VIEWER, "v1", 0.0)  # same ClientId, other channel: no displacement
    assert decoded(hub.receive(11, frame("SDP_OFFER"), 1.0))[0][0] == 10
    assert decoded(hub.receive(V1, frame("SDP_OFFER"), 1.0))[0][0] == MASTER
    assert decoded(hub.receive(10, frame("SDP_ANSWER", ANSWER, recipientClientId="v1"), 1.0))[0][0] == 11


# --- bad frames --------------------------------------------------------------------------------

BAD = [
    "not json",
    "[]",
    frame("GO_AWAY"),
    frame("SDP_OFFER", ""),
    frame("SDP_OFFER", "not base64!"),
    frame("SDP_OFFER", "a" * 10244),
    orjson.dumps({"action": "SDP_OFFER"}).decode(),
    orjson.dumps({"messagePayload": OFFER}).decode(),
    frame("SDP_OFFER", recipientClientId="bad id"),
]


@pytest.mark.parametrize("text", BAD[2:])
def test_bad_frame_with_correlation_id_gets_status_response_only_to_sender(hub: Hub, text: str):
    text = text[:-1] + ',"correlationId":"abc"}'
    conn, resp = status(hub.receive(V1, text, 1.0))
    assert conn == V1
    assert resp["correlationId"] == "abc"
    assert resp["errorType"] == "InvalidArgumentException"
    assert resp["statusCode"] == "400"


@pytest.mark.parametrize("text", BAD)
def test_bad_frame_without_correlation_id_gets_nothing(hub: Hub, text: str):
    assert hub.receive(V1, text, 1.0) == []
    assert hub.receive(MASTER, text, 1.0) == []


def test_invalid_correlation_id_gets_nothing(hub: Hub):
    assert hub.receive(V1, frame("NOPE", correlationId="has space"), 1.0) == []
    assert hub.receive(V1, frame("NOPE", correlationId=""), 1.0) == []
    assert hub.stats["rejected"] == 2
    assert not any(k.startswith("status_responses.") for k in hub.stats)


def test_bad_frames_do_not_affect_others(hub: Hub):
    for text in BAD:
        hub.receive(V1, text, 1.0)
        hub.receive(V1, text[:-1] + ',"correlationId":"x"}', 1.0)
    # everyone is still connected and routing still works, for the offender too
    assert hub.connection_count() == 3
    assert decoded(hub.receive(V2, frame("SDP_OFFER"), 2.0))[0][0] == MASTER
    assert decoded(hub.receive(V1, frame("SDP_OFFER"), 2.0))[0][0] == MASTER
    assert decoded(hub.receive(MASTER, frame("SDP_ANSWER", recipientClientId="v2"), 2.0))[0][0] == V2
    snap = hub.channel_snapshot(ARN, 2.0)
    assert snap.buffered == ()
    assert snap.master is not None and snap.master.messages_out == 2  # no error ever reached it


def test_unknown_connection_is_ignored(hub: Hub):
    assert hub.receive(99, frame("SDP_OFFER"), 1.0) == []
    hub.touch(99, 1.0)
    hub.disconnect(99, 1.0)
    assert hub.connection_count() == 3


# --- message rates -----------------------------------------------------------------------------


def test_sdp_rate_is_shared_by_offers_and_answers(hub: Hub):
    for i in range(5):
        assert hub.receive(V1, frame("SDP_OFFER" if i % 2 else "SDP_ANSWER"), 10.0) != []
    conn, resp = status(hub.receive(V1, frame("SDP_OFFER", correlationId="c6"), 10.0))
    assert (conn, resp["errorType"], resp["statusCode"]) == (V1, "ClientLimitExceededException", "400")
    assert hub.receive(V1, frame("SDP_ANSWER"), 10.125) == []  # 0.625 tokens: throttled, silently
    # the ICE bucket is separate, and so are other connections' buckets
    assert decoded(hub.receive(V1, frame("ICE_CANDIDATE", ICE), 10.125))[0][0] == MASTER
    assert decoded(hub.receive(V2, frame("SDP_OFFER"), 10.125))[0][0] == MASTER
    # refills at 5/s: 1.25 tokens at 10.25
    assert decoded(hub.receive(V1, frame("SDP_OFFER"), 10.25))[0][0] == MASTER
    assert hub.receive(V1, frame("SDP_OFFER"), 10.25) == []
    assert hub.stats["relayed.SDP_OFFER"] + hub.stats["relayed.SDP_ANSWER"] == 7


def test_ice_rate(hub: Hub):
    relayed = [hub.receive(MASTER, frame("ICE_CANDIDATE", ICE, recipientClientId="v1"), 5.0) for _ in range(25)]
    assert sum(1 for r in relayed if r) == 20
    assert hub.receive(MASTER, frame("ICE_CANDIDATE", ICE, recipientClientId="v1"), 5.0) == []
    assert hub.receive(MASTER, frame("ICE_CANDIDATE", ICE, recipientClientId="v1"), 6.0) != []
    # SDP unaffected by the ICE flood
    assert hub.receive(MASTER, frame("SDP_ANSWER", recipientClientId="v1"), 6.0) != []


def test_rejected_frames_do_not_spend_tokens(hub: Hub):
    for _ in range(50):
        hub.receive(V1, frame("SDP_OFFER", "bad!"), 1.0)
    assert all(hub.receive(V1, frame("SDP_OFFER"), 1.0) for _ in range(5))


def test_no_rates_when_off():
    h = Hub(SignalingLimits.off())
    h.connect(MASTER, CH, Role.MASTER, None, 0.0)
    h.connect(V1, CH, Role.VIEWER, "v1", 0.0)
    assert all(h.receive(V1, frame("SDP_OFFER"), 0.0) for _ in range(500))
    assert h.stats["relayed.SDP_OFFER"] == 500


# --- connecting --------------------------------------------------------------------------------


def test_connect_rate_per_channel_and_role():
    h = Hub(SignalingLimits.aws())
    for i in range(3):
        h.connect(10 + i, CH, Role.VIEWER, f"v{i}", 0.0)
    with pytest.raises(ConnectRefused) as info:
        h.connect(20, CH, Role.VIEWER, "late", 0.0)
    assert (info.value.error_type, info.value.status_code) == ("ClientLimitExceededException", 400)
    assert info.value.message
    # ConnectAsMaster has its own bucket; another channel has its own too
    h.connect(30, CH, Role.MASTER, None, 0.0)
    for i in range(3):
        h.connect(40 + i, CH2, Role.VIEWER, f"v{i}", 0.0)
    # a third of a second later one more viewer is admitted on the first channel, not two
    h.connect(20, CH, Role.VIEWER, "late", 1 / 3 + 1e-9)
    with pytest.raises(ConnectRefused):
        h.connect(21, CH, Role.VIEWER, "later", 1 / 3 + 1e-9)
    assert h.connection_count() == 8
    assert h.stats["connects_refused"] == 2


def test_master_connect_rate():
    h = Hub(SignalingLimits.aws())
    for i in range(3):
        h.connect(i, CH, Role.MASTER, None, 0.0)
    with pytest.raises(ConnectRefused):
        h.connect(9, CH, Role.MASTER, None, 0.0)


def test_refused_connect_leaves_no_trace():
    h = Hub(SignalingLimits.aws())
    for i in range(3):
        h.connect(i, CH, Role.VIEWER, f"v{i}", 0.0)
    with pytest.raises(ConnectRefused):
        h.connect(9, CH, Role.VIEWER, "v9", 0.0)
    assert h.connection_count() == 3
    assert h.receive(9, frame("SDP_OFFER"), 0.0) == []
    assert [v.client_id for v in h.channel_snapshot(ARN, 0.0).viewers] == ["v0", "v1", "v2"]


def test_viewer_cap_and_reconnect_does_not_count():
    h = Hub(SignalingLimits(connects_per_second_per_channel=None))
    for i in range(10):
        h.connect(100 + i, CH, Role.VIEWER, f"v{i}", float(i))
    with pytest.raises(ConnectRefused) as info:
        h.connect(200, CH, Role.VIEWER, "v10", 20.0)
    assert info.value.error_type == "ClientLimitExceededException"
    assert info.value.status_code == 400
    # a viewer reconnecting with its ClientId displaces itself and is not a new viewer
    assert h.connect(201, CH, Role.VIEWER, "v3", 20.0) == [Close(103, CLOSE_NORMAL, "replaced by a newer connection")]
    # the master is not a viewer
    h.connect(1, CH, Role.MASTER, None, 20.0)
    # once one leaves, there is room again
    h.disconnect(100, 21.0)
    h.connect(202, CH, Role.VIEWER, "v10", 21.0)
    assert len(h.channel_snapshot(ARN, 21.0).viewers) == 10


def test_viewer_cap_off():
    h = Hub(SignalingLimits.off())
    for i in range(50):
        h.connect(i, CH, Role.VIEWER, f"v{i}", 0.0)
    assert h.connection_count() == 50


def test_master_displacement(hub: Hub):
    out = hub.connect(50, CH, Role.MASTER, None, 5.0)
    assert out == [Close(MASTER, 1000, "replaced by a newer connection")]
    assert hub.stats["displaced"] == 1
    # the old master is forgotten: its frames are ignored, its disconnect changes nothing
    assert hub.receive(MASTER, frame("SDP_ANSWER", recipientClientId="v1"), 5.0) == []
    hub.disconnect(MASTER, 5.0)
    assert decoded(hub.receive(V1, frame("SDP_OFFER"), 6.0))[0][0] == 50
    assert hub.connection_count() == 3


def test_viewer_displacement(hub: Hub):
    assert hub.connect(60, CH, Role.VIEWER, "v1", 5.0) == [Close(V1, 1000, "replaced by a newer connection")]
    hub.disconnect(V1, 5.0)  # late disconnect of the displaced socket
    assert decoded(hub.receive(MASTER, frame("SDP_ANSWER", recipientClientId="v1"), 6.0)) == [
        (60, {"messageType": "SDP_ANSWER", "messagePayload": OFFER})
    ]
    assert decoded(hub.receive(60, frame("SDP_OFFER"), 6.0))[0][1]["senderClientId"] == "v1"


def test_displaced_connection_then_buffered_delivery_order():
    h = Hub(NO_RATES)
    h.connect(V1, CH, Role.VIEWER, "v1", 0.0)
    h.receive(V1, frame("SDP_OFFER"), 0.0)
    out = h.connect(MASTER, CH, Role.MASTER, None, 1.0)
    out2 = h.connect(50, CH, Role.MASTER, None, 2.0)
    assert [a.connection for a in out] == [MASTER]
    assert out2 == [Close(MASTER, CLOSE_NORMAL, "replaced by a newer connection")]  # buffer already drained


def test_disconnect_removes_presence(hub: Hub):
    hub.disconnect(V2, 1.0)
    assert hub.receive(MASTER, frame("SDP_ANSWER", recipientClientId="v2"), 1.0) == []
    assert [b.recipient for b in hub.channel_snapshot(ARN, 1.0).buffered] == ["v2"]
    hub.disconnect(MASTER, 1.0)
    assert hub.receive(V1, frame("SDP_OFFER"), 1.0) == []
    assert {b.recipient for b in hub.channel_snapshot(ARN, 1.0).buffered} == {"v2", None}
    assert hub.connection_count() == 1


@pytest.mark.parametrize(
    ("role", "client_id"),
    [(Role.MASTER, "m"), (Role.VIEWER, None), (Role.VIEWER, ""), (Role.VIEWER, "bad id"), (Role.VIEWER, "x" * 257)],
)
def test_connect_argument_errors(role: Role, client_id: str | None):
    with pytest.raises(ValueError):
        Hub().connect(1, CH, role, client_id, 0.0)


def test_connection_ids_must_be_unique(hub: Hub):
    with pytest.raises(ValueError):
        hub.connect(V1, CH2, Role.MASTER, None, 0.0)


# --- TTL buffer --------------------------------------------------------------------------------


def test_messages_wait_for_the_master_in_order_with_sender():
    h = Hub(NO_RATES)
    h.connect(V1, CH, Role.VIEWER, "v1", 0.0)
    h.connect(V2, CH, Role.VIEWER, "v2", 0.0)
    assert h.receive(V1, frame("SDP_OFFER", OFFER), 1.0) == []
    assert h.receive(V2, frame("SDP_OFFER", ANSWER), 2.0) == []
    assert h.receive(V1, frame("ICE_CANDIDATE", ICE), 3.0) == []
    assert h.stats["buffered"] == 3
    out = decoded(h.connect(MASTER, CH, Role.MASTER, None, 10.0))
    assert out == [
        (MASTER, {"senderClientId": "v1", "messageType": "SDP_OFFER", "messagePayload": OFFER}),
        (MASTER, {"senderClientId": "v2", "messageType": "SDP_OFFER", "messagePayload": ANSWER}),
        (MASTER, {"senderClientId": "v1", "messageType": "ICE_CANDIDATE", "messagePayload": ICE}),
    ]
    assert h.stats["relayed.SDP_OFFER"] == 2 and h.stats["relayed.ICE_CANDIDATE"] == 1
    # delivered messages are gone from the buffer
    assert h.channel_snapshot(ARN, 10.0).buffered == ()
    h.disconnect(MASTER, 11.0)
    assert h.connect(MASTER + 100, CH, Role.MASTER, None, 11.0) == []


def test_messages_wait_for_the_named_viewer_only():
    h = Hub(NO_RATES)
    h.connect(MASTER, CH, Role.MASTER, None, 0.0)
    h.receive(MASTER, frame("SDP_OFFER", OFFER, recipientClientId="v2"), 1.0)
    assert h.connect(V1, CH, Role.VIEWER, "v1", 2.0) == []
    assert h.connect(20, CH2, Role.VIEWER, "v2", 2.0) == []  # same id, other channel
    assert decoded(h.connect(V2, CH, Role.VIEWER, "v2", 3.0)) == [
        (V2, {"messageType": "SDP_OFFER", "messagePayload": OFFER})
    ]


def test_expired_messages_are_not_delivered():
    h = Hub(NO_RATES)
    h.connect(V1, CH, Role.VIEWER, "v1", 0.0)  # TTL 60
    h.receive(V1, frame("SDP_OFFER"), 0.0)
    h.receive(V1, frame("ICE_CANDIDATE", ICE), 30.0)
    out = h.connect(MASTER, CH, Role.MASTER, None, 60.0)  # the offer expired exactly now
    assert [obj["messageType"] for _, obj in decoded(out)] == ["ICE_CANDIDATE"]
    assert h.stats["ttl_dropped"] == 1


def test_ttl_is_taken_at_send_time():
    h = Hub(NO_RATES)
    h.connect(V1, CH, Role.VIEWER, "v1", 0.0)
    h.update_channel(ChannelRef(ARN, 10))
    h.receive(V1, frame("SDP_OFFER"), 0.0)  # expires at 10
    h.connect(V2, ChannelRef(ARN, 100), Role.VIEWER, "v2", 1.0)  # a newer ChannelRef also updates
    h.receive(V2, frame("SDP_OFFER"), 1.0)  # expires at 101
    left = sorted(b.seconds_left for b in h.channel_snapshot(ARN, 5.0).buffered)
    assert left == [5.0, 96.0]
    out = decoded(h.connect(MASTER, CH, Role.MASTER, None, 50.0))
    assert [obj["senderClientId"] for _, obj in out] == ["v2"]


def test_newer_pending_offer_replaces_older_from_same_sender():
    h = Hub(NO_RATES)
    h.connect(V1, CH, Role.VIEWER, "v1", 0.0)
    h.connect(V2, CH, Role.VIEWER, "v2", 0.0)
    h.receive(V1, frame("SDP_OFFER", "b2xk"), 1.0)  # "old"
    h.receive(V1, frame("ICE_CANDIDATE", "aWNlMQ"), 2.0)
    h.receive(V2, frame("SDP_OFFER", "djI"), 3.0)  # another sender: kept
    h.receive(V1, frame("SDP_ANSWER", "YW5z"), 3.5)  # another type: kept
    h.receive(V1, frame("SDP_OFFER", "bmV3"), 4.0)  # "new": replaces "old"
    h.receive(V1, frame("ICE_CANDIDATE", "aWNlMg"), 5.0)
    assert h.stats["buffer_replaced"] == 1
    out = decoded(h.connect(MASTER, CH, Role.MASTER, None, 6.0))
    assert [(o["senderClientId"], o["messageType"], o["messagePayload"]) for _, o in out] == [
        ("v1", "ICE_CANDIDATE", "aWNlMQ"),
        ("v2", "SDP_OFFER", "djI"),
        ("v1", "SDP_ANSWER", "YW5z"),
        ("v1", "SDP_OFFER", "bmV3"),
        ("v1", "ICE_CANDIDATE", "aWNlMg"),
    ]


def test_newer_pending_answer_replaces_older_to_same_viewer():
    h = Hub(NO_RATES)
    h.connect(MASTER, CH, Role.MASTER, None, 0.0)
    h.receive(MASTER, frame("SDP_ANSWER", "b2xk", recipientClientId="v1"), 1.0)
    h.receive(MASTER, frame("SDP_ANSWER", "b3Ro", recipientClientId="v2"), 1.0)  # other recipient
    h.receive(MASTER, frame("SDP_ANSWER", "bmV3", recipientClientId="v1"), 2.0)
    assert [o["messagePayload"] for _, o in decoded(h.connect(V1, CH, Role.VIEWER, "v1", 3.0))] == ["bmV3"]
    assert [o["messagePayload"] for _, o in decoded(h.connect(V2, CH, Role.VIEWER, "v2", 3.0))] == ["b3Ro"]


def test_buffer_cap_drops_oldest():
    h = Hub(SignalingLimits(max_buffered_per_recipient=3, ice_messages_per_second=None))
    h.connect(V1, CH, Role.VIEWER, "v1", 0.0)
    payloads = ["QUFB", "QkJC", "Q0ND", "RERE", "RUVF"]
    for p in payloads:
        h.receive(V1, frame("ICE_CANDIDATE", p), 1.0)
    assert h.stats["buffer_overflow"] == 2
    out = decoded(h.connect(MASTER, CH, Role.MASTER, None, 2.0))
    assert [o["messagePayload"] for _, o in out] == payloads[2:]


def test_zero_buffer_cap_buffers_nothing():
    h = Hub(SignalingLimits(max_buffered_per_recipient=0))
    h.connect(V1, CH, Role.VIEWER, "v1", 0.0)
    assert h.receive(V1, frame("SDP_OFFER"), 0.0) == []
    assert h.connect(MASTER, CH, Role.MASTER, None, 1.0) == []
    assert h.stats["buffer_overflow"] == 1


def test_tick_drops_expired_messages_and_idle_channels():
    h = Hub(SignalingLimits.aws())
    h.connect(V1, CH, Role.VIEWER, "v1", 0.0)
    h.receive(V1, frame("SDP_OFFER"), 0.0)
    h.disconnect(V1, 1.0)
    h.tick(30.0)
    assert len(h.channel_snapshot(ARN, 30.0).buffered) == 1
    assert h.channel_count() == 1  # held for its buffer
    assert h.tick(60.0) == []
    assert h.stats["ttl_dropped"] == 1
    assert h.channel_snapshot(ARN, 60.0).buffered == ()
    assert h.channel_count() == 0
    assert h.connect(MASTER, CH, Role.MASTER, None, 61.0) == []


def test_empty_channel_is_kept_until_its_connect_bucket_refills():
    # Forgetting a channel early would hand a reconnect storm a fresh bucket.
    h = Hub(SignalingLimits.aws())
    for i in range(3):
        h.connect(i, CH, Role.VIEWER, f"v{i}", 0.0)
        h.disconnect(i, 0.0)
    h.tick(0.0)
    with pytest.raises(ConnectRefused):
        h.connect(9, CH, Role.VIEWER, "v9", 0.0)
    h.tick(0.9)
    assert h.channel_count() == 1
    h.tick(1.0)
    assert h.channel_count() == 0


# --- lifetimes ---------------------------------------------------------------------------------


def test_go_away_then_close_at_max_duration():
    h = Hub(SignalingLimits(idle_timeout=None))
    h.connect(MASTER, CH, Role.MASTER, None, 100.0)
    h.connect(V1, CH, Role.VIEWER, "v1", 200.0)
    assert h.tick(3639.0) == []
    assert h.tick(3640.0) == [Send(MASTER, '{"messageType":"GO_AWAY"}')]  # 60 s before the hour
    assert h.tick(3641.0) == []  # only once
    assert h.tick(3700.0) == [Close(MASTER, 1000, "maximum connection duration reached")]
    assert h.tick(3740.0) == [Send(V1, '{"messageType":"GO_AWAY"}')]
    assert h.connection_count() == 1
    assert h.tick(3800.0) == [Close(V1, 1000, "maximum connection duration reached")]
    assert h.stats["go_aways"] == 2 and h.stats["closed_max_duration"] == 2
    # the closed master is gone: a viewer's message now waits in the buffer
    h.connect(V2, CH, Role.VIEWER, "v2", 3800.0)
    assert h.receive(V2, frame("SDP_OFFER"), 3800.0) == []


def test_late_tick_sends_go_away_before_close():
    h = Hub(SignalingLimits(idle_timeout=None))
    h.connect(MASTER, CH, Role.MASTER, None, 0.0)
    assert h.tick(4000.0) == [
        Send(MASTER, '{"messageType":"GO_AWAY"}'),
        Close(MASTER, CLOSE_NORMAL, "maximum connection duration reached"),
    ]


def test_close_without_go_away_when_grace_is_off():
    h = Hub(SignalingLimits(idle_timeout=None, go_away_before_close=None))
    h.connect(MASTER, CH, Role.MASTER, None, 0.0)
    assert h.tick(3599.0) == []
    assert h.tick(3600.0) == [Close(MASTER, CLOSE_NORMAL, "maximum connection duration reached")]


def test_idle_timeout_and_activity():
    h = Hub(SignalingLimits.aws())
    h.connect(MASTER, CH, Role.MASTER, None, 0.0)
    h.connect(V1, CH, Role.VIEWER, "v1", 0.0)
    h.connect(V2, CH, Role.VIEWER, "v2", 0.0)
    h.touch(MASTER, 300.0)  # a ping
    h.receive(V1, frame("SDP_OFFER"), 400.0)  # a frame
    h.receive(V1, frame("SDP_OFFER", "bad!"), 500.0)  # even an invalid one
    assert h.tick(599.0) == []
    assert h.tick(600.0) == [Close(V2, 1000, "idle timeout")]
    assert h.tick(900.0) == [Close(MASTER, 1000, "idle timeout")]
    assert h.tick(1100.0) == [Close(V1, 1000, "idle timeout")]
    assert h.connection_count() == 0
    assert h.stats["closed_idle"] == 3


def test_no_timers_when_off():
    h = Hub(SignalingLimits.off())
    h.connect(MASTER, CH, Role.MASTER, None, 0.0)
    assert h.tick(10.0**7) == []
    assert h.connection_count() == 1


def test_go_away_all_and_not_again_at_max_duration(hub: Hub):
    out = hub.go_away_all()
    assert sorted(out, key=lambda a: a.connection) == [Send(c, '{"messageType":"GO_AWAY"}') for c in (MASTER, V1, V2)]
    assert hub.connection_count() == 3  # nobody closed
    hub.touch(MASTER, 3500.0)
    hub.touch(V1, 3500.0)
    hub.touch(V2, 3500.0)
    assert hub.tick(3545.0) == []
    assert hub.stats["go_aways"] == 3


def test_reconnect_ice_all(hub: Hub):
    out = hub.reconnect_ice_all()
    assert sorted(out, key=lambda a: a.connection) == [
        Send(c, '{"messageType":"RECONNECT_ICE_SERVER"}') for c in (MASTER, V1, V2)
    ]
    assert hub.stats["reconnect_ice_servers"] == 3


def test_close_channel(hub: Hub):
    hub.connect(10, CH2, Role.MASTER, None, 0.0)
    hub.disconnect(V2, 0.0)
    hub.receive(MASTER, frame("SDP_ANSWER", recipientClientId="v2"), 1.0)
    out = hub.close_channel(ARN)
    assert out == [
        Send(MASTER, '{"messageType":"GO_AWAY"}'),
        Close(MASTER, CLOSE_NORMAL, "channel deleted"),
        Send(V1, '{"messageType":"GO_AWAY"}'),
        Close(V1, CLOSE_NORMAL, "channel deleted"),
    ]
    assert hub.connection_count() == 1  # the other channel's master
    assert hub.channel_snapshot(ARN, 1.0).buffered == ()
    assert hub.close_channel(ARN) == []
    assert hub.receive(V1, frame("SDP_OFFER"), 1.0) == []
    # buffer dropped: a viewer reconnecting later gets nothing
    assert hub.connect(V2 + 100, CH, Role.VIEWER, "v2", 2.0) == []
    assert hub.tick(3.0) == []


# --- introspection -----------------------------------------------------------------------------


def test_channel_snapshot(hub: Hub):
    hub.receive(V1, frame("SDP_OFFER"), 1.0)
    hub.receive(V1, frame("bad"), 1.0)
    hub.receive(MASTER, frame("SDP_ANSWER", recipientClientId="v1"), 2.0)
    hub.receive(MASTER, frame("SDP_ANSWER", recipientClientId="gone"), 2.0)
    hub.connect(V3, CH, Role.VIEWER, "v0", 3.0)
    snap = hub.channel_snapshot(ARN, 12.0)
    assert snap.arn == ARN
    assert snap.master == ConnectionInfo(None, 0.0, 2, 1)
    assert snap.viewers == (
        ConnectionInfo("v1", 0.0, 2, 1),
        ConnectionInfo("v2", 0.0, 0, 0),
        ConnectionInfo("v0", 3.0, 0, 0),
    )
    assert snap.buffered == (BufferedInfo("gone", None, MessageType.SDP_ANSWER, 50.0),)
    assert OFFER not in repr(snap)  # never payloads
    with pytest.raises(FrozenInstanceError):
        snap.arn = "x"  # type: ignore[misc]


def test_unknown_channel_snapshot():
    snap = Hub().channel_snapshot(ARN, 0.0)
    assert (snap.master, snap.viewers, snap.buffered) == (None, (), ())


def test_stats(hub: Hub):
    hub.receive(V1, frame("SDP_OFFER"), 1.0)
    hub.receive(MASTER, frame("SDP_ANSWER", recipientClientId="v1"), 1.0)
    hub.receive(MASTER, frame("ICE_CANDIDATE", ICE, recipientClientId="v1"), 1.0)
    hub.receive(MASTER, frame("ICE_CANDIDATE", ICE, recipientClientId="v9"), 1.0)
    hub.receive(V1, frame("NOPE", correlationId="c"), 1.0)
    s = hub.stats
    assert (s["relayed.SDP_OFFER"], s["relayed.SDP_ANSWER"], s["relayed.ICE_CANDIDATE"]) == (1, 1, 1)
    assert (s["buffered"], s["rejected"], s["status_responses.InvalidArgumentException"]) == (1, 1, 1)
    assert s["connects"] == 3 and s["ttl_dropped"] == 0 and s["go_aways"] == 0


def test_actions_are_immutable():
    with pytest.raises(AttributeError):
        Send(1, "x").frame = "y"  # type: ignore[misc]
    with pytest.raises(AttributeError):
        Close(1, 1000, "r").code = 1001  # type: ignore[misc]


def test_limit_presets():
    aws = SignalingLimits.aws()
    assert aws == SignalingLimits()
    assert (aws.max_viewers_per_channel, aws.connects_per_second_per_channel) == (10, 3.0)
    assert (aws.sdp_messages_per_second, aws.ice_messages_per_second, aws.max_payload_chars) == (5.0, 20.0, 10240)
    assert (aws.idle_timeout, aws.max_connection_duration, aws.go_away_before_close) == (600.0, 3600.0, 60.0)
    relaxed = SignalingLimits.relaxed()
    assert (relaxed.max_viewers_per_channel, relaxed.connects_per_second_per_channel) == (100, 30.0)
    assert (relaxed.sdp_messages_per_second, relaxed.ice_messages_per_second) == (50.0, 200.0)
    off = SignalingLimits.off()
    assert off.max_payload_chars == 10240 and off.max_buffered_per_recipient == 200
    assert all(
        v is None
        for v in (
            off.max_viewers_per_channel,
            off.connects_per_second_per_channel,
            off.sdp_messages_per_second,
            off.ice_messages_per_second,
            off.idle_timeout,
            off.max_connection_duration,
            off.go_away_before_close,
        )
    )


def test_payload_limit_comes_from_limits():
    h = Hub(SignalingLimits(max_payload_chars=8))
    h.connect(MASTER, CH, Role.MASTER, None, 0.0)
    h.connect(V1, CH, Role.VIEWER, "v1", 0.0)
    assert h.receive(V1, frame("SDP_OFFER", "QUJDREVG"), 0.0) != []
    _, resp = status(h.receive(V1, frame("SDP_OFFER", "QUJDREVGRw", correlationId="c"), 0.0))
    assert resp["errorType"] == "InvalidArgumentException"
