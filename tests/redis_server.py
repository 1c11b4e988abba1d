"""Make a Redis server available to tests (the cluster bus), preferably a private one they may restart.

Where the server comes from:

1. `$SIGNALITE_TEST_REDIS_URL`, when set, for `redis_url()` — if it does not answer that is a
   failure, not a fallback. Tests that stop and start Redis never use it (see `private()`).
2. otherwise a *private* `redis-server` started here on a free loopback port, in a temporary
   directory, without persistence (`--save '' --appendonly no`), and stopped when the process exits
   (or the `with` block ends). A private server is what lets a test restart Redis on the same port
   without touching the machine's shared Redis.

If `redis-server` is not installed the calling test fails, saying that `./scripts/test` installs it.
Each test should still use its own `--cluster-name` (every key and pub/sub channel carries it), so
tests sharing a server never see each other's keys or traffic.

Usage (tests put this directory on `sys.path`; there is no package):

    sys.path.insert(0, str(Path(__file__).resolve().parents[N]))   # N so that this is tests/
    import redis_server
    url = redis_server.redis_url()            # the session's Redis (env or one shared private server)
    with redis_server.private() as server:    # a server of this test's own
        server.url; server.stop(); server.start()   # restart on the same port: same URL
"""

from __future__ import annotations

import atexit
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

ENV = "SIGNALITE_TEST_REDIS_URL"
INSTALL_HINT = "redis-server is not installed: ./scripts/test installs it (Debian package `redis-server`)."

_lock = threading.Lock()
_shared: RedisServer | None = None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _ping(host: str, port: int, timeout: float = 1.0) -> bool:
    """A RESP PING by hand (no client library needed to know the server is up)."""
    try:
        with socket.create_connection((host, port), timeout=timeout) as sock:
            sock.sendall(b"*1\r\n$4\r\nPING\r\n")
            return sock.recv(64).startswith(b"+PONG")
    except OSError:
        return False


def _die_with_parent() -> None:  # pragma: no cover - runs in the child between fork and exec
    """Linux: SIGTERM the redis-server when the process that started it dies (even by SIGKILL), so a
    killed test run leaves no server behind. Tied to the starting *thread*, hence main thread only."""
    try:
        import ctypes

        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


def require_redis_server() -> str:
    path = shutil.which("redis-server")
    if path is None:
        pytest.fail(INSTALL_HINT)
    return path


class RedisServer:
    """A private redis-server on 127.0.0.1:<port>; `stop()` and `start()` keep the port (and URL)."""

    def __init__(self) -> None:
        self.binary = require_redis_server()
        self.port = _free_port()
        self.dir = Path(tempfile.mkdtemp(prefix="signalite-redis-"))
        self.process: subprocess.Popen[bytes] | None = None
        self.log = self.dir / "redis.log"

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self, timeout: float = 10.0) -> RedisServer:
        if self.process is not None and self.process.poll() is None:
            return self
        cmd = [
            self.binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
            "--dir", str(self.dir), "--logfile", str(self.log), "--daemonize", "no",
        ]  # fmt: skip
        deadline = time.monotonic() + timeout
        while True:
            in_main = threading.current_thread() is threading.main_thread()
            self.process = subprocess.Popen(
                cmd,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
                preexec_fn=_die_with_parent if in_main and sys.platform == "linux" else None,
            )
            while time.monotonic() < deadline and self.process.poll() is None:
                if _ping("127.0.0.1", self.port):
                    return self
                time.sleep(0.02)
            if self.process.poll() is None:
                self.process.kill()
                self.process.wait()
                raise TimeoutError(f"redis-server on port {self.port} did not answer PING:\n{self._tail()}")
            # Exited: most likely the port is briefly unavailable (a restart); retry until the deadline.
            if time.monotonic() >= deadline:
                raise RuntimeError(f"redis-server exited with {self.process.returncode}:\n{self._tail()}")
            time.sleep(0.1)

    def _tail(self) -> str:
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-20:])
        except OSError:
            return "(no log)"

    def stop(self) -> None:
        """Stop the server (SIGTERM, then SIGKILL); its data is gone (no persistence)."""
        if self.process is None:
            return
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.process = None

    def close(self) -> None:
        self.stop()
        shutil.rmtree(self.dir, ignore_errors=True)


@contextmanager
def private() -> Iterator[RedisServer]:
    """A redis-server of the caller's own, removed afterwards."""
    server = RedisServer().start()
    try:
        yield server
    finally:
        server.close()


def redis_url() -> str:
    """The session's Redis: `$SIGNALITE_TEST_REDIS_URL`, else one private server shared by this process."""
    global _shared
    env = os.environ.get(ENV)
    if env:
        import redis

        try:
            redis.Redis.from_url(env, socket_timeout=2, socket_connect_timeout=2).ping()
        except redis.RedisError as e:
            pytest.fail(f"${ENV}={env} does not answer PING: {e!r}")
        return env
    with _lock:
        if _shared is None:
            _shared = RedisServer().start()
            atexit.register(_shared.close)
        return _shared.url
