import base64
import random
from typing import Any

import orjson
import pytest

from signalite.signaling.protocol import (
    CLIENT_ACTIONS,
    ClientMessage,
    FrameError,
    MessageType,
    delivery_frame,
    go_away_frame,
    is_valid_id,
    parse_fields,
    parse_frame,
    reconnect_ice_server_frame,
    status_response_frame,
)

MAX = 10240
SDP = base64.b64encode(b'{"type":"offer","sdp":"v=0\\r\\no=- 1 2 IN IP4 127.0.0.1\\r\\n"}').decode()


def dumps(obj: Any) -> str:
    return orjson.dumps(obj).decode()


def parse(obj: Any, max_payload: int = MAX) -> ClientMessage:
    return parse_frame(obj if isinstance(obj, str) else dumps(obj), max_payload=max_payload)


def error(obj: Any, max_payload: int = MAX) -> FrameError:
    with pytest.raises(FrameError) as info:
        parse(obj, max_payload)
    return info.value


# --- accepted frames ---------------------------------------------------------------------------


def test_js_sdk_frame():
    msg = parse({"action": "SDP_OFFER", "messagePayload": SDP, "recipientClientId": "v-1", "correlationId": "c.1_x-"})
    assert msg == ClientMessage(MessageType.SDP_OFFER, SDP, "v-1", "c.1_x-")
    assert msg.action is MessageType.SDP_OFFER


def test_js_sdk_frame_minimal():
    assert parse({"action": "ICE_CANDIDATE", "messagePayload": SDP}) == ClientMessage(
        MessageType.ICE_CANDIDATE, SDP, None, None
    )


def test_c_sdk_frame_pascal_case_with_ice_server_list():
    # Shaped like the C SDK's template, including its whitespace and the undocumented member.
    text = (
        '{\n\t"action": "SDP_OFFER",\n\t"RecipientClientId": "ProducerMaster",\n'
        f'\t"MessagePayload": "{SDP}",\n\t"CorrelationId": "1700000000000",\n'
        '\t"IceServerList": [\n\t\t{\n\t\t\t"Password": "p",\n\t\t\t"Ttl": 300,\n'
        '\t\t\t"Uris": ["turn:1.2.3.4:443?transport=udp"],\n\t\t\t"Username": "u"\n\t\t}\n\t]\n}'
    )
    assert parse(text) == ClientMessage(MessageType.SDP_OFFER, SDP, "ProducerMaster", "1700000000000")


@pytest.mark.parametrize(
    "keys",
    [
        ("Action", "RecipientClientId", "MessagePayload", "CorrelationId"),
        ("ACTION", "RECIPIENTCLIENTID", "MESSAGEPAYLOAD", "CORRELATIONID"),
        ("action", "recipientclientid", "messagepayload", "correlationid"),
        ("action", "RecipientClientId", "messagePayload", "correlationId"),  # mixed SDK spellings
        ("aCtIoN", "recipientClientID", "MessagePayLoad", "correlationID"),
    ],
)
def test_member_names_are_case_insensitive(keys: tuple[str, str, str, str]):
    obj = dict(zip(keys, ("SDP_ANSWER", "viewer", SDP, "c1"), strict=True))
    assert parse(obj) == ClientMessage(MessageType.SDP_ANSWER, SDP, "viewer", "c1")


def test_unknown_members_are_ignored():
    obj = {
        "action": "ICE_CANDIDATE",
        "messagePayload": SDP,
        "senderClientId": "spoofed",
        "messageType": "GO_AWAY",
        "statusResponse": {"correlationId": "x"},
        "nested": {"deep": [1, 2, {"a": None}]},
        "IceServerList": "not even a list",
    }
    assert parse(obj) == ClientMessage(MessageType.ICE_CANDIDATE, SDP, None, None)


def test_same_member_in_two_casings_with_the_same_value_is_fine():
    obj = {"action": "SDP_OFFER", "Action": "SDP_OFFER", "messagePayload": SDP, "MessagePayload": SDP}
    assert parse(obj).payload == SDP


def test_null_optional_members_are_absent():
    msg = parse({"action": "SDP_OFFER", "messagePayload": SDP, "recipientClientId": None, "correlationId": None})
    assert msg.recipient_client_id is None and msg.correlation_id is None


def test_empty_recipient_is_absent():
    # The C SDK always sends RecipientClientId; a viewer app may leave its peer id empty.
    assert parse({"action": "SDP_OFFER", "RecipientClientId": "", "MessagePayload": SDP}).recipient_client_id is None


@pytest.mark.parametrize(
    "payload",
    [
        SDP,
        "QQ==",  # padded
        "QUI=",
        "QUJD",
        "QQ",  # unpadded: accepted like atob and AWS's own pattern do
        "QUI",
        "+/+/",
        "a" * MAX,  # exactly the limit
    ],
)
def test_payload_is_relayed_verbatim(payload: str):
    msg = parse({"action": "ICE_CANDIDATE", "messagePayload": payload})
    assert msg.payload == payload
    assert orjson.loads(delivery_frame(msg.action, msg.payload, "v"))["messagePayload"] == payload


def test_parse_fields_matches_parse_frame():
    text = dumps({"action": "SDP_ANSWER", "recipientClientId": "r", "messagePayload": SDP, "correlationId": "c"})
    assert parse_fields(text, MAX) == (MessageType.SDP_ANSWER, SDP, "r", "c")


# --- refused frames ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "text", ["", "not json", "{", '{"action":"SDP_OFFER",}', "\ud800", "[1, 2]", '"str"', "42", "null"]
)
def test_not_a_json_object(text: str):
    e = error(text)
    assert e.correlation_id is None
    assert e.error_type == "InvalidArgumentException" and e.status_code == 400


@pytest.mark.parametrize("corr", ["", "x" * 257, "bad id", "a/b", "ü", 'q"', 42, True, ["c"], {"c": 1}])
def test_invalid_correlation_id_gives_no_correlation(corr: Any):
    e = error({"action": "SDP_OFFER", "messagePayload": SDP, "correlationId": corr})
    assert e.correlation_id is None
    assert "correlationId" in e.description


def test_invalid_correlation_id_wins_over_other_errors():
    # Even if everything else is wrong too, there is no usable id to answer to.
    assert error({"action": "NOPE", "correlationId": "bad id"}).correlation_id is None


def test_longest_correlation_id_is_valid():
    assert parse({"action": "SDP_OFFER", "messagePayload": SDP, "correlationId": "c" * 256}).correlation_id == "c" * 256


BAD_FRAMES: list[tuple[str, dict[str, Any], str]] = [
    ("missing action", {"messagePayload": SDP}, "action"),
    ("null action", {"action": None, "messagePayload": SDP}, "action"),
    ("lower-case action", {"action": "sdp_offer", "messagePayload": SDP}, "action"),
    ("server-only action GO_AWAY", {"action": "GO_AWAY", "messagePayload": SDP}, "action"),
    ("server-only action STATUS_RESPONSE", {"action": "STATUS_RESPONSE", "messagePayload": SDP}, "action"),
    ("unknown action", {"action": "SEND_ALEXA_OFFER", "messagePayload": SDP}, "action"),
    ("numeric action", {"action": 1, "messagePayload": SDP}, "action"),
    ("list action", {"action": ["SDP_OFFER"], "messagePayload": SDP}, "action"),
    ("missing payload", {"action": "SDP_OFFER"}, "messagePayload"),
    ("null payload", {"action": "SDP_OFFER", "messagePayload": None}, "messagePayload"),
    ("numeric payload", {"action": "SDP_OFFER", "messagePayload": 12}, "messagePayload"),
    ("object payload", {"action": "SDP_OFFER", "messagePayload": {"type": "offer"}}, "messagePayload"),
    ("empty payload", {"action": "SDP_OFFER", "messagePayload": ""}, "messagePayload"),
    ("payload over limit", {"action": "SDP_OFFER", "messagePayload": "a" * (MAX + 4)}, "messagePayload"),
    ("raw JSON payload", {"action": "SDP_OFFER", "messagePayload": '{"type":"offer"}'}, "base64"),
    ("url-safe alphabet", {"action": "SDP_OFFER", "messagePayload": "ab-_"}, "base64"),
    ("quote in payload", {"action": "SDP_OFFER", "messagePayload": 'ab"c'}, "base64"),
    ("backslash in payload", {"action": "SDP_OFFER", "messagePayload": "ab\\c"}, "base64"),
    ("whitespace in payload", {"action": "SDP_OFFER", "messagePayload": "QUJD\nQUJD"}, "base64"),
    ("trailing newline", {"action": "SDP_OFFER", "messagePayload": "QUJD\n"}, "base64"),
    ("non-ascii payload", {"action": "SDP_OFFER", "messagePayload": "QUJDé"}, "base64"),
    ("padding in the middle", {"action": "SDP_OFFER", "messagePayload": "QQ==QUJD"}, "base64"),
    ("three pad chars", {"action": "SDP_OFFER", "messagePayload": "Q==="}, "base64"),
    ("only padding", {"action": "SDP_OFFER", "messagePayload": "=="}, "base64"),
    ("padding not completing a group", {"action": "SDP_OFFER", "messagePayload": "QUJ=="}, "base64"),
    ("4n+1 length", {"action": "SDP_OFFER", "messagePayload": "QUJDQ"}, "base64"),
    ("bad recipient chars", {"action": "SDP_OFFER", "messagePayload": SDP, "recipientClientId": "a b"}, "recipient"),
    ("recipient too long", {"action": "SDP_OFFER", "messagePayload": SDP, "recipientClientId": "r" * 257}, "recipient"),
    ("numeric recipient", {"action": "SDP_OFFER", "messagePayload": SDP, "recipientClientId": 7}, "recipient"),
    ("conflicting casings", {"action": "SDP_OFFER", "Action": "SDP_ANSWER", "messagePayload": SDP}, "twice"),
    (
        "conflicting payload casings",
        {"action": "SDP_OFFER", "messagePayload": SDP, "MessagePayload": "QUJD"},
        "twice",
    ),
]


@pytest.mark.parametrize(("obj", "needle"), [(o, n) for _, o, n in BAD_FRAMES], ids=[i for i, _, _ in BAD_FRAMES])
def test_bad_frame_carries_correlation_id(obj: dict[str, Any], needle: str):
    e = error({**obj, "correlationId": "corr-1"})
    assert e.correlation_id == "corr-1"
    assert e.error_type == "InvalidArgumentException"
    assert e.status_code == 400
    assert needle.lower() in e.description.lower()
    assert str(e) == e.description


@pytest.mark.parametrize("obj", [o for _, o, _ in BAD_FRAMES], ids=[i for i, _, _ in BAD_FRAMES])
def test_bad_frame_without_correlation_id(obj: dict[str, Any]):
    assert error(obj).correlation_id is None


def test_pascal_case_correlation_id_is_reported():
    assert error({"Action": "NOPE", "MessagePayload": SDP, "CorrelationId": "C1"}).correlation_id == "C1"


def test_conflicting_correlation_ids_give_no_correlation():
    e = error({"action": "SDP_OFFER", "messagePayload": SDP, "correlationId": "a", "CorrelationId": "b"})
    assert e.correlation_id is None


def test_payload_limit_is_a_parameter():
    assert parse({"action": "SDP_OFFER", "messagePayload": "QUJD"}, max_payload=4).payload == "QUJD"
    assert "1 to 3" in error({"action": "SDP_OFFER", "messagePayload": "QUJD"}, max_payload=3).description


def test_is_valid_id():
    assert is_valid_id("a") and is_valid_id("A-z_0.9") and is_valid_id("x" * 256)
    assert not is_valid_id("") and not is_valid_id("x" * 257) and not is_valid_id("a\n") and not is_valid_id("é")


# --- built frames ------------------------------------------------------------------------------


def test_delivery_frame_with_sender_is_exact():
    text = delivery_frame(MessageType.SDP_OFFER, SDP, "viewer-1")
    assert isinstance(text, str) and type(text) is str
    assert text == '{"senderClientId":"viewer-1","messageType":"SDP_OFFER","messagePayload":"' + SDP + '"}'
    assert orjson.loads(text) == {"senderClientId": "viewer-1", "messageType": "SDP_OFFER", "messagePayload": SDP}


def test_delivery_frame_without_sender_omits_the_key():
    obj = orjson.loads(delivery_frame(MessageType.ICE_CANDIDATE, "QUJD", None))
    assert obj == {"messageType": "ICE_CANDIDATE", "messagePayload": "QUJD"}
    assert list(obj) == ["messageType", "messagePayload"]


def test_status_response_frame_is_exact_with_string_status_code():
    text = status_response_frame("c1", "InvalidArgumentException", 400, "bad")
    assert type(text) is str
    assert orjson.loads(text) == {
        "messageType": "STATUS_RESPONSE",
        "statusResponse": {
            "correlationId": "c1",
            "errorType": "InvalidArgumentException",
            "statusCode": "400",
            "description": "bad",
        },
    }
    assert list(orjson.loads(text)) == ["messageType", "statusResponse"]


@pytest.mark.parametrize("description", ['say "hi"\\', "line\nbreak\ttab\x00\x1f", "ünïcødé ✓ 🎉", "</script>"])
def test_status_response_description_is_escaped(description: str):
    obj = orjson.loads(status_response_frame("c", "E", 429, description))
    assert obj["statusResponse"]["description"] == description
    assert obj["statusResponse"]["statusCode"] == "429"


def test_status_response_description_is_cut_to_1k():
    obj = orjson.loads(status_response_frame("c", "E", 400, "d" * 5000))
    assert obj["statusResponse"]["description"] == "d" * 1024


def test_go_away_and_reconnect_ice_frames():
    assert go_away_frame() == '{"messageType":"GO_AWAY"}'
    assert reconnect_ice_server_frame() == '{"messageType":"RECONNECT_ICE_SERVER"}'
    assert orjson.loads(go_away_frame()) == {"messageType": "GO_AWAY"}
    assert orjson.loads(reconnect_ice_server_frame()) == {"messageType": "RECONNECT_ICE_SERVER"}


def test_message_types():
    assert {m.value for m in MessageType} == {
        "SDP_OFFER",
        "SDP_ANSWER",
        "ICE_CANDIDATE",
        "GO_AWAY",
        "RECONNECT_ICE_SERVER",
        "STATUS_RESPONSE",
    }
    assert {MessageType.SDP_OFFER, MessageType.SDP_ANSWER, MessageType.ICE_CANDIDATE} == CLIENT_ACTIONS


# --- properties --------------------------------------------------------------------------------

SEEDS = [
    dumps({"action": "SDP_OFFER", "messagePayload": SDP, "recipientClientId": "v-1", "correlationId": "c1"}),
    '{"action":"ICE_CANDIDATE","RecipientClientId":"m","MessagePayload":"QUJD","CorrelationId":"C","IceServerList":[]}',
    '{"Action":"SDP_ANSWER","messagePayload":"QQ==","x":{"y":[1,null,true]}}',
]
ALPHABET = '{}[]":,\\ \n=+/_.-aAzZ09QUJDénul\x00\ud800'


def mutations(rng: random.Random, n: int) -> list[str]:
    """Seeded random edits (insert, delete, replace, splice) of valid frames: a cheap fuzzer."""
    out = []
    for _ in range(n):
        text = rng.choice(SEEDS)
        for _ in range(rng.randint(1, 4)):
            i = rng.randrange(len(text) + 1)
            op = rng.randrange(4)
            if op == 0:
                text = text[:i] + rng.choice(ALPHABET) + text[i:]
            elif op == 1:
                text = text[:i] + text[i + 1 :]
            elif op == 2:
                text = text[:i] + rng.choice(ALPHABET) + text[i + 1 :]
            else:
                other = rng.choice(SEEDS)
                j = rng.randrange(len(other) + 1)
                text = text[:i] + other[j:]
        out.append(text)
    return out


def test_fuzzed_frames_only_raise_frame_error_and_accepted_ones_relay_safely():
    accepted = refused = 0
    for text in mutations(random.Random(20240501), 3000):
        try:
            msg = parse_frame(text, max_payload=MAX)
        except FrameError as e:
            refused += 1
            assert e.correlation_id is None or is_valid_id(e.correlation_id)
            continue
        accepted += 1
        # Whatever got through can be concatenated into valid JSON, payload intact and decodable.
        sender = msg.recipient_client_id or msg.correlation_id
        delivered = orjson.loads(delivery_frame(msg.action, msg.payload, sender))
        assert delivered["messagePayload"] == msg.payload
        assert delivered.get("senderClientId") == sender
        base64.b64decode(msg.payload + "=" * (-len(msg.payload) % 4), validate=True)
    assert accepted > 50 and refused > 50  # the fuzzer exercised both sides
