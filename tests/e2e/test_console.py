"""Headless Debian chromium uses signalite's own console and test page, in strict mode, with TURN.

console_scenario.py (run in a loopback-only network namespace) starts coturn and signalite with a
credentials file, then node/console_session.mjs drives chromium through /console/: credentials entered
(memory only), two channels created with TTL and tags, prefix filter, TTL update; the test page as viewer
(another browser context, generated test pattern, relay-only through TURN from GetIceServerConfig) whose offer
waits in the TTL buffer — shown by the live view — until the test page as master (opened from the console,
fake camera) connects and answers; video decoded both ways; both clients in the live view; then the channel
is deleted in the console and both test pages and the live view see the GO_AWAY. Screenshots land in
test-output/console/ for a person to look at.
"""

from __future__ import annotations

import json
import re
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
OUT = REPO / "test-output" / "console"
NODE_MODULES = E2E / "node" / "node_modules"
CHROMIUM = Path("/usr/bin/chromium")
SCREENSHOTS = (
    "console-credentials", "console-buffered", "console-live", "console-deleted", "test-master", "test-viewer",
    "test-master-session", "test-viewer-session", "test-viewer-goaway", "test-viewer-goaway-session",
)  # fmt: skip


def require_tools() -> None:
    missing = []
    if shutil.which("node") is None:
        missing.append("node (Debian package nodejs)")
    if not CHROMIUM.exists():
        missing.append(f"{CHROMIUM} (Debian package chromium)")
    if shutil.which("turnserver") is None:
        missing.append("turnserver (Debian package coturn)")
    if not (NODE_MODULES / "playwright-core" / "package.json").exists():
        missing.append("npm package playwright-core in tests/e2e/node")
    if missing:
        pytest.fail(f"missing {', '.join(missing)}: run ./scripts/test, which installs them")


@pytest.fixture(scope="module")
def report() -> dict[str, Any]:
    require_tools()
    OUT.mkdir(parents=True, exist_ok=True)
    for stale in OUT.glob("*.png"):
        stale.unlink()
    (OUT / "report.json").unlink(missing_ok=True)
    proc = python_in_netns(str(E2E / "console_scenario.py"), "--out", str(OUT), "--timeout", "60", timeout=120)
    assert proc.returncode == 0, f"scenario exited {proc.returncode}\nstdout:\n{proc.stdout}\nstderr:\n{proc.stderr}"
    lines = proc.stdout.strip().splitlines()
    assert lines, f"scenario printed nothing\nstderr:\n{proc.stderr}"
    return json.loads(lines[-1])


def explain(report: dict[str, Any]) -> str:
    session = report.get("session", {})
    keys = ("error", "steps", "pageErrors", "console")
    # What each page reported when the driver gave up: the live view and the test pages' own state.
    at_error = {k: v for k, v in session.get("reports", {}).items() if k.endswith("AtError")}
    return json.dumps(
        {"error": report.get("error"), "driverStderr": report.get("driverStderr"),
         "session": {k: session.get(k) for k in keys}, "atError": at_error,
         "serverLogTail": report.get("serverLogTail")},
        indent=1,
    )  # fmt: skip


def reports(report: dict[str, Any]) -> dict[str, Any]:
    return report["session"]["reports"]


def metric(report: dict[str, Any], name: str, **labels: str) -> float | None:
    """The value of one series in the scraped /metrics lines (None when absent)."""
    for line in report["metrics"]:
        series, _, value = line.rpartition(" ")
        if not series.startswith(name + "{") and series != name:
            continue
        found = dict(re.findall(r'(\w+)="([^"]*)"', series))
        if all(found.get(k) == v for k, v in labels.items()):
            return float(value)
    return None


def test_scenario_completes_without_errors(report: dict[str, Any]) -> None:
    assert "error" not in report, explain(report)
    session = report["session"]
    assert session["error"] is None, explain(report)
    assert session["pageErrors"] == [], explain(report)
    console_errors = [line for lines in session["console"].values() for line in lines if line.startswith("error")]
    assert console_errors == [], explain(report)
    for name in ("consoleLive", "masterLive", "viewerLive"):
        assert reports(report)[name]["errors"] == [], explain(report)


def test_strict_mode_asks_for_credentials_and_keeps_them_in_memory_only(report: dict[str, Any]) -> None:
    first = reports(report)["consoleBeforeCredentials"]
    assert first["mode"] == "strict" and first["hasCredentials"] is False, first
    assert first["channels"] == [], first  # nothing was listed before the key was entered
    assert report["session"]["secretLeftInDom"] is False
    assert report["session"]["storage"] == {"local": 0, "session": 0, "cookies": ""}
    assert report["secretInServerLog"] is False


def test_channels_created_filtered_and_ttl_updated(report: dict[str, Any]) -> None:
    cfg = report["config"]
    created = {c["name"]: c for c in reports(report)["afterCreate"]["channels"]}
    assert {cfg["channelName"], cfg["otherChannelName"]} <= set(created), created
    main = created[cfg["channelName"]]
    assert main["status"] == "ACTIVE" and main["ttl"] == 30, main
    assert main["arn"].startswith(f"arn:aws:kinesisvideo:us-east-1:{report['account']}:channel/{cfg['channelName']}/")
    assert main["storage"] in (None, "DISABLED"), main
    filtered = [c["name"] for c in reports(report)["filtered"]["channels"]]
    assert cfg["channelName"] in filtered and cfg["otherChannelName"] not in filtered, filtered
    ttl = reports(report)["afterTtl"]
    assert ttl["before"]["ttl"] == 30 and ttl["after"]["ttl"] == 45, ttl
    assert ttl["before"]["version"] != ttl["after"]["version"], ttl
    assert "env=e2e" in report["session"]["tagsShown"] and "team=video" in report["session"]["tagsShown"]
    assert report["session"]["storageShown"].strip() == "DISABLED"


def test_live_view_shows_the_viewers_offer_waiting_for_the_master(report: dict[str, Any]) -> None:
    cfg = report["config"]
    live = reports(report)["consoleBuffered"]["live"]
    assert live["master"] is None and [v["clientId"] for v in live["viewers"]] == [cfg["viewerClientId"]], live
    offers = [b for b in live["buffered"] if b["messageType"] == "SDP_OFFER"]
    assert len(offers) == 1, live["buffered"]
    assert offers[0]["recipient"] is None and offers[0]["sender"] == cfg["viewerClientId"], offers
    # Buffered with the TTL in force when it was sent: the updated 45 s, not the original 30 s.
    assert 30 < offers[0]["secondsLeft"] <= 45, offers
    assert all("payload" not in json.dumps(b).lower() for b in live["buffered"]), live["buffered"]


def test_video_flows_both_ways_with_the_viewer_relayed_through_turn(report: dict[str, Any]) -> None:
    cfg = report["config"]
    viewer = reports(report)["viewerLive"]
    master = reports(report)["masterLive"]
    turn = f"turn:127.0.0.1:{report['turnPort']}?transport=udp"
    assert viewer["iceServerUrls"] == [turn] and master["iceServerUrls"] == [turn], (viewer, master)
    to_master = viewer["peers"]["MASTER"]
    assert to_master["connectionState"] == "connected", viewer
    assert to_master["inboundVideo"]["framesDecoded"] > 0, viewer
    assert to_master["pair"]["local"]["type"] == "relay", to_master["pair"]  # relay only: TURN from signalite
    assert to_master["pair"]["local"]["relayProtocol"] == "udp", to_master["pair"]
    assert to_master["rttMs"] is not None and to_master["rttMs"] >= 0, to_master
    assert report["turnAllocations"] >= 1, report["turnAllocations"]
    to_viewer = master["peers"][cfg["viewerClientId"]]
    assert to_viewer["connectionState"] == "connected", master
    assert to_viewer["inboundVideo"]["framesDecoded"] > 0, master  # the viewer's generated test pattern
    assert to_viewer["outboundVideo"]["framesEncoded"] > 0, master  # chromium's fake camera
    assert master["localSource"].startswith("camera"), master["localSource"]
    assert viewer["localSource"] == "test pattern", viewer["localSource"]
    # KVS semantics: the viewer offers, the master answers (to the viewer's client id), both trickle ICE.
    assert viewer["sent"]["SDP_OFFER"] == 1 and viewer["received"]["SDP_ANSWER"] == 1, viewer
    assert master["received"]["SDP_OFFER"] == 1 and master["sent"]["SDP_ANSWER"] == 1, master
    assert viewer["sent"]["ICE_CANDIDATE"] >= 1 and master["received"]["ICE_CANDIDATE"] >= 1, (viewer, master)
    assert master["sent"]["ICE_CANDIDATE"] >= 1 and viewer["received"]["ICE_CANDIDATE"] >= 1, (viewer, master)
    assert viewer["statusResponses"] == [] and master["statusResponses"] == [], (viewer, master)


def test_live_view_lists_master_and_viewer(report: dict[str, Any]) -> None:
    cfg = report["config"]
    live = reports(report)["consoleLive"]["live"]
    assert live["master"] is not None and live["master"]["clientId"] is None, live
    assert live["master"]["node"] == "console-e2e" and live["node"] == "console-e2e", live
    viewers = {v["clientId"]: v for v in live["viewers"]}
    assert set(viewers) == {cfg["viewerClientId"]}, live
    viewer = viewers[cfg["viewerClientId"]]
    assert viewer["messagesIn"] > 0 and viewer["messagesOut"] > 0 and live["master"]["messagesIn"] > 0, live
    assert viewer["connectedSince"] <= live["time"], live
    assert live["buffered"] == [], live  # delivered when the master connected
    kinds = [(e["kind"], e.get("role")) for e in live["events"]]
    assert ("connected", "VIEWER") in kinds and ("connected", "MASTER") in kinds, kinds
    assert report["session"]["liveEventKinds"].count("connected") >= 2, report["session"]["liveEventKinds"]
    text = json.dumps(live)
    assert "messagePayload" not in text and "v=0" not in text and "candidate:" not in text, text[:2000]


def test_delete_confirms_then_sends_go_away_to_both_test_pages(report: dict[str, Any]) -> None:
    cfg = report["config"]
    session = report["session"]
    assert session["wrongConfirmationError"].strip(), session["wrongConfirmationError"]
    assert session["dialogStillOpenAfterWrongName"] is True
    for name in ("masterDeleted", "viewerDeleted"):
        page = reports(report)[name]
        assert page["goAway"] is True, page
        assert page["signaling"] == "closed" and page["closeCode"] == 1000, page
        assert page["closeReason"] == "channel deleted", page
    assert "GO_AWAY" in session["goAwayBanner"], session["goAwayBanner"]
    after = reports(report)["consoleDeleted"]
    names = [c["name"] for c in after["channels"]]
    assert cfg["channelName"] not in names and cfg["otherChannelName"] in names, names
    live = after["live"]
    assert live["channel"] is None and live["master"] is None and live["viewers"] == [], live
    go_aways = {(e.get("role"), e.get("client_id")) for e in live["events"] if e["kind"] == "go_away"}
    assert go_aways == {("MASTER", None), ("VIEWER", cfg["viewerClientId"])}, live["events"]
    closed = [e for e in live["events"] if e["kind"] == "closed"]
    assert {e["reason"] for e in closed} == {"channel deleted"} and len(closed) == 2, live["events"]


def test_metrics_moved_with_the_session(report: dict[str, Any]) -> None:
    node = "console-e2e"
    assert metric(report, "signalite_go_aways_total", node=node) == 2, report["metrics"]
    assert metric(report, "signalite_connects_total", node=node) == 2, report["metrics"]
    for role in ("master", "viewer"):
        assert metric(report, "signalite_connections", node=node, role=role) == 0, report["metrics"]
    for kind in ("SDP_OFFER", "SDP_ANSWER"):
        assert metric(report, "signalite_messages_relayed_total", node=node, type=kind) == 1, report["metrics"]
    assert (metric(report, "signalite_messages_relayed_total", node=node, type="ICE_CANDIDATE") or 0) >= 2
    ops = {"CreateSignalingChannel": 2, "UpdateSignalingChannel": 1, "DeleteSignalingChannel": 1}
    for operation, count in ops.items():
        assert metric(report, "signalite_requests_total", node=node, operation=operation, status="200") == count
    assert (metric(report, "signalite_requests_total", operation="GetIceServerConfig", status="200") or 0) == 2
    # Every call the pages made was a known operation, accepted: no unknown paths, no refused signatures.
    assert metric(report, "signalite_requests_total", operation="unknown") is None, report["metrics"]
    failures = [line for line in report["metrics"] if line.startswith("signalite_auth_failures")]
    assert failures == [], failures


def test_screenshots_saved_for_people(report: dict[str, Any]) -> None:
    for name in SCREENSHOTS:
        shot = OUT / f"{name}.png"
        assert shot.exists() and shot.stat().st_size > 1000, f"{shot} missing or empty\n{explain(report)}"
