"""signalite on port 443 serves a client shaped like the KVS WebRTC C SDK (c_sdk_scenario.py).

The SDK connects to port 443 only and refuses any URL that names a port, so what matters here is
that a server on 443 hands out endpoints without `:443`, that SigV4 verifies with the port-less Host
header such a client signs, and that the SDK's handshake and frames get through. The scenario runs
in a private network namespace, where port 443 is free; it prints a JSON report, asserted on here.
"""

from __future__ import annotations

import base64
import json
import sys
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
from netns import python_in_netns

pytestmark = pytest.mark.slow

SCENARIO = str(Path(__file__).resolve().parent / "c_sdk_scenario.py")


@pytest.fixture(scope="module")
def report() -> dict[str, Any]:
    proc = python_in_netns(SCENARIO, timeout=90)
    lines = [line for line in proc.stdout.splitlines() if line.strip()]
    if proc.returncode != 0 or not lines:
        pytest.fail(
            f"scenario exited with {proc.returncode}\nstdout:\n{proc.stdout[-3000:]}\nstderr:\n{proc.stderr[-3000:]}"
        )
    result: dict[str, Any] = json.loads(lines[-1])
    if "error" in result:
        log = "\n".join(result.get("signalite_log_tail", []))
        pytest.fail(f"scenario failed:\n{result['error']}\nsignalite log:\n{log}")
    return result


@pytest.mark.parametrize("role", ["MASTER", "VIEWER"])
def test_a_server_on_443_hands_out_endpoints_without_a_port(report: dict[str, Any], role: str) -> None:
    endpoints = report["control_plane"][role]["endpoints"]
    assert set(endpoints) == {"HTTPS", "WSS"}  # the SDK fails without both
    for protocol, url in endpoints.items():
        parts = urlsplit(url)
        assert parts.scheme == protocol.lower()
        assert parts.port is None, url  # the SDK refuses any URL with a port
        assert parts.hostname == "127.0.0.1"


def test_the_control_plane_answers_as_the_sdk_needs(report: dict[str, Any]) -> None:
    cp = report["control_plane"]
    assert cp["status"] == "ACTIVE"  # anything else reads as DELETING to the SDK
    for role in ("MASTER", "VIEWER"):
        assert cp[role]["ice_uris"], "the SDK needs at least one ICE server with a URI"
        assert all(uri.startswith(("turn:", "turns:")) for uri in cp[role]["ice_uris"])


def test_the_handshake_and_the_sdks_frames_get_through(report: dict[str, Any]) -> None:
    ws = report["signaling"]
    assert ws["master_protocol"] is None  # offered "wss", none chosen: libwebsockets then uses its own
    # The viewer's PascalCase offer reaches the master with exactly the three members, IceServerList dropped.
    assert ws["at_master"] == {"senderClientId": "c-sdk-viewer", "messageType": "SDP_OFFER",
                               "messagePayload": ws["offer_sent"]}  # fmt: skip
    assert ws["at_viewer"]["messageType"] == "SDP_ANSWER"
    assert ws["at_viewer"]["messagePayload"] == ws["answer_sent"]
    assert json.loads(base64.b64decode(ws["at_viewer"]["messagePayload"]))["type"] == "answer"
