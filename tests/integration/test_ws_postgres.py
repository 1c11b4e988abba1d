"""A single node on PostgreSQL: its handshakes wait for the database, and still take the picows path."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import aiohttp
import pytest

sys.path.insert(0, str(Path(__file__).parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from wsutil import Harness, connect, frame, recv_json, running, sdp_payload, wait_connections

import pg


@pytest.fixture(scope="module")
def h() -> Iterator[Harness]:
    url = pg.create_database("signalite_wspg")
    try:
        with running({"limits": "aws", "database": url}) as harness:
            yield harness
    finally:
        pg.drop_database(url)


async def test_handshakes_that_wait_for_the_database_are_served_by_picows(h: Harness) -> None:
    # A fresh server's first lookup of a channel goes to PostgreSQL (the admission waits, so the guard
    # pauses the socket and a task finishes it); later ones may not. Both must end on picows.
    arn = h.create_channel()
    async with aiohttp.ClientSession() as session:
        master = await connect(session, h.ws_url(arn))
        viewer = await connect(session, h.ws_url(arn, "v1"))
        await wait_connections(h, 2)

        async def kinds() -> list[str]:
            return [type(c.ws).__name__ for c in h.server.server.sockets.connections.values()]

        assert h.server.call(kinds) == ["FastSocket", "FastSocket"]
        payload = sdp_payload("offer")
        await viewer.send_str(frame("SDP_OFFER", payload))
        got = await recv_json(master)
        assert (got["senderClientId"], got["messageType"], got["messagePayload"]) == ("v1", "SDP_OFFER", payload)
        await viewer.close()
        await master.close()
