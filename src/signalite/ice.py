"""TURN credentials for GetIceServerConfig, in the TURN REST API form coturn understands.

Theory of operation
-------------------
signalite does not relay media; it hands out short-lived credentials for a TURN server the operator
runs (coturn with ``use-auth-secret`` and ``static-auth-secret=<secret>``), following
draft-uberti-behave-turn-rest:

* username = ``"<expiry unix seconds>:<user>"``, expiry = ``int(now) + ttl``;
* password = ``base64(HMAC-SHA1(secret, username))`` (standard alphabet, with ``=`` padding).

coturn recomputes the password from the username and the shared secret and refuses the allocation
once the expiry has passed, so nothing needs to be stored or shared except the secret.

The result is shaped for the KVS ``IceServerList``. The KVS WebRTC C SDK refuses a server with more
than 4 URIs and ignores servers beyond the 5th, so URIs are grouped 4 per server, 5 servers at most;
every server carries the same credentials. ``Ttl`` must satisfy the model's range and the C SDK's
minimum: 30 < ttl <= 86400.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
from collections.abc import Sequence
from dataclasses import dataclass, field

__all__ = [
    "MAX_SERVERS",
    "MAX_TTL",
    "MAX_URIS_PER_SERVER",
    "MAX_USERNAME_LEN",
    "MIN_TTL_EXCLUSIVE",
    "IceServer",
    "turn_credentials",
]

MAX_URIS_PER_SERVER = 4  # KVS C SDK: MAX_ICE_CONFIG_URI_COUNT
MAX_SERVERS = 5  # KVS C SDK: MAX_ICE_CONFIG_COUNT
MIN_TTL_EXCLUSIVE = 30  # C SDK refuses ttl <= 30 s
MAX_TTL = 86400  # kinesis-video-signaling model: Ttl max
MAX_USERNAME_LEN = 256  # KVS model: Username max length; also the C SDK's buffer

_UNSAFE_USER_CHARS = re.compile(r"[^A-Za-z0-9_.-]")


@dataclass(frozen=True, slots=True)
class IceServer:
    """One entry of a KVS ``IceServerList``; the password is kept out of repr()."""

    uris: tuple[str, ...]
    username: str
    password: str = field(repr=False)
    ttl: int

    def to_json(self) -> dict[str, str | int | list[str]]:
        """The wire form: ``{"Uris": [...], "Username": ..., "Password": ..., "Ttl": ...}``."""
        return {"Uris": list(self.uris), "Username": self.username, "Password": self.password, "Ttl": self.ttl}


def turn_username(ttl: int, now: float, user: str) -> str:
    """``"<int(now)+ttl>:<user>"`` with `user` reduced to ``[A-Za-z0-9_.-]`` and cut to fit 256 chars.

    Disallowed characters become ``_`` (an ARN stays readable); an empty user gives just the expiry,
    which the draft allows.
    """
    expiry = str(int(now) + ttl)
    safe = _UNSAFE_USER_CHARS.sub("_", user)[: MAX_USERNAME_LEN - len(expiry) - 1]
    return f"{expiry}:{safe}" if safe else expiry


def turn_password(secret: str, username: str) -> str:
    """``base64(HMAC-SHA1(secret, username))``: what coturn's ``static-auth-secret`` expects."""
    digest = hmac.digest(secret.encode("utf-8"), username.encode("utf-8"), hashlib.sha1)
    return base64.b64encode(digest).decode("ascii")


def turn_credentials(secret: str, uris: Sequence[str], ttl: int, now: float, user: str) -> list[IceServer]:
    """TURN REST credentials for `uris`, grouped into at most 5 servers of at most 4 URIs.

    Raises ValueError unless 30 < ttl <= 86400. No URIs gives an empty list. URIs beyond the 20th
    are dropped, because no KVS client would use them.
    """
    if isinstance(ttl, bool) or not isinstance(ttl, int) or not MIN_TTL_EXCLUSIVE < ttl <= MAX_TTL:
        raise ValueError(f"ttl must be an integer with {MIN_TTL_EXCLUSIVE} < ttl <= {MAX_TTL}, got {ttl!r}")
    if isinstance(uris, str):
        raise TypeError("uris must be a sequence of URI strings, not one string")
    if not uris:
        return []
    username = turn_username(ttl, now, user)
    password = turn_password(secret, username)
    kept = list(uris)[: MAX_SERVERS * MAX_URIS_PER_SERVER]
    return [
        IceServer(tuple(kept[i : i + MAX_URIS_PER_SERVER]), username, password, ttl)
        for i in range(0, len(kept), MAX_URIS_PER_SERVER)
    ]
