"""TURN REST credentials (draft-uberti-behave-turn-rest, coturn `static-auth-secret`)."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json

import pytest

from signalite.ice import IceServer, turn_credentials, turn_password, turn_username

SECRET = "s3cr3t-shared"
NOW = 1700000000.75  # fractions are dropped, never rounded up
URIS3 = [
    "turn:turn.example.com:443?transport=udp",
    "turns:turn.example.com:443?transport=udp",
    "turns:turn.example.com:443?transport=tcp",
]


def coturn_password(secret: str, username: str) -> str:
    # What coturn computes for `use-auth-secret`: base64(HMAC-SHA1(secret, username)).
    return base64.b64encode(hmac.new(secret.encode(), username.encode(), hashlib.sha1).digest()).decode()


def test_known_answer_password() -> None:
    (server,) = turn_credentials(SECRET, URIS3, 300, NOW, "demo")
    assert server.username == "1700000300:demo"
    # Derived once with: echo -n "1700000300:demo" | openssl dgst -sha1 -hmac "s3cr3t-shared" -binary | base64
    assert server.password == "P+d/wLRB9xABtRpxxe7b/BZ0xFA="
    assert server.password == coturn_password(SECRET, server.username)
    assert turn_password(SECRET, "1700000300:demo") == "P+d/wLRB9xABtRpxxe7b/BZ0xFA="


def test_known_answer_with_sanitised_arn_user() -> None:
    (server,) = turn_credentials(
        SECRET, URIS3[:1], 86400, 1700000000, "arn:aws:kinesisvideo:us-west-2:111122223333:channel/demo/1"
    )
    assert server.username == "1700086400:arn_aws_kinesisvideo_us-west-2_111122223333_channel_demo_1"
    # openssl, as above, on that username.
    assert server.password == "1G/X6C0MVmeMQgrUfanm414sXu0="


def test_password_depends_on_secret_and_username() -> None:
    a = turn_credentials(SECRET, URIS3, 300, NOW, "demo")[0]
    assert turn_credentials(SECRET + "x", URIS3, 300, NOW, "demo")[0].password != a.password
    assert turn_credentials(SECRET, URIS3, 301, NOW, "demo")[0].password != a.password
    assert turn_credentials(SECRET, URIS3, 300, NOW, "demo2")[0].password != a.password


def test_to_json_shape() -> None:
    (server,) = turn_credentials(SECRET, URIS3, 300, NOW, "demo")
    body = server.to_json()
    assert body == {
        "Uris": URIS3,
        "Username": "1700000300:demo",
        "Password": "P+d/wLRB9xABtRpxxe7b/BZ0xFA=",
        "Ttl": 300,
    }
    assert isinstance(body["Uris"], list)
    json.dumps(body)  # plain JSON types only


def test_repr_hides_password() -> None:
    (server,) = turn_credentials(SECRET, URIS3, 300, NOW, "demo")
    assert server.password not in repr(server)
    assert SECRET not in repr(server)


def test_grouping_nine_uris_gives_4_4_1() -> None:
    uris = [f"turn:t{i}.example.com:3478" for i in range(9)]
    servers = turn_credentials(SECRET, uris, 300, NOW, "u")
    assert [len(s.uris) for s in servers] == [4, 4, 1]
    assert [u for s in servers for u in s.uris] == uris  # order kept
    assert len({(s.username, s.password, s.ttl) for s in servers}) == 1


def test_grouping_is_capped_at_five_servers_of_four() -> None:
    uris = [f"turn:t{i}.example.com:3478" for i in range(25)]
    servers = turn_credentials(SECRET, uris, 300, NOW, "u")
    assert [len(s.uris) for s in servers] == [4, 4, 4, 4, 4]
    assert [u for s in servers for u in s.uris] == uris[:20]


@pytest.mark.parametrize(("count", "sizes"), [(1, [1]), (4, [4]), (5, [4, 1]), (20, [4] * 5), (21, [4] * 5)])
def test_grouping_edges(count: int, sizes: list[int]) -> None:
    uris = [f"turn:t{i}:3478" for i in range(count)]
    assert [len(s.uris) for s in turn_credentials(SECRET, uris, 300, NOW, "u")] == sizes


def test_empty_uris_gives_empty_list() -> None:
    assert turn_credentials(SECRET, [], 300, NOW, "u") == []
    assert turn_credentials(SECRET, (), 300, NOW, "u") == []


@pytest.mark.parametrize("ttl", [31, 300, 86400])
def test_ttl_accepted(ttl: int) -> None:
    (server,) = turn_credentials(SECRET, URIS3, ttl, NOW, "u")
    assert server.ttl == ttl
    assert server.username == f"{1700000000 + ttl}:u"


@pytest.mark.parametrize("ttl", [-1, 0, 30, 86401, 10**9])
def test_ttl_refused(ttl: int) -> None:
    with pytest.raises(ValueError):
        turn_credentials(SECRET, URIS3, ttl, NOW, "u")
    with pytest.raises(ValueError):
        turn_credentials(SECRET, [], ttl, NOW, "u")  # refused even when there is nothing to sign


def test_ttl_must_be_an_integer() -> None:
    with pytest.raises(ValueError):
        turn_credentials(SECRET, URIS3, 300.5, NOW, "u")  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        turn_credentials(SECRET, URIS3, True, NOW, "u")


def test_one_string_is_not_a_list_of_uris() -> None:
    with pytest.raises(TypeError):
        turn_credentials(SECRET, "turn:example.com:3478", 300, NOW, "u")


@pytest.mark.parametrize(
    ("user", "expected"),
    [
        ("viewer-1", "viewer-1"),
        ("Consumer.Viewer_42", "Consumer.Viewer_42"),
        ("a:b/c d", "a_b_c_d"),  # ':' would confuse coturn's username separator
        ("ünïcode", "_n_code"),
        ("", None),
        (":::", "___"),
    ],
)
def test_username_sanitising(user: str, expected: str | None) -> None:
    username = turn_username(300, NOW, user)
    assert username == (f"1700000300:{expected}" if expected is not None else "1700000300")
    # Only the expiry separator is a ':'; everything else is in the safe set.
    _, _, rest = username.partition(":")
    assert all(c.isascii() and (c.isalnum() or c in "_.-") for c in rest)


def test_username_length_is_bounded() -> None:
    servers = turn_credentials(SECRET, URIS3, 300, NOW, "x" * 1000)
    username = servers[0].username
    assert len(username) == 256
    assert username.startswith("1700000300:xxx")
    assert servers[0].password == coturn_password(SECRET, username)


def test_expiry_is_now_plus_ttl_truncated() -> None:
    expiry = int(turn_credentials(SECRET, URIS3, 600, 1700000000.999, "u")[0].username.split(":")[0])
    assert expiry == 1700000600


def test_iceserver_is_frozen() -> None:
    server = IceServer(("turn:x",), "1:u", "p", 300)
    with pytest.raises(AttributeError):
        server.ttl = 1  # type: ignore[misc]
