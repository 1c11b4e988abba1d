"""What the benchmark scripts share: starting, pinning, watching and stopping their processes (Linux).

Imported by the scripts next to it (`python bench/<script>.py` puts this folder on sys.path).
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any


def die_with_parent() -> None:
    """In the child before exec: get SIGTERM when the benchmark script dies, so nothing lingers."""
    with contextlib.suppress(Exception):
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


def pinned(cpus: int | str | None, argv: Sequence[str], nice: int = 0) -> list[str]:
    """`argv` run on `cpus` (taskset; None: anywhere), at nice level `nice` (negative needs root)."""
    prefix = ["nice", "-n", str(nice)] if nice else []
    return [*prefix, *(["taskset", "-c", str(cpus)] if cpus is not None else []), *argv]


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def stop(proc: subprocess.Popen[Any], grace: float = 10.0) -> None:
    """SIGTERM, then SIGKILL after `grace` seconds."""
    if proc.poll() is not None:
        return
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(grace)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(5)


def proc_cpu(pid: int) -> float:
    """CPU seconds (user + system, all threads) of a process so far, from /proc/<pid>/stat; 0 when gone."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def wait_port(proc: subprocess.Popen[Any], port: int, log: Path, timeout: float = 30.0) -> None:
    """Until something listens on 127.0.0.1:`port`; raises (with the tail of `log`) if `proc` exits first."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            tail = log.read_text(errors="replace")[-2000:] if log.exists() else ""
            raise RuntimeError(f"{log.name}: exited with {proc.returncode} before listening:\n{tail}")
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=1):
            return
        time.sleep(0.05)
    raise RuntimeError(f"{log.name}: port {port} not listening within {timeout} s")


def machine() -> str:
    """The machine and code a run measured: figures differ between machines far more than between runs."""
    info: dict[str, str] = {}
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            key, _, value = line.partition(":")
            if not key.strip():
                break  # the first CPU's block ends here
            info.setdefault(key.strip(), " ".join(value.split()))
    # Virtual machines often name their CPU only "Intel(R) Xeon(R) Processor": family and model tell more.
    name, family, number = (info.get(k, "?") for k in ("model name", "cpu family", "model"))
    model = f"{name} (family {family}, model {number})"
    commit = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, cwd=Path(__file__).parent
    ).stdout.strip()
    dirty = subprocess.run(
        ["git", "status", "--porcelain", "--untracked-files=no", "--", "src"], capture_output=True, text=True,
        cwd=Path(__file__).parent,
    ).stdout.strip()  # fmt: skip
    code = f"commit {commit}{' + uncommitted changes in src/' if dirty else ''}" if commit else "not a git checkout"
    return f"{model}, {os.cpu_count()} CPUs, Python {sys.version.split()[0]}; {code}"


def footer(started: float, args: Sequence[str] | None = None) -> str:
    """The line that closes a benchmark's output: how long it took, its command (the script's name and
    `args`, by default its command-line arguments), and what it ran on."""
    command = " ".join([Path(sys.argv[0]).name, *(sys.argv[1:] if args is None else args)])
    return f"({time.monotonic() - started:.0f} s; command: {command}; {machine()})"
