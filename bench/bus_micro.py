"""In-process micro-benchmark of the Redis bus (issue 5): CPU per cross-node message, and one hop's latency.

    .venv/bin/python bench/bus_micro.py                                  # the working tree's RedisBus
    .venv/bin/python bench/bus_micro.py --impl /tmp/base/redis.py        # A/B: another bus/redis.py too

Two `RedisBus` instances (nodes A and B) run in this one process on one uvloop event loop, next to a
private redis-server; fake nodes stand in for the WebSocket layer (deliver() only counts). The master
of a channel is claimed on B; on A, `--senders` tasks each await `bus.forward()` of ICE-candidate sized
frames (a 480-byte delivery, as the relay workload makes), yielding to the loop after each (as a read
loop does between frames), until `--count` messages have arrived on B.

  stream   node CPU (this process: sender and receiver side together) and Redis CPU per message,
           and the rate; the work of a cross-node message that is not WebSocket I/O
  hop      one sender, one message every 1 ms: forward() call -> delivered on B, p50/p99 in ms

Each repeat runs every implementation once, alternating; figures are medians over the repeats (Redis
CPU is read from /proc at 10 ms resolution, hence the large counts). Prints figures only.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib.util
import statistics
import sys
import time
import uuid
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(ROOT / "tests"))

import redis_server  # noqa: E402  (tests/redis_server.py: a private redis-server)
from signalite.signaling.hub import Forward, Role  # noqa: E402
from signalite.signaling.protocol import MessageType  # noqa: E402

ARN = "arn:aws:kinesisvideo:us-east-1:000000000000:channel/bench/1"
PAD = "A" * 280


class FakeNode:
    """The BusHandler side of a node: who is here, and what arrived."""

    def __init__(self) -> None:
        self.present: set[tuple[str, str | None]] = set()
        self.received = 0
        self.hops: list[float] = []
        self.done: asyncio.Event = asyncio.Event()
        self.expect = 0

    async def deliver(self, arn: str, recipient: str | None, message_type: MessageType, frame: str) -> bool:
        if (arn, recipient) not in self.present:
            return False
        self.received += 1
        if frame.startswith('{"t":'):
            self.hops.append((time.perf_counter_ns() - int(frame[5 : frame.index(",")])) / 1e6)
        if self.received >= self.expect:
            self.done.set()
        return True

    async def displace(self, connection: int) -> None:
        return None

    async def on_bus_event(self, event: Any) -> None:
        return None

    async def on_bus_reconnected(self) -> None:
        return None

    def local_presence(self) -> list[Any]:
        return []


def _redis_cpu(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / 100.0


def _load(path: str | None) -> Any:
    if path is None:
        from signalite.bus import redis as module

        return module.RedisBus
    spec = importlib.util.spec_from_file_location(f"bus_impl_{uuid.uuid4().hex[:6]}", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.RedisBus


async def _pair(bus_cls: Any, url: str) -> tuple[Any, Any, FakeNode, FakeNode]:
    cluster = f"bm-{uuid.uuid4().hex[:8]}"
    a, b = bus_cls(url, "A", cluster), bus_cls(url, "B", cluster)
    na, nb = FakeNode(), FakeNode()
    await a.start(na)
    await b.start(nb)
    nb.present.add((ARN, None))
    await b.claim(ARN, Role.MASTER, None, 1, max_viewers=None, connects_per_second=None)
    return a, b, na, nb


async def stream(bus_cls: Any, url: str, pid: int, count: int, senders: int) -> dict[str, float]:
    a, b, _, nb = await _pair(bus_cls, url)
    try:
        # Warm up (scripts loaded, routes learnt), then measure.
        for i in range(20):
            await a.forward(Forward(ARN, None, MessageType.ICE_CANDIDATE, "w", '{"x":' + str(i) + "}", 60))
        await asyncio.sleep(0.2)
        nb.received = 0
        nb.expect = count
        nb.done.clear()
        per = count // senders
        frames = [
            f'{{"messagePayload":"{PAD}{s:04d}","messageType":"ICE_CANDIDATE","senderClientId":"v{s}"}}'
            for s in range(senders)
        ]

        async def sender(s: int) -> None:
            f = Forward(ARN, None, MessageType.ICE_CANDIDATE, f"v{s}", frames[s], 60)
            forward = a.forward
            for _ in range(per):
                await forward(f)
                # Like a WebSocket read loop: the next frame comes in a later loop iteration (so each
                # iteration carries about one message per sender, as at saturation with that many peers).
                await asyncio.sleep(0)

        nb.expect = per * senders
        c0, r0, t0 = time.process_time(), _redis_cpu(pid), time.perf_counter()
        await asyncio.gather(*(sender(s) for s in range(senders)))
        await asyncio.wait_for(nb.done.wait(), 60)
        dt = time.perf_counter() - t0
        n = per * senders
        return {
            "node_us": (time.process_time() - c0) / n * 1e6,
            "redis_us": (_redis_cpu(pid) - r0) / n * 1e6,
            "rate": n / dt,
        }
    finally:
        await a.stop()
        await b.stop()


async def hop(bus_cls: Any, url: str, count: int) -> dict[str, float]:
    a, b, _, nb = await _pair(bus_cls, url)
    try:
        for i in range(20):
            await a.forward(Forward(ARN, None, MessageType.ICE_CANDIDATE, "w", '{"x":' + str(i) + "}", 60))
        await asyncio.sleep(0.2)
        nb.hops.clear()
        nb.received = 0
        nb.expect = count
        nb.done.clear()
        for _ in range(count):
            frame = f'{{"t":{time.perf_counter_ns()},"messagePayload":"{PAD}","messageType":"ICE_CANDIDATE"}}'
            await a.forward(Forward(ARN, None, MessageType.ICE_CANDIDATE, "v", frame, 60))
            await asyncio.sleep(0.001)  # uvloop's timers have a 1 ms resolution
        await asyncio.wait_for(nb.done.wait(), 30)
        hops = sorted(nb.hops)
        return {"p50_ms": hops[len(hops) // 2], "p99_ms": hops[int(len(hops) * 0.99)]}
    finally:
        await a.stop()
        await b.stop()


async def main_async(opts: argparse.Namespace) -> None:
    impls = {"tree": _load(None)}
    if opts.py_reader:
        import functools

        impls["tree, no hiredis"] = functools.partial(impls["tree"], use_hiredis=False)
    for path in opts.impl:
        impls[Path(path).name] = _load(path)
    results: dict[str, list[dict[str, float]]] = {name: [] for name in impls}
    with redis_server.private() as server:
        assert server.process is not None
        pid = server.process.pid
        for _ in range(opts.repeats):
            for name, cls in impls.items():
                row = await stream(cls, server.url, pid, opts.count, opts.senders)
                row.update(await hop(cls, server.url, opts.hops))
                results[name].append(row)
                print(f"  {name}: " + ", ".join(f"{k} {v:.3f}" for k, v in row.items()), file=sys.stderr)
    print(f"Bus micro-benchmark: {opts.count:,} messages from {opts.senders} senders, {opts.repeats} repeats (medians)")
    print(f"  {'impl':<20} {'node us/msg':>12} {'redis us/msg':>13} {'msgs/s':>9} {'hop p50 ms':>11} {'p99 ms':>8}")
    for name, rows in results.items():
        med = {k: statistics.median(r[k] for r in rows) for k in rows[0]}
        print(
            f"  {name:<20} {med['node_us']:12.1f} {med['redis_us']:13.1f} {med['rate']:9,.0f}"
            f" {med['p50_ms']:11.3f} {med['p99_ms']:8.3f}"
        )


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--impl", action="append", default=[], help="another bus/redis.py to compare (repeatable)")
    p.add_argument("--count", type=int, default=40000)
    p.add_argument("--senders", type=int, default=50)
    p.add_argument("--hops", type=int, default=2000)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--py-reader", action="store_true", help="also the working tree's bus with hiredis turned off")
    opts = p.parse_args()
    try:
        import uvloop

        uvloop.run(main_async(opts))
    except ImportError:  # pragma: no cover
        asyncio.run(main_async(opts))


if __name__ == "__main__":
    main()
