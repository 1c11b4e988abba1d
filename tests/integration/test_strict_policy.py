"""Strict mode, authorization: IAM-style policies per credential, and isolation between accounts.

One in-process server (`--credentials FILE` with ~40 identities, `--limits off`) serves the module. For
every action signalite authorizes (kvs-protocol.md §7.5) the matrices check, through real boto3 clients
and presigned WebSocket handshakes, that

* a credential allowed exactly one action may do that action and nothing else;
* a credential allowed `*` with one action explicitly denied may do everything but that action (the Deny
  is listed before the Allow for half of them: order never matters);

and then wildcards in actions and resources, case rules, NotAction, and the refusal shapes: control plane
401 AccessDeniedException, signaling HTTPS API 401 NotAuthorizedException, WebSocket handshake 403
AccessDeniedException with a JSON body. Account isolation: another account's channels are invisible (by
name and by ARN, on REST and on the WebSocket), even to a policy that names them, and a refused caller
never disturbs the connections already on a channel.
"""

from __future__ import annotations

import asyncio
import base64
import errno
import functools
import http.client
import json
import os
import secrets
import shutil
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote

import aiohttp
import botocore.config
import botocore.session
import pytest
from botocore.exceptions import ClientError

from signalite.auth.sigv4 import Credential, presign_url
from signalite.testing import SignaliteServer, free_port

REGION = "us-west-2"
ACCOUNT = "111111111111"
OTHER_ACCOUNT = "222222222222"
CHANNELS = f"arn:aws:kinesisvideo:*:{ACCOUNT}:channel"

ACTIONS = [
    "ConnectAsMaster",
    "ConnectAsViewer",
    "CreateSignalingChannel",
    "DeleteSignalingChannel",
    "DescribeSignalingChannel",
    "DescribeMediaStorageConfiguration",
    "GetSignalingChannelEndpoint",
    "GetIceServerConfig",
    "SendAlexaOfferToMaster",
    "ListSignalingChannels",
    "ListTagsForResource",
    "TagResource",
    "UntagResource",
    "UpdateSignalingChannel",
    "UpdateMediaStorageConfiguration",
]
SIGNALING_API = {"GetIceServerConfig", "SendAlexaOfferToMaster"}
WEBSOCKET = {"ConnectAsMaster", "ConnectAsViewer"}


@dataclass(frozen=True)
class Identity:
    credential: Credential
    policy: dict[str, Any] | None = None


def _key(label: str) -> str:
    return "AKID" + "".join(ch for ch in label.upper() if ch.isalnum())[:60]


def identity(label: str, *statements: dict[str, Any], account: str = ACCOUNT) -> Identity:
    cred = Credential(_key(label), f"secret/{secrets.token_urlsafe(16)}+", account)
    return Identity(cred, {"Version": "2012-10-17", "Statement": list(statements)} if statements else None)


def allow(action: Any, resource: Any = "*") -> dict[str, Any]:
    return {"Effect": "Allow", "Action": action, "Resource": resource}


def deny(action: Any, resource: Any = "*") -> dict[str, Any]:
    return {"Effect": "Deny", "Action": action, "Resource": resource}


ADMIN = identity("admin")
OUTSIDER = identity("outsider", account=OTHER_ACCOUNT)
# An identity of the other account whose policy names this account's channels: a policy cannot reach across.
CROSS = identity("cross", allow("kinesisvideo:*", f"{CHANNELS}/*"), allow("kinesisvideo:*"), account=OTHER_ACCOUNT)
ONLY = {op: identity(f"only{op}", allow(f"kinesisvideo:{op}")) for op in ACTIONS}


def _all_but(i: int, op: str) -> Identity:
    statements = (allow("*"), deny(f"kinesisvideo:{op}"))
    return identity(f"allbut{op}", *(reversed(statements) if i % 2 else statements))


ALL_BUT = {op: _all_but(i, op) for i, op in enumerate(ACTIONS)}
DESCRIBE_LIST = identity("describelist", allow(["kinesisvideo:Describe*", "kinesisvideo:List*"]))
CAM_ONLY = identity("camonly", allow("kinesisvideo:*", f"{CHANNELS}/cam-*/*"), allow("kinesisvideo:List*"))
CAM_SINGLE = identity("camsingle", allow("kinesisvideo:*", f"{CHANNELS}/cam-?/*"))
CASE = identity(
    "case", allow("KINESISVIDEO:connectas*"), allow("kinesisvideo:DescribeSignalingChannel", f"{CHANNELS}/CAM-*/*")
)
NO_VIEWER_ON_CAM = identity("noviewercam", allow("*"), deny("kinesisvideo:ConnectAsViewer", f"{CHANNELS}/cam-*/*"))
NOT_DELETE = identity("notdelete", {"Effect": "Allow", "NotAction": "kinesisvideo:Delete*", "Resource": "*"})
DENY_ALL = identity("denyall", deny("*"))
TAG_PAIR = identity("tagpair", allow("kinesisvideo:*Tag*", [f"{CHANNELS}/cam-1/*", f"{CHANNELS}/door-1/*"]))

EVERYONE = [ADMIN, OUTSIDER, CROSS, *ONLY.values(), *ALL_BUT.values(), DESCRIBE_LIST, CAM_ONLY, CAM_SINGLE, CASE,
            NO_VIEWER_ON_CAM, NOT_DELETE, DENY_ALL, TAG_PAIR]  # fmt: skip
SECRETS = [i.credential.secret_access_key for i in EVERYONE]

BOTO_CONFIG = botocore.config.Config(retries={"max_attempts": 1}, read_timeout=30, connect_timeout=5)


# ----------------------------------------------------------------------------- server and clients


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
    path = tmp_path_factory.mktemp("strict-policy") / "credentials.json"
    entries = []
    for ident in EVERYONE:
        c = ident.credential
        entry: dict[str, Any] = {"access_key_id": c.access_key_id, "secret_access_key": c.secret_access_key,
                                 "account_id": c.account_id}  # fmt: skip
        if ident.policy is not None:
            entry["policy"] = ident.policy
        entries.append(entry)
    path.write_text(json.dumps({"credentials": entries}))
    settings = {"credentials": str(path), "limits": "off",
                "turn_uri": ("turn:127.0.0.1:3478",), "turn_secret": "policy-turn-secret"}  # fmt: skip
    running = start_server(settings)
    try:
        yield running
    finally:
        running.stop()


_SESSION = botocore.session.get_session()  # one session: the service models are loaded once


class Clients:
    """kinesisvideo and kinesis-video-signaling clients of one identity (created on first use)."""

    def __init__(self, server: SignaliteServer) -> None:
        self.server = server
        self._cache: dict[tuple[str, str], Any] = {}

    def __call__(self, ident: Identity, service: str = "kinesisvideo") -> Any:
        key = (ident.credential.access_key_id, service)
        if key not in self._cache:
            self._cache[key] = _SESSION.create_client(
                service,
                endpoint_url=self.server.endpoint_url,
                region_name=REGION,
                aws_access_key_id=ident.credential.access_key_id,
                aws_secret_access_key=ident.credential.secret_access_key,
                config=BOTO_CONFIG,
            )
        return self._cache[key]


@pytest.fixture(scope="module")
def clients(server: SignaliteServer) -> Clients:
    return Clients(server)


@pytest.fixture(scope="module")
def admin(clients: Clients) -> Any:
    return clients(ADMIN)


@dataclass(frozen=True)
class World:
    main: str  # ARN of the channel most actions target
    alexa: str  # a channel that never has a master (SendAlexaOfferToMaster answers quickly)
    cam1: str
    cam12: str
    door1: str


@pytest.fixture(scope="module")
def world(admin: Any) -> World:
    def make(name: str) -> str:
        return str(admin.create_signaling_channel(ChannelName=name)["ChannelARN"])

    return World(make("main"), make("alexa"), make("cam-1"), make("cam-12"), make("door-1"))


# ----------------------------------------------------------------------------- WebSocket handshakes


@dataclass
class Answer:
    status: int
    headers: dict[str, str]
    body: bytes

    @property
    def code(self) -> str:
        return self.headers.get("x-amzn-errortype", "").split(":")[0]


def ws_url(server: SignaliteServer, ident: Identity, arn: str, client_id: str | None = None) -> str:
    url = f"ws://127.0.0.1:{server.port}/?X-Amz-ChannelARN={quote(arn, safe='')}"
    if client_id is not None:
        url += f"&X-Amz-ClientId={client_id}"
    return presign_url(url, ident.credential, REGION, server.clock.time())


def handshake(server: SignaliteServer, url: str) -> Answer:
    target = url.split(f"127.0.0.1:{server.port}", 1)[1]
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=30)
    try:
        conn.putrequest("GET", target, skip_host=True, skip_accept_encoding=True)
        for k, v in (("Host", f"127.0.0.1:{server.port}"), ("Upgrade", "websocket"), ("Connection", "Upgrade"),
                     ("Sec-WebSocket-Key", base64.b64encode(os.urandom(16)).decode()),
                     ("Sec-WebSocket-Version", "13")):  # fmt: skip
            conn.putheader(k, v)
        conn.endheaders()
        response = conn.getresponse()
        headers = {k.lower(): v for k, v in response.getheaders()}
        return Answer(response.status, headers, b"" if response.status == 101 else response.read())
    finally:
        conn.close()  # an accepted socket is simply dropped again


def assert_json_refusal(answer: Answer, status: int, code: str) -> str:
    assert answer.status == status, (answer.status, answer.headers, answer.body[:300])
    assert answer.code == code, answer.headers
    assert answer.headers.get("content-type", "").startswith("application/json")
    body = json.loads(answer.body)
    assert body["__type"] == code
    message = str(body.get("message") or body.get("Message"))
    assert message
    assert_no_secret(message)
    return message


def assert_no_secret(text: str) -> None:
    for secret in SECRETS:
        assert secret not in text


# ----------------------------------------------------------------------------- one action, one identity

ALLOWED = "allowed"
DENIED = "denied"


def attempt(server: SignaliteServer, clients: Clients, world: World, ident: Identity, op: str) -> str:
    """Try `op` as `ident` against this account's channels: ALLOWED, or DENIED with the right refusal shape."""
    if op in WEBSOCKET:
        answer = handshake(server, ws_url(server, ident, world.main, "matrix-viewer" if op == "ConnectAsViewer"
                                          else None))  # fmt: skip
        if answer.status == 101:
            return ALLOWED
        message = assert_json_refusal(answer, 403, "AccessDeniedException")
        assert f"kinesisvideo:{op}" in message
        return DENIED
    kv, signaling, admin = clients(ident), clients(ident, "kinesis-video-signaling"), clients(ADMIN)
    calls: dict[str, Callable[[], Any]] = {
        "CreateSignalingChannel": lambda: kv.create_signaling_channel(ChannelName=f"made-{uuid.uuid4().hex[:8]}"),
        "DeleteSignalingChannel": lambda: kv.delete_signaling_channel(
            ChannelARN=admin.create_signaling_channel(ChannelName=f"del-{uuid.uuid4().hex[:8]}")["ChannelARN"]
        ),
        "DescribeSignalingChannel": lambda: kv.describe_signaling_channel(ChannelARN=world.main),
        "DescribeMediaStorageConfiguration": lambda: kv.describe_media_storage_configuration(ChannelARN=world.main),
        "GetSignalingChannelEndpoint": lambda: kv.get_signaling_channel_endpoint(
            ChannelARN=world.main, SingleMasterChannelEndpointConfiguration={"Protocols": ["WSS"], "Role": "MASTER"}
        ),
        "ListSignalingChannels": lambda: kv.list_signaling_channels(),
        "ListTagsForResource": lambda: kv.list_tags_for_resource(ResourceARN=world.main),
        "TagResource": lambda: kv.tag_resource(ResourceARN=world.main, Tags=[{"Key": "matrix", "Value": "1"}]),
        "UntagResource": lambda: kv.untag_resource(ResourceARN=world.main, TagKeyList=["matrix"]),
        "UpdateSignalingChannel": lambda: kv.update_signaling_channel(
            ChannelARN=world.main,
            CurrentVersion=admin.describe_signaling_channel(ChannelARN=world.main)["ChannelInfo"]["Version"],
            SingleMasterConfiguration={"MessageTtlSeconds": 60},
        ),
        "UpdateMediaStorageConfiguration": lambda: kv.update_media_storage_configuration(
            ChannelARN=world.main, MediaStorageConfiguration={"Status": "DISABLED"}
        ),
        "GetIceServerConfig": lambda: signaling.get_ice_server_config(ChannelARN=world.main),
        "SendAlexaOfferToMaster": lambda: signaling.send_alexa_offer_to_master(
            ChannelARN=world.alexa, SenderClientId="alexa", MessagePayload="eyJ0eXBlIjoib2ZmZXIifQ=="
        ),
    }
    try:
        calls[op]()
    except ClientError as e:
        code = e.response["Error"]["Code"]
        status = e.response["ResponseMetadata"]["HTTPStatusCode"]
        expected = "NotAuthorizedException" if op in SIGNALING_API else "AccessDeniedException"
        if code in ("AccessDeniedException", "NotAuthorizedException"):
            assert (code, status) == (expected, 401), (op, code, status)
            message = e.response["Error"]["Message"]
            assert f"kinesisvideo:{op}" in message and ident.credential.access_key_id in message, message
            assert_no_secret(message)
            return DENIED
        # Authorized, then refused for a reason of the request itself (no master for Alexa's offer).
        assert (op, code) == ("SendAlexaOfferToMaster", "ResourceNotFoundException"), (op, code, e.response)
        return ALLOWED
    return ALLOWED


def allowed_actions(server: SignaliteServer, clients: Clients, world: World, ident: Identity) -> set[str]:
    return {op for op in ACTIONS if attempt(server, clients, world, ident, op) == ALLOWED}


# ============================================================================= matrices


def test_admin_without_policy_may_do_everything(server: SignaliteServer, clients: Clients, world: World) -> None:
    assert allowed_actions(server, clients, world, ADMIN) == set(ACTIONS)


@pytest.mark.parametrize("op", ACTIONS)
def test_allowing_one_action_allows_only_it(server: SignaliteServer, clients: Clients, world: World, op: str) -> None:
    assert allowed_actions(server, clients, world, ONLY[op]) == {op}


@pytest.mark.parametrize("op", ACTIONS)
def test_explicit_deny_wins_over_star(server: SignaliteServer, clients: Clients, world: World, op: str) -> None:
    assert allowed_actions(server, clients, world, ALL_BUT[op]) == set(ACTIONS) - {op}


def test_deny_everything(server: SignaliteServer, clients: Clients, world: World) -> None:
    assert allowed_actions(server, clients, world, DENY_ALL) == set()


def test_action_wildcards(server: SignaliteServer, clients: Clients, world: World) -> None:
    assert allowed_actions(server, clients, world, DESCRIBE_LIST) == {
        "DescribeSignalingChannel", "DescribeMediaStorageConfiguration", "ListSignalingChannels",
        "ListTagsForResource",
    }  # fmt: skip


def test_not_action(server: SignaliteServer, clients: Clients, world: World) -> None:
    assert allowed_actions(server, clients, world, NOT_DELETE) == set(ACTIONS) - {"DeleteSignalingChannel"}


def test_actions_are_case_insensitive_resources_are_not(
    server: SignaliteServer, clients: Clients, world: World
) -> None:
    # "KINESISVIDEO:connectas*" matches both connect actions; ".../CAM-*/*" does not match "cam-1".
    assert allowed_actions(server, clients, world, CASE) == {"ConnectAsMaster", "ConnectAsViewer"}
    with pytest.raises(ClientError) as info:
        clients(CASE).describe_signaling_channel(ChannelARN=world.cam1)
    assert info.value.response["Error"]["Code"] == "AccessDeniedException"


# ============================================================================= resource wildcards


def outcome(fn: Callable[[], Any]) -> str:
    try:
        fn()
    except ClientError as e:
        code = str(e.response["Error"]["Code"])
        if code in ("AccessDeniedException", "NotAuthorizedException"):
            assert e.response["ResponseMetadata"]["HTTPStatusCode"] == 401
            return DENIED
        return code
    return ALLOWED


def test_resource_wildcard_by_arn_and_by_name(clients: Clients, world: World) -> None:
    kv = clients(CAM_ONLY)
    assert outcome(lambda: kv.describe_signaling_channel(ChannelARN=world.cam1)) == ALLOWED
    assert outcome(lambda: kv.describe_signaling_channel(ChannelName="cam-1")) == ALLOWED
    assert outcome(lambda: kv.describe_signaling_channel(ChannelARN=world.cam12)) == ALLOWED
    assert outcome(lambda: kv.describe_signaling_channel(ChannelARN=world.door1)) == DENIED
    assert outcome(lambda: kv.describe_signaling_channel(ChannelName="door-1")) == DENIED
    assert outcome(lambda: kv.describe_media_storage_configuration(ChannelName="door-1")) == DENIED
    assert outcome(lambda: kv.tag_resource(ResourceARN=world.cam1, Tags=[{"Key": "a", "Value": "b"}])) == ALLOWED
    assert outcome(lambda: kv.tag_resource(ResourceARN=world.door1, Tags=[{"Key": "a", "Value": "b"}])) == DENIED
    assert outcome(lambda: kv.list_signaling_channels()) == ALLOWED
    # Creating: the resource is the ARN the channel would get.
    assert outcome(lambda: kv.create_signaling_channel(ChannelName=f"cam-{uuid.uuid4().hex[:6]}")) == ALLOWED
    assert outcome(lambda: kv.create_signaling_channel(ChannelName=f"door-{uuid.uuid4().hex[:6]}")) == DENIED
    signaling = clients(CAM_ONLY, "kinesis-video-signaling")
    assert outcome(lambda: signaling.get_ice_server_config(ChannelARN=world.cam1)) == ALLOWED
    assert outcome(lambda: signaling.get_ice_server_config(ChannelARN=world.door1)) == DENIED


def test_question_mark_matches_one_character(server: SignaliteServer, clients: Clients, world: World) -> None:
    kv = clients(CAM_SINGLE)
    assert outcome(lambda: kv.describe_signaling_channel(ChannelARN=world.cam1)) == ALLOWED
    assert outcome(lambda: kv.describe_signaling_channel(ChannelARN=world.cam12)) == DENIED
    assert outcome(lambda: kv.list_signaling_channels()) == DENIED  # List needs Resource "*"
    assert handshake(server, ws_url(server, CAM_SINGLE, world.cam1)).status == 101
    assert_json_refusal(handshake(server, ws_url(server, CAM_SINGLE, world.cam12)), 403, "AccessDeniedException")


def test_resource_list(clients: Clients, world: World) -> None:
    kv = clients(TAG_PAIR)
    for arn, expected in ((world.cam1, ALLOWED), (world.door1, ALLOWED), (world.cam12, DENIED), (world.main, DENIED)):
        assert outcome(functools.partial(kv.list_tags_for_resource, ResourceARN=arn)) == expected, arn
    assert outcome(lambda: kv.describe_signaling_channel(ChannelARN=world.cam1)) == DENIED


def test_websocket_deny_on_some_channels(server: SignaliteServer, world: World) -> None:
    # Allow "*" but Deny ConnectAsViewer on cam-*: viewers refused there only; masters everywhere.
    assert_json_refusal(handshake(server, ws_url(server, NO_VIEWER_ON_CAM, world.cam1, "v")), 403,
                        "AccessDeniedException")  # fmt: skip
    assert_json_refusal(handshake(server, ws_url(server, NO_VIEWER_ON_CAM, world.cam12, "v")), 403,
                        "AccessDeniedException")  # fmt: skip
    assert handshake(server, ws_url(server, NO_VIEWER_ON_CAM, world.door1, "v")).status == 101
    assert handshake(server, ws_url(server, NO_VIEWER_ON_CAM, world.cam1)).status == 101


async def test_refused_connect_does_not_displace_anyone(server: SignaliteServer, admin: Any, world: World) -> None:
    arn = admin.create_signaling_channel(ChannelName=f"displace-{uuid.uuid4().hex[:6]}")["ChannelARN"]
    async with aiohttp.ClientSession() as session:
        master = await session.ws_connect(ws_url(server, ADMIN, arn))
        viewer = await session.ws_connect(ws_url(server, ADMIN, arn, "v1"))
        # Denied by policy, and from another account: neither may take the master's or v1's place.
        assert_json_refusal(handshake(server, ws_url(server, ONLY["ConnectAsViewer"], arn)), 403,
                            "AccessDeniedException")  # fmt: skip
        assert_json_refusal(handshake(server, ws_url(server, ONLY["ConnectAsMaster"], arn, "v1")), 403,
                            "AccessDeniedException")  # fmt: skip
        assert_json_refusal(handshake(server, ws_url(server, OUTSIDER, arn)), 404, "ResourceNotFoundException")
        assert_json_refusal(handshake(server, ws_url(server, OUTSIDER, arn, "v1")), 404, "ResourceNotFoundException")
        payload = "eyJ0eXBlIjoib2ZmZXIifQ=="
        await viewer.send_str(json.dumps({"action": "SDP_OFFER", "messagePayload": payload}))
        got = json.loads(await asyncio.wait_for(master.receive_str(), 5))
        assert got["senderClientId"] == "v1" and got["messagePayload"] == payload
        await master.send_str(json.dumps({"action": "SDP_ANSWER", "messagePayload": payload,
                                          "recipientClientId": "v1"}))  # fmt: skip
        got = json.loads(await asyncio.wait_for(viewer.receive_str(), 5))
        assert got["messageType"] == "SDP_ANSWER"
        await viewer.close()
        await master.close()


# ============================================================================= account isolation


def test_same_name_in_two_accounts_are_two_channels(clients: Clients) -> None:
    name = f"shared-{uuid.uuid4().hex[:6]}"
    mine = clients(ADMIN).create_signaling_channel(ChannelName=name)["ChannelARN"]
    theirs = clients(OUTSIDER).create_signaling_channel(ChannelName=name)["ChannelARN"]
    assert mine != theirs
    assert f":{ACCOUNT}:channel/{name}/" in mine and f":{OTHER_ACCOUNT}:channel/{name}/" in theirs
    assert clients(ADMIN).describe_signaling_channel(ChannelName=name)["ChannelInfo"]["ChannelARN"] == mine
    assert clients(OUTSIDER).describe_signaling_channel(ChannelName=name)["ChannelInfo"]["ChannelARN"] == theirs


@pytest.mark.parametrize("stranger", [OUTSIDER, CROSS], ids=["no-policy", "policy-naming-the-channels"])
def test_other_accounts_channels_are_invisible(
    server: SignaliteServer, clients: Clients, world: World, stranger: Identity
) -> None:
    kv, signaling, admin = clients(stranger), clients(stranger, "kinesis-video-signaling"), clients(ADMIN)
    before = admin.describe_signaling_channel(ChannelARN=world.door1)["ChannelInfo"]
    tags_before = admin.list_tags_for_resource(ResourceARN=world.door1)["Tags"]
    arn = world.door1
    not_found = "ResourceNotFoundException"
    attempts: dict[str, Callable[[], Any]] = {
        "describe by name": lambda: kv.describe_signaling_channel(ChannelName="door-1"),
        "describe by arn": lambda: kv.describe_signaling_channel(ChannelARN=arn),
        "media storage by name": lambda: kv.describe_media_storage_configuration(ChannelName="door-1"),
        "media storage by arn": lambda: kv.describe_media_storage_configuration(ChannelARN=arn),
        "endpoint": lambda: kv.get_signaling_channel_endpoint(ChannelARN=arn),
        "list tags": lambda: kv.list_tags_for_resource(ResourceARN=arn),
        "tag": lambda: kv.tag_resource(ResourceARN=arn, Tags=[{"Key": "pwned", "Value": "1"}]),
        "untag": lambda: kv.untag_resource(ResourceARN=arn, TagKeyList=["k"]),
        "update": lambda: kv.update_signaling_channel(ChannelARN=arn, CurrentVersion=before["Version"],
                                                      SingleMasterConfiguration={"MessageTtlSeconds": 5}),
        "update media storage": lambda: kv.update_media_storage_configuration(
            ChannelARN=arn, MediaStorageConfiguration={"Status": "DISABLED"}),
        "delete": lambda: kv.delete_signaling_channel(ChannelARN=arn),
        "ice servers": lambda: signaling.get_ice_server_config(ChannelARN=arn),
        "alexa": lambda: signaling.send_alexa_offer_to_master(ChannelARN=arn, SenderClientId="x",
                                                              MessagePayload="eyJ0eXBlIjoib2ZmZXIifQ=="),
    }  # fmt: skip
    results = {name: outcome(fn) for name, fn in attempts.items()}
    assert results == dict.fromkeys(attempts, not_found)
    listed = kv.list_signaling_channels()["ChannelInfoList"]
    assert all(f":{ACCOUNT}:" not in c["ChannelARN"] for c in listed), listed
    for client_id in (None, "v-stranger"):
        assert_json_refusal(handshake(server, ws_url(server, stranger, arn, client_id)), 404, not_found)
    # Nothing changed for the owner.
    after = admin.describe_signaling_channel(ChannelARN=arn)["ChannelInfo"]
    assert after == before
    assert admin.list_tags_for_resource(ResourceARN=arn)["Tags"] == tags_before


def test_the_owner_does_not_see_the_outsiders_channels(clients: Clients) -> None:
    name = f"theirs-{uuid.uuid4().hex[:6]}"
    theirs = clients(OUTSIDER).create_signaling_channel(ChannelName=name)["ChannelARN"]
    admin = clients(ADMIN)
    assert outcome(lambda: admin.describe_signaling_channel(ChannelName=name)) == "ResourceNotFoundException"
    assert outcome(lambda: admin.describe_signaling_channel(ChannelARN=theirs)) == "ResourceNotFoundException"
    assert outcome(lambda: admin.delete_signaling_channel(ChannelARN=theirs)) == "ResourceNotFoundException"
    assert theirs not in [c["ChannelARN"] for c in admin.list_signaling_channels()["ChannelInfoList"]]
    assert clients(OUTSIDER).describe_signaling_channel(ChannelARN=theirs)["ChannelInfo"]["ChannelName"] == name


def test_health_never_lists_identities(server: SignaliteServer) -> None:
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=10)
    conn.request("GET", "/health")
    text = conn.getresponse().read().decode()
    conn.close()
    assert json.loads(text)["auth_mode"] == "strict"
    assert_no_secret(text)
    assert ADMIN.credential.access_key_id not in text


def test_policy_examples_file_round_trip(tmp_path: Path) -> None:
    # The documented TOML form of a policy works end to end on a server of its own.
    path = tmp_path / "credentials.toml"
    path.write_text(
        """
[[credentials]]
access_key_id = "AKIDTOMLVIEWER"
secret_access_key = "toml-secret"
account_id = "333333333333"

[[credentials.policy.Statement]]
Effect = "Allow"
Action = ["kinesisvideo:List*"]
Resource = "*"
"""
    )
    toml_server = start_server({"credentials": str(path)})
    try:
        kv = _SESSION.create_client("kinesisvideo", endpoint_url=toml_server.endpoint_url, region_name=REGION,
                                    aws_access_key_id="AKIDTOMLVIEWER", aws_secret_access_key="toml-secret",
                                    config=BOTO_CONFIG)  # fmt: skip
        assert kv.list_signaling_channels()["ChannelInfoList"] == []
        assert outcome(lambda: kv.create_signaling_channel(ChannelName="nope")) == DENIED
    finally:
        toml_server.stop()
