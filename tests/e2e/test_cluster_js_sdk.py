"""The KVS WebRTC JS SDK in Node across two signalite nodes of one cluster (Redis bus, PostgreSQL store).

`node/kvs_cluster.mjs` runs the SDK example's flow with the real AWS SDK for JavaScript v3 clients: the
master's control-plane calls go to node A (so it signals through A's endpoints), the viewer's to node B.
They exchange offer, answer and ICE candidates across the nodes; SendAlexaOfferToMaster through node B's
HTTPS endpoint returns the answer of the master on node A; DeleteSignalingChannel through node B sends
GO_AWAY to both. The script prints what it observed as one JSON object; every assertion is made here.

Both nodes run with `--tls self-signed` (the SDK wants wss://) and share a data dir, so the second one
reuses the CA and certificate the first one wrote, and Node trusts that CA through NODE_EXTRA_CA_CERTS.
Node's SignalingClient gathers no ICE candidates and everything talks to 127.0.0.1: no namespace needed.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import pg
import redis_server
from signalite.testing import SignaliteServer

NODE_DIR = Path(__file__).parent / "node"
SCRIPT = NODE_DIR / "kvs_cluster.mjs"
REGION = "us-west-2"
INSTALL_HINT = "./scripts/test installs it (Debian nodejs/npm, then `npm install` in tests/e2e/node)"


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


class Run:
    def __init__(self, result: dict[str, Any], a: SignaliteServer, b: SignaliteServer) -> None:
        self.r = result
        self.a = a
        self.b = b


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Run]:
    node = require_node()
    redis_url = redis_server.redis_url()
    database = pg.create_database("signalite_cluster_js")
    data_dir = tmp_path_factory.mktemp("cluster-js")
    cluster = f"js-{uuid.uuid4().hex[:8]}"
    servers: list[SignaliteServer] = []
    try:
        for name in ("node-a", "node-b"):  # one after the other: the first writes the shared CA
            args = ["--tls", "self-signed", "--redis", redis_url, "--database", database]
            args += ["--cluster-name", cluster, "--node-id", name, "--shutdown-grace", "2"]
            servers.append(SignaliteServer(subprocess=True, data_dir=data_dir, extra_args=args).start())
        a, b = servers
        ca = data_dir / "tls" / "ca.pem"
        assert ca.is_file(), f"--tls self-signed wrote no CA at {ca}"
        env = {k: v for k, v in os.environ.items() if k not in ("NODE_TLS_REJECT_UNAUTHORIZED", "NODE_EXTRA_CA_CERTS")}
        env.update(
            SIGNALITE_ENDPOINT_A=a.endpoint_url,
            SIGNALITE_ENDPOINT_B=b.endpoint_url,
            AWS_REGION_UNDER_TEST=REGION,
            NODE_EXTRA_CA_CERTS=str(ca),
            NODE_NO_WARNINGS="1",
        )
        proc = subprocess.run([node, str(SCRIPT)], cwd=NODE_DIR, env=env, capture_output=True, text=True, timeout=60)
        lines = [line for line in proc.stdout.splitlines() if line.strip()]
        try:
            result = json.loads(lines[-1])
        except (IndexError, json.JSONDecodeError):
            pytest.fail(f"kvs_cluster.mjs printed no JSON (exit {proc.returncode}):\n{proc.stdout}\n{proc.stderr}")
        logs = "\n".join(f"--- {s.endpoint_url}\n{''.join(s.output().splitlines(True)[-30:])}" for s in servers)
        assert proc.returncode == 0 and "fatal" not in result, (
            f"scenario failed (exit {proc.returncode}): {result.get('fatal')}\nsteps: {result.get('steps')}\n"
            f"node stderr:\n{proc.stderr[-4000:]}\nservers:\n{logs}"
        )
        assert result["steps"][-1] == "done"
        yield Run(result, a, b)
    finally:
        for server in servers:
            server.stop()
        pg.drop_database(database)


def frames(raw: list[str]) -> list[dict[str, Any]]:
    return [json.loads(f) for f in raw]


def test_each_role_gets_the_endpoints_of_the_node_it_asked(run: Run) -> None:
    r = run.r
    assert r["arns"]["master"] == r["arns"]["viewer"] == r["created_channel_arn"]
    host_a, host_b = f"127.0.0.1:{run.a.port}", f"127.0.0.1:{run.b.port}"
    assert r["endpoints"]["master"] == {"WSS": f"wss://{host_a}", "HTTPS": f"https://{host_a}"}
    assert r["endpoints"]["viewer"] == {"WSS": f"wss://{host_b}", "HTTPS": f"https://{host_b}"}
    assert r["ice_server_list"] == {"master": [], "viewer": []}  # no TURN configured


def test_offer_answer_and_candidates_cross_the_nodes(run: Run) -> None:
    r = run.r
    vid = r["viewer_client_id"]
    master, viewer = r["master"], r["viewer"]
    for rec in (master, viewer):
        assert rec["opens"] == 1 and rec["errors"] == [] and rec["status_responses"] == [], rec
    assert [o for o in master["sdp_offers"] if o["remote_client_id"] == vid] == [
        {"payload": r["sent"]["offer"], "remote_client_id": vid}
    ]
    assert master["ice_candidates"] == [{"payload": c, "remote_client_id": vid} for c in r["sent"]["viewer_candidates"]]
    answer = r["sent"]["answers"][vid]
    assert viewer["sdp_answers"] == [{"payload": answer, "remote_client_id": None}]
    assert viewer["ice_candidates"] == [
        {"payload": c, "remote_client_id": None} for c in r["sent"]["master_candidates"]
    ]
    assert viewer["sdp_offers"] == []


def test_send_alexa_offer_through_node_b_reaches_the_master_on_node_a(run: Run) -> None:
    r = run.r
    alexa = r["alexa"]
    assert "error" not in alexa, alexa.get("error")
    assert alexa["http_status"] == 200
    sender = alexa["sender_client_id"]
    assert [o for o in r["master"]["sdp_offers"] if o["remote_client_id"] == sender] == [
        {"payload": alexa["offer"], "remote_client_id": sender}
    ]
    assert alexa["answer_decoded"] == r["sent"]["answers"][sender]
    # The viewer heard nothing of it: its frames are the answer, three candidates, then GO_AWAY.
    assert [f["messageType"] for f in frames(r["viewer"]["received_frames"])] == [
        "SDP_ANSWER",
        *["ICE_CANDIDATE"] * 3,
        "GO_AWAY",
    ]


def test_deleting_through_node_b_sends_go_away_to_both_nodes_clients(run: Run) -> None:
    r = run.r
    for role in ("master", "viewer"):
        outcome = r["on_delete"][role]
        assert "wait_error" not in outcome, (role, outcome)
        assert outcome["closed_after_ms"] < 3000, (role, outcome)
        rec = r[role]
        assert rec["closes"] == 1, (role, rec["closes"])
        assert frames(rec["received_frames"])[-1] == {"messageType": "GO_AWAY"}, role
