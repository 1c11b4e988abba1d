"""aiortc master and viewer reach `connected` through signalite — directly and relayed by coturn.

Each test runs tests/e2e/aiortc_scenario.py inside a private network namespace (only loopback up),
where the scenario starts signalite (and coturn for the relay modes) and both peers, then prints one
JSON report; the assertions are all here. The peers trickle every candidate as an ICE_CANDIDATE
frame (none stays in the SDP), so each connection also proves signalite relays those frames.
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

SCENARIO = str(Path(__file__).resolve().parent / "aiortc_scenario.py")
VIEWER_ID = "aiortc-viewer-1"  # as in the scenario
TTL = 300  # signalite's default --turn-ttl


def require_aiortc() -> None:
    try:
        import aiortc  # noqa: F401
    except ImportError:
        pytest.fail("aiortc is not installed: ./scripts/test installs the test extra (pip install -e '.[test]')")


def require_coturn() -> None:
    if shutil.which("turnserver") is None:
        pytest.fail("turnserver (Debian package coturn) is not installed: ./scripts/test installs it")


def run_scenario(mode: str) -> dict[str, Any]:
    require_aiortc()
    proc = python_in_netns(SCENARIO, mode, timeout=90)
    lines = [line for line in proc.stdout.splitlines() if line.strip()]
    if proc.returncode != 0 or not lines:
        out, err = proc.stdout[-3000:], proc.stderr[-6000:]
        pytest.fail(f"scenario {mode} exited with {proc.returncode}\nstdout:\n{out}\nstderr:\n{err}")
    result: dict[str, Any] = json.loads(lines[-1])
    if "error" in result:
        log = "\n".join(result.get("signalite_log_tail", []))
        pytest.fail(
            f"scenario {mode} failed:\n{result['error']}\nsignalite log:\n{log}\nstderr:\n{proc.stderr[-3000:]}"
        )
    return result


def summary(result: dict[str, Any]) -> str:
    """The report minus the bulky parts, for assertion messages."""
    slim = {k: v for k, v in result.items() if k not in ("signalite_log_tail", "control_plane")}
    if "coturn" in slim:
        slim["coturn"] = {k: v for k, v in slim["coturn"].items() if k != "log_tail"}
    return json.dumps(slim, indent=1)[:8000]


def assert_session(result: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """Both peers connected, ping/pong over the data channel, candidates trickled through signalite."""
    assert result["completed"], summary(result)
    master, viewer = result["peers"]["master"], result["peers"]["viewer"]
    for peer in (master, viewer):
        assert peer["connectionState"] == "connected", summary(result)
        assert peer["add_candidate_errors"] == [], summary(result)
        assert peer["other_frames"] == [], summary(result)  # no STATUS_RESPONSE, GO_AWAY, ...
        # Candidates came only as ICE_CANDIDATE frames: the SDP relayed had none.
        assert peer["sdp_candidate_lines_received"] == 0, summary(result)
    assert master["datachannel_messages"] == ["ping"], summary(result)
    assert viewer["datachannel_messages"] == ["pong"], summary(result)

    assert viewer["frames_sent"]["SDP_OFFER"] == 1 and master["frames_received"]["SDP_OFFER"] == 1
    assert master["frames_sent"]["SDP_ANSWER"] == 1 and viewer["frames_received"]["SDP_ANSWER"] == 1
    # Every trickled candidate arrived, each way, and at least one went each way.
    assert viewer["frames_sent"]["ICE_CANDIDATE"] >= 1
    assert master["frames_sent"]["ICE_CANDIDATE"] >= 1
    assert master["frames_received"].get("ICE_CANDIDATE") == viewer["frames_sent"]["ICE_CANDIDATE"]
    assert viewer["frames_received"].get("ICE_CANDIDATE") == master["frames_sent"]["ICE_CANDIDATE"]

    # The pairs in use match up: each side's selected remote is the other's selected local.
    assert len(master["selected_pairs"]) == 1 and len(viewer["selected_pairs"]) == 1, summary(result)
    m_pair, v_pair = master["selected_pairs"][0], viewer["selected_pairs"][0]
    assert (m_pair["remote"]["host"], m_pair["remote"]["port"]) == (v_pair["local"]["host"], v_pair["local"]["port"])
    assert (v_pair["remote"]["host"], v_pair["remote"]["port"]) == (m_pair["local"]["host"], m_pair["local"]["port"])
    return m_pair, v_pair


def test_aiortc_direct_over_loopback_host_candidates() -> None:
    result = run_scenario("direct")
    cp = result["control_plane"]
    # No TURN configured: GetIceServerConfig answers an empty list.
    assert cp["MASTER"]["ice_servers"] == [] and cp["VIEWER"]["ice_servers"] == []
    for role in ("MASTER", "VIEWER"):
        assert cp[role]["endpoints"]["WSS"].startswith("ws://127.0.0.1:")
        assert cp[role]["endpoints"]["HTTPS"].startswith("http://127.0.0.1:")

    m_pair, v_pair = assert_session(result)
    for pair in (m_pair, v_pair):
        assert pair["local"]["type"] == "host" and pair["remote"]["type"] == "host", summary(result)
        assert pair["local"]["host"] == "127.0.0.1" and pair["remote"]["host"] == "127.0.0.1"
    for peer in result["peers"].values():
        assert {c["host"] for c in peer["local_candidates"]} == {"127.0.0.1"}, summary(result)


def assert_turn_credentials(result: dict[str, Any], turn_port: int) -> list[str]:
    """GetIceServerConfig handed out both configured URIs and `<expiry>:<id>` credentials; returns the usernames."""
    cp = result["control_plane"]
    usernames = []
    for role in ("MASTER", "VIEWER"):
        servers = cp[role]["ice_servers"]
        assert len(servers) == 1, servers
        server = servers[0]
        assert server["Uris"] == [
            f"turn:127.0.0.1:{turn_port}?transport=udp",
            f"turn:127.0.0.1:{turn_port}?transport=tcp",
        ]
        assert server["Ttl"] == TTL
        match = re.fullmatch(r"(\d+):([a-zA-Z0-9_.-]+)", server["Username"])
        assert match, server["Username"]
        assert 0 < int(match.group(1)) - cp["issued_at"] <= TTL + 5
        if role == "VIEWER":
            assert match.group(2) == VIEWER_ID
        assert server["Password"]
        usernames.append(server["Username"])
    assert len(set(usernames)) == 2
    return usernames


@pytest.mark.parametrize("transport", ["udp", "tcp"])
def test_aiortc_relay_only_through_coturn_with_issued_credentials(transport: str) -> None:
    require_coturn()
    result = run_scenario("relay" if transport == "udp" else "relay-tcp")
    turn_port = result["coturn"]["port"]
    usernames = assert_turn_credentials(result, turn_port)

    m_pair, v_pair = assert_session(result)
    for pair in (m_pair, v_pair):
        assert pair["local"]["type"] == "relay" and pair["remote"]["type"] == "relay", summary(result)
    for peer in result["peers"].values():
        # Relay policy: nothing but relayed candidates, obtained from coturn over the chosen transport.
        assert peer["local_candidates"] and {c["type"] for c in peer["local_candidates"]} == {"relay"}
        assert {c["type"] for c in peer["remote_candidates"]} == {"relay"}, summary(result)
        assert peer["turn"] == {"server": ["127.0.0.1", turn_port], "transport": transport}

    # coturn accepted each signalite-issued username: an allocation, a channel bound to the peer.
    lines = result["coturn"]["lines_by_username"]
    for username in usernames:
        user_lines = "\n".join(lines[username])
        assert "incoming packet ALLOCATE processed, success" in user_lines, summary(result)
        assert "CHANNEL_BIND processed, success" in user_lines, summary(result)
        assert "error 401" not in user_lines, summary(result)
        if transport == "tcp":
            assert "TCP connection closed by client" in user_lines, summary(result)


def test_aiortc_relay_only_fails_when_signalite_signs_with_the_wrong_secret() -> None:
    require_coturn()
    result = run_scenario("relay-bad-secret")
    usernames = assert_turn_credentials(result, result["coturn"]["port"])

    assert result["completed"] is False, summary(result)
    master, viewer = result["peers"]["master"], result["peers"]["viewer"]
    # Signaling itself worked: offer and answer went through.
    assert master["frames_received"].get("SDP_OFFER") == 1 and viewer["frames_received"].get("SDP_ANSWER") == 1
    for peer in (master, viewer):
        assert peer["connectionState"] != "connected" and "connected" not in peer["states"], summary(result)
        assert peer["local_candidates"] == [], summary(result)  # no allocation, so no relayed candidate
        assert peer["selected_pairs"] == []
    assert viewer["datachannel_messages"] == []
    lines = result["coturn"]["lines_by_username"]
    for username in usernames:
        user_lines = "\n".join(lines[username])
        assert "error 401: Unauthorized" in user_lines, summary(result)
        assert "ALLOCATE processed, success" not in user_lines, summary(result)
