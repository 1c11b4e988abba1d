"""Control-plane benchmark (issue 2, item 8): signalite next to a trivial handler, in one run.

    .venv/bin/python bench/controlplane.py [--rounds 3] [--duration 5] [--connections 32]

Measures requests/s and p50/p99 latency of DescribeSignalingChannel (by name) and
GetSignalingChannelEndpoint (by ARN, WSS + HTTPS) against a real `python -m signalite serve` process
holding 10,000 channels, over keep-alive connections (wrk), and the same figures for a trivial
aiohttp + uvloop + orjson handler (bench/trivial_server.py) measured in the same run. The candidates
are alternated (trivial, describe, endpoint) for several rounds; the table shows medians over the
rounds and the ratio of each operation's median requests/s to the trivial handler's, plus the
server's CPU time per request (from /proc schedstat) and its ratio, which holds steadier than req/s
when other processes share the machine, and the share of its core each server actually got.

Both servers are pinned to CPU 0 and wrk to CPU 1 (`taskset`). Only 127.0.0.1 is used; every
process started here is stopped at the end (and dies with this script if it is killed).
Prints figures only: nothing here passes or fails.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from benchlib import die_with_parent as _die_with_parent
from benchlib import footer, pinned
from benchlib import free_port as _free_port
from benchlib import stop as _stop

from signalite.config import Settings
from signalite.controlplane.operations import new_version
from signalite.model.arn import make_arn
from signalite.store.base import Channel
from signalite.store.sqlite import SqliteStore

HERE = Path(__file__).resolve().parent
LUA = HERE / "wrk" / "controlplane.lua"
TRIVIAL_SERVER = HERE / "trivial_server.py"

ACCOUNT = "000000000000"
REGION = "us-east-1"
BASE_MS = 1_700_000_000_000  # channel i was created at BASE_MS + i (epoch ms): ARNs are predictable
OPS = ("trivial", "describe", "endpoint")
LABELS = {
    "trivial": "trivial handler (baseline)",
    "describe": "DescribeSignalingChannel",
    "endpoint": "GetSignalingChannelEndpoint",
}
AUTH = (
    f"AWS4-HMAC-SHA256 Credential=AKIAIOSFODNN7EXAMPLE/20240101/{REGION}/kinesisvideo/aws4_request, "
    "SignedHeaders=content-type;host;x-amz-date, Signature=" + "0" * 64
)


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
            creation_time = (BASE_MS + i) / 1000
            channel = Channel(
                arn=channel_arn(i), account=ACCOUNT, region=REGION, name=channel_name(i),
                channel_type="SINGLE_MASTER", status="ACTIVE", message_ttl_seconds=60,
                version=new_version(), creation_time=creation_time,
            )  # fmt: skip
            async with sem:
                await store.create_channel(channel, None)

        await asyncio.gather(*(one(i) for i in range(count)))
    finally:
        await store.close()


# -- processes -------------------------------------------------------------------------------------


NICE = 0  # --nice: scheduling priority of everything started here (negative needs root)


def _pinned(cpu: int | None, argv: Sequence[str]) -> list[str]:
    return pinned(cpu, argv, NICE)


def _post(port: int, path: str, body: dict[str, object]) -> tuple[int, dict[str, object]]:
    req = urllib.request.Request(
        f"http://127.0.0.1:{port}{path}",
        data=json.dumps(body).encode(),
        headers={"Content-Type": "application/json", "Authorization": AUTH},
        method="POST",
    )
    try:
        with urllib.request.urlopen(req, timeout=5) as resp:
            return resp.status, json.loads(resp.read() or b"{}")
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read() or b"{}")


def _wait_ready(proc: subprocess.Popen[bytes], port: int, path: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode} before answering")
        try:
            _post(port, path, {})
            return
        except OSError:
            time.sleep(0.1)
    raise RuntimeError(f"server on port {port} did not answer within {timeout} s")


# -- wrk -------------------------------------------------------------------------------------------


@dataclass
class Run:
    op: str
    round: int
    rps: float
    p50_ms: float
    p99_ms: float
    errors: int
    latency_table: str
    cpu_us: float  # server CPU time per request (all its threads), in microseconds; nan if unknown
    busy: float  # server CPU time / wall time of the run (1.0 = it had a whole core); nan if unknown


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


def wrk(port: int, op: str, *, seconds: int, connections: int, count: int, cpu: int | None, server_pid: int) -> Run:
    argv = _pinned(
        cpu,
        [
            "wrk", "-t1", f"-c{connections}", f"-d{max(1, seconds)}s", "--timeout", "5s", "--latency",
            "-s", str(LUA), f"http://127.0.0.1:{port}", "--", op, str(BASE_MS), str(count),
        ],
    )  # fmt: skip
    cpu_before, wall_before = cpu_ns(server_pid), time.monotonic_ns()
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=seconds + 30, preexec_fn=_die_with_parent)
    cpu_after, wall_after = cpu_ns(server_pid), time.monotonic_ns()
    out = proc.stdout
    if proc.returncode != 0 or "WRKJSON " not in out:
        raise RuntimeError(f"wrk failed ({proc.returncode}): {proc.stderr.strip()} {out.strip()}")
    line = next(x for x in out.splitlines() if x.startswith("WRKJSON "))
    data = json.loads(line.removeprefix("WRKJSON "))
    # wrk's own --latency percentiles (the same histogram done() reads): the 4 lines after the title.
    lines = out.splitlines()
    at = next((n for n, x in enumerate(lines) if "Latency Distribution" in x), len(lines))
    table = "\n".join(lines[at : at + 5])
    errors = sum(data["errors"].values())
    requests = max(data["requests"], 1)
    known = cpu_before is not None and cpu_after is not None
    cpu_used = (cpu_after or 0) - (cpu_before or 0)
    # wrk's own start-up and teardown fall inside the wall interval, so `busy` slightly understates.
    cpu_us = cpu_used / 1000 / requests if known else float("nan")
    busy = cpu_used / (wall_after - wall_before) if known else float("nan")
    return Run(
        op=op,
        round=0,
        rps=data["requests"] / (data["duration_us"] / 1e6),
        p50_ms=data["p50_us"] / 1000,
        p99_ms=data["p99_us"] / 1000,
        errors=errors,
        latency_table=table,
        cpu_us=cpu_us,
        busy=busy,
    )


# -- main ------------------------------------------------------------------------------------------


def main() -> int:
    parser = argparse.ArgumentParser(description="signalite control-plane benchmark")
    parser.add_argument("--channels", type=int, default=10_000, help="channels stored (default 10000)")
    parser.add_argument("--rounds", type=int, default=3, help="alternating rounds (default 3)")
    parser.add_argument("--duration", type=int, default=5, help="whole seconds per measurement (default 5)")
    parser.add_argument("--warmup", type=int, default=2, help="whole seconds of warm-up per candidate (default 2)")
    parser.add_argument("--connections", type=int, default=32, help="keep-alive connections (default 32)")
    parser.add_argument("--server-cpu", type=int, default=0, help="CPU for the servers (default 0)")
    parser.add_argument("--client-cpu", type=int, default=1, help="CPU for wrk (default 1)")
    parser.add_argument("--no-pin", action="store_true", help="do not use taskset")
    parser.add_argument(
        "--nice",
        type=int,
        default=0,
        help="run servers and wrk at this nice level; e.g. -10 (as root) keeps other load on a shared "
        "machine from taking the servers' core",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="print wrk's latency table per run")
    args = parser.parse_args()
    started = time.monotonic()
    global NICE
    NICE = args.nice

    if shutil.which("wrk") is None:
        print("wrk is not installed (Debian/Ubuntu: apt-get install -y wrk)", file=sys.stderr)
        return 2
    pin = not args.no_pin and shutil.which("taskset") is not None and (os.cpu_count() or 1) >= 2
    server_cpu = args.server_cpu if pin else None
    client_cpu = args.client_cpu if pin else None

    print(_environment(), flush=True)
    tmp = Path(tempfile.mkdtemp(prefix="signalite-bench-"))
    procs: list[subprocess.Popen[bytes]] = []
    try:
        data_dir = tmp / "data"
        t0 = time.perf_counter()
        asyncio.run(_seed(Settings(data_dir=data_dir).database_path, args.channels))
        print(f"seeded {args.channels} channels in {time.perf_counter() - t0:.1f} s", flush=True)

        env = {k: v for k, v in os.environ.items() if not k.startswith("SIGNALITE_")}
        sig_port, triv_port = _free_port(), _free_port()
        per_run = args.duration * args.rounds * len(OPS) + args.warmup * len(OPS)
        signalite = subprocess.Popen(
            _pinned(server_cpu, [
                sys.executable, "-m", "signalite", "serve", "--host", "127.0.0.1", "--port", str(sig_port),
                "--data-dir", str(data_dir), "--limits", "off", "--log-level", "warning",
                "--shutdown-grace", "1",
            ]),
            env=env, stdout=subprocess.DEVNULL, preexec_fn=_die_with_parent,
        )  # fmt: skip
        procs.append(signalite)
        trivial = subprocess.Popen(
            _pinned(server_cpu, [
                sys.executable, str(TRIVIAL_SERVER), "--port", str(triv_port),
                "--lifetime", str(per_run * 2 + 120),
            ]),
            env=env, stdout=subprocess.DEVNULL, preexec_fn=_die_with_parent,
        )  # fmt: skip
        procs.append(trivial)
        _wait_ready(signalite, sig_port, "/health")
        _wait_ready(trivial, triv_port, "/trivial")

        # Sanity: the requests wrk sends must succeed (first and last seeded channel).
        last = args.channels - 1
        status, body = _post(sig_port, "/describeSignalingChannel", {"ChannelName": channel_name(last)})
        if status != 200 or body["ChannelInfo"]["ChannelARN"] != channel_arn(last):  # type: ignore[index]
            raise RuntimeError(f"DescribeSignalingChannel check failed: {status} {body}")
        status, body = _post(sig_port, "/getSignalingChannelEndpoint", {"ChannelARN": channel_arn(0)})
        if status != 200 or len(body.get("ResourceEndpointList", [])) != 2:  # type: ignore[arg-type]
            raise RuntimeError(f"GetSignalingChannelEndpoint check failed: {status} {body}")

        ports = {"trivial": triv_port, "describe": sig_port, "endpoint": sig_port}
        pids = {"trivial": trivial.pid, "describe": signalite.pid, "endpoint": signalite.pid}

        def measure(op: str, seconds: int) -> Run:
            return wrk(
                ports[op], op, seconds=seconds, connections=args.connections, count=args.channels,
                cpu=client_cpu, server_pid=pids[op],
            )  # fmt: skip

        print(
            f"warm-up {args.warmup:g} s each; then {args.rounds} rounds x {len(OPS)} candidates x "
            f"{args.duration:g} s, {args.connections} connections, "
            + (f"servers on CPU {server_cpu}, wrk on CPU {client_cpu}" if pin else "no CPU pinning")
            + (f", nice {NICE}" if NICE else ""),
            flush=True,
        )
        for op in OPS:
            measure(op, args.warmup)

        runs: list[Run] = []
        for r in range(1, args.rounds + 1):
            for op in OPS:
                run = measure(op, args.duration)
                run.round = r
                runs.append(run)
                print(
                    f"  round {r} {op:<9} {run.rps:9.0f} req/s  p50 {run.p50_ms:6.2f} ms  "
                    f"p99 {run.p99_ms:6.2f} ms  server CPU {run.cpu_us:6.1f} us/req, "
                    f"{run.busy:4.0%} of a core  errors {run.errors}",
                    flush=True,
                )
                if args.verbose:
                    print(run.latency_table)
        report(runs, args.rounds)
        print("load average (1, 5, 15 min) at the end: {:.2f} {:.2f} {:.2f}".format(*os.getloadavg()))
        print(footer(started))
    finally:
        for proc in procs:
            _stop(proc)
        shutil.rmtree(tmp, ignore_errors=True)
    return 0


def _environment() -> str:
    import platform
    from importlib.metadata import version

    def v(name: str) -> str:
        try:
            return version(name)
        except Exception:
            return "?"

    return (
        f"signalite {v('signalite')}, Python {platform.python_version()}, aiohttp {v('aiohttp')}, "
        f"uvloop {v('uvloop')}, orjson {v('orjson')}, wrk {_wrk_version()}; {os.cpu_count()} CPUs; "
        "load average (1, 5, 15 min) at the start: {:.2f} {:.2f} {:.2f}".format(*os.getloadavg())
    )


def _wrk_version() -> str:
    try:
        out = subprocess.run(["wrk", "-v"], capture_output=True, text=True, timeout=5)
    except (OSError, subprocess.SubprocessError):
        return "?"
    words = (out.stdout + out.stderr).split()
    return words[1] if len(words) > 1 and words[0] == "wrk" else "?"


def report(runs: list[Run], rounds: int) -> None:
    by_op = {op: [r for r in runs if r.op == op] for op in OPS}
    base_rps = statistics.median(r.rps for r in by_op["trivial"])
    base_cpu = statistics.median(r.cpu_us for r in by_op["trivial"])
    base_by_round = {r.round: r.rps for r in by_op["trivial"]}
    print()
    header = (
        f"{'operation':<28} {'median rps':>10} {'p50 ms':>7} {'p99 ms':>7} {'ratio':>6}  "
        f"{'per-round':<15} {'CPU us/req':>10} {'CPU ratio':>9} {'core':>5} {'errors':>6}"
    )
    print(header)
    print("-" * len(header))
    for op in OPS:
        rs = by_op[op]
        rps = statistics.median(r.rps for r in rs)
        cpu = statistics.median(r.cpu_us for r in rs)
        per_round = " ".join(f"{r.rps / base_by_round[r.round]:.2f}" for r in rs)
        print(
            f"{LABELS[op]:<28} {rps:>10.0f} {statistics.median(r.p50_ms for r in rs):>7.2f} "
            f"{statistics.median(r.p99_ms for r in rs):>7.2f} {rps / base_rps:>6.2f}  {per_round:<15} "
            f"{cpu:>10.1f} {base_cpu / cpu:>9.2f} {statistics.median(r.busy for r in rs):>5.0%} "
            f"{sum(r.errors for r in rs):>6}"
        )
    print()
    print(
        f"ratio = median req/s / the trivial handler's median req/s over {rounds} alternating rounds "
        "(target >= 0.50);\nper-round = the same ratio within each round; CPU us/req = server CPU time "
        "per request (all threads),\nCPU ratio = trivial's CPU us/req / the operation's (less sensitive "
        "to other load on the machine);\ncore = the server's CPU time / wall time during the runs (median)."
    )
    least = min(r.busy for r in runs)
    if least < 0.9:
        print(
            f"WARNING: in some runs the server had only {least:.0%} of its core (other processes ran on it): "
            "req/s,\nlatency and their ratio are disturbed by that load; the CPU ratio is the steadier figure."
        )


if __name__ == "__main__":
    sys.exit(main())
