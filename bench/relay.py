"""Data-plane benchmark (issue 3, item 8): signalite's signaling WebSocket next to a bare relay on the
same stack and PeerJS server, in one run.

    .venv/bin/python bench/relay.py            # full: 3 rounds, a few minutes
    .venv/bin/python bench/relay.py --quick    # 1 round, short windows: about 1.5 minutes
    .venv/bin/python bench/relay.py --credentials creds.json   # strict mode (SigV4 checked on every connect)

Candidates, each a fresh server process per round, pinned to CPU 0 (`taskset -c 0`):
  signalite  `python -m signalite serve --limits off` (open mode; `--credentials FILE` is passed
             through (checked against `serve --help`), and the load generator then signs with its key)
  bare       bench/bare_relay.py: picows (--bare-stack; or aiohttp) + uvloop + orjson, parse / look up /
             send, nothing else
  peerjs     npm `peer` (PeerJS server; bench/peerjs), spoken to in its own protocol
The load generator (bench/loadgen/loadgen.mjs, Node) is pinned to CPU 1. Per candidate and round:
  idle      open --idle-conns viewer connections, read the server's VmRSS: (RSS - RSS before) / conns
  relay     C channels x V viewers, ICE-sized messages (300-char base64 payload): each viewer keeps
            --window messages in flight to its master, which echoes each one back (closed loop):
            delivered messages/s and one-way latency p50/p99 at saturation
  half      the same, open loop at 50% of that candidate's saturation rate in this round
  fixed     with --fixed-rates: the same at each given rate, equal for every candidate
  sessions  --session-concurrency loops of: connect a new viewer (presigned URL, new ClientId), send
            an SDP offer (2000-char payload), get the master's answer, close: offer sessions/s
The order of the candidates rotates from round to round; the table shows medians and ratios.
Figures drift (±25% from run to run on a shared machine): compare columns of one run, not runs.
Every server and generator started here is stopped at the end (and dies with this script, via
PR_SET_PDEATHSIG); only 127.0.0.1 (and 127.0.0.x sources for many idle sockets) is used; every
loop is bounded by a time and a count. Prints figures only: nothing here passes or fails.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import queue
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
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
RELAYGEN = HERE / "loadgen_c" / "relaygen.py"  # the relay workloads' generator in C (--generator c)
BARE = HERE / "bare_relay.py"
PEERJS_DIR = HERE / "peerjs"
PEERJS = PEERJS_DIR / "server.mjs"

CANDIDATES = ("signalite", "bare", "peerjs")
LABELS = {"signalite": "signalite", "bare": "bare relay", "peerjs": "PeerJS server"}
SERVER_CPU = 0
LOADGEN_CPU = 1
REGION = "us-east-1"
# Open mode accepts any key; the generator still presigns every URL, as the KVS SDKs do.
OPEN_MODE_KEY = {"accessKeyId": "AKIDBENCH00000001", "secretAccessKey": "bench-secret", "region": REGION}
PORTS_PER_SOURCE = 20_000  # ephemeral ports one source address can offer (32768-60999), with margin


# -- processes -------------------------------------------------------------------------------------


def _cores_busy() -> dict[int, float]:
    """Busy CPU seconds (user + nice + system) per core, from /proc/stat."""
    busy: dict[int, float] = {}
    tick = os.sysconf("SC_CLK_TCK")
    with open("/proc/stat") as f:
        for line in f:
            if line.startswith("cpu") and line[3].isdigit():
                parts = line.split()
                busy[int(parts[0][3:])] = (int(parts[1]) + int(parts[2]) + int(parts[3])) / tick
    return busy


def _rss_kib(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise RuntimeError(f"no VmRSS for pid {pid}")


def _fd_count(pid: int) -> int:
    try:
        return len(os.listdir(f"/proc/{pid}/fd"))
    except OSError:
        return -1


@dataclass
class CpuWindow:
    """CPU used by the server, the generator and everything else on the two cores over a window."""

    server_pid: int
    loadgen_pid: int
    t0: float = 0.0
    s0: float = 0.0
    g0: float = 0.0
    c0: dict[int, float] = field(default_factory=dict)
    result: dict[str, float] = field(default_factory=dict)

    def start(self) -> None:
        self.t0, self.s0, self.g0, self.c0 = (
            time.monotonic(), _proc_cpu(self.server_pid), _proc_cpu(self.loadgen_pid), _cores_busy()
        )  # fmt: skip

    def stop(self) -> None:
        if not self.t0:
            return
        dt = time.monotonic() - self.t0
        server = _proc_cpu(self.server_pid) - self.s0
        gen = _proc_cpu(self.loadgen_pid) - self.g0
        cores = _cores_busy()
        other0 = cores.get(SERVER_CPU, 0) - self.c0.get(SERVER_CPU, 0) - server
        other1 = cores.get(LOADGEN_CPU, 0) - self.c0.get(LOADGEN_CPU, 0) - gen
        self.result = {
            "server_cpu": server / dt,
            "loadgen_cpu": gen / dt,
            "other_cpu0": max(0.0, other0 / dt),
            "other_cpu1": max(0.0, other1 / dt),
        }


class LoadGen:
    """One run of bench/loadgen/loadgen.mjs on CPU 1; JSON lines in, commands on stdin."""

    def __init__(self, config: dict[str, Any]) -> None:
        if config["mode"] in ("relay", "sessions") and relay_generator[0] == "c":
            argv = _pinned(LOADGEN_CPU, [sys.executable, str(RELAYGEN), json.dumps(config)])
        else:
            argv = _pinned(LOADGEN_CPU, ["node", str(LOADGEN), json.dumps(config)])
        self.proc = subprocess.Popen(
            argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
            text=True, preexec_fn=_die_with_parent,
        )  # fmt: skip
        self.lines: queue.Queue[str | None] = queue.Queue()
        self.stderr: list[str] = []
        threading.Thread(target=self._pump, daemon=True).start()
        threading.Thread(target=self._pump_err, daemon=True).start()

    def _pump(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.put(line)
        self.lines.put(None)

    def _pump_err(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            if len(self.stderr) < 40:
                self.stderr.append(line.rstrip())

    def events(self, deadline: float) -> Any:
        """Yield the generator's JSON events until it ends or `deadline` (monotonic) passes."""
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

    def send(self, command: str) -> None:
        assert self.proc.stdin is not None
        with contextlib.suppress(OSError):
            self.proc.stdin.write(command + "\n")
            self.proc.stdin.flush()

    def close(self) -> None:
        _stop(self.proc, grace=2)


# -- servers ---------------------------------------------------------------------------------------


@dataclass
class Server:
    name: str
    proc: subprocess.Popen[bytes]
    port: int
    proto: str  # the generator's protocol: kvs or peerjs
    channels: list[str]  # channel ARNs (kvs) or labels (peerjs: master ids are m<index>)
    credentials: dict[str, str]
    log: Path

    @property
    def pid(self) -> int:
        return self.proc.pid


def _signalite_supports(flag: str) -> bool:
    out = subprocess.run(
        [sys.executable, "-m", "signalite", "serve", "--help"], capture_output=True, text=True, timeout=60
    ).stdout
    return flag in out


def _load_credentials(path: Path) -> dict[str, str]:
    """The first identity of a signalite credentials file (JSON or TOML), as the generator's key."""
    import tomllib

    raw = path.read_bytes()
    data = tomllib.loads(raw.decode()) if path.suffix == ".toml" else json.loads(raw)
    entry = data["credentials"][0]
    key = {"accessKeyId": entry["access_key_id"], "secretAccessKey": entry["secret_access_key"], "region": REGION}
    if entry.get("session_token"):
        key["sessionToken"] = entry["session_token"]
    return key


def _create_channels(port: int, count: int, key: dict[str, str]) -> list[str]:
    import boto3  # the control plane, spoken to exactly as AWS clients do (signed when strict)

    client = boto3.client(
        "kinesisvideo", endpoint_url=f"http://127.0.0.1:{port}", region_name=key["region"],
        aws_access_key_id=key["accessKeyId"], aws_secret_access_key=key["secretAccessKey"],
        aws_session_token=key.get("sessionToken"),
    )  # fmt: skip
    return [client.create_signaling_channel(ChannelName=f"bench-{i}")["ChannelARN"] for i in range(count)]


def start_server(name: str, opts: argparse.Namespace, workdir: Path, tag: str) -> Server:
    port = _free_port()
    log = workdir / f"{tag}-{name}.log"
    key = dict(OPEN_MODE_KEY)
    lifetime = "1800"
    if name == "signalite":
        argv = [sys.executable, "-m", "signalite", "serve", "--host", "127.0.0.1", "--port", str(port),
                "--data-dir", str(workdir / f"{tag}-data"), "--limits", "off", *opts.signalite_arg]  # fmt: skip
        if opts.credentials is not None:
            argv += ["--credentials", str(opts.credentials)]
            key = _load_credentials(opts.credentials)
        proto = "kvs"
    elif name == "bare":
        argv = [sys.executable, str(BARE), "--port", str(port), "--lifetime", lifetime, "--stack", opts.bare_stack]
        proto = "kvs"
    else:
        argv = ["node", str(PEERJS), "--port", str(port), "--lifetime", lifetime]
        proto = "peerjs"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            _pinned(SERVER_CPU, argv), stdout=out, stderr=subprocess.STDOUT, cwd=ROOT,
            preexec_fn=_die_with_parent,
        )  # fmt: skip
    try:
        _wait_port(proc, port, log)
        if name == "signalite":
            channels = _create_channels(port, opts.channels, key)
        elif name == "bare":
            channels = [f"arn:aws:kinesisvideo:{REGION}:000000000000:channel/bench-{i}/1" for i in range(opts.channels)]
        else:
            channels = [f"c{i}" for i in range(opts.channels)]
    except BaseException:
        _stop(proc)
        raise
    return Server(name, proc, port, proto, channels, key, log)


# -- workloads -------------------------------------------------------------------------------------


server_client = ["raw"]  # the Node generator's WebSocket client (--client)
relay_generator = ["c"]  # what drives relay and sessions (--generator): relaygen.c or loadgen.mjs


def _base_config(server: Server, mode: str) -> dict[str, Any]:
    return {
        "mode": mode, "proto": server.proto, "host": "127.0.0.1", "port": server.port,
        "channels": server.channels, "credentials": server.credentials, "sources": [None],
        "client": server_client[0],
    }  # fmt: skip


def run_measured(
    server: Server, config: dict[str, Any], opts: argparse.Namespace, profile: Path | None = None
) -> dict[str, Any]:
    """Run a relay or sessions workload; attach the CPU use of both sides over the measured window.

    With `profile`, py-spy samples the server over the measured window into that file (raw format).
    """
    config = {**config, "deadline": config["warmup"] + config["duration"] + 40}
    gen = LoadGen(config)
    window = CpuWindow(server.pid, gen.proc.pid)
    result: dict[str, Any] | None = None
    spy: subprocess.Popen[bytes] | None = None
    try:
        for ev in gen.events(time.monotonic() + config["deadline"] + 5):
            kind = ev.get("event")
            if kind == "measure_start":
                window.start()
                if profile is not None:
                    spy = subprocess.Popen(
                        [str(opts.py_spy), "record", "-p", str(server.pid), "-d", str(max(1, int(config["duration"]))),
                         "-r", "250", "-f", "raw", "--nonblocking", "-o", str(profile)],
                        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, preexec_fn=_die_with_parent,
                    )  # fmt: skip
            elif kind == "measure_end":
                window.stop()
            elif kind == "result":
                result = ev
            elif kind == "warning":
                print(f"  load generator warning: {ev}", file=sys.stderr, flush=True)
            elif kind == "error":
                raise RuntimeError(f"load generator: {ev.get('error')}")
    finally:
        gen.close()
        if spy is not None:
            try:
                spy.wait(config["duration"] + 10)
            except subprocess.TimeoutExpired:
                _stop(spy)
    if result is None:
        raise RuntimeError("load generator ended without a result:\n" + "\n".join(gen.stderr[:12]))
    result.update(window.result)
    return result


def _others(result: dict[str, Any]) -> float:
    return max(result.get("other_cpu0", 0.0), result.get("other_cpu1", 0.0))


def measure(
    server: Server, config: dict[str, Any], opts: argparse.Namespace, profile: Path | None = None
) -> dict[str, Any]:
    """`run_measured`, taken again (up to --retries times) while other processes took more than
    --max-others of a benchmark core; the least disturbed attempt is kept."""
    best: dict[str, Any] | None = None
    for attempt in range(1 + max(0, opts.retries)):
        if attempt:
            print(f"  {config['mode']}: others took {_others(best or {}):.0%} of a core; measuring again",
                  file=sys.stderr, flush=True)  # fmt: skip
            time.sleep(1.0)
        tag = config.get("tag", "") + (f"r{attempt}" if attempt else "")
        result = run_measured(server, {**config, "tag": tag}, opts, profile if attempt == 0 else None)
        result["attempts"] = attempt + 1
        if best is None or _others(result) < _others(best):
            best = result
        if _others(best) <= opts.max_others:
            break
    assert best is not None
    return best


def run_idle(server: Server, opts: argparse.Namespace, count: int) -> dict[str, Any]:
    """Open `count` idle viewer connections; the server's RSS growth per connection."""
    sources = (
        ["127.0.0.1"]
        if count <= PORTS_PER_SOURCE
        else [f"127.0.0.{i + 1}" for i in range((count + PORTS_PER_SOURCE - 1) // PORTS_PER_SOURCE)]
    )
    config = {
        **_base_config(server, "idle"), "count": count, "hold": 60, "connectConcurrency": 256,
        "sources": sources if len(sources) > 1 else [None], "deadline": 120,
    }  # fmt: skip
    before_kib = _rss_kib(server.pid)
    gen = LoadGen(config)
    result: dict[str, Any] = {}
    try:
        events = gen.events(time.monotonic() + 125)
        for ev in events:
            if ev.get("event") == "idle_ready":
                time.sleep(1.0)  # let the server settle (handshake buffers freed, hub updated)
                result = {
                    "opened": ev["open"], "failed": ev["failed"], "first_error": ev["first_error"],
                    "connect_seconds": ev["connect_seconds"], "server_fds": _fd_count(server.pid),
                    "rss_before_kib": before_kib, "rss_after_kib": _rss_kib(server.pid),
                }  # fmt: skip
                gen.send("close")
            elif ev.get("event") == "result":
                result["held"] = ev["held"]
            elif ev.get("event") == "error":
                raise RuntimeError(f"load generator: {ev.get('error')}")
    finally:
        gen.close()
    if "held" not in result:
        raise RuntimeError("idle run ended without a result:\n" + "\n".join(gen.stderr[:12]))
    opened = max(1, result["opened"])
    result["kib_per_conn"] = (result["rss_after_kib"] - result["rss_before_kib"]) / opened
    return result


def run_candidate(name: str, opts: argparse.Namespace, workdir: Path, tag: str) -> dict[str, Any]:
    server = start_server(name, opts, workdir, tag)
    spy_dir: Path | None = opts.profile_dir if name == "signalite" and tag == "r0" else None
    out: dict[str, Any] = {}
    try:
        run_idle(server, opts, 200)  # warm-up: first-use allocations must not count per connection
        time.sleep(0.5)
        out["idle"] = run_idle(server, opts, opts.idle_conns)
        time.sleep(0.5)
        relay = {
            **_base_config(server, "relay"), "viewers": opts.viewers, "window": opts.window,
            "payloadLen": opts.payload, "warmup": opts.warmup, "duration": opts.duration, "rate": None, "tag": "s",
        }  # fmt: skip
        out["saturation"] = measure(server, relay, opts, spy_dir and spy_dir / "relay.txt")
        half = {**relay, "rate": out["saturation"]["msgs_per_s"] / 2, "tag": "h"}
        out["half"] = measure(server, half, opts)
        for i, rate in enumerate(opts.fixed_rates):
            out[f"fixed{rate}"] = measure(server, {**relay, "rate": rate, "tag": f"f{i}"}, opts)
        sessions = {
            **_base_config(server, "sessions"), "concurrency": opts.session_concurrency, "offerLen": 2000,
            "warmup": opts.warmup, "duration": opts.duration,
        }  # fmt: skip
        out["sessions"] = measure(server, sessions, opts, spy_dir and spy_dir / "sessions.txt")
    finally:
        _stop(server.proc)
        _report_server_log(server)
    closed = out.get("saturation", {}).get("closed_by_server", 0) + out.get("half", {}).get("closed_by_server", 0)
    if closed:
        print(f"  warning: the server closed {closed} relay connection(s) during the run", file=sys.stderr)
    return out


def _report_server_log(server: Server) -> None:
    """Show the server's warnings and errors (a benchmark that provokes them measures something else)."""
    try:
        lines = server.log.read_text(errors="replace").splitlines()
    except OSError:
        return
    bad = [ln for ln in lines if "level=warning" in ln or "level=error" in ln or "Traceback" in ln]
    if bad:
        print(f"  {len(bad)} warning/error line(s) in the {server.name} log, e.g.:", file=sys.stderr)
        for ln in bad[:3]:
            print(f"    {ln[:200]}", file=sys.stderr)


# -- report ----------------------------------------------------------------------------------------


def _median(values: list[float | None]) -> float | None:
    vals = [v for v in values if v is not None]
    return statistics.median(vals) if vals else None


Getter = Callable[[dict[str, Any]], float | None]


def _per_op_us(part: str, rate_key: str) -> Getter:
    """Server CPU microseconds per delivered message / per session: steadier than rates when other
    processes compete for the core."""

    def get(r: dict[str, Any]) -> float | None:
        cpu, rate = r[part].get("server_cpu"), r[part][rate_key]
        return cpu / rate * 1e6 if cpu and rate else None

    return get


# (label, getter, format, ratio column shown: "up" = higher is better, "down" = lower is better)
ROWS: list[tuple[str, Getter, str, str | None]] = [
    ("relayed msgs/s (saturation)", lambda r: r["saturation"]["msgs_per_s"], "{:,.0f}", "up"),
    ("  server CPU per message, us", _per_op_us("saturation", "msgs_per_s"), "{:.1f}", "down"),
    ("  latency p50 at saturation, ms", lambda r: r["saturation"]["latency"]["p50_ms"], "{:.2f}", None),
    ("  latency p99 at saturation, ms", lambda r: r["saturation"]["latency"]["p99_ms"], "{:.2f}", None),
    ("  server CPU at saturation", lambda r: r["saturation"].get("server_cpu"), "{:.0%}", None),
    ("  generator CPU at saturation", lambda r: r["saturation"].get("loadgen_cpu"), "{:.0%}", None),
    ("rate at 50% load, msgs/s", lambda r: r["half"]["msgs_per_s"], "{:,.0f}", None),
    ("  latency p50 at 50% load, ms", lambda r: r["half"]["latency"]["p50_ms"], "{:.2f}", None),
    ("  latency p99 at 50% load, ms", lambda r: r["half"]["latency"]["p99_ms"], "{:.2f}", None),
    ("offer sessions/s", lambda r: r["sessions"]["sessions_per_s"], "{:,.0f}", "up"),
    ("  server CPU per session, us", _per_op_us("sessions", "sessions_per_s"), "{:.0f}", "down"),
    ("  session p99, ms", lambda r: r["sessions"]["session_latency"]["p99_ms"], "{:.1f}", None),
    ("  server CPU in sessions", lambda r: r["sessions"].get("server_cpu"), "{:.0%}", None),
    ("  generator CPU in sessions", lambda r: r["sessions"].get("loadgen_cpu"), "{:.0%}", None),
    ("idle connections held", lambda r: r["idle"]["held"], "{:,.0f}", None),
    ("  KiB RSS per idle connection", lambda r: r["idle"]["kib_per_conn"], "{:.1f}", "down"),
]


def _rows(opts: argparse.Namespace) -> list[tuple[str, Getter, str, str | None]]:
    """ROWS, with the latency rows of each --fixed-rates rate after the 50%-load ones."""
    fixed: list[tuple[str, Getter, str, str | None]] = []
    for rate in opts.fixed_rates:
        key = f"fixed{rate}"
        fixed += [
            (f"latency p99 at {rate:,} msgs/s, ms", lambda r, k=key: r[k]["latency"]["p99_ms"] if k in r else None,
             "{:.2f}", None),
            (f"  server CPU at {rate:,} msgs/s", lambda r, k=key: r[k].get("server_cpu") if k in r else None,
             "{:.0%}", None),
        ]  # fmt: skip
    at = next(i for i, row in enumerate(ROWS) if row[0] == "offer sessions/s")
    return [*ROWS[:at], *fixed, *ROWS[at:]]


def _fmt(fmt: str, v: float | None) -> str:
    return "-" if v is None else fmt.format(v)


def report(results: dict[str, list[dict[str, Any]]], opts: argparse.Namespace) -> str:
    names = [n for n in CANDIDATES if results.get(n)]
    table = _rows(opts)
    med: dict[str, dict[str, float | None]] = {
        n: {label: _median([get(r) for r in results[n]]) for label, get, _, _ in table} for n in names
    }
    head = ["", *(LABELS[n] for n in names)]
    ratio_cols = [(b, f"sig/{'bare' if b == 'bare' else 'PeerJS'}") for b in ("bare", "peerjs") if b in names]
    if "signalite" in names:
        head += [label for _, label in ratio_cols]
    rows = [head]
    for label, _, fmt, better in table:
        row = [label, *(_fmt(fmt, med[n][label]) for n in names)]
        if "signalite" in names:
            for base, _ in ratio_cols:
                s, b = med["signalite"][label], med[base][label]
                row.append(f"{s / b:.2f}x" if better and s is not None and b else "")
        rows.append(row)
    widths = [max(len(r[i]) for r in rows) for i in range(len(head))]
    lines = [
        f"Data plane (WebSocket): medians of {opts.rounds} round(s); server on CPU {SERVER_CPU}, generator on "
        f"CPU {LOADGEN_CPU}; {opts.channels} channels x {opts.viewers} viewers, {opts.payload}-char payloads, "
        f"{opts.window} in flight per viewer at saturation; {opts.idle_conns:,} idle connections; "
        f"{opts.session_concurrency} concurrent session loops",
        "",
    ]
    for r in rows:
        lines.append("  ".join([r[0].ljust(widths[0]), *(c.rjust(w) for c, w in zip(r[1:], widths[1:], strict=True))]))
    if "signalite" in names:
        s = med["signalite"]
        lines += ["", "Targets (issue 3):"]

        def check(text: str, ok: bool | None) -> None:
            lines.append(f"  [{'-' if ok is None else 'ok' if ok else 'MISS'}] {text}")

        def ratio(label: str, base: str) -> float | None:
            a, b = s[label], med.get(base, {}).get(label)
            return a / b if a is not None and b else None

        relay, sess = "relayed msgs/s (saturation)", "offer sessions/s"
        per_msg, per_session = "  server CPU per message, us", "  server CPU per session, us"

        def both(label: str, cpu_label: str, base: str, floor: float) -> None:
            # The rate ratio, and the same ratio from CPU cost per operation (base cost / ours):
            # the second holds when other processes take part of the server's core.
            r = ratio(label, base)
            c = med.get(base, {}).get(cpu_label)
            ours = s[cpu_label]
            cr = c / ours if c is not None and ours else None
            what = "relay" if label == relay else "sessions/s"
            name = "the bare relay" if base == "bare" else "PeerJS"
            ok = None if r is None else (r >= floor if cr is None else r >= floor and cr >= floor)
            check(f"{what} >= {floor}x {name}: {_fmt('{:.2f}x', r)} by rate, {_fmt('{:.2f}x', cr)} by CPU per op", ok)

        both(relay, per_msg, "bare", 0.8)
        both(relay, per_msg, "peerjs", 1.2)
        both(sess, per_session, "peerjs", 1.2)
        p99 = s["  latency p99 at 50% load, ms"]
        check(f"p99 < 2 ms at half load: {_fmt('{:.2f} ms', p99)}", None if p99 is None else p99 < 2)
        kb = s["  KiB RSS per idle connection"]
        check(f"<= 15 KB per idle connection: {_fmt('{:.1f} KiB', kb)}", None if kb is None else kb <= 15)
    others = [
        max(m.get("other_cpu0", 0), m.get("other_cpu1", 0))
        for n in names for r in results[n] for m in (r["saturation"], r["half"], r["sessions"])
    ]  # fmt: skip
    if others and max(others) > opts.max_others:
        lines += ["", f"Warning: other processes used up to {max(others):.0%} of a benchmark core during a "
                      "measurement; figures from this run are unreliable (ratios less so than absolutes)."]  # fmt: skip
    return "\n".join(lines)


def profile_summary(path: Path, top: int = 14) -> str:
    """The frames with the most samples in a py-spy raw file: own time, and time including callees
    for signalite's own functions."""
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
        leaf = frames[-1].split(" (")[0] + " (" + frames[-1].rsplit("/", 1)[-1] if frames else "?"
        own[leaf] = own.get(leaf, 0) + n
        for name in {
            f.split(" (")[0] + " (" + f.rsplit("/", 1)[-1].split(":")[0] + ")" for f in frames if "signalite/" in f
        }:
            incl[name] = incl.get(name, 0) + n
    if not total:
        return "  (no samples)"
    lines = [f"  own time (top {top} of {total} samples):"]
    lines += [f"    {n / total:6.1%}  {k}" for k, n in sorted(own.items(), key=lambda kv: -kv[1])[:top]]
    lines.append(f"  signalite functions, including callees (top {top}):")
    lines += [f"    {n / total:6.1%}  {k}" for k, n in sorted(incl.items(), key=lambda kv: -kv[1])[:top]]
    return "\n".join(lines)


def _round_line(r: dict[str, Any]) -> str:
    sat, half, sess, idle = r["saturation"], r["half"], r["sessions"], r["idle"]
    return (
        f"{sat['msgs_per_s']:,.0f} msgs/s (server CPU {sat.get('server_cpu', 0):.0%}, generator "
        f"{sat.get('loadgen_cpu', 0):.0%}, others {max(sat.get('other_cpu0', 0), sat.get('other_cpu1', 0)):.0%}); "
        f"p99 {half['latency']['p99_ms']} ms at {half['msgs_per_s']:,.0f} msgs/s; "
        f"{sess['sessions_per_s']:,.0f} sessions/s; {idle['held']:,} idle held, "
        f"{idle['kib_per_conn']:.1f} KiB each"
    )


# -- main ------------------------------------------------------------------------------------------


def run_together(opts: argparse.Namespace, candidates: list[str], workdir: Path) -> str:
    """--together: every candidate's server up at once (all on CPU 0), loaded at the same time.

    One generator per server (all on CPU 1) runs the same workload over the same seconds, so a
    slower or faster stretch of this machine (its speed drifts by +-25 % within a minute) hits every
    candidate alike; alternating windows cannot cancel that drift. The servers split their core, and
    each one's work per CPU-second is its rate on a core of its own (less what sharing costs: cache
    and context switches, which all pay). Reported per window, then the median over the rounds.
    """
    servers = [start_server(name, opts, workdir, f"t-{name}") for name in candidates]
    rows: list[dict[str, dict[str, float]]] = []
    try:
        for rnd in range(-1, opts.rounds):  # round -1 warms every server up (Node's JIT, first-use allocations)
            per: dict[str, dict[str, float]] = {}
            for mode in ("relay", "sessions"):
                configs = []
                for server in servers:
                    base = _base_config(server, mode)
                    if mode == "relay":
                        configs.append({**base, "viewers": opts.viewers, "window": opts.window, "rate": None,
                                        "payloadLen": opts.payload, "warmup": opts.warmup, "duration": opts.duration,
                                        "tag": f"t{rnd}"})  # fmt: skip
                    else:
                        configs.append({**base, "concurrency": opts.session_concurrency, "offerLen": 2000,
                                        "warmup": opts.warmup, "duration": opts.duration,
                                        "tag": f"t{rnd}"})  # fmt: skip
                # The generators sign their URL pools first (a few seconds for sessions): all begin at once.
                start_at = time.time() + (8.0 if mode == "sessions" else 1.0)
                configs = [{**c, "startAt": start_at} for c in configs]
                out: dict[str, dict[str, Any]] = {}

                def one(server: Server, config: dict[str, Any], out: dict[str, dict[str, Any]] = out) -> None:
                    out[server.name] = run_measured(server, config, opts)

                threads = [threading.Thread(target=one, args=(s, c)) for s, c in zip(servers, configs, strict=True)]
                for t in threads:
                    t.start()
                for t in threads:
                    t.join()
                key = "msgs_per_s" if mode == "relay" else "sessions_per_s"
                for name, r in out.items():
                    cpu = r.get("server_cpu") or 0.0
                    per.setdefault(name, {})[f"{mode}_rate"] = r[key]
                    per[name][f"{mode}_per_cpu_s"] = r[key] / cpu if cpu else float("nan")
                    per[name][f"{mode}_cpu"] = cpu
            if rnd < 0:
                continue
            rows.append(per)
            print(f"together, round {rnd + 1}/{opts.rounds}: " + "; ".join(
                f"{n} relay {v['relay_rate']:,.0f}/s ({v['relay_cpu']:.0%} CPU), sessions {v['sessions_rate']:,.0f}/s "
                f"({v['sessions_cpu']:.0%})" for n, v in per.items()), file=sys.stderr, flush=True)  # fmt: skip
    finally:
        for server in servers:
            _stop(server.proc)
    lines = ["", "Side by side (--together): every server on CPU 0 at once, one generator each on CPU 1, "
             f"{opts.rounds} windows of {opts.duration:g} s.",
             "Work per CPU-second of each server (its rate / its CPU share in that window); ratios per window, "
             "then their median:"]  # fmt: skip
    for mode, unit in (("relay", "msgs"), ("sessions", "sessions")):
        for base in ("bare", "peerjs"):
            if "signalite" not in candidates or base not in candidates:
                continue
            ratios = [r["signalite"][f"{mode}_per_cpu_s"] / r[base][f"{mode}_per_cpu_s"] for r in rows]
            rates = [r["signalite"][f"{mode}_rate"] / r[base][f"{mode}_rate"] for r in rows]
            sig = statistics.median(r["signalite"][f"{mode}_per_cpu_s"] for r in rows)
            other = statistics.median(r[base][f"{mode}_per_cpu_s"] for r in rows)
            lines.append(
                f"  {mode:<8} signalite / {LABELS[base]:<13} {statistics.median(ratios):.2f}x "
                f"(windows: {' '.join(f'{x:.2f}' for x in ratios)}; by rate alone {statistics.median(rates):.2f}x); "
                f"{sig:,.0f} vs {other:,.0f} {unit} per CPU-second"
            )
    return "\n".join(lines)


def _ensure_node_deps() -> None:
    if shutil.which("node") is None or shutil.which("npm") is None:
        sys.exit("relay.py: node and npm are needed (Debian: apt-get install nodejs npm)")
    for folder, probe in ((PEERJS_DIR, "peer"), (HERE / "loadgen", "ws")):
        if not (folder / "node_modules" / probe).is_dir():
            print(f"installing npm packages in {folder.relative_to(ROOT)} ...", file=sys.stderr, flush=True)
            subprocess.run(["npm", "install", "--no-audit", "--no-fund"], cwd=folder, check=True, timeout=300)


def _raise_fd_limit(needed: int) -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = needed if hard == resource.RLIM_INFINITY else min(needed, hard)
    if soft < want:
        resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < needed:
        sys.exit(f"relay.py: RLIMIT_NOFILE is {soft} (hard {hard}); --idle-conns needs about {needed}")


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
    parser.add_argument("--idle-conns", type=int, default=10_000)
    parser.add_argument("--session-concurrency", type=int, default=50)
    parser.add_argument("--candidates", default=",".join(CANDIDATES), help="comma-separated subset")
    parser.add_argument("--credentials", type=Path, help="signalite credentials file: strict mode (SigV4 checked)")
    parser.add_argument(
        "--signalite-arg",
        action="append",
        default=[],
        metavar="ARG",
        help="extra argument for `signalite serve` (repeatable), e.g. --signalite-arg=--log-level=warning",
    )
    parser.add_argument(
        "--client", choices=("raw", "ws"), default="raw",
        help="the Node generator's WebSocket client: its own minimal one (default) or npm ws (slower; a cross-check)",
    )  # fmt: skip
    parser.add_argument(
        "--generator", choices=("c", "node"), default="c",
        help="what drives the relay and sessions workloads: bench/loadgen_c/relaygen.c (default; needs gcc) or "
        "bench/loadgen/loadgen.mjs, whose GC pauses and ~10 us per message show in p99 at high rates, and which "
        "needs ~350 us of CPU per session (so it, not the server, capped sessions/s). idle always uses loadgen.mjs",
    )  # fmt: skip
    parser.add_argument(
        "--max-others", type=float, default=0.10,
        help="a measurement during which other processes took more than this share of a benchmark core is "
        "taken again (default 0.10)",
    )  # fmt: skip
    parser.add_argument(
        "--retries", type=int, default=1, help="at most this many retakes per measurement (default 1; 0 with --quick)"
    )
    parser.add_argument(
        "--fixed-rates", type=lambda v: [int(x) for x in v.split(",") if x], default=[], metavar="R1,R2",
        help="also measure latency at these fixed rates (msgs/s), the same for every candidate",
    )  # fmt: skip
    parser.add_argument(
        "--bare-stack", choices=("picows", "aiohttp"), default="picows",
        help="the bare relay's WebSocket stack (default picows: what serves signalite's WebSockets on a single node)",
    )  # fmt: skip
    parser.add_argument(
        "--together", action="store_true",
        help="instead of the rounds above: relay (saturation) and sessions with every candidate's server up and "
             "loaded at once, so machine drift hits them alike (see run_together)",
    )  # fmt: skip
    parser.add_argument("--json", type=Path, help="also write every raw figure to this file")
    parser.add_argument(
        "--profile-dir",
        type=Path,
        help="py-spy the signalite server (round 1: relay and sessions) into DIR/*.txt and print "
        "where its time goes (needs py-spy: .venv/bin/pip install py-spy)",
    )
    opts = parser.parse_args(argv)
    if opts.quick:
        opts.rounds, opts.warmup, opts.duration, opts.retries = 1, 1.0, 2.0, 0
    server_client[0] = opts.client
    relay_generator[0] = opts.generator
    candidates = [c.strip() for c in opts.candidates.split(",") if c.strip()]
    if unknown := set(candidates) - set(CANDIDATES):
        parser.error(f"unknown candidates: {', '.join(sorted(unknown))}")
    if opts.payload % 4 or opts.payload < 20:
        parser.error("--payload must be a multiple of 4, at least 20")
    if opts.credentials is not None:
        if not _signalite_supports("--credentials"):
            parser.error("this signalite has no `serve --credentials` yet: run without --credentials (open mode)")
        opts.credentials = opts.credentials.resolve()
    opts.py_spy = None
    if opts.profile_dir is not None:
        opts.py_spy = shutil.which("py-spy") or shutil.which("py-spy", path=str(Path(sys.executable).parent))
        if opts.py_spy is None:
            parser.error("--profile-dir needs py-spy: .venv/bin/pip install py-spy")
        opts.profile_dir = opts.profile_dir.resolve()
        opts.profile_dir.mkdir(parents=True, exist_ok=True)
    _raise_fd_limit(opts.idle_conns + 2_000)
    _ensure_node_deps()

    results: dict[str, list[dict[str, Any]]] = {c: [] for c in candidates}
    started = time.monotonic()
    if opts.together:
        with tempfile.TemporaryDirectory(prefix="signalite-relay-bench-") as tmp:
            print(run_together(opts, candidates, Path(tmp)))
        print("\n" + footer(started))
        return 0
    with tempfile.TemporaryDirectory(prefix="signalite-relay-bench-") as tmp:
        workdir = Path(tmp)
        for rnd in range(opts.rounds):
            order = candidates[rnd % len(candidates) :] + candidates[: rnd % len(candidates)]
            for name in order:
                t = time.monotonic()
                print(f"round {rnd + 1}/{opts.rounds}: {LABELS[name]} ...", file=sys.stderr, flush=True)
                try:
                    r = run_candidate(name, opts, workdir, f"r{rnd}")
                except Exception as e:  # one failed candidate-round must not lose the others
                    print(f"  failed, round left out: {e}", file=sys.stderr, flush=True)
                    continue
                results[name].append(r)
                print(f"  {_round_line(r)} ({time.monotonic() - t:.0f} s)", file=sys.stderr, flush=True)
    text = report(results, opts)
    print(text)
    print("\n" + footer(started))
    if opts.profile_dir is not None:
        for part in ("relay", "sessions"):
            path = opts.profile_dir / f"{part}.txt"
            if path.exists():
                print(f"\nsignalite, {part}: where the server's samples are (py-spy, {path}):")
                print(profile_summary(path))
    if opts.json is not None:
        opts.json.write_text(json.dumps({"options": {k: str(v) for k, v in vars(opts).items()}, "results": results},
                                        indent=1))  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
