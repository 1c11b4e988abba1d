"""The KVS WebRTC JS SDK (`amazon-kinesis-video-streams-webrtc`) in Node, as master and viewer, against signalite.

`node/kvs_signaling.mjs` follows the SDK's own example flow with the real AWS SDK for JavaScript v3 clients
(DescribeSignalingChannel -> GetSignalingChannelEndpoint -> GetIceServerConfig on the HTTPS endpoint ->
SignalingClient on the WSS endpoint -> offer / answer / ICE candidates both ways), then calls
SendAlexaOfferToMaster with the SDK master connected and with none, deletes the channel under a connected
master, and opens an SDK viewer on the deleted channel. It prints what it observed as one JSON object;
every assertion is made here.

signalite runs as a subprocess with `--tls self-signed` (the SDK refuses endpoints that are not `wss://`)
and Node trusts its CA through NODE_EXTRA_CA_CERTS. Node's SignalingClient gathers no ICE candidates and
everything talks to 127.0.0.1, so no network namespace is needed.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
import re
import secrets
import shutil
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from signalite.testing import SignaliteServer

NODE_DIR = Path(__file__).parent / "node"
SCRIPT = NODE_DIR / "kvs_signaling.mjs"
REGION = "us-west-2"
TURN_URIS = ["turn:127.0.0.1:3478?transport=udp", "turn:127.0.0.1:3478?transport=tcp"]
TURN_TTL = 300  # signalite's default --turn-ttl
INSTALL_HINT = "./scripts/test installs it (Debian nodejs/npm, then `npm install` in tests/e2e/node)"
ID_PATTERN = re.compile(r"^[A-Za-z0-9_.-]{1,256}$")
B64_PATTERN = re.compile(r"^[A-Za-z0-9+/]+={0,2}$")


class Drain:
    """Reads the server's combined output on a thread so the pipe never fills; shown when a test fails."""

    def __init__(self, stream: Any) -> None:
        self.lines: list[str] = []
        self._thread = threading.Thread(target=self._run, args=(stream,), daemon=True)
        self._thread.start()

    def _run(self, stream: Any) -> None:
        for raw in iter(stream.readline, b""):
            self.lines.append(raw.decode(errors="replace").rstrip("\n"))

    def text(self, last: int = 60) -> str:
        return "\n".join(self.lines[-last:])


def require_node() -> str:
    node = shutil.which("node")
    if node is None:
        pytest.fail(f"node is not installed: {INSTALL_HINT}")
    for package in (
        "amazon-kinesis-video-streams-webrtc",
        "@aws-sdk/client-kinesis-video",
        "@aws-sdk/client-kinesis-video-signaling",
        "ws",
    ):
        if not (NODE_DIR / "node_modules" / package / "package.json").is_file():
            pytest.fail(f"npm package {package} is missing from tests/e2e/node/node_modules: {INSTALL_HINT}")
    return node


def node_env(endpoint: str, ca: Path | None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("NODE_TLS_REJECT_UNAUTHORIZED", "NODE_EXTRA_CA_CERTS")}
    env.update(SIGNALITE_ENDPOINT=endpoint, AWS_REGION_UNDER_TEST=REGION, NODE_NO_WARNINGS="1")
    if ca is not None:
        env["NODE_EXTRA_CA_CERTS"] = str(ca)
    return env


def run_node(node: str, endpoint: str, ca: Path | None) -> tuple[subprocess.CompletedProcess[str], dict[str, Any]]:
    proc = subprocess.run(
        [node, str(SCRIPT)], cwd=NODE_DIR, env=node_env(endpoint, ca), capture_output=True, text=True, timeout=60
    )
    lines = [line for line in proc.stdout.splitlines() if line.strip()]
    try:
        result = json.loads(lines[-1])
    except (IndexError, json.JSONDecodeError):
        pytest.fail(f"kvs_signaling.mjs printed no JSON result (exit {proc.returncode}):\n{proc.stdout}\n{proc.stderr}")
    return proc, result


class Run:
    def __init__(self, result: dict[str, Any], secret: str, started: float, finished: float, server_log: str) -> None:
        self.r = result
        self.secret = secret
        self.started = started
        self.finished = finished
        self.server_log = server_log


@pytest.fixture(scope="module")
def server_and_secret() -> Iterator[tuple[SignaliteServer, str, Drain]]:
    secret = secrets.token_urlsafe(24)
    args = ["--tls", "self-signed", "--turn-secret", secret]
    for uri in TURN_URIS:
        args += ["--turn-uri", uri]
    server = SignaliteServer(subprocess=True, extra_args=args)
    server.start()
    drain = Drain(server.process.stdout)
    try:
        yield server, secret, drain
    finally:
        server.stop()


@pytest.fixture(scope="module")
def run(server_and_secret: tuple[SignaliteServer, str, Drain]) -> Run:
    server, secret, drain = server_and_secret
    node = require_node()
    ca = server.data_dir / "tls" / "ca.pem"
    assert ca.is_file(), f"--tls self-signed wrote no CA at {ca}"
    started = time.time()
    proc, result = run_node(node, server.endpoint_url, ca)
    finished = time.time()
    assert proc.returncode == 0 and "fatal" not in result, (
        f"scenario failed (exit {proc.returncode}): {result.get('fatal')}\nsteps: {result.get('steps')}\n"
        f"node stderr:\n{proc.stderr[-4000:]}\nserver:\n{drain.text()}"
    )
    assert result["steps"][-1] == "done"
    return Run(result, secret, started, finished, drain.text())


def frames(raw: list[str]) -> list[dict[str, Any]]:
    return [json.loads(f) for f in raw]


# --- control plane, the example's way ---------------------------------------------------------------------


def test_example_flow_describe_and_endpoints(run: Run, server_and_secret: tuple[SignaliteServer, str, Drain]) -> None:
    server = server_and_secret[0]
    r = run.r
    arn = r["channel"]["arn"]
    assert arn == r["created_channel_arn"]
    assert re.fullmatch(rf"arn:aws:kinesisvideo:{REGION}:\d{{12}}:channel/{re.escape(r['channel_name'])}/\d{{13}}", arn)
    assert r["channel"]["status"] == "ACTIVE"
    assert r["channel"]["type"] == "SINGLE_MASTER"
    assert r["channel"]["message_ttl_seconds"] == 60
    host = f"127.0.0.1:{server.port}"
    for role in ("master", "viewer"):
        assert r["endpoints"][role] == {"HTTPS": f"https://{host}", "WSS": f"wss://{host}"}, role
    # One entry per requested protocol, in the order asked for.
    assert [e["Protocol"] for e in r["endpoint_lists"]["master"]] == ["HTTPS", "WSS"]
    assert [e["Protocol"] for e in r["endpoint_lists"]["viewer"]] == ["WSS", "HTTPS"]


def test_get_ice_server_config_turn_rest_credentials(run: Run) -> None:
    for role in ("master", "viewer"):
        servers = run.r["ice_server_list"][role]
        assert isinstance(servers, list) and len(servers) == 1, (role, servers)
        server = servers[0]
        assert set(server) == {"Uris", "Username", "Password", "Ttl"}, server
        assert server["Uris"] == TURN_URIS
        assert server["Ttl"] == TURN_TTL
        expiry, sep, user = server["Username"].partition(":")
        assert sep == ":" and expiry.isdigit(), server["Username"]
        # expiry = the server's now + ttl, and the server's now lies within the node run
        assert int(run.started) + TURN_TTL - 1 <= int(expiry) <= int(run.finished) + TURN_TTL + 1, server["Username"]
        assert ID_PATTERN.fullmatch(user), server["Username"]
        expected = base64.b64encode(
            hmac.new(run.secret.encode(), server["Username"].encode(), hashlib.sha1).digest()
        ).decode()
        assert server["Password"] == expected, "Password is not base64(HMAC-SHA1(turn-secret, Username))"


# --- WebSocket signaling through the SDK -------------------------------------------------------------------


def test_master_gets_the_viewers_offer_and_candidates(run: Run) -> None:
    r = run.r
    viewer_id = r["viewer_client_id"]
    master = r["master"]
    assert master["opens"] == 1 and master["errors"] == [] and master["status_responses"] == []
    offers = [o for o in master["sdp_offers"] if o["remote_client_id"] == viewer_id]
    assert offers == [{"payload": r["sent"]["offer"], "remote_client_id": viewer_id}]
    assert r["sent"]["offer"]["type"] == "offer" and r["sent"]["offer"]["sdp"].startswith("v=0\r\n")
    assert master["ice_candidates"] == [
        {"payload": c, "remote_client_id": viewer_id} for c in r["sent"]["viewer_candidates"]
    ]
    assert len(master["ice_candidates"]) == 3


def test_viewer_gets_the_answer_and_candidates(run: Run) -> None:
    r = run.r
    viewer_id = r["viewer_client_id"]
    viewer = r["viewer"]
    assert viewer["opens"] == 1 and viewer["errors"] == [] and viewer["status_responses"] == []
    answer = r["sent"]["answers"][viewer_id]
    assert answer["type"] == "answer" and f"s=answer-for-{viewer_id}\r\n" in answer["sdp"]
    # signalite sends no senderClientId towards viewers (kvs-protocol.md open question: a viewer only
    # ever hears from the master), so the SDK reports the sender as undefined.
    assert viewer["sdp_answers"] == [{"payload": answer, "remote_client_id": None}]
    assert viewer["sdp_offers"] == []
    assert viewer["ice_candidates"] == [
        {"payload": c, "remote_client_id": None} for c in r["sent"]["master_candidates"]
    ]
    assert len(viewer["ice_candidates"]) == 3


def test_frames_on_the_wire_relay_payloads_verbatim(run: Run) -> None:
    r = run.r
    viewer_id = r["viewer_client_id"]
    viewer_sent = frames(r["viewer"]["sent_frames"])
    master_sent = frames(r["master"]["sent_frames"])
    master_got = frames(r["master"]["received_frames"])
    viewer_got = frames(r["viewer"]["received_frames"])

    # What the SDK put on the wire (JSON of base64(JSON)): a viewer names no recipient, the master does.
    assert [f["action"] for f in viewer_sent] == ["SDP_OFFER", "ICE_CANDIDATE", "ICE_CANDIDATE", "ICE_CANDIDATE"]
    assert all("recipientClientId" not in f for f in viewer_sent)
    to_viewer = [f for f in master_sent if f.get("recipientClientId") == viewer_id]
    assert [f["action"] for f in to_viewer] == ["SDP_ANSWER", "ICE_CANDIDATE", "ICE_CANDIDATE", "ICE_CANDIDATE"]

    # Deliveries carry exactly senderClientId (towards the master), messageType, messagePayload - the
    # sender's base64 string unchanged, in the order it was sent.
    from_viewer = [f for f in master_got if f.get("senderClientId") == viewer_id]
    assert [set(f) for f in from_viewer] == [{"senderClientId", "messageType", "messagePayload"}] * 4
    assert [(f["messageType"], f["messagePayload"]) for f in from_viewer] == [
        (f["action"], f["messagePayload"]) for f in viewer_sent
    ]
    assert [set(f) for f in viewer_got] == [{"messageType", "messagePayload"}] * 4
    assert [(f["messageType"], f["messagePayload"]) for f in viewer_got] == [
        (f["action"], f["messagePayload"]) for f in to_viewer
    ]
    for f in from_viewer + viewer_got:
        assert B64_PATTERN.fullmatch(f["messagePayload"])
    decoded = [json.loads(base64.b64decode(f["messagePayload"])) for f in viewer_got]
    assert decoded == [r["sent"]["answers"][viewer_id], *r["sent"]["master_candidates"]]


# --- SendAlexaOfferToMaster through @aws-sdk/client-kinesis-video-signaling -------------------------------


def test_send_alexa_offer_to_master_returns_the_sdk_masters_answer(run: Run) -> None:
    r = run.r
    alexa = r["alexa"]
    sender = alexa["sender_client_id"]
    assert "error" not in alexa, alexa.get("error")
    assert alexa["http_status"] == 200
    # The SDK master saw it as an ordinary SDP_OFFER from SenderClientId, payload intact ...
    got = [o for o in r["master"]["sdp_offers"] if o["remote_client_id"] == sender]
    assert got == [{"payload": alexa["offer"], "remote_client_id": sender}]
    raw = [f for f in frames(r["master"]["received_frames"]) if f.get("senderClientId") == sender]
    assert raw == [{"senderClientId": sender, "messageType": "SDP_OFFER", "messagePayload": alexa["message_payload"]}]
    # ... and its SDP_ANSWER to that client id came back as Answer, verbatim.
    answer_frames = [f for f in frames(r["master"]["sent_frames"]) if f.get("recipientClientId") == sender]
    assert [f["action"] for f in answer_frames] == ["SDP_ANSWER"]
    assert alexa["answer"] == answer_frames[0]["messagePayload"]
    assert alexa["answer_decoded"] == r["sent"]["answers"][sender]
    assert f"s=answer-for-{sender}\r\n" in alexa["answer_decoded"]["sdp"]
    # The viewer heard nothing of it.
    assert len(r["viewer"]["received_frames"]) == 4


def test_send_alexa_offer_to_master_without_a_master_fails_with_a_modeled_error(run: Run) -> None:
    outcome = run.r["alexa_no_master"]
    assert "unexpected_success" not in outcome, outcome
    error = outcome["error"]
    assert error["name"] == "ResourceNotFoundException", error
    assert error["http_status"] == 404 and error["fault"] == "client", error
    assert error["message"], error
    # Refused at once when nobody is there to answer, not after the answer timeout.
    assert outcome["elapsed_ms"] < 3000, outcome


# --- channel deletion ---------------------------------------------------------------------------------------


def test_deleting_the_channel_sends_go_away_and_closes_the_sdk_master(run: Run) -> None:
    rec = run.r["master_on_delete"]
    assert rec["opens"] == 1 and rec["errors"] == [], rec
    assert "wait_error" not in rec, rec["wait_error"]
    assert rec["closes"] == 1
    assert frames(rec["received_frames"]) == [{"messageType": "GO_AWAY"}]
    error = run.r["ice_after_delete"]["error"]
    assert (error["name"], error["http_status"]) == ("ResourceNotFoundException", 404), error


def test_sdk_viewer_on_a_deleted_channel_gets_error_then_close(run: Run) -> None:
    rec = run.r["viewer_on_deleted_channel"]
    assert "wait_error" not in rec, f"the SDK viewer hung: {rec['wait_error']}"
    assert rec["events"] == ["error", "close"], rec["events"]
    assert rec["opens"] == 0 and rec["received_frames"] == []
    # The browser WebSocket API hides the status; Node's `ws` names it: the handshake was refused with 404.
    assert [e["message"] for e in rec["errors"]] == ["Unexpected server response: 404"], rec["errors"]


# --- TLS is really checked --------------------------------------------------------------------------------


def test_without_the_ca_node_refuses_the_self_signed_endpoint(
    server_and_secret: tuple[SignaliteServer, str, Drain],
) -> None:
    server = server_and_secret[0]
    proc, result = run_node(require_node(), server.endpoint_url, ca=None)
    assert proc.returncode == 1, result
    assert result["steps"] == ["CreateSignalingChannel"], result["steps"]
    assert result["fatal_error"]["code"] in {"SELF_SIGNED_CERT_IN_CHAIN", "UNABLE_TO_VERIFY_LEAF_SIGNATURE"}, result
