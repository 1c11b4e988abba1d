"""Run a command inside a private network namespace where only loopback is up.

WebRTC stacks (browsers, aiortc, coturn) gather ICE candidates on every interface; this machine has
non-loopback addresses that tests must never send to. Inside `unshare -n` the only interface is
`lo`, so every candidate, STUN/TURN packet and media packet stays on 127.0.0.1 — and everything the
scenario needs (signalite, coturn, the peers) is started inside the same namespace.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Mapping, Sequence

import pytest


def require_netns() -> None:
    """Fail (not skip) when the machine cannot make a private network namespace."""
    if shutil.which("unshare") is None or shutil.which("ip") is None:
        pytest.fail("unshare/ip missing: run ./scripts/test, which installs util-linux and iproute2")
    probe = subprocess.run(["unshare", "-n", "true"], capture_output=True)
    if probe.returncode != 0:
        pytest.fail(f"cannot create a network namespace (needs root or user namespaces): {probe.stderr!r}")


def run_in_netns(
    cmd: Sequence[str], *, timeout: float, env: Mapping[str, str] | None = None, cwd: str | None = None
) -> subprocess.CompletedProcess[str]:
    """Run `cmd` in a fresh network namespace with only `lo` up; capture its output."""
    require_netns()
    wrapped = ["unshare", "-n", "--", "sh", "-c", 'ip link set lo up && exec "$@"', "netns", *cmd]
    return subprocess.run(
        wrapped,
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, **(env or {})},
        cwd=cwd,
    )


def python_in_netns(
    script: str, *args: str, timeout: float, env: Mapping[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """Run a Python script (with this interpreter) inside a private network namespace."""
    return run_in_netns([sys.executable, script, *args], timeout=timeout, env=env)
