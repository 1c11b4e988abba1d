"""Strict-mode benchmark (issue 4, item 7): what SigV4 verification costs, next to open mode, in one run.

    .venv/bin/python bench/strict.py              # 5 rounds, 4 s windows, 10,000 channels: about 3.5 min
    .venv/bin/python bench/strict.py --quick      # 3 rounds, 2 s windows, 1,000 channels: about 1.5 min
    .venv/bin/python bench/strict.py --probe      # + the auth layer's CPU time measured inside each server
    .venv/bin/python bench/strict.py --policy     # + a third candidate: strict mode with a policy

Candidates: `python -m signalite serve --limits off` processes on copies of the same seeded data,
all pinned to CPU 0 (`taskset -c 0`):
  open    no --credentials: nothing is verified (every caller is --account-id)
  strict  --credentials FILE: every request's SigV4 signature is verified (no policy: full access)
  policy  (--policy) strict, and the key has an IAM-style policy that allows the benchmark's actions
All get the very same bytes: every request is signed with the strict server's key in every mode.
Workloads, each measured per candidate in every round, the candidates alternating (order rotated
from round to round), the load generator pinned to CPU 1:
  connect   WebSocket connects/s: a new TCP connection, a ConnectAsViewer upgrade with a presigned URL
            (signalite.auth.sigv4.presign_url: a new ClientId per URL, only `host` signed, as the KVS
            SDKs do), then the close handshake. Generator: bench/loadgen_strict/connects.mjs (Node).
  describe  DescribeSignalingChannel by ChannelName, keep-alive requests/s (wrk, bench/wrk/strict.lua)
  endpoint  GetSignalingChannelEndpoint by ChannelARN (WSS + HTTPS, MASTER), requests/s (wrk)
wrk's Lua cannot compute HMACs, so the requests are signed here beforehand, botocore's way, into a
pool that wrk replays (a fresh pool before every measurement: signatures are valid for 5 minutes).
The verification cost is 1 - strict/open on the medians (target < 15%). Also shown: the server's
CPU time per operation (steadier when other processes share the core) and the same cost computed
from it; an in-process timing of the auth layer alone (hot loop); with --probe, the auth layer's
CPU time inside the running servers; with --profile-dir, py-spy profiles of the servers.

Before measuring, the script checks that the strict server really verifies: a tampered signature
must be refused (403) by it and accepted by the open server, on both surfaces.
Only 127.0.0.1 is used; every process started here is stopped at the end (and dies with this
script). Prints figures only: nothing here passes or fails.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import queue
import secrets
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote

from benchlib import die_with_parent as _die_with_parent
from benchlib import footer, pinned
from benchlib import free_port as _free_port
from benchlib import stop as _stop

from signalite.auth.sigv4 import Credential, RequestParts, presign_url, sign_request
from signalite.config import Settings
from signalite.controlplane.operations import new_version
from signalite.model.arn import make_arn
from signalite.store.base import Channel
from signalite.store.sqlite import SqliteStore

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
LUA = HERE / "wrk" / "strict.lua"
CONNECTS = HERE / "loadgen_strict" / "connects.mjs"

ACCOUNT = "123456789012"
REGION = "us-east-1"
ACCESS_KEY = "AKIDSTRICTBENCH00001"
BASE_MS = 1_700_000_000_000  # channel i was created at BASE_MS + i (epoch ms): ARNs are predictable
WORKLOADS = ("connect", "describe", "endpoint")
WORKLOAD_LABELS = {
    "connect": "WebSocket connects/s",
    "describe": "DescribeSignalingChannel req/s",
    "endpoint": "GetSignalingChannelEndpoint req/s",
}
USER_AGENT = "Boto3/1.34.0 md/Botocore#1.34.0 ua/2.1 os/linux lang/python#3.11 cfg/retry-mode#standard Botocore/1.34.0"
# The policy candidate's policy: what a scoped-down deployment key looks like.
POLICY = {
    "Version": "2012-10-17",
    "Statement": [
        {
            "Effect": "Allow",
            "Action": [
                "kinesisvideo:ConnectAs*",
                "kinesisvideo:DescribeSignalingChannel",
                "kinesisvideo:GetSignalingChannelEndpoint",
                "kinesisvideo:GetIceServerConfig",
            ],
            "Resource": f"arn:aws:kinesisvideo:*:{ACCOUNT}:channel/bench-*",
        },
        {"Effect": "Deny", "Action": "kinesisvideo:DeleteSignalingChannel", "Resource": "*"},
    ],
}


def channel_name(i: int) -> str:
    return f"bench-{i:05d}"


def channel_arn(i: int) -> str:
    return make_arn("channel", REGION, ACCOUNT, channel_name(i), (BASE_MS + i) / 1000)


# -- seeding ---------------------------------------------------------------------------------------


async def _seed(db: Path, count: int) -> None:
    """Write `count` channels through the real store (the same rows CreateSignalingChannel writes)."""
    store = SqliteStore(db)
    try:
        sem = asyncio.Semaphore(256)

        async def one(i: int) -> None:
            channel = Channel(
                arn=channel_arn(i), account=ACCOUNT, region=REGION, name=channel_name(i),
                channel_type="SINGLE_MASTER", status="ACTIVE", message_ttl_seconds=60,
                version=new_version(), creation_time=(BASE_MS + i) / 1000,
            )  # fmt: skip
            async with sem:
                await store.create_channel(channel, None)

        await asyncio.gather(*(one(i) for i in range(count)))
    finally:
        await store.close()


# -- signed request pools --------------------------------------------------------------------------


def rest_body(op: str, i: int) -> bytes:
    if op == "describe":
        return json.dumps({"ChannelName": channel_name(i)}).encode()
    body = {
        "ChannelARN": channel_arn(i),
        "SingleMasterChannelEndpointConfiguration": {"Protocols": ["WSS", "HTTPS"], "Role": "MASTER"},
    }
    return json.dumps(body).encode()


REST_PATH = {"describe": "/describeSignalingChannel", "endpoint": "/getSignalingChannelEndpoint"}


def signed_request(op: str, i: int, port: int, credential: Credential, now: float, *, tamper: bool = False) -> bytes:
    """One complete HTTP/1.1 request, header-signed as botocore signs it (content-type;host;x-amz-date).

    botocore adds `amz-sdk-*` after signing, and never signs User-Agent; so here.
    """
    host = f"127.0.0.1:{port}"
    path = REST_PATH[op]
    body = rest_body(op, i)
    added = sign_request(
        RequestParts("POST", path, "", {"host": host, "content-type": "application/json"}, body),
        credential, REGION, now,
    )  # fmt: skip
    auth = added["authorization"]
    if tamper:  # flip the last hex digit of the signature
        auth = auth[:-1] + ("0" if auth[-1] != "0" else "1")
    headers = [
        ("Host", host),
        ("Content-Type", "application/json"),
        ("User-Agent", USER_AGENT),
        ("X-Amz-Date", added["x-amz-date"]),
        ("Authorization", auth),
        ("amz-sdk-invocation-id", str(uuid.uuid4())),
        ("amz-sdk-request", "attempt=1; max=3"),
        ("Content-Length", str(len(body))),
    ]
    head = f"POST {path} HTTP/1.1\r\n" + "".join(f"{k}: {v}\r\n" for k, v in headers) + "\r\n"
    return head.encode() + body


def write_rest_pool(path: Path, op: str, port: int, credential: Credential, size: int, channels: int) -> None:
    now = time.time()
    with path.open("wb") as fh:
        for n in range(size):
            fh.write(signed_request(op, (n * 7919) % channels, port, credential, now))
            fh.write(b"\0")


def presigned_target(
    i: int, client: int, port: int, credential: Credential, now: float, *, tamper: bool = False
) -> str:
    """The request target ("/?...") of a presigned ConnectAsViewer URL for channel i."""
    url = f"ws://127.0.0.1:{port}/?X-Amz-ChannelARN={quote(channel_arn(i), safe='')}&X-Amz-ClientId=v{client}"
    target = presign_url(url, credential, REGION, now).split(f"127.0.0.1:{port}", 1)[1]
    if tamper:
        at = target.index("X-Amz-Signature=") + len("X-Amz-Signature=")
        target = target[:at] + ("0" if target[at] != "0" else "1") + target[at + 1 :]
    return target


def write_ws_pool(path: Path, port: int, credential: Credential, size: int, channels: int, salt: int) -> None:
    now = time.time()
    with path.open("w") as fh:
        for n in range(size):
            fh.write(presigned_target((n * 7919) % channels, salt * 1_000_000 + n, port, credential, now) + "\n")


# -- processes -------------------------------------------------------------------------------------


NICE = [0]  # --nice: the servers' and generators' nice level


def _pinned(cpu: int | None, argv: Sequence[str]) -> list[str]:
    return pinned(cpu, argv, NICE[0])


def _raw(port: int, data: bytes, timeout: float = 5.0) -> tuple[int, bytes]:
    """Send raw bytes, return (status, first bytes of the answer). For the sanity checks only."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
        s.sendall(data)
        answer = b""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            head, sep, rest = answer.partition(b"\r\n\r\n")
            if sep:
                length = next(
                    (int(line.split(b":", 1)[1]) for line in head.split(b"\r\n")
                     if line.lower().startswith(b"content-length:")), 0,
                )  # fmt: skip
                if b" 101 " in head.split(b"\r\n", 1)[0] or len(rest) >= length:
                    break
            chunk = s.recv(65536)
            if not chunk:
                break
            answer += chunk
    status_line = answer.split(b"\r\n", 1)[0].split()
    status = int(status_line[1]) if len(status_line) > 1 and status_line[1].isdigit() else 0
    return status, answer


def _ws_status(port: int, target: str) -> tuple[int, bytes]:
    request = (
        f"GET {target} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
    )
    return _raw(port, request.encode())


def cpu_ns(pid: int) -> int | None:
    """CPU time used so far by all threads of `pid`, in ns (Linux schedstat), or None."""
    total, found = 0, False
    try:
        tasks = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return None
    for tid in tasks:
        try:
            with open(f"/proc/{pid}/task/{tid}/schedstat") as fh:
                total += int(fh.read().split()[0])
                found = True
        except (OSError, ValueError, IndexError):
            pass
    return total if found else None


def _core_busy_s(cpu: int) -> float:
    """Busy seconds (user + nice + system + irq + softirq) of one core so far, from /proc/stat."""
    tick = os.sysconf("SC_CLK_TCK")
    with open("/proc/stat") as fh:
        for line in fh:
            if line.startswith(f"cpu{cpu} "):
                p = line.split()
                return (int(p[1]) + int(p[2]) + int(p[3]) + int(p[6]) + int(p[7])) / tick
    return float("nan")


@dataclass
class Window:
    """Server CPU, and everybody else's on the server's core, over a measured window."""

    pid: int
    cpu: int | None
    t0: int = 0
    s0: int | None = None
    c0: float = 0.0
    busy: float = float("nan")  # the server's CPU time / wall time (1.0 = a whole core)
    others: float = float("nan")  # the rest of the server core's busy time / wall time
    server_ns: int | None = None

    def start(self) -> None:
        self.t0, self.s0 = time.monotonic_ns(), cpu_ns(self.pid)
        self.c0 = _core_busy_s(self.cpu) if self.cpu is not None else float("nan")

    def stop(self) -> None:
        wall = time.monotonic_ns() - self.t0
        s1 = cpu_ns(self.pid)
        if self.s0 is not None and s1 is not None:
            self.server_ns = s1 - self.s0
            self.busy = self.server_ns / wall
            if self.cpu is not None:
                core = (_core_busy_s(self.cpu) - self.c0) * 1e9
                self.others = max(0.0, (core - self.server_ns) / wall)


@dataclass
class Candidate:
    name: str
    proc: subprocess.Popen[bytes]
    port: int
    log: Path
    probe: Path | None = None  # --probe: where the server dumps its auth-time counters on SIGUSR1
    probe_seq: int = 0


@dataclass
class Run:
    workload: str
    candidate: str
    round: int
    rate: float
    p50_ms: float | None
    p99_ms: float | None
    errors: int
    first_error: str | None
    cpu_us: float  # server CPU per operation, all threads, microseconds
    busy: float
    others: float
    gen_cpu: float | None = None
    extra: dict[str, Any] = field(default_factory=dict)


# -- probe: the auth layer's CPU time, measured inside the running server (--probe) -----------------

PROBE_ENV = "STRICT_BENCH_PROBE"
PROBED = ("authenticate", "authorize_connect")


def probe_serve(argv: list[str]) -> int:
    """`strict.py --probe-serve serve ...`: run `signalite serve` with its auth entry points timed.

    Gatekeeper.authenticate (REST) and Gatekeeper.authorize_connect (WebSocket handshake) are wrapped
    to add up their calls and the event-loop thread's CPU time (thread_time_ns: preemption by other
    processes is not counted). Neither awaits anything in this version, so the time is theirs alone.
    The garbage collector's collections and CPU time are added up as "gc".
    Each byte written to the FIFO $STRICT_BENCH_PROBE.fifo makes a thread write the totals, with a
    sequence number, to $STRICT_BENCH_PROBE (a thread, because a Python signal handler would wait
    for the event loop to run Python code, which an idle server does not).
    """
    import threading

    from signalite.cli import main as cli_main
    from signalite.web.auth import Gatekeeper

    path = Path(os.environ[PROBE_ENV])
    totals: dict[str, list[int]] = {name: [0, 0] for name in PROBED}

    def timed(name: str, fn: Any) -> Any:
        total = totals[name]
        clock = time.thread_time_ns

        def add(t0: int) -> None:
            total[1] += clock() - t0
            total[0] += 1

        async def wrapper(*args: Any, **kwargs: Any) -> Any:
            t0 = clock()
            try:
                return await fn(*args, **kwargs)
            finally:
                add(t0)

        def sync_wrapper(*args: Any, **kwargs: Any) -> Any:  # (authorize_connect waits for nothing)
            t0 = clock()
            try:
                return fn(*args, **kwargs)
            finally:
                add(t0)

        return wrapper if asyncio.iscoroutinefunction(fn) else sync_wrapper

    for name in PROBED:
        setattr(Gatekeeper, name, timed(name, getattr(Gatekeeper, name)))

    # The cyclic garbage collector's time too: allocation-heavy code makes it run more often, and
    # whichever allocation happens to trigger a collection pays for it.
    import gc

    gc_total = totals.setdefault("gc", [0, 0])
    gc_started = [0]

    def on_gc(phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            gc_started[0] = time.thread_time_ns()
        else:
            gc_total[0] += 1
            gc_total[1] += time.thread_time_ns() - gc_started[0]

    gc.callbacks.append(on_gc)

    def serve_dumps() -> None:
        seq = 0
        while True:
            with open(f"{path}.fifo", "rb", buffering=0) as fifo:  # blocks until the driver writes
                while fifo.read(1):
                    seq += 1
                    tmp = path.with_suffix(".tmp")
                    tmp.write_text(json.dumps({"seq": seq, "totals": totals}))
                    tmp.replace(path)

    threading.Thread(target=serve_dumps, daemon=True).start()
    return cli_main(argv)


def probe_snapshot(cand: Candidate, timeout: float = 5.0) -> dict[str, list[int]] | None:
    """The server's auth counters now (None without --probe)."""
    if cand.probe is None:
        return None
    cand.probe_seq += 1
    deadline = time.monotonic() + timeout
    sent = False
    while time.monotonic() < deadline:
        if not sent:
            try:  # non-blocking: fails (ENXIO) while the server's reader is not there
                fd = os.open(f"{cand.probe}.fifo", os.O_WRONLY | os.O_NONBLOCK)
                try:
                    os.write(fd, b"x")
                    sent = True
                finally:
                    os.close(fd)
            except OSError:
                pass
        else:
            with contextlib.suppress(OSError, ValueError, KeyError):
                data = json.loads(cand.probe.read_text())
                if data["seq"] >= cand.probe_seq:
                    cand.probe_seq = data["seq"]
                    return {k: list(v) for k, v in data["totals"].items()}
        time.sleep(0.002)
    raise RuntimeError(f"{cand.name}: the probe did not answer")


def probe_delta(before: dict[str, list[int]] | None, after: dict[str, list[int]] | None) -> dict[str, list[int]]:
    if before is None or after is None:
        return {}
    return {k: [after[k][0] - before[k][0], after[k][1] - before[k][1]] for k in after}


# -- measurements ----------------------------------------------------------------------------------


class Profiler:
    """py-spy over the first measured window of each (workload, candidate), when --profile-dir is given."""

    def __init__(self, py_spy: str | None, folder: Path | None) -> None:
        self.py_spy, self.folder = py_spy, folder
        self.done: set[tuple[str, str]] = set()
        self.proc: subprocess.Popen[bytes] | None = None
        self.path: Path | None = None

    def start(self, key: tuple[str, str], pid: int, seconds: float) -> None:
        if self.py_spy is None or self.folder is None or key in self.done:
            return
        self.done.add(key)
        self.path = self.folder / f"{key[0]}-{key[1]}.txt"
        self.proc = subprocess.Popen(
            [self.py_spy, "record", "-p", str(pid), "-d", str(max(1, int(seconds))), "-r", "200", "-f", "raw",
             "--nonblocking", "-o", str(self.path)],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, preexec_fn=_die_with_parent,
        )  # fmt: skip

    def wait(self, seconds: float) -> None:
        if self.proc is not None:
            try:
                self.proc.wait(seconds + 15)
            except subprocess.TimeoutExpired:
                _stop(self.proc)
            self.proc = None


def measure_wrk(
    cand: Candidate, op: str, pool: Path, *, seconds: int, connections: int, cpu: int | None,
    server_cpu: int | None, profiler: Profiler | None = None,
) -> Run:  # fmt: skip
    argv = _wrk_argv(cand, pool, seconds, connections, cpu)
    window = Window(cand.proc.pid, server_cpu)
    p0 = probe_snapshot(cand)
    window.start()
    if profiler is not None:
        profiler.start((op, cand.name), cand.proc.pid, seconds)
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=seconds + 30, preexec_fn=_die_with_parent)
    window.stop()
    probe = probe_delta(p0, probe_snapshot(cand))
    if profiler is not None:
        profiler.wait(seconds)
    return _wrk_run(cand, op, proc.returncode, proc.stdout, proc.stderr, window, {"probe": probe})


def _wrk_argv(cand: Candidate, pool: Path, seconds: int, connections: int, cpu: int | None) -> list[str]:
    return _pinned(cpu, [
        "wrk", "-t1", f"-c{connections}", f"-d{max(1, seconds)}s", "--timeout", "5s", "--latency",
        "-s", str(LUA), f"http://127.0.0.1:{cand.port}", "--", str(pool),
    ])  # fmt: skip


def _wrk_run(
    cand: Candidate, op: str, returncode: int, out: str, err: str, window: Window, extra: dict[str, Any]
) -> Run:
    """A Run from wrk's output (bench/wrk/strict.lua's WRKJSON line) and the server's CPU window."""
    if returncode != 0 or "WRKJSON " not in out:
        raise RuntimeError(f"wrk failed ({returncode}): {err.strip()} {out.strip()}")
    data = json.loads(next(x for x in out.splitlines() if x.startswith("WRKJSON ")).removeprefix("WRKJSON "))
    requests = max(int(data["requests"]), 1)
    errors = sum(data["errors"].values())
    return Run(
        workload=op, candidate=cand.name, round=0,
        rate=data["requests"] / (data["duration_us"] / 1e6),
        p50_ms=data["p50_us"] / 1000, p99_ms=data["p99_us"] / 1000,
        errors=errors, first_error=(f"wrk errors {data['errors']}" if errors else None),
        cpu_us=(window.server_ns or 0) / 1000 / requests if window.server_ns is not None else float("nan"),
        busy=window.busy, others=window.others, extra=extra,
    )  # fmt: skip


def measure_wrk_together(
    cands: Sequence[Candidate], op: str, pools: dict[str, Path], *, seconds: int, connections: int,
    cpu: int | None, server_cpu: int | None,
) -> list[Run]:  # fmt: skip
    """`measure_wrk` against every candidate at once, one wrk each, over the same seconds (--together).

    The servers share their core, so a slower or faster stretch of the machine (this VM's speed
    drifts by +-25 % within a minute) hits all of them alike: the ratio of their CPU time per
    request within one window is free of that drift, which alternating windows are not.
    """
    windows = [Window(cand.proc.pid, server_cpu) for cand in cands]
    probes = [probe_snapshot(cand) for cand in cands]
    for window in windows:
        window.start()
    procs = [
        subprocess.Popen(_wrk_argv(cand, pools[cand.name], seconds, connections, cpu), stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, text=True, preexec_fn=_die_with_parent)
        for cand in cands
    ]  # fmt: skip
    outs = [proc.communicate(timeout=seconds + 30) for proc in procs]
    for window in windows:
        window.stop()
    for window in windows:  # "others": what neither server used of their core
        window.others = max(0.0, window.others - sum(w.busy for w in windows if w is not window))
    return [
        _wrk_run(cand, op, proc.returncode, out, err, window,
                 {"probe": probe_delta(p0, probe_snapshot(cand)), "together": True})
        for cand, proc, (out, err), window, p0 in zip(cands, procs, outs, windows, probes, strict=True)
    ]  # fmt: skip


def measure_connects(
    cand: Candidate, targets: Path, *, warmup: float, seconds: float, concurrency: int, cpu: int | None,
    server_cpu: int | None, profiler: Profiler | None = None,
) -> Run:  # fmt: skip
    config = {
        "host": "127.0.0.1", "port": cand.port, "targets": str(targets), "concurrency": concurrency,
        "warmup": warmup, "duration": seconds, "deadline": warmup + seconds + 40,
    }  # fmt: skip
    proc = subprocess.Popen(
        _pinned(cpu, ["node", str(CONNECTS), json.dumps(config)]),
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, preexec_fn=_die_with_parent,
    )  # fmt: skip
    lines: queue.Queue[str | None] = queue.Queue()

    def pump() -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            lines.put(line)
        lines.put(None)

    threading.Thread(target=pump, daemon=True).start()
    window = Window(cand.proc.pid, server_cpu)
    result: dict[str, Any] | None = None
    error: str | None = None
    p0: dict[str, list[int]] | None = None
    p1: dict[str, list[int]] | None = None
    deadline = time.monotonic() + warmup + seconds + 45
    try:
        while True:
            try:
                line = lines.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                error = "connect generator timed out"
                break
            if line is None:
                break
            if not line.startswith("{"):
                continue
            ev = json.loads(line)
            kind = ev.get("event")
            if kind == "measure_start":
                p0 = probe_snapshot(cand)
                window.start()
                if profiler is not None:
                    profiler.start(("connect", cand.name), cand.proc.pid, seconds)
            elif kind == "measure_end":
                window.stop()
                p1 = probe_snapshot(cand)
            elif kind == "result":
                result = ev
            elif kind == "error":
                error = str(ev.get("error"))
    finally:
        _stop(proc, grace=2)
        if profiler is not None:
            profiler.wait(seconds)
    if result is None:
        stderr = proc.stderr.read()[-2000:] if proc.stderr else ""
        raise RuntimeError(f"connect generator failed: {error} {stderr}")
    done = max(int(result["connects"]), 1)
    return Run(
        workload="connect", candidate=cand.name, round=0, rate=float(result["connects_per_s"]),
        p50_ms=result["p50_ms"], p99_ms=result["p99_ms"], errors=int(result["failed"]),
        first_error=result["first_error"],
        cpu_us=(window.server_ns or 0) / 1000 / done if window.server_ns is not None else float("nan"),
        busy=window.busy, others=window.others, gen_cpu=result["loadgen_cpu"],
        extra={"probe": probe_delta(p0, p1)},
    )  # fmt: skip


# -- in-process: the verification code alone -------------------------------------------------------


def micro(credentials_file: Path, port: int, count: int = 3000, profile: bool = False) -> dict[str, float]:
    """Microseconds per call of the auth layer itself (Gatekeeper, as the server calls it), strict vs open.

    Requests are aiohttp mocked requests carrying the same bytes the generators send. With
    `profile`, prints a cProfile of the strict paths.
    """
    import cProfile
    import pstats

    from aiohttp.test_utils import make_mocked_request
    from multidict import CIMultiDict
    from yarl import URL

    from signalite.auth.credentials import load_credentials
    from signalite.signaling.hub import Role
    from signalite.web.auth import Gatekeeper

    identities = load_credentials(credentials_file)
    credential = identities[ACCESS_KEY].credential
    now = time.time()

    def gate(ids: Any) -> Gatekeeper:
        return Gatekeeper(
            identities=ids, default_account=ACCOUNT, default_region=REGION, store=None,  # type: ignore[arg-type]
            quotas=None, clock=time.time,  # type: ignore[arg-type]
        )  # fmt: skip

    strict, open_ = gate(identities), gate(None)
    ws_reqs = []
    for n in range(count):
        target = presigned_target(n % 100, n, port, credential, now)
        headers = CIMultiDict(
            {"Host": f"127.0.0.1:{port}", "Upgrade": "websocket", "Connection": "Upgrade",
             "Sec-WebSocket-Key": "dGhlIHNhbXBsZSBub25jZQ==", "Sec-WebSocket-Version": "13"}
        )  # fmt: skip
        # A mocked request decodes its query (yarl); the server's parser keeps the raw bytes: do the same.
        req = make_mocked_request("GET", target, headers=headers).clone(rel_url=URL(target, encoded=True))
        ws_reqs.append((req, channel_arn(n % 100)))
    rest_reqs = []
    for n in range(count):
        raw = signed_request("describe", n % 100, port, credential, now)
        head, _, body = raw.partition(b"\r\n\r\n")
        lines = head.decode().split("\r\n")
        headers = CIMultiDict(tuple(x.split(": ", 1)) for x in lines[1:])  # type: ignore[misc]
        rest_reqs.append((make_mocked_request("POST", lines[0].split()[1], headers=headers), body))

    loop = asyncio.new_event_loop()

    async def ws_loop(g: Gatekeeper) -> None:
        for req, arn in ws_reqs:
            g.authorize_connect(req, arn, Role.VIEWER)

    async def rest_loop(g: Gatekeeper) -> None:
        for req, body in rest_reqs:
            await g.authenticate(req, body)

    out: dict[str, float] = {}
    try:
        for name, fn in (("connect", ws_loop), ("rest", rest_loop)):
            for mode, g in (("open", open_), ("strict", strict)):
                loop.run_until_complete(fn(g))  # warm
                best = float("inf")
                for _ in range(5):  # best of 5: the least disturbed by other load
                    t0 = time.perf_counter()
                    loop.run_until_complete(fn(g))
                    best = min(best, time.perf_counter() - t0)
                out[f"{name}_{mode}"] = best / count * 1e6
            if profile:
                prof = cProfile.Profile()
                prof.enable()
                loop.run_until_complete(fn(strict))
                prof.disable()
                print(f"\ncProfile of {count} strict {name} verifications (in-process, Gatekeeper):")
                pstats.Stats(prof).sort_stats("tottime").print_stats(14)
    finally:
        loop.close()
    return out


# -- report ----------------------------------------------------------------------------------------


def _med(values: Sequence[float | None]) -> float:
    vals = [v for v in values if v is not None and v == v]
    return statistics.median(vals) if vals else float("nan")


def _min(values: Sequence[float | None]) -> float:
    vals = [v for v in values if v is not None and v == v]
    return min(vals) if vals else float("nan")


def _probe_us(rs: Sequence[Run], workload: str) -> float:
    """Median over runs of the auth layer's CPU us per operation inside the server (--probe)."""
    name = "authorize_connect" if workload == "connect" else "authenticate"
    per_run = [
        r.extra["probe"][name][1] / 1000 / r.extra["probe"][name][0]
        for r in rs
        if r.extra.get("probe", {}).get(name, [0])[0]
    ]
    return _med(per_run)


def _gc_us(rs: Sequence[Run], workload: str) -> float:
    """Median over runs of the garbage collector's CPU us per operation inside the server (--probe)."""
    name = "authorize_connect" if workload == "connect" else "authenticate"
    per_run = [
        r.extra["probe"]["gc"][1] / 1000 / r.extra["probe"][name][0]
        for r in rs
        if r.extra.get("probe", {}).get(name, [0])[0] and "gc" in r.extra["probe"]
    ]
    return _med(per_run)


def _pct(v: float) -> str:
    return "-" if v != v else f"{v:.1%}"


def report(
    runs: list[Run], workloads: Sequence[str], names: Sequence[str], rounds: int, micro_us: dict[str, float]
) -> None:
    print()
    head = (
        f"{'workload':<34} {'cand.':<6} {'median/s':>9} {'p50 ms':>7} {'p99 ms':>7} {'vs open':>7} "
        f"{'per-round':<24} {'cost':>6}  {'CPU us/op':>9} {'min':>6} {'CPU cost':>8} {'min':>6}  "
        f"{'core':>5} {'others':>6} {'errors':>6}"
    )
    print(head)
    print("-" * len(head))
    verdicts: list[tuple[str, str, dict[str, float]]] = []
    for w in workloads:
        base = [r for r in runs if r.workload == w and r.candidate == "open"]
        base_rate, base_cpu, base_min = (
            _med([r.rate for r in base]),
            _med([r.cpu_us for r in base]),
            _min([r.cpu_us for r in base]),
        )
        base_by_round = {r.round: r.rate for r in base}
        base_probe = _probe_us(base, w)
        for n in names:
            rs = [r for r in runs if r.workload == w and r.candidate == n]
            if not rs:
                continue
            rate, cpu, cpu_min = _med([r.rate for r in rs]), _med([r.cpu_us for r in rs]), _min([r.cpu_us for r in rs])
            if n == "open":
                ratio_s = per_round = cost_s = cpu_cost_s = cpu_min_s = ""
            else:
                ratio = rate / base_rate
                per_round = " ".join(f"{r.rate / base_by_round[r.round]:.2f}" for r in rs if r.round in base_by_round)
                base_cpu_by_round = {r.round: r.cpu_us for r in base}
                paired = [r for r in rs if r.extra.get("together") and r.round in base_by_round]
                costs = {
                    "rate": 1 - ratio,
                    # --together: each window's own pair, then the median over the rounds
                    "paired_rate": 1 - _med([r.rate / base_by_round[r.round] for r in paired]),
                    "paired_cpu": 1 - _med([base_cpu_by_round[r.round] / r.cpu_us for r in paired]),
                    "cpu": 1 - base_cpu / cpu,
                    "cpu_min": 1 - base_min / cpu_min,
                    "probe": (_probe_us(rs, w) - base_probe) / cpu,
                }
                ratio_s, cost_s = f"{ratio:.2f}", _pct(costs["rate"])
                cpu_cost_s, cpu_min_s = _pct(costs["cpu"]), _pct(costs["cpu_min"])
                verdicts.append((w, n, costs))
            print(
                f"{WORKLOAD_LABELS[w] if n == names[0] else '':<34} {n:<6} {rate:>9.0f} "
                f"{_med([r.p50_ms for r in rs]):>7.2f} {_med([r.p99_ms for r in rs]):>7.2f} {ratio_s:>7} "
                f"{per_round:<24} {cost_s:>6}  {cpu:>9.1f} {cpu_min:>6.1f} {cpu_cost_s:>8} {cpu_min_s:>6}  "
                f"{_med([r.busy for r in rs]):>5.0%} {_med([r.others for r in rs]):>6.0%} "
                f"{sum(r.errors for r in rs):>6}"
            )
    print()
    print(
        f"median/s: median over {rounds} alternating rounds; vs open: that median / open mode's;\n"
        "per-round: the same ratio within each round; cost = 1 - vs open (the target: < 15%);\n"
        "CPU us/op: the server's CPU time per operation (all threads), median and min over the rounds;\n"
        "CPU cost = 1 - open's CPU us/op / this candidate's (from the medians, and from the minima: other load\n"
        "only ever adds CPU time, so the minima are the least disturbed); core: the server's share of its core;\n"
        "others: the rest of that core's busy time (other processes), medians."
    )
    if any(r.extra.get("probe") for r in runs):
        print()
        print(
            "Inside the servers (--probe): CPU time of the auth layer per operation (Gatekeeper.authorize_connect"
            "\nfor connects, Gatekeeper.authenticate for REST; thread CPU time, median over the rounds), us:"
        )
        for w in workloads:
            cells = []
            base_probe = _probe_us([r for r in runs if r.workload == w and r.candidate == "open"], w)
            for n in names:
                rs = [r for r in runs if r.workload == w and r.candidate == n]
                p = _probe_us(rs, w)
                extra = ""
                if n != "open":
                    share = _pct((p - base_probe) / _med([r.cpu_us for r in rs]))
                    extra = f" (+{p - base_probe:.1f} = {share} of its CPU us/op)"
                cells.append(f"{n} {p:.1f}{extra}")
            print(f"  {WORKLOAD_LABELS[w]:<34} " + "; ".join(cells))
        print("The garbage collector's CPU time per operation (its share of the same runs), us:")
        for w in workloads:
            gcs = [f"{n} {_gc_us([r for r in runs if r.workload == w and r.candidate == n], w):.1f}" for n in names]
            print(f"  {WORKLOAD_LABELS[w]:<34} " + "; ".join(gcs))
    if micro_us:
        print()
        print("In-process, the auth layer alone (Gatekeeper on mocked requests, best of 5 x 3000 calls), us per call:")
        for key, label, w in (("connect", "authorize_connect (presigned URL)", "connect"),
                              ("rest", "authenticate (header-signed REST)", "describe")):  # fmt: skip
            o, st = micro_us[f"{key}_open"], micro_us[f"{key}_strict"]
            rs = [r for r in runs if r.workload == w and r.candidate == "strict"]
            share = (
                f" = {_pct((st - o) / _min([r.cpu_us for r in rs]))} of the strict server's min CPU us/op" if rs else ""
            )
            print(f"  {label:<36} open {o:5.1f}  strict {st:5.1f}  difference {st - o:5.1f}{share}")
    print()
    print(
        "Target (issue 4): verification costs < 15% (cost by rate, or with --together by CPU us/op per window; "
        "then by CPU us/op median, min; by --probe)"
    )
    for w, n, c in verdicts:
        # --together measured this workload: its CPU time per request, window by window, is each
        # server's rate on a core of its own; the rates also carry how the scheduler split the core.
        paired = c["paired_cpu"] == c["paired_cpu"]
        cost = c["paired_cpu"] if paired else c["rate"]
        ok = "ok" if cost < 0.15 else "MISS"
        print(
            f"  [{ok:>4}] {WORKLOAD_LABELS[w]:<34} {n:<6} cost {_pct(cost):>6}"
            + (
                f" (side by side: CPU us/op, median of the rounds' pairs; by rate {_pct(c['paired_rate'])})"
                if paired
                else ""
            )
            + f"   (CPU: {_pct(c['cpu'])}, {_pct(c['cpu_min'])}; probe: {_pct(c['probe'])})"
        )
    # (side by side, each server has about 1/n of the core by design: only `others` says anything)
    worst_core = min((r.busy for r in runs if not r.extra.get("together")), default=1.0)
    worst_others = max((r.others for r in runs if r.others == r.others), default=0.0)
    quiet = sum(
        1 for r in runs
        if r.others == r.others and r.others <= 0.05 and (r.busy >= 0.9 or r.extra.get("together"))
    )  # fmt: skip
    if worst_core < 0.9 or worst_others > 0.05:
        print(
            f"WARNING: the server had as little as {worst_core:.0%} of its core, and other processes used up to "
            f"{worst_others:.0%} of it\n({quiet} of {len(runs)} windows were quiet: others <= 5%, core >= 90%). "
            "Rates and their ratios are disturbed by that\nload; the CPU-based costs are steadier. Re-run on a "
            "quiet machine."
        )
    busiest = max((r.gen_cpu for r in runs if r.gen_cpu is not None), default=0.0)
    if busiest >= 0.9:
        print(
            f"WARNING: the connect generator used up to {busiest:.0%} of its core: it may have limited the rate of "
            "the\nfaster candidate, which would make the connect cost look smaller than it is."
        )
    if any(r.errors for r in runs):
        first = next(r for r in runs if r.errors)
        print(f"WARNING: errors during measurement, e.g. {first.workload}/{first.candidate}: {first.first_error}")


def profile_summary(path: Path, top: int = 16) -> str:
    """Own time per frame, and inclusive time of signalite's and aiohttp's functions, from py-spy raw output."""
    own: dict[str, int] = {}
    incl: dict[str, int] = {}
    total = 0
    for line in path.read_text(errors="replace").splitlines():
        stack, _, count = line.rpartition(" ")
        if not count.isdigit():
            continue
        n = int(count)
        total += n
        frames = stack.split(";")

        def name(f: str, line: bool = True) -> str:
            where = f.rsplit("/", 1)[-1]
            return f.split(" (")[0] + " (" + (where if line else where.split(":")[0] + ")")

        own[name(frames[-1])] = own.get(name(frames[-1]), 0) + n
        for f in {name(f, line=False) for f in frames if "signalite/" in f}:
            incl[f] = incl.get(f, 0) + n
    if not total:
        return "  (no samples)"
    lines = [f"  own time (top {top} of {total} samples):"]
    lines += [f"    {n / total:6.1%}  {k}" for k, n in sorted(own.items(), key=lambda kv: -kv[1])[:top]]
    lines.append(f"  signalite functions including callees (top {top}):")
    lines += [f"    {n / total:6.1%}  {k}" for k, n in sorted(incl.items(), key=lambda kv: -kv[1])[:top]]
    return "\n".join(lines)


# -- main ------------------------------------------------------------------------------------------


def _environment() -> str:
    import platform
    from importlib.metadata import version

    def v(name: str) -> str:
        try:
            return version(name)
        except Exception:
            return "?"

    node = subprocess.run(["node", "--version"], capture_output=True, text=True, timeout=10).stdout.strip()
    return (
        f"signalite {v('signalite')}, Python {platform.python_version()}, aiohttp {v('aiohttp')}, "
        f"uvloop {v('uvloop')}, node {node}; {os.cpu_count()} CPUs; "
        "load average (1, 5, 15 min) at the start: {:.2f} {:.2f} {:.2f}".format(*os.getloadavg())
    )


def start_server(
    name: str, workdir: Path, seed_dir: Path, creds: dict[str, Path], cpu: int | None, log_level: str,
    probe: bool = False,
) -> Candidate:  # fmt: skip
    data = workdir / f"data-{name}"
    shutil.copytree(seed_dir, data)
    port = _free_port()
    launcher = [str(Path(__file__).resolve()), "--probe-serve"] if probe else ["-m", "signalite"]
    argv = [
        sys.executable, *launcher, "serve", "--host", "127.0.0.1", "--port", str(port),
        "--data-dir", str(data), "--limits", "off", "--log-level", log_level, "--shutdown-grace", "1",
        "--account-id", ACCOUNT, "--region", REGION,
    ]  # fmt: skip
    if name in creds:
        argv += ["--credentials", str(creds[name])]
    env = {k: v for k, v in os.environ.items() if not k.startswith("SIGNALITE_")}
    probe_file = workdir / f"probe-{name}.json" if probe else None
    if probe_file is not None:
        env[PROBE_ENV] = str(probe_file)
        os.mkfifo(f"{probe_file}.fifo", 0o600)
    log = workdir / f"{name}.log"
    with log.open("wb") as fh:
        proc = subprocess.Popen(
            _pinned(cpu, argv), env=env, stdout=fh, stderr=subprocess.STDOUT, cwd=workdir,
            preexec_fn=_die_with_parent,
        )  # fmt: skip
    cand = Candidate(name, proc, port, log, probe_file)
    deadline = time.monotonic() + 30
    while True:
        if proc.poll() is not None:
            raise RuntimeError(f"{name} server exited ({proc.returncode}):\n{log.read_text(errors='replace')[-2000:]}")
        try:
            status, answer = _raw(port, f"GET /health HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n\r\n".encode())
            if status == 200:
                mode = json.loads(answer.partition(b"\r\n\r\n")[2])["auth_mode"]
                want = "open" if name == "open" else "strict"
                if mode != want:
                    raise RuntimeError(f"{name} server reports auth_mode {mode!r}, expected {want!r}")
                return cand
        except OSError:
            pass
        if time.monotonic() > deadline:
            raise RuntimeError(f"{name} server did not answer /health within 30 s")
        time.sleep(0.1)


def sanity(cand: Candidate, credential: Credential, channels: int) -> None:
    """The requests the generators send succeed; a tampered signature is refused in strict mode only."""
    now = time.time()
    last = channels - 1
    strict = cand.name != "open"
    status, answer = _raw(cand.port, signed_request("describe", last, cand.port, credential, now))
    if status != 200 or channel_arn(last).encode() not in answer:
        raise RuntimeError(f"{cand.name}: signed DescribeSignalingChannel failed: {answer[:400]!r}")
    status, answer = _raw(cand.port, signed_request("endpoint", 0, cand.port, credential, now))
    if status != 200 or b"ResourceEndpointList" not in answer:
        raise RuntimeError(f"{cand.name}: signed GetSignalingChannelEndpoint failed: {answer[:400]!r}")
    status, answer = _raw(cand.port, signed_request("describe", 0, cand.port, credential, now, tamper=True))
    if (status, strict and b"InvalidSignatureException" in answer) != ((403, True) if strict else (200, False)):
        raise RuntimeError(f"{cand.name}: tampered REST signature answered {answer[:400]!r}")
    status, answer = _ws_status(cand.port, presigned_target(last, 1, cand.port, credential, now))
    if status != 101:
        raise RuntimeError(f"{cand.name}: presigned WebSocket connect failed: {answer[:400]!r}")
    status, answer = _ws_status(cand.port, presigned_target(0, 2, cand.port, credential, now, tamper=True))
    if status != (403 if strict else 101):
        raise RuntimeError(f"{cand.name}: tampered presigned URL answered {answer[:400]!r}")


def _print_run(run: Run, note: str) -> None:
    gen = f", generator {run.gen_cpu:.0%}" if run.gen_cpu is not None else ""
    print(
        f"  round {run.round} {run.workload:<8} {run.candidate:<6} {run.rate:8.0f}/s  p50 {run.p50_ms or 0:6.2f} ms  "
        f"p99 {run.p99_ms or 0:6.2f} ms  server CPU {run.cpu_us:6.1f} us/op, {run.busy:4.0%} of a core{note}{gen}  "
        f"errors {run.errors}" + (f" ({run.first_error})" if run.errors else ""),
        flush=True,
    )


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["--probe-serve"]:
        return probe_serve(argv[1:])
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="3 rounds of 2 s windows, 1 s warm-up, 1,000 channels")
    parser.add_argument("--rounds", type=int, default=5, help="alternating rounds (default 5)")
    parser.add_argument("--duration", type=int, default=4, help="whole seconds per measurement (default 4)")
    parser.add_argument("--warmup", type=int, default=2, help="whole seconds of warm-up (default 2)")
    parser.add_argument("--channels", type=int, default=10_000, help="channels stored (default 10000)")
    parser.add_argument(
        "--workloads", default=",".join(WORKLOADS), help="comma-separated subset of " + ",".join(WORKLOADS)
    )
    parser.add_argument("--policy", action="store_true", help="add a third candidate: strict mode with a policy")
    parser.add_argument("--connections", type=int, default=32, help="wrk keep-alive connections (default 32)")
    parser.add_argument("--ws-concurrency", type=int, default=32, help="concurrent connect loops (default 32)")
    parser.add_argument(
        "--pool", type=int, default=4000, help="signed requests / presigned URLs per pool (default 4000)"
    )
    parser.add_argument("--log-level", default="warning", help="the servers' --log-level (default warning)")
    parser.add_argument("--server-cpu", type=int, default=0, help="CPU for the servers (default 0)")
    parser.add_argument("--client-cpu", type=int, default=1, help="CPU for the load generators (default 1)")
    parser.add_argument("--no-pin", action="store_true", help="do not use taskset")
    parser.add_argument(
        "--nice", type=int, default=0,
        help="run servers and generators at this nice level (e.g. -10, as root: fewer preemptions by other load)",
    )  # fmt: skip
    parser.add_argument("--micro", action=argparse.BooleanOptionalAction, default=True,
                        help="also time the auth layer in-process (default on)")  # fmt: skip
    parser.add_argument("--cprofile", action="store_true", help="print a cProfile of the in-process strict paths")
    parser.add_argument(
        "--probe", action="store_true",
        help="run the servers through this script with their auth entry points timed (thread CPU time), "
             "and report the auth layer's CPU us per operation inside each server",
    )  # fmt: skip
    parser.add_argument("--profile-dir", type=Path,
                        help="py-spy each server over its first measured window of each workload into DIR "
                             "and print where the time goes (needs py-spy: .venv/bin/pip install py-spy)")  # fmt: skip
    parser.add_argument(
        "--together", action="store_true",
        help="REST workloads: load every candidate at once in each window (one wrk each; the servers share "
             "their core), so machine drift hits them alike; the cost is then read from the CPU time per "
             "request of each window's pair (connects still alternate)",
    )  # fmt: skip
    parser.add_argument("--json", type=Path, help="also write every raw figure to this file")
    args = parser.parse_args(argv)
    if args.quick:
        args.rounds, args.duration, args.warmup, args.channels = 3, 2, 1, min(args.channels, 1000)
    workloads = [w.strip() for w in args.workloads.split(",") if w.strip()]
    if bad := set(workloads) - set(WORKLOADS):
        parser.error(f"unknown workloads: {', '.join(sorted(bad))}")
    if args.rounds < 1 or args.duration < 1 or args.channels < 1 or args.pool < 100:
        parser.error("--rounds, --duration and --channels must be >= 1, --pool >= 100")
    if any(w != "connect" for w in workloads) and shutil.which("wrk") is None:
        sys.exit("strict.py: wrk is not installed (Debian/Ubuntu: apt-get install -y wrk)")
    if "connect" in workloads and shutil.which("node") is None:
        sys.exit("strict.py: node (18+) is not installed")
    py_spy = None
    if args.profile_dir is not None:
        py_spy = shutil.which("py-spy") or shutil.which("py-spy", path=str(Path(sys.executable).parent))
        if py_spy is None:
            parser.error("--profile-dir needs py-spy: .venv/bin/pip install py-spy")
        args.profile_dir = args.profile_dir.resolve()
        args.profile_dir.mkdir(parents=True, exist_ok=True)
    NICE[0] = args.nice
    pin = not args.no_pin and shutil.which("taskset") is not None and (os.cpu_count() or 1) >= 2
    server_cpu = args.server_cpu if pin else None
    client_cpu = args.client_cpu if pin else None
    if client_cpu is not None:  # keep this driver (pool signing, bookkeeping) off the servers' core
        with contextlib.suppress(OSError):
            os.sched_setaffinity(0, {client_cpu})

    names = ["open", "strict", *(["policy"] if args.policy else [])]
    print(_environment(), flush=True)
    started = time.monotonic()
    credential = Credential(ACCESS_KEY, secrets.token_urlsafe(30), ACCOUNT)
    candidates: list[Candidate] = []
    runs: list[Run] = []
    micro_us: dict[str, float] = {}
    profiler = Profiler(py_spy, args.profile_dir)
    with tempfile.TemporaryDirectory(prefix="signalite-strict-bench-") as tmp:
        workdir = Path(tmp)
        try:
            entry = {"access_key_id": ACCESS_KEY, "secret_access_key": credential.secret_access_key,
                     "account_id": ACCOUNT}  # fmt: skip
            others = [{"access_key_id": f"AKIDOTHER{i:011d}", "secret_access_key": secrets.token_urlsafe(30),
                       "account_id": f"{i + 1:012d}"} for i in range(20)]  # fmt: skip
            creds = {"strict": workdir / "credentials.json", "policy": workdir / "credentials-policy.json"}
            creds["strict"].write_text(json.dumps({"credentials": [*others, entry]}))
            creds["policy"].write_text(json.dumps({"credentials": [*others, {**entry, "policy": POLICY}]}))
            for path in creds.values():
                path.chmod(0o600)

            seed = workdir / "seed"
            t0 = time.perf_counter()
            asyncio.run(_seed(Settings(data_dir=seed).database_path, args.channels))
            print(f"seeded {args.channels} channels in {time.perf_counter() - t0:.1f} s", flush=True)
            for name in names:
                cand = start_server(name, workdir, seed, creds, server_cpu, args.log_level, probe=args.probe)
                candidates.append(cand)
                sanity(cand, credential, args.channels)
            print("checked: signed requests and presigned URLs succeed on every server; tampered signatures are "
                  "refused (403) by strict servers only", flush=True)  # fmt: skip

            if args.micro:
                micro_us = micro(creds["strict"], candidates[0].port, profile=args.cprofile)

            print(
                f"{args.rounds} rounds x {len(workloads)} workloads x {len(names)} candidates x {args.duration} s "
                f"(+ warm-up); wrk {args.connections} connections, {args.ws_concurrency} connect loops; "
                + (f"servers on CPU {server_cpu}, generators on CPU {client_cpu}" if pin else "no CPU pinning"),
                flush=True,
            )
            pool_file = workdir / "pool"
            warmed: set[tuple[str, str]] = set()
            for rnd in range(1, args.rounds + 1):
                shift = (rnd - 1) % len(names)
                order = [c for c in candidates[shift:] + candidates[:shift]]
                for w in workloads:
                    if args.together and w != "connect":
                        pools = {c.name: workdir / f"pool-{c.name}" for c in candidates}
                        for c in candidates:
                            write_rest_pool(pools[c.name], w, c.port, credential, args.pool, args.channels)
                        # (the first round starts with a warm-up window, as in the alternating path)
                        for seconds in [args.warmup * 2] * (rnd == 1) + [args.duration]:
                            together = measure_wrk_together(
                                candidates, w, pools, seconds=seconds, connections=args.connections,
                                cpu=client_cpu, server_cpu=server_cpu,
                            )  # fmt: skip
                        for run in together:
                            run.round = rnd
                            runs.append(run)
                            _print_run(run, " (side by side)")
                        continue
                    for cand in order:
                        first = (w, cand.name) not in warmed
                        warmed.add((w, cand.name))
                        if w == "connect":
                            write_ws_pool(pool_file, cand.port, credential, args.pool, args.channels, salt=rnd)
                            # The generator warms up itself (a longer warm-up the first time).
                            run = measure_connects(
                                cand, pool_file, warmup=args.warmup * (2 if first else 1), seconds=args.duration,
                                concurrency=args.ws_concurrency, cpu=client_cpu, server_cpu=server_cpu,
                                profiler=profiler,
                            )  # fmt: skip
                        else:
                            write_rest_pool(pool_file, w, cand.port, credential, args.pool, args.channels)
                            if first:  # the servers stay up: one warm-up per workload and server
                                measure_wrk(
                                    cand, w, pool_file, seconds=args.warmup * 2, connections=args.connections,
                                    cpu=client_cpu, server_cpu=server_cpu,
                                )  # fmt: skip
                            run = measure_wrk(
                                cand, w, pool_file, seconds=args.duration, connections=args.connections,
                                cpu=client_cpu, server_cpu=server_cpu, profiler=profiler,
                            )  # fmt: skip
                        run.round = rnd
                        runs.append(run)
                        _print_run(run, f", others {run.others:4.0%}")
            report(runs, workloads, names, args.rounds, micro_us)
            print("load average (1, 5, 15 min) at the end: {:.2f} {:.2f} {:.2f}".format(*os.getloadavg()))
            print(footer(started, argv))
            if args.profile_dir is not None:
                for path in sorted(args.profile_dir.glob("*.txt")):
                    print(f"\npy-spy, {path.stem} (server process, first measured window; {path}):")
                    print(profile_summary(path))
            if args.json is not None:
                args.json.write_text(json.dumps(
                    {"options": {k: str(v) for k, v in vars(args).items()}, "micro_us": micro_us,
                     "runs": [r.__dict__ for r in runs]}, indent=1,
                ))  # fmt: skip
        finally:
            for cand in candidates:
                _stop(cand.proc)
    return 0


if __name__ == "__main__":
    sys.exit(main())
