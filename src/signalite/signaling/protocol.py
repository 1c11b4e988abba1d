"""The KVS signaling WebSocket frames: parse what clients send, build what the server sends.

Theory of operation
-------------------
A connected client sends JSON text frames naming an `action` (SDP_OFFER, SDP_ANSWER, ICE_CANDIDATE),
a base64 `messagePayload`, and optionally a `recipientClientId` and a `correlationId`.
`parse_frame` turns one frame into a `ClientMessage` or raises `FrameError`; it never raises
anything else, whatever the text. The hub then routes the message and wraps it for the recipient
with `delivery_frame`; errors go back to the sender with `status_response_frame`, but only when the
frame carried a usable correlationId (`FrameError.correlation_id`), because AWS answers failures
only then and clients match STATUS_RESPONSEs to requests by that id.

Tolerance on input, exactness on output. The two SDKs disagree on member spelling (the JS SDK sends
camelCase `messagePayload`, the C SDK PascalCase `MessagePayload` plus an undocumented
`IceServerList`), so member names are matched case-insensitively and unknown members are ignored.
Outbound frames carry exactly the documented camelCase keys, because the C SDK matches keys
exactly and counts JSON tokens.

The payload is relayed verbatim, never decoded and re-encoded: the server has no business with
SDP. It is only checked to be structurally base64, which also guarantees that it needs no JSON
escaping, so delivery frames are built by plain string concatenation (the relay hot path).
Likewise client ids are restricted to `[a-zA-Z0-9_.-]`. Anything with free text (the
STATUS_RESPONSE description) goes through a real JSON encoder.

No I/O and no clock here: this module is pure functions over strings.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, Final

import orjson

__all__ = [
    "CLIENT_ACTIONS",
    "ClientMessage",
    "FrameError",
    "MessageType",
    "delivery_frame",
    "go_away_frame",
    "is_valid_id",
    "parse_fields",
    "parse_frame",
    "reconnect_ice_server_frame",
    "status_response_frame",
]


class MessageType(StrEnum):
    """`messageType` values of server frames; the first three are also the client `action`s."""

    SDP_OFFER = "SDP_OFFER"
    SDP_ANSWER = "SDP_ANSWER"
    ICE_CANDIDATE = "ICE_CANDIDATE"
    GO_AWAY = "GO_AWAY"
    RECONNECT_ICE_SERVER = "RECONNECT_ICE_SERVER"
    STATUS_RESPONSE = "STATUS_RESPONSE"


CLIENT_ACTIONS: Final = frozenset({MessageType.SDP_OFFER, MessageType.SDP_ANSWER, MessageType.ICE_CANDIDATE})
_ACTION_BY_NAME: Final[dict[str, MessageType]] = {m.value: m for m in CLIENT_ACTIONS}

# ClientId / correlationId / recipientClientId pattern from the developer guide (1..256 chars).
_ID = re.compile(r"[a-zA-Z0-9_.-]{1,256}")
# Base64 alphabet with at most two trailing '='; lengths are checked separately (see _valid_base64).
_B64_ALPHABET: Final = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"

INVALID_ARGUMENT: Final = "InvalidArgumentException"


@dataclass(frozen=True, slots=True)
class ClientMessage:
    """One valid client frame. `payload` is the client's base64 text, untouched."""

    action: MessageType
    payload: str
    recipient_client_id: str | None
    correlation_id: str | None


class FrameError(Exception):
    """A frame that cannot be accepted, named as AWS would name the failure.

    `correlation_id` is the frame's correlationId when it had a valid one, else None: then no
    STATUS_RESPONSE may be sent (the client could not match it to anything).
    """

    def __init__(
        self,
        description: str,
        *,
        correlation_id: str | None,
        error_type: str = INVALID_ARGUMENT,
        status_code: int = 400,
    ) -> None:
        super().__init__(description)
        self.description = description
        self.correlation_id = correlation_id
        self.error_type = error_type
        self.status_code = status_code

    def __repr__(self) -> str:
        return (
            f"FrameError({self.error_type}, {self.status_code}, {self.description!r}, "
            f"correlation_id={self.correlation_id!r})"
        )


def is_valid_id(value: str) -> bool:
    """True if `value` is a valid ClientId / correlationId (`^[a-zA-Z0-9_.-]{1,256}$`)."""
    return _ID.fullmatch(value) is not None


def _valid_base64(text: str) -> bool:
    """Structurally valid standard base64, with or without the trailing '=' padding.

    Missing padding is tolerated on purpose: AWS's signaling model constrains MessagePayload only
    to the character set `[a-zA-Z0-9+/=]+`, and browsers' `atob` (what the JS SDK decodes with)
    accepts unpadded input, so a client that works against AWS without padding must work here too.
    Refused is what `atob` refuses as well: characters outside the alphabet, '=' other than as up
    to two pad characters completing a 4-character group, and a 4n+1 length (6 bits, not a byte).
    Whitespace, which `atob` would skip, is refused too: no SDK emits it, and it would need
    escaping in the relayed frame.
    """
    body = text[:-2].encode() + text[-2:].rstrip("=").encode() if text[-1:] == "=" else text.encode()
    # Deleting every alphabet byte leaves nothing exactly when the rest is pure base64 (a C loop,
    # about three times faster than the equivalent regex on a 2,000-character offer).
    if not body or body.translate(None, _B64_ALPHABET):
        return False
    if text[-1] == "=":  # padded: the whole text must be whole 4-char groups
        return len(text) % 4 == 0
    return len(text) % 4 != 1


# The four members, in the order of the tuple below, and the exact spellings of each SDK. A frame
# using only one SDK's spellings (nearly all frames) is read with four dict lookups; anything else
# goes through the case-insensitive loop.
_NAMES: Final = ("action", "recipientClientId", "messagePayload", "correlationId")
_JS_KEYS: Final = frozenset(_NAMES)
_C_KEYS: Final = frozenset({"action", "RecipientClientId", "MessagePayload", "CorrelationId", "IceServerList"})
_SLOT: Final[dict[str, int]] = {name.lower(): slot for slot, name in enumerate(_NAMES)}


def _members_any_case(obj: dict[str, Any]) -> list[Any]:
    """The four members matched case-insensitively; a member given in two casings with
    different values is a FrameError (null counts as absent, so it never conflicts)."""
    values: list[Any] = [None, None, None, None]
    conflicts = 0  # bit per slot
    for key, value in obj.items():
        slot = _SLOT.get(key.lower())
        if slot is None or value is None:
            continue  # unknown members are ignored
        seen = values[slot]
        if seen is not None and seen != value:
            conflicts |= 1 << slot
        values[slot] = value
    if conflicts:
        # Report with the correlationId only if that member itself is unambiguous and valid.
        correlation = values[3]
        if conflicts & 0b1000 or type(correlation) is not str or _ID.fullmatch(correlation) is None:
            correlation = None
        name = _NAMES[conflicts.bit_length() - 1]
        raise FrameError(f"{name} is given twice with different values", correlation_id=correlation)
    return values


def parse_fields(text: str, max_payload: int) -> tuple[MessageType, str, str | None, str | None]:
    """`parse_frame` without the dataclass: (action, payload, recipient, correlation id).

    The hub's relay path uses this to skip one object per message; the rules are the same.
    """
    try:
        obj = orjson.loads(text)
    except orjson.JSONDecodeError:
        raise FrameError("frame is not valid JSON", correlation_id=None) from None
    if type(obj) is not dict:
        raise FrameError("frame must be a JSON object", correlation_id=None)

    # JSON null is treated as absent throughout (`.get` gives None for both).
    keys = obj.keys()
    if keys <= _JS_KEYS:
        get = obj.get
        action, recipient = get("action"), get("recipientClientId")
        payload, correlation = get("messagePayload"), get("correlationId")
    elif keys <= _C_KEYS:
        get = obj.get
        action, recipient = get("action"), get("RecipientClientId")
        payload, correlation = get("MessagePayload"), get("CorrelationId")
    else:
        action, recipient, payload, correlation = _members_any_case(obj)

    # correlationId first: every later error is reported to the client only if it is usable.
    if correlation is not None and (type(correlation) is not str or _ID.fullmatch(correlation) is None):
        raise FrameError("correlationId must match ^[a-zA-Z0-9_.-]{1,256}$", correlation_id=None)

    if action is None:
        raise FrameError("action is required", correlation_id=correlation)
    kind = _ACTION_BY_NAME.get(action) if type(action) is str else None
    if kind is None:
        raise FrameError("action must be one of SDP_OFFER, SDP_ANSWER, ICE_CANDIDATE", correlation_id=correlation)

    if payload is None:
        raise FrameError("messagePayload is required", correlation_id=correlation)
    if type(payload) is not str:
        raise FrameError("messagePayload must be a string", correlation_id=correlation)
    if not 0 < len(payload) <= max_payload:
        raise FrameError(f"messagePayload must be 1 to {max_payload} characters long", correlation_id=correlation)
    if not _valid_base64(payload):
        raise FrameError("messagePayload must be base64 encoded", correlation_id=correlation)

    # An empty recipient counts as absent: the C SDK always sends RecipientClientId, filled from
    # the application's peer id, which a viewer application may leave empty (viewers' recipients
    # are ignored anyway; a master without one is refused by the hub).
    if recipient is None or recipient == "":
        recipient = None
    elif type(recipient) is not str or _ID.fullmatch(recipient) is None:
        raise FrameError("recipientClientId must match ^[a-zA-Z0-9_.-]{1,256}$", correlation_id=correlation)
    return kind, payload, recipient, correlation


def parse_frame(text: str, *, max_payload: int) -> ClientMessage:
    """Parse one client text frame; raise `FrameError` (and nothing else) if it is not acceptable.

    Members are matched case-insensitively, unknown ones ignored, JSON null means absent.
    `max_payload` bounds `messagePayload` in characters.
    """
    return ClientMessage(*parse_fields(text, max_payload))


def delivery_frame(message_type: MessageType, payload: str, sender_client_id: str | None) -> str:
    """`{"senderClientId":…,"messageType":…,"messagePayload":…}` (no senderClientId when None).

    Built by concatenation: callers pass a payload that `parse_frame` accepted (base64 alphabet)
    and an id matching the ClientId pattern, neither of which needs JSON escaping.
    """
    if sender_client_id is None:
        return '{"messageType":"' + message_type + '","messagePayload":"' + payload + '"}'
    return (
        '{"senderClientId":"'
        + sender_client_id
        + '","messageType":"'
        + message_type
        + '","messagePayload":"'
        + payload
        + '"}'
    )


_MAX_DESCRIPTION: Final = 1024  # the documented bound of statusResponse.description


def status_response_frame(correlation_id: str, error_type: str, status_code: int, description: str) -> str:
    """A STATUS_RESPONSE frame; `statusCode` is sent as a string, as AWS documents it.

    Everything is JSON-encoded (the description is free text); the description is cut to 1K.
    """
    return orjson.dumps(
        {
            "messageType": MessageType.STATUS_RESPONSE.value,
            "statusResponse": {
                "correlationId": correlation_id,
                "errorType": error_type,
                "statusCode": str(status_code),
                "description": description[:_MAX_DESCRIPTION],
            },
        }
    ).decode()


_GO_AWAY_FRAME: Final = '{"messageType":"GO_AWAY"}'
_RECONNECT_ICE_SERVER_FRAME: Final = '{"messageType":"RECONNECT_ICE_SERVER"}'


def go_away_frame() -> str:
    """`{"messageType":"GO_AWAY"}`: reconnect soon, this connection is about to be closed."""
    return _GO_AWAY_FRAME


def reconnect_ice_server_frame() -> str:
    """`{"messageType":"RECONNECT_ICE_SERVER"}`: refresh the ICE (TURN) configuration."""
    return _RECONNECT_ICE_SERVER_FRAME
