"""A signalite server for your own tests, like moto's ThreadedMotoServer.

    from signalite.testing import SignaliteServer

    with SignaliteServer() as server:          # in-process, on a free port, fresh data dir
        client = boto3.client("kinesisvideo", endpoint_url=server.endpoint_url, region_name="us-east-1",
                              aws_access_key_id="test", aws_secret_access_key="test")

`SignaliteServer(subprocess=True)` runs `python -m signalite serve` in a child process instead.
Installed with signalite, the pytest plugin below also gives every test a `signalite_server` fixture
(a fresh server per test) and `signalite_endpoint` (its URL).
"""

from __future__ import annotations

import asyncio
import collections
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections.abc import Iterator, Mapping
from pathlib import Path
from types import TracebackType
from typing import Any

import pytest


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port that was free a moment ago."""
    with socket.socket() as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


class ShiftedClock:
    """Real time plus an offset that tests move forward: timers fire without sleeping."""

    def __init__(self) -> None:
        self.offset = 0.0

    def time(self) -> float:
        return time.time() + self.offset

    def monotonic(self) -> float:
        return time.monotonic() + self.offset


class SignaliteServer:
    """A signalite server on a free loopback port, started and stopped around a block.

    In-process servers run on a `ShiftedClock`: `advance(seconds)` moves the server's time forward
    and runs the hub's housekeeping at once (TTL drops, idle timeout, GO_AWAY, rate refills).
    """

    def __init__(
        self,
        *,
        subprocess: bool = False,
        data_dir: str | Path | None = None,
        extra_args: list[str] | None = None,
        env: Mapping[str, str] | None = None,
        settings: Mapping[str, Any] | None = None,
    ) -> None:
        self._use_subprocess = subprocess
        self._own_dir = data_dir is None
        self.data_dir = Path(data_dir) if data_dir is not None else Path(tempfile.mkdtemp(prefix="signalite-"))
        self.extra_args = list(extra_args or [])
        self.env = dict(env or {})
        self.settings_overrides = dict(settings or {})
        self.port = 0
        self.process: Any = None
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._server: Any = None
        self.scheme = "http"
        self.clock = ShiftedClock()

    @property
    def endpoint_url(self) -> str:
        return f"{self.scheme}://127.0.0.1:{self.port}"

    def start(self) -> SignaliteServer:
        if self._use_subprocess:
            self._start_subprocess()
        else:
            self._start_thread()
        return self

    def _start_subprocess(self) -> None:
        self.port = free_port()
        cmd = [
            sys.executable, "-m", "signalite", "serve", "--port", str(self.port),
            "--data-dir", str(self.data_dir), *self.extra_args,
        ]  # fmt: skip
        if any(a.startswith("--tls") for a in self.extra_args):
            self.scheme = "https"
        self.process = subprocess.Popen(
            cmd, env={**os.environ, **self.env}, stdout=subprocess.PIPE, stderr=subprocess.STDOUT
        )
        # Drain the child's output on a thread (a full pipe would block the server) and keep the tail.
        self._output: collections.deque[str] = collections.deque(maxlen=2000)
        threading.Thread(target=self._drain, args=(self.process.stdout,), daemon=True).start()
        wait_healthy(self.endpoint_url, self.process, output=self.output)

    def _drain(self, stream: Any) -> None:
        for line in iter(stream.readline, b""):
            self._output.append(line.decode(errors="replace"))

    def output(self) -> str:
        """What a subprocess server printed so far (the last 2000 lines)."""
        return "".join(getattr(self, "_output", ()))

    def _start_thread(self) -> None:
        from signalite.app import Server
        from signalite.config import load_settings

        settings = load_settings({"port": 0, "data_dir": str(self.data_dir), **self.settings_overrides}, environ={})
        started = threading.Event()
        errors: list[BaseException] = []

        async def main() -> None:
            self._stop = asyncio.Event()
            self._server = Server(settings, clock=self.clock.time, monotonic=self.clock.monotonic)
            try:
                await self._server.start()
            except BaseException as e:
                errors.append(e)
                started.set()
                return
            self.port = self._server.port
            self.scheme = "https" if settings.tls_enabled else "http"
            started.set()
            await self._stop.wait()
            await self._server.stop()

        def run() -> None:
            self._loop = asyncio.new_event_loop()
            self._loop.run_until_complete(main())
            self._loop.close()

        self._thread = threading.Thread(target=run, name="signalite-server", daemon=True)
        self._thread.start()
        started.wait(30)
        if errors:
            raise errors[0]

    @property
    def server(self) -> Any:
        """The in-process `signalite.app.Server` (None for a subprocess)."""
        return self._server

    def call(self, fn: Any, timeout: float = 30.0) -> Any:
        """Run `fn()` (a coroutine function) on the server's event loop and return its result."""
        if self._loop is None:
            raise RuntimeError("only in-process servers can be called into")
        return asyncio.run_coroutine_threadsafe(fn(), self._loop).result(timeout)

    def advance(self, seconds: float) -> None:
        """Move the server's clocks forward by `seconds` and run the hub's timers now."""
        self.clock.offset += seconds

        async def tick() -> None:
            await self._server.sockets.tick()

        self.call(tick)

    def stop(self) -> None:
        if self.process is not None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
            self.process = None
        if self._thread is not None and self._loop is not None and self._stop is not None:
            self._loop.call_soon_threadsafe(self._stop.set)
            self._thread.join(30)
            self._thread = None
        if self._own_dir:
            shutil.rmtree(self.data_dir, ignore_errors=True)

    def __enter__(self) -> SignaliteServer:
        return self.start()

    def __exit__(self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None) -> None:
        self.stop()


def wait_healthy(url: str, process: Any = None, timeout: float = 30.0, output: Any = None) -> None:
    """Poll `url`/health until it answers 200 (or the process dies)."""
    import ssl

    context = ssl._create_unverified_context()  # health check only; tests verify TLS themselves
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process is not None and process.poll() is not None:
            time.sleep(0.2)  # let the output thread catch the last lines
            out = output() if output is not None else ""
            raise RuntimeError(f"signalite exited with {process.returncode}:\n{out}")
        try:
            with urllib.request.urlopen(f"{url}/health", timeout=1, context=context) as r:
                if r.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.05)
    raise TimeoutError(f"signalite at {url} did not become healthy")


@pytest.fixture
def signalite_server() -> Iterator[SignaliteServer]:
    """A fresh in-process signalite server for one test."""
    with SignaliteServer() as server:
        yield server


@pytest.fixture
def signalite_endpoint(signalite_server: SignaliteServer) -> str:
    """The endpoint URL of `signalite_server` (pass it as boto3's endpoint_url)."""
    return signalite_server.endpoint_url
