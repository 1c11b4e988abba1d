"""The baseline for bench/relay.py: a bare KVS-style relay on signalite's WebSocket stack.

picows + uvloop + orjson (`--stack picows`, the default: what serves signalite's WebSockets on a single node)
or aiohttp + uvloop + orjson (`--stack aiohttp`: signalite's TLS and cluster WebSockets), and
nothing else: accept `GET /?X-Amz-ChannelARN=…[&X-Amz-ClientId=…]`
as a WebSocket (no ClientId = the master), parse each text frame with orjson, look the recipient
up (a viewer's frame goes to the channel's master, a master's to the viewer named by
`recipientClientId`), build the KVS delivery frame and send it. No validation, no auth, no limits,
no buffering, no logging: every cost signalite adds on top of this is signalite's own.

    python bench/bare_relay.py --port 8081 [--lifetime 600] [--stack picows|aiohttp]

Prints "ready" once listening; exits on SIGINT/SIGTERM or after --lifetime seconds.
"""

from __future__ import annotations

import argparse
import asyncio
import signal
from typing import Any
from urllib.parse import parse_qs, urlsplit

import orjson
import picows
import uvloop
from aiohttp import WSMsgType, web

# channel ARN -> {None: master socket, client id: viewer socket}
CHANNELS: dict[str, dict[str | None, web.WebSocketResponse]] = {}


async def relay(request: web.Request) -> web.StreamResponse:
    query = request.query
    arn = query.get("X-Amz-ChannelARN")
    if arn is None:
        return web.Response(status=400)
    client_id = query.get("X-Amz-ClientId")
    ws = web.WebSocketResponse(compress=False, max_msg_size=64 * 1024)
    await ws.prepare(request)
    channel = CHANNELS.setdefault(arn, {})
    old = channel.get(client_id)
    channel[client_id] = ws
    if old is not None:
        await old.close()
    loads = orjson.loads
    try:
        while True:
            msg = await ws.receive()
            if msg.type is not WSMsgType.TEXT:
                if msg.type in (WSMsgType.CLOSE, WSMsgType.CLOSING, WSMsgType.CLOSED, WSMsgType.ERROR):
                    break
                continue
            try:
                frame = loads(msg.data)
                action = frame["action"]
                payload = frame["messagePayload"]
            except (orjson.JSONDecodeError, KeyError, TypeError):
                continue
            if client_id is None:
                target = channel.get(frame.get("recipientClientId"))
                out = '{"messageType":"' + action + '","messagePayload":"' + payload + '"}'
            else:
                target = channel.get(None)
                out = (
                    '{"senderClientId":"' + client_id + '","messageType":"' + action
                    + '","messagePayload":"' + payload + '"}'
                )  # fmt: skip
            if target is not None and not target.closed:
                try:  # noqa: SIM105 - no context manager on the hot path (signalite doesn't have one either)
                    await target.send_str(out)
                except ConnectionError:
                    pass
    finally:
        if channel.get(client_id) is ws:
            del channel[client_id]
            if not channel:
                CHANNELS.pop(arn, None)
    return ws


# -- picows ------------------------------------------------------------------------------------------

PICOWS_CHANNELS: dict[str, dict[str | None, Any]] = {}


class PicowsRelay(picows.WSListener):  # type: ignore[misc]
    """The same relay on picows: one listener per connection."""

    def __init__(self, arn: str, client_id: str | None) -> None:
        super().__init__()
        self.arn = arn
        self.client_id = client_id
        self.channel = PICOWS_CHANNELS.setdefault(arn, {})
        self.transport: Any = None

    def on_ws_connected(self, transport: Any) -> None:
        self.transport = transport
        old = self.channel.get(self.client_id)
        self.channel[self.client_id] = transport
        if old is not None:
            old.send_close(picows.WSCloseCode.OK)
            old.disconnect()

    def on_ws_frame(self, transport: Any, frame: Any) -> None:
        kind = frame.msg_type
        if kind != picows.WSMsgType.TEXT:
            if kind == picows.WSMsgType.CLOSE:
                transport.send_close(frame.get_close_code())
                transport.disconnect()
            elif kind == picows.WSMsgType.PING:
                transport.send_pong(frame.get_payload_as_bytes())
            return
        try:
            msg = orjson.loads(frame.get_payload_as_memoryview())
            action = msg["action"]
            payload = msg["messagePayload"]
        except (orjson.JSONDecodeError, KeyError, TypeError):
            return
        client_id = self.client_id
        if client_id is None:
            target = self.channel.get(msg.get("recipientClientId"))
            out = '{"messageType":"' + action + '","messagePayload":"' + payload + '"}'
        else:
            target = self.channel.get(None)
            out = (
                '{"senderClientId":"' + client_id + '","messageType":"' + action
                + '","messagePayload":"' + payload + '"}'
            )  # fmt: skip
        if target is not None:
            target.send(picows.WSMsgType.TEXT, out.encode())

    def on_ws_disconnected(self, transport: Any) -> None:
        if self.channel.get(self.client_id) is transport:
            del self.channel[self.client_id]
            if not self.channel:
                PICOWS_CHANNELS.pop(self.arn, None)


def picows_listener(request: Any) -> Any:
    query = parse_qs(urlsplit(request.path.decode()).query)
    arn = query.get("X-Amz-ChannelARN")
    if not arn:
        return None
    client_id = query.get("X-Amz-ClientId")
    return PicowsRelay(arn[0], client_id[0] if client_id else None)


async def main(host: str, port: int, lifetime: float, stack: str) -> None:
    if stack == "picows":
        server = await picows.ws_create_server(
            picows_listener, host, port, max_frame_size=64 * 1024, read_buffer_init_size=2048, backlog=4096
        )
        runner = None
    else:
        app = web.Application()
        app.router.add_get("/", relay)
        runner = web.AppRunner(app, access_log=None, handle_signals=False)
        await runner.setup()
        site = web.TCPSite(runner, host, port, backlog=4096)
        await site.start()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    print("ready", flush=True)
    try:
        await asyncio.wait_for(stop.wait(), lifetime)
    except TimeoutError:
        pass
    finally:
        if runner is not None:
            await runner.shutdown()
            await runner.cleanup()
        else:
            server.close()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8081)
    parser.add_argument("--lifetime", type=float, default=600.0, help="exit after this many seconds")
    parser.add_argument("--stack", choices=("picows", "aiohttp"), default="picows")
    args = parser.parse_args()
    uvloop.run(main(args.host, args.port, args.lifetime, args.stack))
