"""Cluster benchmark (issue 5, item 6): relaying across two signalite nodes over Redis, next to one node,
and `--workers 2` next to one worker, in one run.

    .venv/bin/python bench/cluster.py            # 3 rounds: about 3.5 min
    .venv/bin/python bench/cluster.py --quick    # 1 round, 2 s windows: about 1 min
    .venv/bin/python bench/cluster.py --profile-dir /tmp/prof --bus-probe   # + where the bus path's time goes

Candidates (each a fresh set of processes, and a fresh private Redis, per round and again for the
latency workloads after saturation):
  single    one `signalite serve --limits off`, no Redis: masters and viewers on one node
  local     one node with `--redis` (one worker): clustered mode, every recipient local
  cross     nodes A and B (`--redis`, one cluster, one SQLite data dir): masters on A, viewers on B,
            so every message goes viewer -> B -> Redis -> A -> master and back the same way
  w2        `serve --workers 2 --redis`, both workers pinned to CPU 0 (the same core budget as one
            worker); the kernel spreads connections, so about half the pairs cross workers
  w2spread  `serve --workers 2 --redis` allowed on CPUs 0 and 1, sharing CPU 1 with the generator
Servers and redis-server are pinned to CPU 0 (w2spread: 0-1), the load generator to CPU 1. The
generator is bench/loadgen/loadgen.mjs (the data-plane benchmark's), unchanged; for `cross` it runs
under bench/loadgen_cluster/split.mjs, which sends the masters' connections to A and the viewers' to
B (and checks that it did). Where the masters and viewers really are is also read from the cluster's
presence in Redis during each measurement: `cross` must have every master on A and every viewer on
B, and the w2 rows show the share of viewers on the other worker than their master.

Workloads per candidate and round (the relay workload of bench/relay.py: C channels x V viewers,
ICE-sized messages, each viewer's messages echoed back by its master):
  saturation  closed loop, --window messages in flight per viewer: delivered msgs/s, p50/p99
  half        open loop at 50% of that candidate's saturation rate in this round: p50/p99
  low         open loop at a fixed --low-rate for every candidate: the latency without load
(w2 and w2spread: saturation only; the question there is throughput.)

Also reported, because they change what the figures mean: messages a node dropped (its log's
`bus.forward_failed` warnings; the nodes run at --log-level warning), messages the route script put
in the TTL buffer although their recipient was connected (Redis RPUSH calls: never delivered), nodes
declared dead, and presence entries of viewers that had already disconnected (stale). --profile-dir
adds a py-spy pass over both nodes of `cross`; --bus-probe measures the CPU per message of calling
Redis through redis-py (as the bus did before its own RESP client) next to pipelined and raw-RESP
alternatives (a raw PUBLISH is what the bus now sends for a learnt route), and one bus hop's latency;
bench/bus_micro.py and bench/bus_nodes.py measure the bus itself.

The order of the candidates rotates from round to round; the tables show medians and ratios. Only
127.0.0.1 is used; every loop and process is bounded in time; every process started here is stopped
at the end (and gets SIGTERM if this script dies). Prints figures only: nothing passes or fails.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import queue
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
import uuid
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from benchlib import die_with_parent as _die_with_parent
from benchlib import footer
from benchlib import free_port as _free_port
from benchlib import pinned as _pinned
from benchlib import proc_cpu as _proc_cpu
from benchlib import stop as _stop
from benchlib import wait_port as _wait_port

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
LOADGEN = HERE / "loadgen" / "loadgen.mjs"
SPLIT = HERE / "loadgen_cluster" / "split.mjs"
RELAYGEN = HERE / "loadgen_c" / "relaygen.py"  # the same workload in C (--generator c, the default)

SERVER_CPU = "0"
LOADGEN_CPU = "1"
REGION = "us-east-1"
OPEN_MODE_KEY = {"accessKeyId": "AKIDBENCH00000001", "secretAccessKey": "bench-secret", "region": REGION}
SEP = "\x1f"  # signalite's Redis field separator (src/signalite/bus/redis.py)


@dataclass(frozen=True)
class Candidate:
    label: str
    nodes: int  # signalite processes started (each its own port)
    redis: bool
    workers: int = 1
    cpus: str = SERVER_CPU
    split: bool = False  # masters to node A, viewers to node B
    latency: bool = True  # run the half-load and low-rate workloads too


CANDIDATES: dict[str, Candidate] = {
    "single": Candidate("1 node, no Redis", nodes=1, redis=False),
    "local": Candidate("1 node + Redis", nodes=1, redis=True),
    "cross": Candidate("2 nodes, cross-node", nodes=2, redis=True, split=True),
    "w2": Candidate("--workers 2, CPU 0", nodes=1, redis=True, workers=2, latency=False),
    "w2spread": Candidate("--workers 2, CPUs 0-1", nodes=1, redis=True, workers=2, cpus="0,1", latency=False),
}


# -- processes -------------------------------------------------------------------------------------


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def _children(pid: int) -> list[int]:
    try:
        with open(f"/proc/{pid}/task/{pid}/children") as f:
            return [int(p) for p in f.read().split()]
    except OSError:
        return []


def _cores_busy() -> dict[int, float]:
    """Busy CPU seconds (user + nice + system + irq + softirq) per core, from /proc/stat."""
    busy: dict[int, float] = {}
    tick = os.sysconf("SC_CLK_TCK")
    with open("/proc/stat") as f:
        for line in f:
            if line.startswith("cpu") and line[3].isdigit():
                p = line.split()
                busy[int(p[0][3:])] = (int(p[1]) + int(p[2]) + int(p[3]) + int(p[6]) + int(p[7])) / tick
    return busy


def _health(port: int) -> dict[str, Any]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=5) as r:
        return dict(json.loads(r.read()))


class Redis:
    """A private redis-server on a free loopback port, no persistence, pinned like the servers."""

    def __init__(self, workdir: Path, tag: str, nice: int) -> None:
        self.port = _free_port()
        self.log = workdir / f"{tag}-redis.log"
        argv = [shutil.which("redis-server") or "redis-server", "--port", str(self.port), "--bind", "127.0.0.1",
                "--save", "", "--appendonly", "no", "--dir", str(workdir), "--logfile", ""]  # fmt: skip
        with self.log.open("wb") as out:
            self.proc = subprocess.Popen(
                _pinned(SERVER_CPU, argv, nice), stdout=out, stderr=subprocess.STDOUT, preexec_fn=_die_with_parent
            )
        try:
            _wait_port(self.proc, self.port, self.log, timeout=10)
            import redis  # signalite's own dependency (redis-py)

            self.client = redis.Redis(port=self.port, decode_responses=True, socket_timeout=5)
            deadline = time.monotonic() + 10
            while True:
                try:
                    self.client.ping()
                    break
                except redis.exceptions.BusyLoadingError:
                    if time.monotonic() > deadline:
                        raise
                    time.sleep(0.05)
        except BaseException:
            _stop(self.proc)
            raise

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self.client.close()
        _stop(self.proc)


@dataclass
class Node:
    name: str
    proc: subprocess.Popen[bytes]
    port: int
    log: Path
    worker_pids: list[int] = field(default_factory=list)  # --workers: the serving children

    @property
    def pids(self) -> list[int]:
        return self.worker_pids or [self.proc.pid]


@dataclass
class Stack:
    """Everything one candidate runs on: its nodes, its Redis (or none), its channels."""

    name: str
    nodes: list[Node]
    redis: Redis | None
    cluster: str
    channels: list[str]

    @property
    def server_pids(self) -> list[int]:
        return [p for n in self.nodes for p in n.pids]

    def close(self) -> None:
        for node in self.nodes:
            _stop(node.proc)
            for pid in node.worker_pids:  # the supervisor forwards SIGTERM; make sure
                if _alive(pid):
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(pid, signal.SIGKILL)
        if self.redis is not None:
            self.redis.close()

    def presence(self, tag: str) -> dict[str, Any]:
        """Where each master and viewer is, from the cluster's presence hashes in Redis.

        `tag` is the load generator's run tag: its viewers' ClientIds start with `v<tag>`. Entries for
        other ClientIds (an earlier run's viewers, gone by now) are counted apart as `stale`."""
        if self.redis is None:
            return {}
        pipe = self.redis.client.pipeline(transaction=False)
        for arn in self.channels:
            pipe.hgetall(f"{self.cluster}:presence:{arn}")
        masters: dict[str, int] = {}
        viewers: dict[str, int] = {}
        same = other = missing = 0
        stale: list[str] = []
        for held in pipe.execute():
            master = held.pop("m", None)
            m_node = master.split(SEP)[0] if master else None
            if m_node is None:
                missing += 1
            else:
                masters[m_node] = masters.get(m_node, 0) + 1
            for key, value in held.items():
                if not key.startswith(f"v:v{tag}"):
                    stale.append(f"{key[2:]}@{value.split(SEP)[0]}")
                    continue
                v_node = value.split(SEP)[0]
                viewers[v_node] = viewers.get(v_node, 0) + 1
                if m_node is not None:
                    same, other = (same + 1, other) if v_node == m_node else (same, other + 1)
        total = same + other
        return {
            "masters_by_node": masters, "viewers_by_node": viewers, "channels_without_master": missing,
            "elsewhere": other / total if total else None, "stale": sorted(stale),
        }  # fmt: skip


def _start_node(
    name: str, opts: argparse.Namespace, cand: Candidate, workdir: Path, data_dir: Path, redis: Redis | None,
    cluster: str, tag: str,
) -> Node:  # fmt: skip
    port = _free_port()
    log = workdir / f"{tag}-{name}.log"
    argv = [sys.executable, "-m", "signalite", "serve", "--host", "127.0.0.1", "--port", str(port),
            "--data-dir", str(data_dir), "--limits", "off", "--shutdown-grace", "1", "--log-level", "warning",
            *opts.signalite_arg]  # fmt: skip
    if redis is not None:
        argv += ["--redis", redis.url, "--cluster-name", cluster, "--node-id", name]  # workers: A/0, A/1
    if cand.workers > 1:
        argv += ["--workers", str(cand.workers)]
    with log.open("wb") as out:
        proc = subprocess.Popen(
            _pinned(cand.cpus, argv, opts.nice), stdout=out, stderr=subprocess.STDOUT, cwd=ROOT,
            preexec_fn=_die_with_parent,
        )  # fmt: skip
    node = Node(name, proc, port, log)
    try:
        _wait_port(proc, port, log)
        if cand.workers > 1:
            deadline = time.monotonic() + 30
            while len(node.worker_pids) < cand.workers:
                if time.monotonic() > deadline or proc.poll() is not None:
                    raise RuntimeError(f"{log.name}: {cand.workers} workers did not start")
                time.sleep(0.1)
                node.worker_pids = _children(proc.pid)
    except BaseException:
        _stop(proc)
        raise
    return node


def _wait_cluster(stack: Stack, expected: int, timeout: float = 20.0) -> None:
    """Until every node reports the bus connected and `expected` live nodes (heartbeats every 2 s)."""
    deadline = time.monotonic() + timeout
    seen: dict[str, Any] = {}
    while time.monotonic() < deadline:
        ok = True
        for node in stack.nodes:
            for _ in range(max(1, 3 * len(node.pids))):  # --workers: each request reaches one worker
                with contextlib.suppress(OSError, ValueError):
                    seen = _health(node.port)
                bus = seen.get("bus", {})
                if not bus.get("connected") or len(bus.get("nodes", ())) < expected:
                    ok = False
        if ok:
            return
        time.sleep(0.25)
    logs = "\n".join(f"--- {n.log.name}:\n{n.log.read_text(errors='replace')[-1500:]}" for n in stack.nodes)
    raise RuntimeError(f"{stack.name}: the cluster did not form within {timeout} s (last /health: {seen})\n{logs}")


def _create_channels(port: int, count: int, prefix: str) -> list[str]:
    import boto3  # the control plane, spoken to as AWS clients do

    client = boto3.client(
        "kinesisvideo", endpoint_url=f"http://127.0.0.1:{port}", region_name=REGION,
        aws_access_key_id=OPEN_MODE_KEY["accessKeyId"], aws_secret_access_key=OPEN_MODE_KEY["secretAccessKey"],
    )  # fmt: skip
    return [client.create_signaling_channel(ChannelName=f"{prefix}-{i}")["ChannelARN"] for i in range(count)]


def _migrate_sqlite(data_dir: Path) -> None:
    """Create the SQLite schema before `--workers` starts: workers that find no database race to
    create it, and the loser can exit with "table channels already exists" (seen 1 time in 3)."""
    import asyncio

    from signalite.store.sqlite import SqliteStore

    data_dir.mkdir(parents=True, exist_ok=True)
    asyncio.run(SqliteStore(data_dir / "signalite.db").close())


def start_stack(name: str, opts: argparse.Namespace, workdir: Path, tag: str) -> Stack:
    cand = CANDIDATES[name]
    cluster = f"bench-{tag}-{name}-{uuid.uuid4().hex[:6]}"
    data_dir = workdir / f"{tag}-{name}-data"
    redis = Redis(workdir, f"{tag}-{name}", opts.nice) if cand.redis else None
    stack = Stack(name, [], redis, cluster, [])
    try:
        if cand.workers > 1:
            _migrate_sqlite(data_dir)
        for i in range(cand.nodes):
            # Nodes share channel metadata through one SQLite file (WAL); the data plane never reads it
            # after a connection is admitted. The cluster uses PostgreSQL for this.
            stack.nodes.append(_start_node("AB"[i], opts, cand, workdir, data_dir, redis, cluster, tag))
        if redis is not None:
            _wait_cluster(stack, cand.nodes * cand.workers)
        stack.channels = _create_channels(stack.nodes[0].port, opts.channels, f"bench-{tag}")
    except BaseException:
        stack.close()
        raise
    return stack


# -- load generator --------------------------------------------------------------------------------


class LoadGen:
    """One run of the load generator on CPU 1; JSON lines out."""

    def __init__(self, script: Path, config: dict[str, Any], nice: int) -> None:
        runner = sys.executable if script.suffix == ".py" else "node"
        argv = _pinned(LOADGEN_CPU, [runner, str(script), json.dumps(config)], nice)
        self.proc = subprocess.Popen(
            argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
            preexec_fn=_die_with_parent,
        )  # fmt: skip
        self.lines: queue.Queue[str | None] = queue.Queue()
        self.stderr: list[str] = []
        self.split: dict[str, Any] | None = None
        threading.Thread(target=self._pump, daemon=True).start()
        self._err = threading.Thread(target=self._pump_err, daemon=True)
        self._err.start()

    def _pump(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.put(line)
        self.lines.put(None)

    def _pump_err(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            if line.startswith('{"event":"split"'):
                self.split = json.loads(line)
            elif len(self.stderr) < 40:
                self.stderr.append(line.rstrip())

    def events(self, deadline: float) -> Iterator[dict[str, Any]]:
        while True:
            try:
                line = self.lines.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                raise RuntimeError("load generator timed out") from None
            if line is None:
                return
            line = line.strip()
            if line.startswith("{"):
                yield json.loads(line)

    def close(self) -> None:
        _stop(self.proc, grace=2)
        self._err.join(2)


@dataclass
class CpuWindow:
    """CPU of the servers, Redis, the generator and everything else on both cores over a window."""

    servers: list[int]
    redis: int | None
    loadgen: int
    t0: float = 0.0
    before: dict[str, Any] = field(default_factory=dict)
    result: dict[str, Any] = field(default_factory=dict)

    def _sample(self) -> dict[str, Any]:
        return {
            "servers": [_proc_cpu(p) for p in self.servers],
            "redis": _proc_cpu(self.redis) if self.redis else 0.0,
            "loadgen": _proc_cpu(self.loadgen),
            "cores": _cores_busy(),
        }

    def start(self) -> None:
        self.t0, self.before = time.monotonic(), self._sample()

    def stop(self) -> None:
        if not self.t0:
            return
        dt = time.monotonic() - self.t0
        now, b = self._sample(), self.before
        servers = [(x - y) / dt for x, y in zip(now["servers"], b["servers"], strict=True)]
        redis = (now["redis"] - b["redis"]) / dt
        gen = (now["loadgen"] - b["loadgen"]) / dt
        busy = sum(now["cores"].get(c, 0) - b["cores"].get(c, 0) for c in (0, 1)) / dt
        self.result = {
            "server_cpu": sum(servers), "server_cpu_each": servers, "redis_cpu": redis, "loadgen_cpu": gen,
            "other_cpu": max(0.0, busy - sum(servers) - redis - gen),
        }  # fmt: skip


def run_workload(
    stack: Stack, opts: argparse.Namespace, *, rate: float | None, tag: str, profile: Path | None = None
) -> dict[str, Any]:
    cand = CANDIDATES[stack.name]
    config: dict[str, Any] = {
        "mode": "relay", "proto": "kvs", "host": "127.0.0.1", "port": stack.nodes[0].port,
        "channels": stack.channels, "credentials": OPEN_MODE_KEY, "sources": [None], "client": "raw",
        "viewers": opts.viewers, "window": opts.window, "payloadLen": opts.payload, "warmup": opts.warmup,
        "duration": opts.duration, "rate": rate, "tag": tag, "deadline": opts.warmup + opts.duration + 40,
    }  # fmt: skip
    script = LOADGEN
    if cand.split:
        config["split"] = {"masterPort": stack.nodes[0].port, "viewerPort": stack.nodes[1].port}
        script = SPLIT
    if opts.generator == "c":
        script = RELAYGEN  # it reads `split` itself and reports the same "split" event
    log_marks = {n.log: n.log.stat().st_size for n in stack.nodes}
    gen = LoadGen(script, config, opts.nice)
    window = CpuWindow(stack.server_pids, stack.redis.proc.pid if stack.redis else None, gen.proc.pid)
    result: dict[str, Any] | None = None
    presence: dict[str, Any] = {}
    spies: list[subprocess.Popen[bytes]] = []
    try:
        for ev in gen.events(time.monotonic() + config["deadline"] + 5):
            kind = ev.get("event")
            if kind == "measure_start":
                window.start()
                if stack.redis is not None:
                    stack.redis.client.config_resetstat()
                if profile is not None:
                    spies = _py_spy(stack, opts, profile)
                presence = stack.presence(tag)
            elif kind == "measure_end":
                window.stop()
                if stack.redis is not None:
                    presence["redis_commands"] = _commandstats(stack.redis)
            elif kind == "result":
                result = ev
            elif kind == "warning":
                print(f"  load generator warning: {ev}", file=sys.stderr, flush=True)
            elif kind == "error":
                raise RuntimeError(f"load generator: {ev.get('error')}")
    finally:
        gen.close()
        for spy in spies:
            try:
                spy.wait(opts.duration + 15)
            except subprocess.TimeoutExpired:
                _stop(spy)
    if result is None:
        raise RuntimeError("load generator ended without a result:\n" + "\n".join(gen.stderr[:12]))
    if cand.split:
        want = (len(stack.channels), len(stack.channels) * opts.viewers)
        got = gen.split or {}
        if (got.get("masters_to_master_port"), got.get("viewers_to_viewer_port"), got.get("mismatched")) != (*want, 0):
            raise RuntimeError(f"split.mjs did not route masters to A and viewers to B: {got}")
        # split.mjs is the proof of where each connection went. The cluster's own presence should say
        # the same; when it does not (a node swept as dead: see bus errors), messages get buffered.
        masters, viewers = presence.get("masters_by_node"), presence.get("viewers_by_node")
        if masters != {"A": want[0]} or viewers != {"B": want[1]}:
            result["presence_anomaly"] = f"masters {masters}, viewers {viewers} (connected: A {want[0]}, B {want[1]})"
            print(f"  presence in Redis is wrong: {result['presence_anomaly']}", file=sys.stderr, flush=True)
    result["bus_errors"] = _bus_errors(log_marks)
    if result["bus_errors"]:
        print(f"  bus errors logged by the nodes: {result['bus_errors']}", file=sys.stderr, flush=True)
    if stale := presence.get("stale"):
        note = f"  {len(stale)} presence entries of an earlier run's viewers still in Redis: {', '.join(stale[:5])}"
        print(note, file=sys.stderr, flush=True)
    result.update(window.result)
    result["placement"] = presence
    return result


def _bus_errors(marks: dict[Path, int]) -> dict[str, int]:
    """Bus warnings the nodes logged since `marks` (log sizes), by event and error: each
    `bus.forward_failed` is a message the node dropped, each `bus.claim_failed` a connection left out
    of the cluster's presence (release failures are not logged: see the stale presence entries)."""
    counts: dict[str, int] = {}
    for log, mark in marks.items():
        with log.open("rb") as f:
            f.seek(mark)
            text = f.read().decode(errors="replace")
        for line in text.splitlines():
            if "event=bus." not in line or ("level=warning" not in line and "level=error" not in line):
                continue
            fields = dict(part.split("=", 1) for part in line.split() if "=" in part)
            key = f"{fields.get('event', '?')} {fields.get('error', '')}".strip()
            counts[key] = counts.get(key, 0) + 1
    return counts


def _commandstats(redis: Redis) -> dict[str, dict[str, float]]:
    """Redis's own time per command over the window (INFO commandstats; microseconds)."""
    stats = redis.client.info("commandstats")
    return {
        k.removeprefix("cmdstat_"): {"calls": v["calls"], "usec_per_call": v["usec_per_call"]}
        for k, v in stats.items()
        if isinstance(v, dict) and v.get("calls")
    }


def _py_spy(stack: Stack, opts: argparse.Namespace, profile: Path) -> list[subprocess.Popen[bytes]]:
    spies = []
    for node in stack.nodes:
        for i, pid in enumerate(node.pids):
            out = profile.with_name(f"{profile.stem}-{node.name}{i if len(node.pids) > 1 else ''}.txt")
            argv = [str(opts.py_spy), "record", "-p", str(pid), "-d", str(max(1, int(opts.duration))), "-r", "200",
                    "-f", "raw", "--nonblocking", "-o", str(out)]  # fmt: skip
            spies.append(subprocess.Popen(
                _pinned(LOADGEN_CPU, argv, 0), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                preexec_fn=_die_with_parent,
            ))  # fmt: skip
    return spies


def run_candidate(name: str, opts: argparse.Namespace, workdir: Path, tag: str) -> dict[str, Any]:
    """Saturation on one set of processes, then the latency workloads on a fresh one: what saturating
    a node does to the cluster (a node wrongly declared dead, its presence swept: see the bus errors)
    is reported with the saturation run and must not leak into the latency figures."""
    cand = CANDIDATES[name]
    out: dict[str, Any] = {}
    stack = start_stack(name, opts, workdir, tag)
    try:
        out["saturation"] = run_workload(stack, opts, rate=None, tag=f"{tag}s")
    finally:
        stack.close()
    if not cand.latency:
        return out
    stack = start_stack(name, opts, workdir, f"{tag}lat")
    try:
        out["half"] = run_workload(stack, opts, rate=out["saturation"]["msgs_per_s"] / 2, tag=f"{tag}h")
        if opts.low_rate:
            out["low"] = run_workload(stack, opts, rate=opts.low_rate, tag=f"{tag}l")
    finally:
        stack.close()
    return out


# -- report ----------------------------------------------------------------------------------------


def _median(values: list[float | None]) -> float | None:
    vals = [v for v in values if v is not None]
    return statistics.median(vals) if vals else None


Getter = Callable[[dict[str, Any]], float | None]


def _get(part: str, *keys: str) -> Getter:
    def get(r: dict[str, Any]) -> float | None:
        v: Any = r.get(part)
        for k in keys:
            if not isinstance(v, dict):
                return None
            v = v.get(k)
        return v if isinstance(v, int | float) else None

    return get


def _per_msg(part: str, key: str) -> Getter:
    def get(r: dict[str, Any]) -> float | None:
        p = r.get(part) or {}
        cpu, rate = p.get(key), p.get("msgs_per_s")
        return cpu / rate * 1e6 if cpu is not None and rate else None

    return get


def _dropped(part: str) -> Getter:
    def get(r: dict[str, Any]) -> float | None:
        p = r.get(part)
        if p is None or "bus_errors" not in p:
            return None
        return sum(n for k, n in p["bus_errors"].items() if k.startswith("bus.forward_failed"))

    return get


def _commands(r: dict[str, Any], part: str) -> dict[str, Any] | None:
    p = r.get(part)
    if p is None or "redis_commands" not in (p.get("placement") or {}):
        return None
    return dict(p["placement"]["redis_commands"])


def _evalsha_us(r: dict[str, Any]) -> float | None:
    """Redis's own time per EVALSHA at saturation (only where routing made most of them)."""
    e = (_commands(r, "saturation") or {}).get("evalsha") or {}
    return e.get("usec_per_call") if e.get("calls", 0) >= 1000 else None


def _buffered(part: str) -> Getter:
    """Messages the route script put in the TTL buffer (RPUSH) although every recipient was
    connected: each one is a message its recipient does not get (until it reconnects)."""

    def get(r: dict[str, Any]) -> float | None:
        cmds = _commands(r, part)
        return None if cmds is None else (cmds.get("rpush") or {}).get("calls", 0)

    return get


# (label, getter, format, ratio to the first column shown)
Row = tuple[str, Getter, str, bool]
PART1: list[Row] = [
    ("relayed msgs/s (saturation)", _get("saturation", "msgs_per_s"), "{:,.0f}", True),
    ("  latency p50 at saturation, ms", _get("saturation", "latency", "p50_ms"), "{:.2f}", False),
    ("  latency p99 at saturation, ms", _get("saturation", "latency", "p99_ms"), "{:.2f}", False),
    ("  server CPU per message, us (all nodes)", _per_msg("saturation", "server_cpu"), "{:.1f}", True),
    ("  messages dropped by a node (bus.forward_failed)", _dropped("saturation"), "{:,.0f}", False),
    ("  messages buffered, not delivered (RPUSH)", _buffered("saturation"), "{:,.0f}", False),
    ("  Redis CPU per message, us", _per_msg("saturation", "redis_cpu"), "{:.1f}", False),
    ("  Redis time per EVALSHA, us (its own)", _evalsha_us, "{:.1f}", False),
    ("  servers' CPU (share of a core)", _get("saturation", "server_cpu"), "{:.0%}", False),
    ("  Redis CPU", _get("saturation", "redis_cpu"), "{:.0%}", False),
    ("  generator CPU", _get("saturation", "loadgen_cpu"), "{:.0%}", False),
    ("  others' CPU (both cores)", _get("saturation", "other_cpu"), "{:.0%}", False),
    ("rate at 50% load, msgs/s", _get("half", "msgs_per_s"), "{:,.0f}", False),
    ("  latency p50 at 50% load, ms", _get("half", "latency", "p50_ms"), "{:.2f}", False),
    ("  latency p99 at 50% load, ms", _get("half", "latency", "p99_ms"), "{:.2f}", False),
    ("  latency p99.9 at 50% load, ms", _get("half", "latency", "p999_ms"), "{:.2f}", False),
    ("  messages dropped at 50% load", _dropped("half"), "{:,.0f}", False),
    ("  messages buffered, not delivered, at 50% load", _buffered("half"), "{:,.0f}", False),
    ("  others' CPU at 50% load", _get("half", "other_cpu"), "{:.0%}", False),
    ("rate at fixed low load, msgs/s", _get("low", "msgs_per_s"), "{:,.0f}", False),
    ("  latency p50 at low load, ms", _get("low", "latency", "p50_ms"), "{:.2f}", False),
    ("  latency p99 at low load, ms", _get("low", "latency", "p99_ms"), "{:.2f}", False),
]


def _worker_cpu(i: int) -> Getter:
    def get(r: dict[str, Any]) -> float | None:
        each = (r.get("saturation") or {}).get("server_cpu_each") or []
        return each[i] if len(each) > i else None

    return get


PART2: list[Row] = [
    ("relayed msgs/s (saturation)", _get("saturation", "msgs_per_s"), "{:,.0f}", True),
    ("  viewers on another worker than their master", _get("saturation", "placement", "elsewhere"), "{:.0%}", False),
    ("  latency p50 at saturation, ms", _get("saturation", "latency", "p50_ms"), "{:.2f}", False),
    ("  latency p99 at saturation, ms", _get("saturation", "latency", "p99_ms"), "{:.2f}", False),
    ("  messages dropped by a worker (bus.forward_failed)", _dropped("saturation"), "{:,.0f}", False),
    ("  messages buffered, not delivered (RPUSH)", _buffered("saturation"), "{:,.0f}", False),
    ("  server CPU per message, us (all workers)", _per_msg("saturation", "server_cpu"), "{:.1f}", True),
    ("  Redis CPU per message, us", _per_msg("saturation", "redis_cpu"), "{:.1f}", False),
    ("  servers' CPU (share of a core)", _get("saturation", "server_cpu"), "{:.0%}", False),
    ("    worker 1", _worker_cpu(0), "{:.0%}", False),
    ("    worker 2", _worker_cpu(1), "{:.0%}", False),
    ("  Redis CPU", _get("saturation", "redis_cpu"), "{:.0%}", False),
    ("  generator CPU", _get("saturation", "loadgen_cpu"), "{:.0%}", False),
    ("  others' CPU (both cores)", _get("saturation", "other_cpu"), "{:.0%}", False),
]


def _fmt(fmt: str, v: float | None) -> str:
    return "-" if v is None else fmt.format(v)


def _table(title: str, names: list[str], rows: list[Row], results: dict[str, list[dict[str, Any]]]) -> list[str]:
    med = {n: {label: _median([get(r) for r in results[n]]) for label, get, _, _ in rows} for n in names}
    base = names[0]
    head = ["", *(CANDIDATES[n].label for n in names), *(f"{n}/{base}" for n in names[1:])]
    table = [head]
    for label, _, fmt, ratio in rows:
        if all(med[n][label] is None for n in names):
            continue
        cells = [label, *(_fmt(fmt, med[n][label]) for n in names)]
        for n in names[1:]:
            a, b = med[n][label], med[base][label]
            cells.append(f"{a / b:.2f}x" if ratio and a is not None and b else "")
        table.append(cells)
    widths = [max(len(r[i]) for r in table) for i in range(len(head))]
    lines = [title, ""]
    for r in table:
        lines.append("  ".join([r[0].ljust(widths[0]), *(c.rjust(w) for c, w in zip(r[1:], widths[1:], strict=True))]))
    per_round = [
        f"  per round, msgs/s: {CANDIDATES[n].label}: "
        + ", ".join(_fmt("{:,.0f}", r["saturation"]["msgs_per_s"]) for r in results[n])
        for n in names
    ]
    return [*lines, "", *per_round]


def report(results: dict[str, list[dict[str, Any]]], opts: argparse.Namespace) -> str:
    setup = (
        f"medians of {opts.rounds} round(s); servers and Redis on CPU {SERVER_CPU}, generator on CPU "
        f"{LOADGEN_CPU}; {opts.channels} channels x {opts.viewers} viewers, {opts.payload}-char ICE payloads, "
        f"{opts.window} in flight per viewer at saturation; {opts.duration:g} s windows after {opts.warmup:g} s warm-up"
    )
    lines = [f"Cluster benchmark: {setup}", ""]
    part1 = [n for n in ("single", "local", "cross") if results.get(n)]
    part2 = [n for n in ("local", "w2", "w2spread") if results.get(n)]
    if part1:
        lines += _table("(1) Relay across nodes (latency one-way, sender to recipient)", part1, PART1, results)
        lines.append("")
    if len(part2) > 1:
        lines += _table("(2) --workers 2 (with Redis) against one worker (with Redis)", part2, PART2, results)
        lines.append("")
    if results.get("cross"):
        p99 = _median([_get("half", "latency", "p99_ms")(r) for r in results["cross"]])
        ok = None if p99 is None else p99 < 5
        mark = "-" if ok is None else "ok" if ok else "MISS"
        lines += ["Target (issue 5):", f"  [{mark}] cross-node p99 < 5 ms at 50% load: {_fmt('{:.2f} ms', p99)}"]
    stale = [
        e for rs in results.values() for r in rs for part in ("saturation", "half", "low")
        for e in ((r.get(part) or {}).get("placement") or {}).get("stale", [])
    ]  # fmt: skip
    if stale:
        lines += ["", f"Note: {len(stale)} presence entries of viewers that had disconnected in an earlier run "
                      f"were still in Redis (ClientId@node): {', '.join(stale[:6])}"]  # fmt: skip
    anomalies = [
        f"round {i + 1} {part}: {r[part]['presence_anomaly']}" for rs in results.values() for i, r in enumerate(rs)
        for part in ("saturation", "half", "low") if (r.get(part) or {}).get("presence_anomaly")
    ]  # fmt: skip
    if anomalies:
        lines += ["", "Cross-node presence in Redis did not match the connections (messages to the missing ones were "
                      "buffered, not delivered):", *(f"  {a}" for a in anomalies)]  # fmt: skip
    errors: dict[str, int] = {}
    for rs in results.values():
        for r in rs:
            for part in ("saturation", "half", "low"):
                for k, n in ((r.get(part) or {}).get("bus_errors") or {}).items():
                    errors[k] = errors.get(k, 0) + n
    if errors:
        lines += ["", "Bus errors the nodes logged over all runs (each forward_failed is a message dropped): "
                  + ", ".join(f"{k}: {n:,}" for k, n in sorted(errors.items()))]  # fmt: skip
    others = [
        r[part].get("other_cpu", 0) for rs in results.values() for r in rs for part in ("saturation", "half", "low")
        if r.get(part)
    ]  # fmt: skip
    if others and max(others) > 0.10:
        lines += ["", f"Warning: other processes used up to {max(others):.0%} of a core during a measurement; this "
                      "run's figures measure that load too (ratios less than absolutes)."]  # fmt: skip
    return "\n".join(lines)


# -- profile ---------------------------------------------------------------------------------------

# Where a sample's time goes: the innermost frame outside the event loop machinery decides (so
# asyncio's StreamWriter.writelines called by redis-py counts as redis-py: its socket writes).
LOOP_PACKAGES = ("asyncio/", "uvloop/", "<frozen runpy>", "signalite/__main__.py", "signalite/cli.py")
CATEGORIES: list[tuple[str, str]] = [
    ("redis/", "redis-py (commands, pool, socket writes, RESP parsing, pub/sub)"),
    ("signalite/bus/", "signalite bus (bus/redis.py)"),
    ("signalite/signaling/", "signalite hub + protocol"),
    ("signalite/web/", "signalite WebSocket adapter"),
    ("aiohttp/", "aiohttp (WebSocket reader/writer, socket writes)"),
]
LOOP_ONLY = "event loop only (uvloop's C code: socket reads, callbacks)"


def _frame_path(frame: str) -> str:
    """`func (pkg/module.py:12)` -> `pkg/module.py` (py-spy prints paths from site-packages or the
    source root; absolute paths are cut down to the package)."""
    path = frame.rsplit(" (", 1)[-1].rstrip(")").rsplit(":", 1)[0]
    for anchor in ("/site-packages/", "/src/", "/lib/python3"):
        if anchor in path:
            path = path.rsplit(anchor, 1)[1]
    return path


def profile_summary(path: Path, top: int = 10) -> str:
    """A py-spy raw file (idle samples excluded): share of the busy samples by component, the share
    whose stack touches the bus at all (bus/redis.py or redis-py), and the heaviest leaf functions."""
    cats: dict[str, int] = {}
    own: dict[str, int] = {}
    bus_any = 0
    total = 0
    for line in path.read_text(errors="replace").splitlines():
        stack, _, count = line.rpartition(" ")
        if not count.isdigit():
            continue
        n = int(count)
        total += n
        frames = stack.split(";")
        paths = [_frame_path(f) for f in frames]
        leaf = frames[-1].split(" (")[0] + " (" + paths[-1].rsplit("/", 1)[-1] + ")"
        own[leaf] = own.get(leaf, 0) + n
        if any(p.startswith(("redis/", "signalite/bus/")) for p in paths):
            bus_any += n
        cat = LOOP_ONLY
        for p in reversed(paths):
            if p.startswith(LOOP_PACKAGES):
                continue
            cat = next((name for prefix, name in CATEGORIES if p.startswith(prefix)), f"other ({p.split('/')[0]})")
            break
        cats[cat] = cats.get(cat, 0) + n
    if not total:
        return "  (no samples)"
    small = sum(n for k, n in cats.items() if k.startswith("other (") and n / total < 0.02)
    cats = {k: n for k, n in cats.items() if not (k.startswith("other (") and n / total < 0.02)}
    if small:
        cats["other (each < 2%)"] = small
    lines = [f"  by component ({total} busy samples):"]
    lines += [f"    {n / total:6.1%}  {k}" for k, n in sorted(cats.items(), key=lambda kv: -kv[1])]
    lines.append(f"    {bus_any / total:6.1%}  = samples with the bus anywhere in the stack (bus/redis.py or redis-py)")
    lines.append(f"  heaviest leaf functions (top {top}):")
    lines += [f"    {n / total:6.1%}  {k}" for k, n in sorted(own.items(), key=lambda kv: -kv[1])[:top]]
    return "\n".join(lines)


def profile_pass(opts: argparse.Namespace, workdir: Path) -> str:
    """A separate `cross` run with py-spy on both nodes (not counted in the figures); its summary."""
    print("profile pass: cross-node, py-spy on both nodes ...", file=sys.stderr, flush=True)
    stack = start_stack("cross", opts, workdir, "prof")
    try:
        sat = run_workload(stack, opts, rate=None, tag="ps", profile=opts.profile_dir / "saturation.txt")
    finally:
        stack.close()
    stack = start_stack("cross", opts, workdir, "proflat")
    try:
        half = run_workload(stack, opts, rate=sat["msgs_per_s"] / 2, tag="ph", profile=opts.profile_dir / "half.txt")
    finally:
        stack.close()
    lines = []
    for part, r in (("saturation", sat), ("half", half)):
        lat = r["latency"]
        lines.append(f"\nProfile pass, {part}: {r['msgs_per_s']:,.0f} msgs/s, p50 {lat['p50_ms']} ms, p99 "
                     f"{lat['p99_ms']} ms (py-spy running: slower than unprofiled)")  # fmt: skip
        cmds = r["placement"].get("redis_commands", {})
        if cmds:
            each = (f"{k} {v['calls']:,} calls {v['usec_per_call']:.1f} us each" for k, v in sorted(cmds.items()))
            lines.append("  Redis commands over the window (Redis's own time): " + ", ".join(each))
        for node in ("A", "B"):
            path = opts.profile_dir / f"{part}-{node}.txt"
            if path.exists():
                lines.append(f"  node {node} ({'masters' if node == 'A' else 'viewers'}), py-spy {path}:")
                lines.append(profile_summary(path))
    return "\n".join(lines)


# -- bus probe -------------------------------------------------------------------------------------

# signalite's route script, reduced to the delivery branch it takes when the recipient is present
# (src/signalite/bus/redis.py, _ROUTE), and a delivery message of the size the relay workload makes.
PROBE_SCRIPT = """
local holder = redis.call('HGET', KEYS[1], ARGV[1])
if holder then
  local node = string.sub(holder, 1, string.find(holder, '\\31', 1, true) - 1)
  if redis.call('EXISTS', ARGV[2] .. ':alive:' .. node) == 1 then
    redis.call('PUBLISH', ARGV[2] .. ':to:' .. node, ARGV[3])
    return 1
  end
end
return 0
"""
PROBE_FRAME = '{"messagePayload":"' + "A" * 300 + '","messageType":"ICE_CANDIDATE","senderClientId":"v1"}'
PROBE_MESSAGE = SEP.join(("d", f"arn:aws:kinesisvideo:{REGION}:000000000000:channel/probe/1", "v1", "ICE_CANDIDATE",
                          "", "60", PROBE_FRAME))  # fmt: skip


def _resp(*parts: str) -> bytes:
    out = [b"*%d\r\n" % len(parts)]
    for part in parts:
        b = part.encode()
        out.append(b"$%d\r\n%s\r\n" % (len(b), b))
    return b"".join(out)


async def _probe(port: int, redis_pid: int, n: int) -> list[tuple[str, float, float, float]]:
    """CPU per routed message, of the client and of Redis, for ways of calling Redis from asyncio:
    (label, client us, Redis us, msgs/s)."""
    import asyncio

    import redis.asyncio as aioredis

    def cpu() -> float:
        return time.process_time()

    rows: list[tuple[str, float, float, float]] = []

    async def timed(label: str, count: int, body: Callable[[], Any]) -> None:
        c0, r0, t0 = cpu(), _proc_cpu(redis_pid), time.perf_counter()
        await body()
        dt = time.perf_counter() - t0
        rows.append((label, (cpu() - c0) / count * 1e6, (_proc_cpu(redis_pid) - r0) / count * 1e6, count / dt))

    r = aioredis.Redis.from_url(f"redis://127.0.0.1:{port}", decode_responses=True, max_connections=1000)
    await r.hset("p:presence:x", "m", f"A{SEP}1")
    await r.set("p:alive:A", "1")
    route = r.register_script(PROBE_SCRIPT)
    keys, args = ["p:presence:x", "p:buf"], ["m", "p", PROBE_MESSAGE]
    await route(keys=keys, args=args)

    async def concurrent(k: int) -> None:
        left = n

        async def worker() -> None:
            nonlocal left
            while left > 0:
                left -= 1
                await route(keys=keys, args=args)

        await asyncio.gather(*(worker() for _ in range(k)))

    await timed("redis-py EVALSHA, awaited one at a time (forward() before the RESP client)", n,
                lambda: concurrent(1))  # fmt: skip
    await timed("redis-py EVALSHA, 100 in flight (100 busy connections; pool raised to 1000)", n,
                lambda: concurrent(100))  # fmt: skip

    async def pipelined(batch: int) -> None:
        for _ in range(n // batch):
            async with r.pipeline(transaction=False) as pipe:
                for _ in range(batch):
                    pipe.evalsha(route.sha, 2, *keys, *args)
                await pipe.execute()

    await timed("redis-py pipeline, 100 EVALSHA per round trip", n, lambda: pipelined(100))
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    one = _resp("EVALSHA", route.sha, "2", *keys, *args)

    async def raw(batch: int) -> None:
        for _ in range(n // batch):
            writer.write(one * batch)
            for _ in range(batch):
                await reader.readline()

    await timed("raw RESP on one connection, 1 EVALSHA per write", n // 4, lambda: raw(1))
    await timed("raw RESP on one connection, 100 EVALSHA per write", n, lambda: raw(100))
    publish = _resp("PUBLISH", "p:to:B", PROBE_MESSAGE)

    async def raw_publish() -> None:
        for _ in range(n // 100):
            writer.write(publish * 100)
            for _ in range(100):
                await reader.readline()

    await timed("raw RESP, 100 PUBLISH per write (no Lua: recipient's node known)", n, raw_publish)

    pubsub = r.pubsub(ignore_subscribe_messages=True)
    await pubsub.subscribe("p:to:B")

    async def receive() -> None:
        task = asyncio.ensure_future(raw_publish())
        got = 0
        deadline = time.monotonic() + 60
        while got < n and time.monotonic() < deadline:
            if await pubsub.get_message(timeout=1.0) is not None:
                got += 1
        await task

    await timed("redis-py pubsub.get_message() per message (the listener today) + the line above", n, receive)

    # One bus hop as a node makes it today, at a low rate: redis-py EVALSHA (route) -> Redis PUBLISH ->
    # redis-py get_message() on the subscriber; the time from before the call to the message's arrival.
    await r.hset("p:presence:y", "m", f"B{SEP}1")
    await r.set("p:alive:B", "1")
    hops: list[float] = []
    count = min(2000, n)

    async def listen() -> None:
        deadline = time.monotonic() + 30
        while len(hops) < count and time.monotonic() < deadline:
            m = await pubsub.get_message(timeout=1.0)
            if m is not None:
                hops.append((time.perf_counter_ns() - int(m["data"].split(SEP, 1)[0])) / 1e6)

    listener = asyncio.ensure_future(listen())
    t0 = time.perf_counter()
    for _ in range(count):
        stamp = str(time.perf_counter_ns())
        await route(keys=["p:presence:y", "p:buf"], args=["m", "p", stamp + SEP + PROBE_MESSAGE])
        await asyncio.sleep(0.001)
    rate = count / (time.perf_counter() - t0)
    await asyncio.wait_for(listener, 30)
    hops.sort()
    if hops:
        pct = {q: hops[min(len(hops) - 1, int(q / 100 * len(hops)))] for q in (50, 99, 99.9)}
        rows.append((f"one bus hop at {rate:,.0f} msgs/s: EVALSHA -> PUBLISH -> get_message, ms p50 / p99 / p99.9",
                     pct[50], pct[99], pct[99.9]))  # fmt: skip
    await pubsub.aclose()
    writer.close()
    await r.aclose()
    return rows


def bus_probe(opts: argparse.Namespace, workdir: Path) -> str:
    """Run `_probe` pinned to CPU 0 next to a private Redis (also on CPU 0, as in the benchmark)."""
    redis = Redis(workdir, "probe", opts.nice)
    try:
        out = subprocess.run(
            _pinned(SERVER_CPU, [sys.executable, str(Path(__file__).resolve()), "--probe-worker", str(redis.port),
                                 str(redis.proc.pid), "--probe-count", str(opts.probe_count)], opts.nice),
            capture_output=True, text=True, timeout=300, preexec_fn=_die_with_parent,
        )  # fmt: skip
    finally:
        redis.close()
    if out.returncode != 0:
        return f"\nBus probe failed:\n{out.stderr[-2000:]}"
    rows = json.loads(out.stdout)
    width = max(len(row[0]) for row in rows)
    lines = ["", f"Bus probe: CPU per routed message ({opts.probe_count:,} messages each; Redis and the probe both "
                 "on CPU 0; a 480-byte delivery message; uvloop; Redis CPU at 10 ms resolution)", "",
             f"  {'':{width}}  {'client':>10}  {'Redis':>10}  {'rate':>13}"]  # fmt: skip
    for label, a, b, c in rows:
        if label.startswith("one bus hop"):
            lines.append(f"  {label.ljust(width)}  {a:7.2f} ms  {b:7.2f} ms  {c:9.2f} ms")
        else:
            lines.append(f"  {label.ljust(width)}  {a:7.1f} us  {b:7.1f} us  {c:6,.0f} msgs/s")
    return "\n".join(lines)


# -- main ------------------------------------------------------------------------------------------


def _ensure_tools() -> None:
    for tool in ("node", "taskset", "redis-server"):
        if shutil.which(tool) is None:
            sys.exit(f"cluster.py: `{tool}` is needed (Debian: apt-get install nodejs util-linux redis-server)")
    if (os.cpu_count() or 1) < 2:
        sys.exit("cluster.py: needs at least 2 CPUs (servers on CPU 0, the generator on CPU 1)")
    if not (HERE / "loadgen" / "node_modules" / "ws").is_dir():
        if shutil.which("npm") is None:
            sys.exit("cluster.py: npm is needed to install bench/loadgen's packages")
        print("installing npm packages in bench/loadgen ...", file=sys.stderr, flush=True)
        subprocess.run(["npm", "install", "--no-audit", "--no-fund"], cwd=HERE / "loadgen", check=True, timeout=300)


def _round_line(r: dict[str, Any]) -> str:
    sat = r["saturation"]
    text = (
        f"{sat['msgs_per_s']:,.0f} msgs/s (servers {sat.get('server_cpu', 0):.0%}, "
        f"Redis {sat.get('redis_cpu', 0):.0%}, generator {sat.get('loadgen_cpu', 0):.0%}, "
        f"others {sat.get('other_cpu', 0):.0%})"
    )
    if "half" in r:
        text += f"; p99 {r['half']['latency']['p99_ms']} ms at {r['half']['msgs_per_s']:,.0f} msgs/s"
    if "low" in r:
        text += f"; p99 {r['low']['latency']['p99_ms']} ms at {r['low']['msgs_per_s']:,.0f} msgs/s"
    share = sat.get("placement", {}).get("elsewhere")
    if share is not None:
        text += f"; {share:.0%} of viewers on another node than their master"
    return text


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="1 round, 1 s warm-up, 2 s windows")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--warmup", type=float, default=1.0, help="seconds before each measured window")
    parser.add_argument("--duration", type=float, default=3.0, help="seconds of each measured window")
    parser.add_argument("--channels", type=int, default=10, help="C: channels (one master each)")
    parser.add_argument("--viewers", type=int, default=10, help="V: viewers per channel")
    parser.add_argument("--window", type=int, default=16, help="messages in flight per viewer at saturation")
    parser.add_argument("--payload", type=int, default=300, help="messagePayload length (multiple of 4)")
    parser.add_argument("--low-rate", type=float, default=1000.0, help="msgs/s of the fixed low-load run (0: skip)")
    parser.add_argument("--candidates", default=",".join(CANDIDATES), help="comma-separated subset of: "
                        + ", ".join(CANDIDATES))  # fmt: skip
    parser.add_argument(
        "--signalite-arg", action="append", default=[], metavar="ARG",
        help="extra argument for every `signalite serve` (repeatable), e.g. --signalite-arg=--log-level=error",
    )  # fmt: skip
    parser.add_argument(
        "--generator", choices=("c", "node"), default="c",
        help="the load generator: bench/loadgen_c/relaygen.c (default; needs gcc) or bench/loadgen/loadgen.mjs "
        "(under split.mjs for cross), whose own GC pauses and ~10 us per message show in p99 at high rates",
    )  # fmt: skip
    parser.add_argument("--nice", type=int, default=0, help="run servers, Redis and generator at this nice level")
    parser.add_argument("--json", type=Path, help="also write every raw figure to this file")
    parser.add_argument("--keep", type=Path, metavar="DIR", help="work in DIR (logs, data dirs) and keep it")
    parser.add_argument(
        "--profile-dir", type=Path,
        help="after the rounds, one more cross-node run with py-spy on both nodes (saturation and 50%% load), "
        "not counted in the figures; prints where the nodes' time goes (needs py-spy in the venv)",
    )  # fmt: skip
    parser.add_argument(
        "--bus-probe", action="store_true",
        help="after the rounds, measure the client CPU per message of ways to call Redis from asyncio "
        "(what forward() does today against pipelined and raw alternatives)",
    )  # fmt: skip
    parser.add_argument("--probe-count", type=int, default=20_000, help=argparse.SUPPRESS)
    parser.add_argument("--probe-worker", type=int, nargs=2, metavar=("PORT", "PID"), help=argparse.SUPPRESS)
    opts = parser.parse_args(argv)
    if opts.probe_worker is not None:  # internal: the probe itself, in a pinned child process
        import uvloop

        port, pid = opts.probe_worker
        print(json.dumps(uvloop.run(_probe(port, pid, opts.probe_count))))
        return 0
    if opts.quick:
        opts.rounds, opts.warmup, opts.duration = 1, 1.0, 2.0
    candidates = [c.strip() for c in opts.candidates.split(",") if c.strip()]
    if unknown := set(candidates) - set(CANDIDATES):
        parser.error(f"unknown candidates: {', '.join(sorted(unknown))}")
    if opts.payload % 4 or opts.payload < 20:
        parser.error("--payload must be a multiple of 4, at least 20")
    if opts.rounds < 1 or opts.duration <= 0 or opts.channels < 1 or opts.viewers < 1 or opts.window < 1:
        parser.error("--rounds, --duration, --channels, --viewers and --window must be positive")
    opts.py_spy = None
    if opts.profile_dir is not None:
        opts.py_spy = shutil.which("py-spy", path=str(Path(sys.executable).parent)) or shutil.which("py-spy")
        if opts.py_spy is None:
            parser.error("--profile-dir needs py-spy: .venv/bin/pip install py-spy")
        opts.profile_dir = opts.profile_dir.resolve()
        opts.profile_dir.mkdir(parents=True, exist_ok=True)
    _ensure_tools()

    results: dict[str, list[dict[str, Any]]] = {c: [] for c in candidates}
    failures: list[str] = []
    started = time.monotonic()
    if opts.keep is not None:
        opts.keep.mkdir(parents=True, exist_ok=True)
    keep = contextlib.nullcontext(str(opts.keep.resolve())) if opts.keep is not None else None
    with keep or tempfile.TemporaryDirectory(prefix="signalite-cluster-bench-") as tmp:
        workdir = Path(tmp)
        for rnd in range(opts.rounds):
            order = candidates[rnd % len(candidates) :] + candidates[: rnd % len(candidates)]
            for name in order:
                t = time.monotonic()
                print(f"round {rnd + 1}/{opts.rounds}: {CANDIDATES[name].label} ...", file=sys.stderr, flush=True)
                try:
                    r = run_candidate(name, opts, workdir, f"r{rnd}")
                except Exception as e:  # one failed run must not lose the others' figures
                    failures.append(f"round {rnd + 1}, {name}: {type(e).__name__}: {str(e)[:600]}")
                    print(f"  FAILED: {failures[-1]}", file=sys.stderr, flush=True)
                    continue
                results[name].append(r)
                print(f"  {_round_line(r)} ({time.monotonic() - t:.0f} s)", file=sys.stderr, flush=True)
        extras = []
        for wanted, step in ((opts.profile_dir is not None, profile_pass), (opts.bus_probe, bus_probe)):
            if wanted:
                try:
                    extras.append(step(opts, workdir))
                except Exception as e:
                    extras.append(f"\n{step.__name__} failed: {type(e).__name__}: {str(e)[:600]}")
    print()
    print(report(results, opts))
    if failures:
        print(f"\n{len(failures)} run(s) failed and are not in the medians:\n  " + "\n  ".join(failures))
    for extra in extras:
        print(extra)
    print("\n" + footer(started))
    if opts.json is not None:
        opts.json.write_text(json.dumps({"options": {k: str(v) for k, v in vars(opts).items()}, "results": results},
                                        indent=1))  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
