"""Connection lifecycle (issue 3, item 3): idle timeout, the 1-hour limit with GO_AWAY a minute before,
channel deletion, SIGTERM/SIGINT drain with --shutdown-grace, SIGHUP reload of the TURN settings, and the
slow consumer that is cut off without slowing anyone else.

Timers run on the in-process server's shifted clock (`advance`); signals need a real process.
"""

from __future__ import annotations

import asyncio
import gc
import signal
import sys
import time
import weakref
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from signalite.ice import turn_password

sys.path.insert(0, str(Path(__file__).parent))

from wsutil import (
    Harness,
    barrier,
    connect,
    expect_close,
    frame,
    ice_payload,
    left_in_cycles,
    parse_server_frames,
    ping_pong,
    raw_ws_connect,
    recv,
    recv_json,
    running,
    subprocess_server,
    wait_connections,
    wait_exit,
)

WS = aiohttp.ClientWebSocketResponse
GO_AWAY = {"messageType": "GO_AWAY"}
RECONNECT_ICE_SERVER = {"messageType": "RECONNECT_ICE_SERVER"}


@pytest.fixture(params=["auto", "aiohttp"])
def h(request: pytest.FixtureRequest) -> Iterator[Harness]:
    # Every test runs on both WebSocket paths: picows (ordinary upgrades) and aiohttp (web/fastws.py).
    with running({"limits": "aws", "websocket_stack": request.param}) as harness:
        yield harness


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as s:
        yield s


async def exchange(master: WS, viewer: WS, cid: str) -> None:
    up, down = ice_payload(1), ice_payload(2)
    await viewer.send_str(frame("ICE_CANDIDATE", up))
    got = await recv_json(master)
    assert got == {"senderClientId": cid, "messageType": "ICE_CANDIDATE", "messagePayload": up}
    await master.send_str(frame("ICE_CANDIDATE", down, recipient=cid))
    got = await recv_json(viewer)
    assert got["messageType"] == "ICE_CANDIDATE" and got["messagePayload"] == down, got


# -- idle timeout -------------------------------------------------------------------------------------------


async def test_idle_connection_is_closed_after_ten_minutes(h: Harness, session: aiohttp.ClientSession) -> None:
    arn = h.create_channel()
    master = await connect(session, h.ws_url(arn))
    viewer = await connect(session, h.ws_url(arn, "v1"))
    h.advance(590)
    assert h.health()["connections"] == 2  # (a frame would count as activity; /health does not)
    h.advance(11)
    assert await expect_close(master) == 1000
    assert await expect_close(viewer) == 1000
    await wait_connections(h, 0)


async def test_pings_and_frames_keep_a_connection_alive(h: Harness, session: aiohttp.ClientSession) -> None:
    arn = h.create_channel()
    master = await connect(session, h.ws_url(arn))  # sends frames
    pinger = await connect(session, h.ws_url(arn, "pinger"), autoping=False)  # only pings
    idle = await connect(session, h.ws_url(arn, "idle"))  # only receives
    h.advance(400)
    await ping_pong(pinger, b"keepalive")
    await master.send_str(frame("ICE_CANDIDATE", ice_payload(), recipient="idle"))
    assert (await recv_json(idle))["messageType"] == "ICE_CANDIDATE"
    h.advance(201)  # 601 s since `idle` last sent anything: receiving is not activity
    assert await expect_close(idle) == 1000
    await ping_pong(pinger)  # t = 601
    await barrier(master)
    for _ in range(3):  # 1200 s more, far past the idle timeout, with activity every 400 s
        h.advance(400)
        await ping_pong(pinger)
        await barrier(master)
    assert h.health()["connections"] == 2
    h.advance(601)
    assert await expect_close(master) == 1000
    assert await expect_close(pinger) == 1000


# -- maximum connection duration ------------------------------------------------------------------------------


async def test_go_away_at_59_minutes_and_close_at_60(h: Harness, session: aiohttp.ClientSession) -> None:
    arn = h.create_channel()
    master = await connect(session, h.ws_url(arn), autoping=False)
    viewer = await connect(session, h.ws_url(arn, "v1"), autoping=False)
    both = (master, viewer)

    async def keep_alive(seconds: float) -> None:
        h.advance(seconds)
        for ws in both:
            await ping_pong(ws)  # also proves nothing else (no GO_AWAY) arrived before the pong

    for _ in range(6):
        await keep_alive(580)  # t = 3480
    await keep_alive(50)  # t = 3530: still nothing
    h.advance(11)  # t = 3541: GO_AWAY, one minute before the close
    for ws in both:
        msg = await recv(ws)
        assert msg.type is aiohttp.WSMsgType.TEXT and msg.data == '{"messageType":"GO_AWAY"}', msg
    await exchange(master, viewer, "v1")  # still open and routed after GO_AWAY
    await keep_alive(49)  # t = 3590: still open, no second GO_AWAY
    h.advance(11)  # t = 3601
    for ws in both:
        assert await expect_close(ws) == 1000
    # Reconnecting is what GO_AWAY asks for, and it works.
    h.advance(1)
    again = await connect(session, h.ws_url(arn))
    await barrier(again)


async def test_limits_off_has_no_idle_timeout_and_no_maximum_duration() -> None:
    with running({"limits": "off"}) as h:
        async with aiohttp.ClientSession() as session:
            arn = h.create_channel()
            master = await connect(session, h.ws_url(arn))
            viewer = await connect(session, h.ws_url(arn, "v1"))
            for _ in range(5):
                h.advance(3600)
            await barrier(master)
            await barrier(viewer)
            await exchange(master, viewer, "v1")


# -- channel deletion -------------------------------------------------------------------------------------------


async def test_deleting_a_channel_sends_go_away_then_closes_its_clients(
    h: Harness, session: aiohttp.ClientSession
) -> None:
    arn, other = h.create_channel(), h.create_channel()
    clients = [await connect(session, h.ws_url(arn))]
    clients += [await connect(session, h.ws_url(arn, f"v{i}")) for i in range(2)]
    other_master = await connect(session, h.ws_url(other))
    other_viewer = await connect(session, h.ws_url(other, "v0"))
    h.delete_channel(arn)
    for ws in clients:
        assert await recv_json(ws) == GO_AWAY
        assert await expect_close(ws) == 1000
    # The other channel is not touched.
    await barrier(other_master)
    await exchange(other_master, other_viewer, "v0")
    await wait_connections(h, 2)


# -- shutdown (SIGTERM / SIGINT) ---------------------------------------------------------------------------------


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
async def test_shutdown_sends_go_away_refuses_new_clients_and_exits_when_they_leave(sig: signal.Signals) -> None:
    server, log = subprocess_server(["--shutdown-grace", "30", "--limits", "aws"])
    try:
        h = Harness(server)
        arn = h.create_channel()
        async with aiohttp.ClientSession() as session:
            master = await connect(session, h.ws_url(arn))
            viewer = await connect(session, h.ws_url(arn, "v1"))
            server.process.send_signal(sig)
            for ws in (master, viewer):
                assert await recv_json(ws) == GO_AWAY
            # Open connections carry on while draining ...
            await exchange(master, viewer, "v1")
            # ... but new ones are refused (the listening socket is closed, or 503 while it closes).
            try:
                late = await connect(session, h.ws_url(arn, "late"))
            except aiohttp.WSServerHandshakeError as e:
                assert e.status == 503, e
            except aiohttp.ClientConnectionError:
                pass
            else:
                await late.close()
                raise AssertionError("a new connection was accepted during shutdown")
            assert server.process.poll() is None, "exited while clients were still connected"
            started = time.monotonic()
            await master.close()
            await viewer.close()
        code = wait_exit(server.process, 15)
        assert code is not None, f"still running 15 s after its clients left:\n{log.text()}"
        assert code == 0, log.text()
        assert time.monotonic() - started < 15  # far less than the 30 s grace
    finally:
        server.stop()


async def test_shutdown_grace_bounds_the_wait_for_clients_that_stay() -> None:
    server, log = subprocess_server(["--shutdown-grace", "2"])
    try:
        h = Harness(server)
        arn = h.create_channel()
        async with aiohttp.ClientSession() as session:
            master = await connect(session, h.ws_url(arn))
            viewer = await connect(session, h.ws_url(arn, "stays"))
            server.process.send_signal(signal.SIGTERM)
            started = time.monotonic()
            for ws in (master, viewer):
                assert await recv_json(ws) == GO_AWAY
            # Nobody leaves. After the grace period the server closes them and exits.
            for ws in (master, viewer):
                msg = await recv(ws, timeout=15)
                assert msg.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED, aiohttp.WSMsgType.ERROR), msg
            code = await asyncio.to_thread(wait_exit, server.process, 15)
            elapsed = time.monotonic() - started
        assert code == 0, log.text()
        assert elapsed >= 1.5, f"exited after {elapsed:.2f} s, before --shutdown-grace 2"
    finally:
        server.stop()


# -- SIGHUP: reload TURN settings -----------------------------------------------------------------------------------


def write_config(path: Path, secret: str, uris: list[str]) -> None:
    quoted = ", ".join(f'"{u}"' for u in uris)
    path.write_text(f'turn_secret = "{secret}"\nturn_uri = [{quoted}]\nturn_ttl = 600\n')


async def test_sighup_with_new_turn_settings_sends_reconnect_ice_server(tmp_path: Path) -> None:
    config = tmp_path / "signalite.toml"
    uris = ["turn:127.0.0.1:3478?transport=udp"]
    write_config(config, "first-secret", uris)
    server, log = subprocess_server(["--config", str(config), "--shutdown-grace", "1"])
    try:
        h = Harness(server)
        arn = h.create_channel()
        signaling = h.signaling(arn)

        def password() -> tuple[str, list[str]]:
            """Which secret signed the TURN password (the username carries a time, so compare secrets)."""
            servers = signaling.get_ice_server_config(ChannelARN=arn)["IceServerList"]
            username, issued = str(servers[0]["Username"]), str(servers[0]["Password"])
            secrets = ("first-secret", "second-secret")
            signed_by = next((s for s in secrets if turn_password(s, username) == issued), "?")
            return signed_by, [u for s in servers for u in s["Uris"]]

        async with aiohttp.ClientSession() as session:
            master = await connect(session, h.ws_url(arn))
            viewers = [await connect(session, h.ws_url(arn, f"v{i}")) for i in range(2)]
            everyone = [master, *viewers]

            async def hup() -> str:
                mark = len(log.lines)
                server.process.send_signal(signal.SIGHUP)
                index = await asyncio.to_thread(log.wait_for, "settings.reloaded", mark)
                return log.lines[index]

            first_password, first_uris = password()
            assert (first_password, first_uris) == ("first-secret", uris)

            # Unchanged file: nothing is sent.
            line = await hup()
            assert "turn_changed=False" in line, line
            for ws in everyone:
                await barrier(ws)

            # New secret: RECONNECT_ICE_SERVER to every client, and new credentials from now on.
            write_config(config, "second-secret", uris)
            line = await hup()
            for ws in everyone:
                assert await recv_json(ws) == RECONNECT_ICE_SERVER
                await barrier(ws)
            second_password, _ = password()
            assert second_password == "second-secret"

            # New URIs: the same.
            new_uris = ["turn:127.0.0.1:3478?transport=udp", "turn:127.0.0.1:3478?transport=tcp"]
            write_config(config, "second-secret", new_uris)
            await hup()
            for ws in everyone:
                assert await recv_json(ws) == RECONNECT_ICE_SERVER
            assert password()[1] == new_uris

            # A broken file is refused; the running settings stay and nobody hears anything.
            config.write_text("turn_secret = [unterminated\n")
            mark = len(log.lines)
            server.process.send_signal(signal.SIGHUP)
            await asyncio.to_thread(log.wait_for, "settings.reload_failed", mark)
            for ws in everyone:
                await barrier(ws)
            assert password() == (second_password, new_uris)

            # The connections were never closed.
            await exchange(master, viewers[0], "v0")
            for ws in everyone:
                await ws.close()
    finally:
        server.stop()


# -- slow consumers ------------------------------------------------------------------------------------------------


async def test_client_that_stops_reading_is_cut_off_without_slowing_others() -> None:
    with running({"limits": "off"}) as h:
        async with aiohttp.ClientSession() as session:
            arn = h.create_channel()
            master = await connect(session, h.ws_url(arn))
            good = await connect(session, h.ws_url(arn, "good"))
            # A raw socket with a tiny receive window that never reads after the handshake.
            slow = raw_ws_connect(h.port, {"X-Amz-ChannelARN": arn, "X-Amz-ClientId": "slow"}, rcvbuf=4096)
            try:
                await wait_connections(h, 3)
                big = "A" * 10240
                sent_to_slow = 0
                cut_off = False
                for round_ in range(200):  # at most 40 MB towards the slow client
                    for _ in range(20):
                        await master.send_str(frame("ICE_CANDIDATE", big, recipient="slow"))
                    sent_to_slow += 20
                    marker = ice_payload(round_)
                    await master.send_str(frame("ICE_CANDIDATE", marker, recipient="good"))
                    try:
                        got = await recv_json(good, timeout=5)
                    except AssertionError:
                        raise AssertionError(
                            f"the well-behaved viewer stopped receiving after {sent_to_slow} messages were sent "
                            "to a viewer that does not read: the slow consumer blocked the sender"
                        ) from None
                    assert got["messagePayload"] == marker, got
                    if h.health()["connections"] == 2:
                        cut_off = True
                        break
                assert cut_off, f"the slow viewer was still connected after {sent_to_slow} x 10 KB messages"
                # Everyone else carries on.
                for _ in range(3):
                    await exchange(master, good, "good")
                await barrier(master)
                # The slow client, reading at last, finds its stream ended by the server (close frame or EOF).
                slow.settimeout(15)
                data = b""
                ended = False
                while not ended:
                    try:
                        chunk = await asyncio.to_thread(slow.recv, 1 << 20)
                    except (ConnectionResetError, TimeoutError):
                        break
                    if not chunk:
                        ended = True
                    data += chunk
                    frames, _ = parse_server_frames(data)
                    if frames and frames[-1][0] == 0x8:
                        ended = True
                        code = int.from_bytes(frames[-1][1][:2], "big")
                        assert code in (1008, 1011, 1001, 1000), code
                assert ended, "the server neither closed nor sent a close frame to the cut-off client"
                frames, _ = parse_server_frames(data)
                assert all(op in (0x1, 0x8) for op, _ in frames)
                texts = sum(1 for op, _ in frames if op == 0x1)
                assert texts < sent_to_slow, (texts, sent_to_slow)  # it did not get everything: it was cut off
            finally:
                slow.close()
            await master.close()
            await good.close()


async def test_a_closed_fast_socket_is_freed_without_the_cycle_collector(h: Harness) -> None:
    # With 10k sockets open, every full collection walks them all (~90 ms here); a closed socket
    # left in a reference cycle would also wait for one to be freed. None may be left behind.
    arn = h.create_channel()
    gc.disable()
    try:
        async with aiohttp.ClientSession() as session:
            viewer = await session.ws_connect(h.ws_url(arn, "v1"))
            await wait_connections(h, 1)

            async def weak_sockets() -> list[weakref.ref[Any]]:
                return [weakref.ref(c.ws) for c in h.server.server.sockets.connections.values()]

            refs = h.server.call(weak_sockets)
            assert len(refs) == 1 and refs[0]() is not None
            await viewer.close()
            await wait_connections(h, 0)
            for _ in range(100):
                if refs[0]() is None:
                    break
                await asyncio.sleep(0.01)
            assert refs[0]() is None, gc.get_referrers(refs[0]())
    finally:
        gc.enable()


@pytest.mark.parametrize("stack", ["auto", "aiohttp"])
async def test_finished_sessions_leave_nothing_to_the_cycle_collector(stack: str) -> None:
    # The usual connect (a channel the store knows, admitted without a task) and a whole session:
    # offer, answer, close. Whatever the server made for it must be freed by reference counting;
    # objects left in cycles cost every collection their traversal (bench/README.md: +6 % sessions
    # per CPU-second once the guard's hand-off stopped keeping its callback).
    with running({"limits": "off", "websocket_stack": stack}) as h:
        await _sessions_leave_no_cycles(h)


async def _sessions_leave_no_cycles(h: Harness) -> None:
    arn = h.create_channel()
    async with aiohttp.ClientSession() as session:
        master = await connect(session, h.ws_url(arn))

        async def one_session(cid: str) -> None:
            viewer = await connect(session, h.ws_url(arn, cid))
            await viewer.send_str(frame("SDP_OFFER", ice_payload(1)))
            await recv_json(master)
            await master.send_str(frame("SDP_ANSWER", ice_payload(2), recipient=cid))
            await recv_json(viewer)
            await viewer.close()

        await one_session("warm")  # first-use caches, the channel in the store's memory
        await wait_connections(h, 1)
        with left_in_cycles(("signalite", "aiofastnet", "picows", "aiohttp")) as left:
            for i in range(5):
                await one_session(f"v{i}")
            await wait_connections(h, 1)
            await barrier(master)
        assert left == []
        await master.close()


async def test_a_server_close_is_recorded_at_once_and_only_once(h: Harness) -> None:
    # The console's "disconnected" comes when the server closes a socket, not when (or if) the client
    # answers the close frame; the client's later departure does not record it again.
    arn = h.create_channel()
    sock = raw_ws_connect(h.port, {"X-Amz-ChannelARN": arn, "X-Amz-ClientId": "quiet"})
    try:
        await wait_connections(h, 1)
        h.delete_channel(arn)  # GO_AWAY, then the server closes; this client reads nothing

        async def departures() -> list[dict[str, Any]]:
            return [e for e in h.server.server.sockets.recent_events
                    if e["kind"] == "disconnected" and e.get("client_id") == "quiet"]  # fmt: skip

        for _ in range(100):
            if h.server.call(departures):
                break
            await asyncio.sleep(0.01)
        assert len(h.server.call(departures)) == 1, "no prompt 'disconnected' for a socket the server closed"
    finally:
        sock.close()
    await wait_connections(h, 0)
    await asyncio.sleep(0.2)
    assert len(h.server.call(departures)) == 1
