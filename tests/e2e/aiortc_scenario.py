"""aiortc master and viewer set up a WebRTC session through signalite; prints one JSON result.

Run INSIDE a private network namespace (tests/e2e/netns.py): it starts everything it needs there —
signalite, coturn for the relay modes, both peers — and talks to 127.0.0.1 only.

    python aiortc_scenario.py direct           # host candidates on 127.0.0.1
    python aiortc_scenario.py relay            # relay-only via coturn, TURN over UDP
    python aiortc_scenario.py relay-tcp        # relay-only via coturn, TURN over TCP
    python aiortc_scenario.py relay-bad-secret # signalite mints credentials coturn must refuse

The flow is the KVS SDKs' own: CreateSignalingChannel, GetSignalingChannelEndpoint (MASTER, VIEWER;
WSS + HTTPS), GetIceServerConfig on each role's HTTPS endpoint (boto3 `kinesis-video-signaling`),
then the signaling WebSocket (aiohttp, SigV4-presigned by botocore) with KVS frames: the viewer
sends SDP_OFFER, the master answers with `recipientClientId`. Candidates are trickled: they are
taken out of the SDP and sent as ICE_CANDIDATE frames only, so the session cannot connect unless
signalite relays those frames both ways. The viewer opens a data channel and sends "ping"; the
master answers "pong". Nothing is asserted here: the pytest test (test_aiortc.py) reads the JSON.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import secrets
import shutil
import subprocess
import sys
import tempfile
import time
import traceback
import urllib.parse
from pathlib import Path
from typing import Any

import aiohttp
import aioice.ice
import boto3
from aiortc import (
    RTCConfiguration,
    RTCDataChannel,
    RTCIceServer,
    RTCIceTransportPolicy,
    RTCPeerConnection,
    RTCSessionDescription,
)
from aiortc.sdp import candidate_from_sdp
from botocore.auth import SigV4QueryAuth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials

sys.path.insert(0, str(Path(__file__).resolve().parent))
from coturn import Coturn

from signalite.testing import free_port, wait_healthy

# aioice gathers host candidates from every interface except loopback (`get_host_addresses` drops
# 127.0.0.1 and ::1), and has no option to keep it. In the private namespace loopback is the only
# interface, so without help there would be no host candidate at all. `Connection.gather_candidates`
# looks the function up in the `aioice.ice` module at call time, so replacing that module attribute
# is the narrowest hook: IPv4 host candidates come from 127.0.0.1 only — never from a real address,
# even if this script were run outside the namespace. (With the relay policy aioice does not gather
# host candidates at all, so this only matters for the direct mode.)


def _loopback_host_addresses(use_ipv4: bool, use_ipv6: bool) -> list[str]:
    return ["127.0.0.1"] if use_ipv4 else []


aioice.ice.get_host_addresses = _loopback_host_addresses

REGION = "us-east-1"
CREDS = {"aws_access_key_id": "AKIDAIORTCE2E", "aws_secret_access_key": "aiortc-e2e-secret"}
VIEWER_ID = "aiortc-viewer-1"
CONNECT_TIMEOUT = 15.0  # positive modes: connected + ping/pong well within this
NEGATIVE_WAIT = 8.0  # bad-secret mode: how long we watch for a connection that must not happen
MODES = ("direct", "relay", "relay-tcp", "relay-bad-secret")


def b64json(obj: dict[str, Any]) -> str:
    return base64.b64encode(json.dumps(obj).encode()).decode()


def unb64json(payload: str) -> dict[str, Any]:
    return json.loads(base64.b64decode(payload))


def split_candidates(sdp: str) -> tuple[str, list[dict[str, Any]]]:
    """Take the candidates out of an SDP: (SDP without a=candidate/end-of-candidates, trickle candidates)."""
    kept: list[str] = []
    candidates: list[dict[str, Any]] = []
    mline = -1
    mid: str | None = None
    pending: list[str] = []

    def flush() -> None:
        for c in pending:
            candidates.append({"candidate": c, "sdpMid": mid, "sdpMLineIndex": mline})
        pending.clear()

    for line in sdp.splitlines():
        if line.startswith("m="):
            flush()
            mline += 1
            mid = None
        elif line.startswith("a=mid:"):
            mid = line[len("a=mid:") :]
        if line.startswith("a=candidate:"):
            pending.append(line[len("a=") :])  # "candidate:<foundation> 1 udp ..." as browsers send it
            continue
        if line == "a=end-of-candidates":
            continue
        kept.append(line)
    flush()
    return "\r\n".join(kept) + "\r\n", candidates


def presign(ws_endpoint: str, params: dict[str, str]) -> str:
    """The presigned WebSocket URL a KVS SDK builds (service kinesisvideo, 299 s, host signed)."""
    request = AWSRequest(method="GET", url=f"{ws_endpoint}?{urllib.parse.urlencode(params)}")
    SigV4QueryAuth(
        Credentials(CREDS["aws_access_key_id"], CREDS["aws_secret_access_key"]), "kinesisvideo", REGION, expires=299
    ).add_auth(request)
    return str(request.url)


def control_plane(endpoint_url: str, channel_name: str) -> dict[str, Any]:
    """CreateSignalingChannel, GetSignalingChannelEndpoint per role, GetIceServerConfig per role."""
    kv = boto3.client("kinesisvideo", endpoint_url=endpoint_url, region_name=REGION, **CREDS)
    arn = kv.create_signaling_channel(ChannelName=channel_name, ChannelType="SINGLE_MASTER")["ChannelARN"]
    out: dict[str, Any] = {"arn": arn, "issued_at": time.time()}
    for role in ("MASTER", "VIEWER"):
        resp = kv.get_signaling_channel_endpoint(
            ChannelARN=arn,
            SingleMasterChannelEndpointConfiguration={"Protocols": ["WSS", "HTTPS"], "Role": role},
        )
        endpoints = {e["Protocol"]: e["ResourceEndpoint"] for e in resp["ResourceEndpointList"]}
        signaling = boto3.client(
            "kinesis-video-signaling", endpoint_url=endpoints["HTTPS"], region_name=REGION, **CREDS
        )
        kwargs = {"ChannelARN": arn}
        if role == "VIEWER":
            kwargs["ClientId"] = VIEWER_ID
        ice = signaling.get_ice_server_config(**kwargs)["IceServerList"]
        out[role] = {"endpoints": endpoints, "ice_servers": ice}
    return out


class Peer:
    """One aiortc RTCPeerConnection whose signaling goes through a signalite WebSocket."""

    def __init__(self, role: str, config: RTCConfiguration) -> None:
        self.role = role
        self.pc = RTCPeerConnection(config)
        self.ws: aiohttp.ClientWebSocketResponse | None = None
        self.remote_client_id: str | None = None  # master: the viewer that sent the offer
        self.sent: dict[str, int] = {}
        self.received: dict[str, int] = {}
        self.other_frames: list[str] = []  # STATUS_RESPONSE, GO_AWAY, ... (verbatim, for the report)
        self.sdp_candidate_lines_received = 0
        self.add_candidate_errors: list[str] = []
        self.states: list[str] = []
        self.connected = asyncio.Event()
        self.dc_messages: list[str] = []
        self.pong = asyncio.Event()
        self.pc.on("connectionstatechange", self._on_state)

    def _on_state(self) -> None:
        self.states.append(self.pc.connectionState)
        if self.pc.connectionState == "connected":
            self.connected.set()

    async def open(self, session: aiohttp.ClientSession, url: str) -> None:
        self.ws = await session.ws_connect(url, heartbeat=None, autoping=True)

    async def send(self, action: str, payload: dict[str, Any]) -> None:
        frame: dict[str, Any] = {"action": action, "messagePayload": b64json(payload)}
        if self.role == "MASTER":
            frame["recipientClientId"] = self.remote_client_id
        assert self.ws is not None
        await self.ws.send_str(json.dumps(frame))
        self.sent[action] = self.sent.get(action, 0) + 1

    async def send_description(self, action: str) -> None:
        """Send our local description without candidates, then each candidate as an ICE_CANDIDATE frame."""
        desc = self.pc.localDescription
        sdp, candidates = split_candidates(desc.sdp)
        await self.send(action, {"type": desc.type, "sdp": sdp})
        for c in candidates:
            await self.send("ICE_CANDIDATE", c)

    async def read_loop(self) -> None:
        """Handle frames one at a time, in order (an offer is applied before its candidates)."""
        assert self.ws is not None
        async for msg in self.ws:
            if msg.type != aiohttp.WSMsgType.TEXT:
                self.other_frames.append(f"non-text frame {msg.type}")
                continue
            frame = json.loads(msg.data)
            kind = frame.get("messageType", "?")
            self.received[kind] = self.received.get(kind, 0) + 1
            if kind == "SDP_OFFER" and self.role == "MASTER":
                self.remote_client_id = frame["senderClientId"]
                await self._on_description(unb64json(frame["messagePayload"]))
                await self.pc.setLocalDescription(await self.pc.createAnswer())
                await self.send_description("SDP_ANSWER")
            elif kind == "SDP_ANSWER" and self.role == "VIEWER":
                await self._on_description(unb64json(frame["messagePayload"]))
            elif kind == "ICE_CANDIDATE":
                await self._on_candidate(unb64json(frame["messagePayload"]))
            else:
                self.other_frames.append(msg.data[:500])

    async def _on_description(self, desc: dict[str, Any]) -> None:
        self.sdp_candidate_lines_received += desc["sdp"].count("a=candidate:")
        await self.pc.setRemoteDescription(RTCSessionDescription(sdp=desc["sdp"], type=desc["type"]))

    async def _on_candidate(self, c: dict[str, Any]) -> None:
        text = c.get("candidate") or ""
        if not text:
            return  # an end-of-candidates marker: nothing to add
        try:
            candidate = candidate_from_sdp(text.removeprefix("candidate:"))
            candidate.sdpMid = c.get("sdpMid")
            candidate.sdpMLineIndex = c.get("sdpMLineIndex")
            await self.pc.addIceCandidate(candidate)
        except Exception as e:  # reported, and the session then fails to connect
            self.add_candidate_errors.append(f"{text!r}: {e!r}")

    def ice_report(self) -> dict[str, Any]:
        """Local candidates gathered, remote candidates known, and the nominated (selected) pair."""
        report: dict[str, Any] = {
            "connectionState": self.pc.connectionState,
            "iceConnectionState": self.pc.iceConnectionState,
            "states": list(self.states),
            "frames_sent": self.sent,
            "frames_received": self.received,
            "other_frames": self.other_frames,
            "sdp_candidate_lines_received": self.sdp_candidate_lines_received,
            "add_candidate_errors": self.add_candidate_errors,
            "datachannel_messages": self.dc_messages,
        }
        sctp = self.pc.sctp
        if sctp is None:
            return report
        ice_transport = sctp.transport.transport
        # aiortc exposes no selected-pair API (no getStats pair info); aioice's nominated pairs are it.
        connection = ice_transport.iceGatherer._connection
        report["local_candidates"] = [
            {"type": c.type, "host": c.host, "port": c.port, "transport": c.transport}
            for c in connection.local_candidates
        ]
        report["remote_candidates"] = [
            {"type": c.type, "ip": c.ip, "port": c.port, "protocol": c.protocol}
            for c in ice_transport.getRemoteCandidates()
        ]
        report["turn"] = {"server": connection.turn_server, "transport": connection.turn_transport}
        nominated = getattr(connection, "_nominated", {})
        report["selected_pairs"] = [
            {
                "component": component,
                "local": {
                    "type": p.local_candidate.type,
                    "host": p.local_candidate.host,
                    "port": p.local_candidate.port,
                },
                "remote": {
                    "type": p.remote_candidate.type,
                    "host": p.remote_candidate.host,
                    "port": p.remote_candidate.port,
                },
            }
            for component, p in sorted(nominated.items())
        ]
        return report


def ice_config(mode: str, ice_servers: list[dict[str, Any]]) -> RTCConfiguration:
    if mode == "direct":
        # No STUN/TURN: aiortc's default is Google's STUN server, which must not even be looked up.
        return RTCConfiguration(iceServers=[])
    want = "transport=tcp" if mode == "relay-tcp" else "transport=udp"
    servers = []
    for s in ice_servers:
        # aioice uses the first TURN URI it sees; keep the transport this mode is about.
        uris = [u for u in s["Uris"] if u.endswith(want)]
        if uris:
            servers.append(RTCIceServer(urls=uris, username=s["Username"], credential=s["Password"]))
    # aiortc 1.16 has iceTransportPolicy: relay-only gathering and checks, like a browser's (no filtering needed).
    return RTCConfiguration(iceServers=servers, iceTransportPolicy=RTCIceTransportPolicy.RELAY)


async def run_peers(mode: str, cp: dict[str, Any], result: dict[str, Any]) -> None:
    arn = cp["arn"]
    master = Peer("MASTER", ice_config(mode, cp["MASTER"]["ice_servers"]))
    viewer = Peer("VIEWER", ice_config(mode, cp["VIEWER"]["ice_servers"]))
    result["peers"] = {}

    @master.pc.on("datachannel")
    def on_datachannel(channel: RTCDataChannel) -> None:
        @channel.on("message")
        def on_message(message: str | bytes) -> None:
            master.dc_messages.append(str(message))
            if message == "ping":
                channel.send("pong")

    channel = viewer.pc.createDataChannel("signalite-e2e")

    @channel.on("open")
    def on_open() -> None:
        channel.send("ping")

    @channel.on("message")
    def on_message(message: str | bytes) -> None:
        viewer.dc_messages.append(str(message))
        if message == "pong":
            viewer.pong.set()

    tasks: list[asyncio.Task[None]] = []
    t0 = time.monotonic()
    try:
        async with aiohttp.ClientSession() as session:
            await master.open(session, presign(cp["MASTER"]["endpoints"]["WSS"], {"X-Amz-ChannelARN": arn}))
            await viewer.open(
                session,
                presign(cp["VIEWER"]["endpoints"]["WSS"], {"X-Amz-ChannelARN": arn, "X-Amz-ClientId": VIEWER_ID}),
            )
            tasks = [asyncio.create_task(master.read_loop()), asyncio.create_task(viewer.read_loop())]
            await viewer.pc.setLocalDescription(await viewer.pc.createOffer())  # gathers first
            await viewer.send_description("SDP_OFFER")

            wait = NEGATIVE_WAIT if mode == "relay-bad-secret" else CONNECT_TIMEOUT
            everything = asyncio.gather(master.connected.wait(), viewer.connected.wait(), viewer.pong.wait())
            try:
                await asyncio.wait_for(everything, wait)
                result["completed"] = True
            except TimeoutError:
                result["completed"] = False
            result["elapsed_s"] = round(time.monotonic() - t0, 2)
            for task in tasks:
                if task.done() and task.exception() is not None:
                    exc = task.exception()
                    result.setdefault("read_loop_errors", []).append("".join(traceback.format_exception(exc)))
            result["peers"]["master"] = master.ice_report()
            result["peers"]["viewer"] = viewer.ice_report()
    finally:
        for task in tasks:
            task.cancel()
        for peer in (master, viewer):
            with contextlib.suppress(Exception):
                await peer.pc.close()


def main(mode: str) -> dict[str, Any]:
    result: dict[str, Any] = {"mode": mode}
    workdir = Path(tempfile.mkdtemp(prefix=f"aiortc-{mode}-"))
    turn_secret = secrets.token_hex(16)
    turn: Coturn | None = None
    server: subprocess.Popen[bytes] | None = None
    server_log = workdir / "signalite.log"
    try:
        extra: list[str] = []
        if mode != "direct":
            turn = Coturn(workdir / "coturn", turn_secret).start()
            # bad-secret: signalite signs with a secret coturn does not know -> 401 on ALLOCATE.
            issued_secret = secrets.token_hex(16) if mode == "relay-bad-secret" else turn_secret
            extra = [
                "--turn-uri", f"turn:127.0.0.1:{turn.port}?transport=udp",
                "--turn-uri", f"turn:127.0.0.1:{turn.port}?transport=tcp",
                f"--turn-secret={issued_secret}",
            ]  # fmt: skip
        port = free_port()
        cmd = [
            sys.executable, "-m", "signalite", "serve", "--port", str(port),
            "--data-dir", str(workdir / "signalite"), *extra,
        ]  # fmt: skip
        with server_log.open("wb") as log:
            server = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT)
        endpoint = f"http://127.0.0.1:{port}"
        wait_healthy(endpoint, server)

        cp = control_plane(endpoint, f"aiortc-{mode}-{secrets.token_hex(4)}")
        result["control_plane"] = cp
        asyncio.run(run_peers(mode, cp, result))

        if turn is not None:
            usernames = sorted({s["Username"] for role in ("MASTER", "VIEWER") for s in cp[role]["ice_servers"]})
            if result.get("completed"):
                # The peers have closed: coturn logs each session's end ("closed", with the transport) and
                # its byte counts ("usage") shortly after. Wait a little for them; the report is complete without.
                deadline = time.monotonic() + 3
                while time.monotonic() < deadline and not all(
                    any("closed" in line for line in turn.lines_for_user(u)) for u in usernames
                ):
                    time.sleep(0.1)
            result["coturn"] = {
                "port": turn.port,
                "lines_by_username": {u: turn.lines_for_user(u)[-40:] for u in usernames},
                "log_tail": turn.log().splitlines()[-60:],
            }
    except Exception:
        result["error"] = traceback.format_exc()
    finally:
        if server is not None and server.poll() is None:
            server.terminate()
            try:
                server.wait(10)
            except subprocess.TimeoutExpired:
                server.kill()
        if turn is not None:
            turn.stop()
        with contextlib.suppress(FileNotFoundError):
            result["signalite_log_tail"] = server_log.read_text(errors="replace").splitlines()[-40:]
        shutil.rmtree(workdir, ignore_errors=True)  # everything worth keeping is in the report
    return result


if __name__ == "__main__":
    if len(sys.argv) != 2 or sys.argv[1] not in MODES:
        sys.exit(f"usage: {sys.argv[0]} {'|'.join(MODES)}")
    print(json.dumps(main(sys.argv[1])))
