"""Headless Debian chromium with the KVS WebRTC JS SDK completes a real WebRTC session through signalite.

A master page and a viewer page (tests/e2e/browser/peer.html) use the SDK's SignalingClient over
wss:// (`--tls self-signed`) and real RTCPeerConnections with chromium's fake camera: both reach
`connected`, a data-channel message goes viewer -> master -> viewer, and the viewer decodes video.
Everything runs in a loopback-only network namespace (browser_scenario.py). Screenshots of both pages
and the scenario's report land in test-output/browser/.
"""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path
from typing import Any

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
from netns import python_in_netns

pytestmark = pytest.mark.slow

E2E = Path(__file__).resolve().parent
REPO = E2E.parent.parent
OUT = REPO / "test-output" / "browser"
NODE_MODULES = E2E / "node" / "node_modules"
CHROMIUM = Path("/usr/bin/chromium")


def require_tools() -> None:
    missing = []
    if shutil.which("node") is None:
        missing.append("node (Debian package nodejs)")
    if not CHROMIUM.exists():
        missing.append(f"{CHROMIUM} (Debian package chromium)")
    for package, file in (
        ("playwright-core", "package.json"),
        ("amazon-kinesis-video-streams-webrtc", "dist/kvs-webrtc.min.js"),
    ):
        if not (NODE_MODULES / package / file).exists():
            missing.append(f"npm package {package} in tests/e2e/node")
    if missing:
        pytest.fail(f"missing {', '.join(missing)}: run ./scripts/test, which installs them")


@pytest.fixture(scope="module")
def report() -> dict[str, Any]:
    require_tools()
    for stale in ("master.png", "viewer.png", "report.json"):
        (OUT / stale).unlink(missing_ok=True)
    proc = python_in_netns(str(E2E / "browser_scenario.py"), "--out", str(OUT), "--timeout", "40", timeout=90)
    assert proc.returncode == 0, f"scenario exited {proc.returncode}\nstdout:\n{proc.stdout}\nstderr:\n{proc.stderr}"
    lines = proc.stdout.strip().splitlines()
    assert lines, f"scenario printed nothing\nstderr:\n{proc.stderr}"
    return json.loads(lines[-1])


def explain(report: dict[str, Any]) -> str:
    return json.dumps(
        {k: report.get(k) for k in ("error", "summary", "session", "driverStderr", "serverLogTail")}, indent=1
    )


def test_session_completes_without_errors(report: dict[str, Any]) -> None:
    assert "error" not in report, explain(report)
    assert report["session"]["error"] is None, explain(report)
    summary = report["summary"]
    assert summary["errors"] == [], explain(report)
    assert summary["statusResponses"] == [], explain(report)  # no STATUS_RESPONSE: nothing was refused
    assert report["session"]["pageErrors"] == [], explain(report)
    console = report["session"]["console"]
    console_errors = [line for lines in console.values() for line in lines if line.startswith("error")]
    assert console_errors == [], explain(report)


def test_both_peers_reach_connected(report: dict[str, Any]) -> None:
    summary = report["summary"]
    assert summary["masterConnectionState"] == "connected", explain(report)
    assert summary["viewerConnectionState"] == "connected", explain(report)
    assert summary["masterPeers"] == 1, explain(report)
    reports = report["session"]["reports"]
    assert reports["master"]["signaling"] == "open" and reports["viewer"]["signaling"] == "open", explain(report)
    # Offer, answer and trickled candidates all crossed signalite (routed to the right peer by ClientId).
    assert list(reports["master"]["peers"]) == [report["viewerClientId"]], explain(report)
    assert reports["master"]["signalingEvents"]["sdpOffer"] == 1, explain(report)
    assert reports["viewer"]["signalingEvents"]["sdpAnswer"] == 1, explain(report)
    assert reports["master"]["signalingEvents"]["iceCandidateIn"] >= 1, explain(report)
    assert reports["viewer"]["signalingEvents"]["iceCandidateIn"] >= 1, explain(report)


def test_data_channel_message_round_trips(report: dict[str, Any]) -> None:
    message = report["message"]
    summary = report["summary"]
    assert summary["sent"] == message, explain(report)
    assert report["session"]["reports"]["master"]["dataChannel"]["received"] == [message], explain(report)
    assert summary["roundTrip"] == [f"echo:{message}"], explain(report)


def test_viewer_decodes_the_masters_fake_camera(report: dict[str, Any]) -> None:
    summary = report["summary"]
    assert summary["masterFramesEncoded"] > 0, explain(report)
    assert summary["framesDecoded"] > 0, explain(report)
    assert summary["videoFrameCallbacks"] > 0, explain(report)
    assert report["session"]["reports"]["viewer"]["remoteTrackKinds"] == ["video"], explain(report)


def test_media_flows_over_loopback_host_candidates(report: dict[str, Any]) -> None:
    # No TURN configured and no route off the namespace: the selected pair is host <-> host on 127.0.0.1.
    assert report["channel"]["iceServers"] == [], explain(report)
    for side in ("viewerCandidatePair", "masterCandidatePair"):
        pair = report["summary"][side]
        assert pair is not None, explain(report)
        assert (pair["local"], pair["remote"]) == ("host", "host"), explain(report)
        assert pair["localAddress"] == pair["remoteAddress"] == "127.0.0.1", explain(report)


def test_screenshots_saved_for_people(report: dict[str, Any]) -> None:
    for name in ("master.png", "viewer.png"):
        shot = OUT / name
        assert shot.exists() and shot.stat().st_size > 1000, f"{shot} missing or empty"
