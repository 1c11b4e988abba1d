"""Two real signalite nodes over a private Redis: node CPU per cross-node message, A/B between source trees.

    .venv/bin/python bench/bus_nodes.py                                   # the working tree
    .venv/bin/python bench/bus_nodes.py --tree base=/tmp/base/src --tree new=src --no-hiredis base

Each candidate: a private redis-server, nodes A and B (`serve --redis --limits off`, one SQLite data
dir), `--channels` channels with the master on A and one viewer on B. Each viewer keeps `--window`
ICE candidates in flight; its master echoes each back, so every message crosses the bus. The client
runs in this process (aiohttp); what is reported is the nodes' own CPU (user+system from /proc) and
Redis's, per relayed message, and the rate. `--no-hiredis NAME` runs that candidate with hiredis
hidden (as on a machine without it). Candidates alternate over `--repeats`; medians are printed. Not
a saturation benchmark (bench/cluster.py is): the client shares the machine. Prints figures only.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

import redis_server  # noqa: E402  (tests/redis_server.py: a private redis-server)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _cpu(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _start(src: Path, name: str, redis_url: str, cluster: str, data: Path, env: dict[str, str]) -> tuple[Any, int]:
    port = _free_port()
    argv = [sys.executable, "-m", "signalite", "serve", "--host", "127.0.0.1", "--port", str(port),
            "--data-dir", str(data), "--limits", "off", "--log-level", "warning", "--shutdown-grace", "1",
            "--redis", redis_url, "--cluster-name", cluster, "--node-id", name]  # fmt: skip
    proc = subprocess.Popen(argv, env={**env, "PYTHONPATH": str(src)}, cwd=ROOT, stdout=subprocess.DEVNULL)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=1) as r:
                if json.loads(r.read())["bus"].get("connected"):
                    return proc, port
        except (OSError, ValueError, KeyError):
            pass
        time.sleep(0.2)
    proc.kill()
    raise RuntimeError(f"node {name} did not start")


def _channels(port: int, count: int) -> list[str]:
    import boto3

    client = boto3.client(
        "kinesisvideo", endpoint_url=f"http://127.0.0.1:{port}", region_name="us-east-1",
        aws_access_key_id="AKIDBENCH00000001", aws_secret_access_key="bench-secret",
    )  # fmt: skip
    tag = uuid.uuid4().hex[:6]
    return [client.create_signaling_channel(ChannelName=f"bn-{tag}-{i}")["ChannelARN"] for i in range(count)]


async def _relay(port_a: int, port_b: int, arns: list[str], window: int, seconds: float, pids: list[int],
                 redis_pid: int) -> dict[str, float]:  # fmt: skip
    from urllib.parse import urlencode

    import aiohttp

    payload = base64.b64encode(json.dumps({"candidate": "candidate:1 1 udp 1 127.0.0.1 5 typ host"}).encode())
    to_master = json.dumps({"action": "ICE_CANDIDATE", "messagePayload": payload.decode()})
    echoes = 0
    measuring = False
    async with aiohttp.ClientSession() as session:
        pairs = []
        for arn in arns:
            master = await session.ws_connect(f"http://127.0.0.1:{port_a}/?{urlencode({'X-Amz-ChannelARN': arn})}")
            viewer = await session.ws_connect(
                f"http://127.0.0.1:{port_b}/?{urlencode({'X-Amz-ChannelARN': arn, 'X-Amz-ClientId': 'v'})}"
            )
            pairs.append((master, viewer))
        await asyncio.sleep(0.5)
        stop = asyncio.Event()

        async def master_loop(ws: Any) -> None:
            back = json.dumps({"action": "ICE_CANDIDATE", "messagePayload": payload.decode(), "recipientClientId": "v"})
            async for _msg in ws:
                if stop.is_set():
                    return
                await ws.send_str(back)

        async def viewer_loop(ws: Any) -> None:
            nonlocal echoes
            for _ in range(window):
                await ws.send_str(to_master)
            async for _msg in ws:
                if measuring:
                    echoes += 1
                if stop.is_set():
                    return
                await ws.send_str(to_master)

        tasks = [asyncio.ensure_future(master_loop(m)) for m, _ in pairs]
        tasks += [asyncio.ensure_future(viewer_loop(v)) for _, v in pairs]
        await asyncio.sleep(1.0)  # warm up: routes learnt, steady state
        c0 = [_cpu(p) for p in pids]
        r0 = _cpu(redis_pid)
        t0 = time.perf_counter()
        measuring = True
        await asyncio.sleep(seconds)
        measuring = False
        dt = time.perf_counter() - t0
        node_cpu = sum(_cpu(p) - c for p, c in zip(pids, c0, strict=True))
        redis_cpu = _cpu(redis_pid) - r0
        stop.set()
        for m, v in pairs:
            await m.close()
            await v.close()
        for t in tasks:
            t.cancel()
    messages = 2 * echoes  # each echo: viewer -> B -> A -> master, master -> A -> B -> viewer
    return {
        "node_us": node_cpu / messages * 1e6,
        "redis_us": redis_cpu / messages * 1e6,
        "rate": messages / dt,
    }


def run(name: str, src: Path, hide_hiredis: bool, opts: argparse.Namespace) -> dict[str, float]:
    env = dict(os.environ)
    stub = None
    if hide_hiredis:
        stub = Path(tempfile.mkdtemp(prefix="nohiredis-"))
        (stub / "hiredis.py").write_text("raise ImportError('hidden by bench/bus_nodes.py')\n")
    with redis_server.private() as server, tempfile.TemporaryDirectory() as data:
        assert server.process is not None
        cluster = f"bn-{uuid.uuid4().hex[:6]}"
        path = src if stub is None else Path(f"{stub}{os.pathsep}{src}")
        a, port_a = _start(path, "A", server.url, cluster, Path(data), env)
        b = None
        try:
            b, port_b = _start(path, "B", server.url, cluster, Path(data), env)
            arns = _channels(port_a, opts.channels)
            return asyncio.run(
                _relay(port_a, port_b, arns, opts.window, opts.seconds, [a.pid, b.pid], server.process.pid)
            )
        finally:
            for p in (a, b):
                if p is not None:
                    p.terminate()
                    p.wait(10)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--tree", action="append", default=[], help="NAME=SRC_DIR (repeatable; default: tree=src)")
    p.add_argument("--no-hiredis", action="append", default=[], help="candidate NAME to run without hiredis")
    p.add_argument("--channels", type=int, default=20)
    p.add_argument("--window", type=int, default=4)
    p.add_argument("--seconds", type=float, default=5.0)
    p.add_argument("--repeats", type=int, default=3)
    opts = p.parse_args()
    trees = [t.split("=", 1) for t in opts.tree] or [["tree", str(ROOT / "src")]]
    cands = [(n, Path(s).resolve(), False) for n, s in trees]
    cands += [(f"{n} (no hiredis)", Path(s).resolve(), True) for n, s in trees if n in opts.no_hiredis]
    results: dict[str, list[dict[str, float]]] = {c[0]: [] for c in cands}
    for _ in range(opts.repeats):
        for name, src, hide in cands:
            row = run(name, src, hide, opts)
            results[name].append(row)
            print(f"  {name}: " + ", ".join(f"{k} {v:.2f}" for k, v in row.items()), file=sys.stderr)
    print(f"Cross-node relay, {opts.channels} pairs x {opts.window} in flight, {opts.seconds:g} s, medians of "
          f"{opts.repeats}: CPU per relayed message (nodes A+B, Redis)")  # fmt: skip
    print(f"  {'candidate':<22} {'nodes us/msg':>13} {'redis us/msg':>13} {'msgs/s':>9}")
    for name, rows in results.items():
        med = {k: statistics.median(r[k] for r in rows) for k in rows[0]}
        print(f"  {name:<22} {med['node_us']:13.1f} {med['redis_us']:13.1f} {med['rate']:9,.0f}")


if __name__ == "__main__":
    main()
