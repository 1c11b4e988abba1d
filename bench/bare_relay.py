"""The baseline for bench/relay.py: a bare KVS-style relay on signalite's WebSocket stack.

aiohttp + uvloop + orjson, and nothing else: accept `GET /?X-Amz-ChannelARN=…[&X-Amz-ClientId=…]`
as a WebSocket (no ClientId = the master), parse each text frame with orjson, look the recipient
up (a viewer's frame goes to the channel's master, a master's to the viewer named by
`recipientClientId`), build the KVS delivery frame and send it. No validation, no auth, no limits,
no buffering, no logging: every cost signalite adds on top of this is signalite's own.

    python bench/bare_relay.py --port 8081 [--lifetime 600]

Prints "ready" once listening; exits on SIGINT/SIGTERM or after --lifetime seconds.
"""

from __future__ import annotations

import argparse
import asyncio
import signal

import orjson
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


async def main(host: str, port: int, lifetime: float) -> None:
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
        await runner.shutdown()
        await runner.cleanup()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8081)
    parser.add_argument("--lifetime", type=float, default=600.0, help="exit after this many seconds")
    args = parser.parse_args()
    uvloop.run(main(args.host, args.port, args.lifetime))
