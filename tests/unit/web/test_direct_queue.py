"""websocket._DirectQueue: text frames skip aiohttp's queue only while nothing waits in it."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace
from typing import Any

import pytest
from aiohttp import WSMessage, WSMsgType

from signalite.web import websocket

pytestmark = pytest.mark.skipif(not websocket._DIRECT_SUPPORTED, reason="another aiohttp series: no direct dispatch")


def text(data: str) -> WSMessage:
    return WSMessage(WSMsgType.TEXT, data, None)


async def make_queue() -> tuple[Any, list[str]]:
    protocol = SimpleNamespace(_reading_paused=False, pause_reading=lambda: None, resume_reading=lambda: None)
    queue = websocket._DirectQueue(protocol, 2**16, loop=asyncio.get_running_loop())
    seen: list[str] = []
    queue.conn = "the connection"
    queue.on_text = lambda conn, text: seen.append(text if conn == "the connection" else "wrong connection")
    return queue, seen


async def test_text_into_an_empty_queue_goes_straight_to_the_callback() -> None:
    queue, seen = await make_queue()
    queue.feed_data(text("a"), 1)
    queue.feed_data(text("b"), 1)
    assert seen == ["a", "b"]
    assert not queue._buffer


async def test_text_behind_a_queued_frame_waits_its_turn() -> None:
    queue, seen = await make_queue()
    queue.feed_data(WSMessage(WSMsgType.PING, b"p", None), 1)
    queue.feed_data(text("after-ping"), 10)
    assert seen == []
    assert (await queue.read()).type is WSMsgType.PING
    assert (await queue.read()).data == "after-ping"
    queue.feed_data(text("now-direct"), 10)
    assert seen == ["now-direct"]


async def test_without_a_callback_everything_is_queued() -> None:
    queue, seen = await make_queue()
    queue.on_text = None
    queue.feed_data(text("queued"), 6)
    assert seen == []
    assert (await queue.read()).data == "queued"
