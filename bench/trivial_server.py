"""The baseline for bench/controlplane.py: the same web stack as signalite, doing nothing.

aiohttp + uvloop, one `POST /trivial` route that reads the request body and answers a small fixed
JSON object serialised with orjson, with access logging off (as signalite runs it). Everything a
signalite control-plane request costs beyond this is signalite's own work.

    python bench/trivial_server.py --port 8080 [--lifetime 600]

Prints "ready" once listening; exits on SIGINT/SIGTERM or after --lifetime seconds.
"""

from __future__ import annotations

import argparse
import asyncio
import signal

import orjson
import uvloop
from aiohttp import web

RESULT = {"ok": True, "service": "trivial"}


async def trivial(request: web.Request) -> web.Response:
    await request.read()
    return web.Response(body=orjson.dumps(RESULT), content_type="application/json")


async def main(host: str, port: int, lifetime: float) -> None:
    app = web.Application()
    app.router.add_post("/trivial", trivial)
    runner = web.AppRunner(app, access_log=None, handle_signals=False)
    await runner.setup()
    site = web.TCPSite(runner, host, port, backlog=1024)
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
        await runner.cleanup()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--lifetime", type=float, default=600.0, help="exit after this many seconds")
    args = parser.parse_args()
    uvloop.run(main(args.host, args.port, args.lifetime))
