"""In-process micro-benchmark of the strict-mode auth layer (issue 4): microseconds per request.

    .venv/bin/python bench/auth_micro.py                 # 3000 distinct requests per workload, 7 repeats
    .venv/bin/python bench/auth_micro.py --profile       # + a cProfile of each strict path
    .venv/bin/python bench/auth_micro.py --cold          # + each call timed alone with cold CPU caches

Before/after: `mkdir -p /tmp/base && git archive HEAD src | tar -x -C /tmp/base`, then run it with
`PYTHONPATH=/tmp/base/src` (that checkout's signalite) and without, alternately.

Times the Gatekeeper the way the server calls it, on aiohttp mocked requests carrying the bytes
bench/strict.py's generators send (every request freshly signed, so nothing can be cached on a
signature):
  connect   Gatekeeper.authorize_connect on a presigned ConnectAsViewer URL (only `host` signed)
  describe  Gatekeeper.authenticate + authorize: DescribeSignalingChannel by ChannelName, botocore-style
  endpoint  Gatekeeper.authenticate + authorize: GetSignalingChannelEndpoint by ChannelARN
for three candidates: open (no credentials), strict (a key without a policy), policy (a key with
bench/strict.py's policy). Each repeat runs every candidate once, alternating; the figures are the
median and the minimum over the repeats of the mean per call. Prints figures only.

A hot loop flatters code that a server runs between other work, with cold CPU caches: `--cold` also
evicts the caches before each call (walks a few MB of unrelated objects) and times each call alone.
It can even rank changes wrongly: CPython's SHA-256 is slower than OpenSSL's in this loop, yet
about 4 us per request cheaper in a server (OpenSSL's EVP code is large and goes cold between
requests). Confirm a change in running servers (bench/strict.py; on a noisy machine, servers side
by side on one core under the same load, comparing their CPU us per request window by window).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import cProfile
import json
import pstats
import statistics
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from strict import (
    ACCESS_KEY,
    ACCOUNT,
    POLICY,
    REGION,
    REST_PATH,
    channel_arn,
    presigned_target,
    signed_request,
)

from signalite.auth.credentials import load_credentials
from signalite.auth.sigv4 import Credential
from signalite.controlplane.quotas import RateTable, RequestQuotas
from signalite.model.service import route_table
from signalite.signaling.hub import Role
from signalite.web.auth import Gatekeeper

PORT = 8443
SECRET = "bench-secret-key-0123456789abcdefghijklmnop"


class _Found:
    def __init__(self, arn: str) -> None:
        self.arn = arn


class _Store:
    """What `authorize` asks the store for (with a policy): the channel, found at once."""

    async def find_channel(self, account: str, region: str, name: str) -> _Found:
        return _Found(channel_arn(int(name.rsplit("-", 1)[1])))

    async def find_stream(self, account: str, region: str, name: str) -> None:
        return None


def _credentials_file(directory: Path, policy: bool) -> Path:
    entry: dict[str, Any] = {"access_key_id": ACCESS_KEY, "secret_access_key": SECRET, "account_id": ACCOUNT}
    if policy:
        entry["policy"] = POLICY
    path = directory / ("policy.json" if policy else "strict.json")
    path.write_text(json.dumps({"credentials": [entry]}))
    return path


Loop = Callable[[Gatekeeper], Awaitable[None]]
Call = Callable[[Gatekeeper], Awaitable[Any]]


def build(count: int) -> tuple[dict[str, Gatekeeper], dict[str, Loop], dict[str, list[Call]]]:
    """The gatekeepers, a loop over each workload's requests, and each request's call on its own."""
    from aiohttp.test_utils import make_mocked_request
    from multidict import CIMultiDict
    from yarl import URL

    with tempfile.TemporaryDirectory() as tmp:
        strict_ids = load_credentials(_credentials_file(Path(tmp), policy=False))
        policy_ids = load_credentials(_credentials_file(Path(tmp), policy=True))
    credential: Credential = strict_ids[ACCESS_KEY].credential

    def gate(ids: Any) -> Gatekeeper:
        return Gatekeeper(
            identities=ids, default_account=ACCOUNT, default_region=REGION, store=_Store(),  # type: ignore[arg-type]
            quotas=RequestQuotas(RateTable.for_mode("off")), clock=time.time,
        )  # fmt: skip

    gates = {"open": gate(None), "strict": gate(strict_ids), "policy": gate(policy_ids)}
    now = time.time()
    routes = route_table()

    ws_reqs = []
    for n in range(count):
        target = presigned_target(n % 100, n, PORT, credential, now)
        headers = CIMultiDict(
            {"Host": f"127.0.0.1:{PORT}", "Upgrade": "websocket", "Connection": "Upgrade",
             "Sec-WebSocket-Key": "dGhlIHNhbXBsZSBub25jZQ==", "Sec-WebSocket-Version": "13"}
        )  # fmt: skip
        # A mocked request decodes its query (yarl); the server's parser keeps the raw bytes: do the same.
        req = make_mocked_request("GET", target, headers=headers).clone(rel_url=URL(target, encoded=True))
        ws_reqs.append((req, channel_arn(n % 100)))

    def rest(op: str) -> list[tuple[Any, bytes, dict[str, Any]]]:
        out = []
        for n in range(count):
            raw = signed_request(op, n % 100, PORT, credential, now)
            head, _, body = raw.partition(b"\r\n\r\n")
            lines = head.decode().split("\r\n")
            headers = CIMultiDict(tuple(x.split(": ", 1)) for x in lines[1:])  # type: ignore[misc]
            params = json.loads(body)
            out.append((make_mocked_request("POST", lines[0].split()[1], headers=headers), body, params))
        return out

    describe, endpoint = rest("describe"), rest("endpoint")
    op_describe, op_endpoint = routes[REST_PATH["describe"]], routes[REST_PATH["endpoint"]]

    async def connect(g: Gatekeeper) -> None:
        for req, arn in ws_reqs:
            g.authorize_connect(req, arn, Role.VIEWER)  # (waits for nothing: a plain call)

    def rest_loop(reqs: list[tuple[Any, bytes, dict[str, Any]]], op: Any) -> Callable[[Gatekeeper], Awaitable[None]]:
        async def loop(g: Gatekeeper) -> None:
            for req, body, params in reqs:
                caller = await g.authenticate(req, body)
                await g.authorize(op, caller, params)

        return loop

    def connect_call(req: Any, arn: str) -> Call:
        async def call(g: Gatekeeper) -> None:
            g.authorize_connect(req, arn, Role.VIEWER)

        return call

    def rest_call(req: Any, body: bytes, params: dict[str, Any], op: Any) -> Call:
        async def call(g: Gatekeeper) -> None:
            await g.authorize(op, await g.authenticate(req, body), params)

        return call

    loops = {
        "connect": connect,
        "describe": rest_loop(describe, op_describe),
        "endpoint": rest_loop(endpoint, op_endpoint),
    }
    calls = {
        "connect": [connect_call(req, arn) for req, arn in ws_reqs],
        "describe": [rest_call(req, body, params, op_describe) for req, body, params in describe],
        "endpoint": [rest_call(req, body, params, op_endpoint) for req, body, params in endpoint],
    }
    return gates, loops, calls


def cold_calls(
    gates: dict[str, Gatekeeper], calls: dict[str, list[Call]], repeats: int
) -> dict[tuple[str, str], list[float]]:
    """Median us per call, each call timed alone right after evicting the caches."""
    thrash = [[i, str(i)] for i in range(60_000)]  # several MB of objects: more than the L2 cache

    def evict() -> None:
        total = 0
        for pair in thrash:
            total += pair[0]

    out: dict[tuple[str, str], list[float]] = {}
    for name, fns in calls.items():
        for r in range(repeats):
            order = list(gates.items())
            order = order[r % len(order) :] + order[: r % len(order)]
            for mode, g in order:
                times = []
                for fn in fns:
                    evict()
                    coro = fn(g)
                    t0 = time.perf_counter_ns()
                    with contextlib.suppress(StopIteration):
                        coro.send(None)  # nothing in the auth layer suspends in these cases
                    times.append(time.perf_counter_ns() - t0)
                out.setdefault((name, mode), []).append(statistics.median(times) / 1000)
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--count", type=int, default=3000, help="distinct requests per workload (default 3000)")
    parser.add_argument("--repeats", type=int, default=7, help="repeats (default 7)")
    parser.add_argument("--profile", action="store_true", help="print a cProfile of each strict path")
    parser.add_argument("--cold", action="store_true", help="also time each call alone with cold caches")
    args = parser.parse_args()

    gates, loops, calls = build(args.count)
    loop = asyncio.new_event_loop()
    results: dict[tuple[str, str], list[float]] = {}
    try:
        for name, fn in loops.items():
            for g in gates.values():
                loop.run_until_complete(fn(g))  # warm: caches, allocator
            for r in range(args.repeats):
                order = list(gates.items())
                order = order[r % len(order) :] + order[: r % len(order)]
                for mode, g in order:
                    t0 = time.perf_counter()
                    loop.run_until_complete(fn(g))
                    results.setdefault((name, mode), []).append((time.perf_counter() - t0) / args.count * 1e6)
            if args.profile:
                prof = cProfile.Profile()
                prof.enable()
                loop.run_until_complete(fn(gates["strict"]))
                prof.disable()
                print(f"\ncProfile of {args.count} strict {name} calls:")
                pstats.Stats(prof).sort_stats("tottime").print_stats(16)
    finally:
        loop.close()

    print(f"auth layer, us per request (median / min of {args.repeats} x {args.count} distinct requests)")
    print(f"{'workload':<10} {'open':>13} {'strict':>13} {'policy':>13} {'strict-open':>12} {'policy-open':>12}")
    for name in loops:
        med = {m: statistics.median(results[(name, m)]) for m in gates}
        low = {m: min(results[(name, m)]) for m in gates}
        cells = " ".join(f"{med[m]:6.2f}/{low[m]:6.2f}" for m in gates)
        print(f"{name:<10} {cells} {med['strict'] - med['open']:12.2f} {med['policy'] - med['open']:12.2f}")
    if args.cold:
        cold = cold_calls(gates, calls, max(3, args.repeats // 2))
        print("\ncold caches: each call alone after evicting the caches, us (median per call; median / min of repeats)")
        for name in loops:
            med = {m: statistics.median(cold[(name, m)]) for m in gates}
            low = {m: min(cold[(name, m)]) for m in gates}
            cells = " ".join(f"{med[m]:6.2f}/{low[m]:6.2f}" for m in gates)
            print(f"{name:<10} {cells} {med['strict'] - med['open']:12.2f} {med['policy'] - med['open']:12.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
