"""Fixtures for the control-plane integration tests: a real `signalite serve` process, real AWS clients.

The session-scoped `server` is shared by every test, so tests never assume an empty server: each one
takes its names from `names` (unique per test) and, when it lists, filters by `names.prefix`.
Tests that need a server of their own (another flag, default rate limits, a restart, a kill -9) use
`start_server`.
"""

from __future__ import annotations

import re
import threading
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import boto3
import botocore.config
import pytest

from signalite.testing import SignaliteServer

REGION = "us-west-2"
CREDENTIALS = {"aws_access_key_id": "AKIDSIGNALITETEST", "aws_secret_access_key": "signalite-test-secret"}


class OutputDrain:
    """Reads a server's combined stdout/stderr on a thread.

    Without a reader the pipe fills up (64 KiB) once the server has logged enough, and the server
    then blocks on its next log line. The captured text is shown when a test fails.
    """

    def __init__(self, process: Any) -> None:
        self.lines: list[str] = []
        self._thread = threading.Thread(target=self._run, args=(process.stdout,), daemon=True)
        self._thread.start()

    def _run(self, stream: Any) -> None:
        for raw in iter(stream.readline, b""):
            self.lines.append(raw.decode(errors="replace").rstrip("\n"))

    def text(self, last: int = 200) -> str:
        return "\n".join(self.lines[-last:])


class RunningServer:
    """A started SignaliteServer plus the drain of its output."""

    def __init__(self, server: SignaliteServer) -> None:
        self.server = server
        self.drain = OutputDrain(server.process)

    @property
    def endpoint_url(self) -> str:
        return self.server.endpoint_url

    @property
    def port(self) -> int:
        return self.server.port

    @property
    def process(self) -> Any:
        return self.server.process

    @property
    def data_dir(self) -> Path:
        return self.server.data_dir

    def stop(self) -> None:
        self.server.stop()


def start(data_dir: Path | None = None, extra_args: list[str] | None = None) -> RunningServer:
    """Start `python -m signalite serve` on a free port (a fresh temporary data dir unless given)."""
    return RunningServer(SignaliteServer(subprocess=True, data_dir=data_dir, extra_args=extra_args).start())


@pytest.fixture(scope="session")
def server() -> Iterator[RunningServer]:
    """One signalite subprocess shared by the whole session.

    Request-rate quotas are off (`--limits off`): these tests check behaviour, and AWS's per-channel
    rates (5 per second for Describe, Tag, ...) would otherwise throttle them at random. The default
    (`--limits aws`) is exercised on a server of its own in test_cp_boto3.py.
    """
    running = start(extra_args=["--limits", "off"])
    try:
        yield running
    finally:
        running.stop()


@pytest.fixture
def start_server() -> Iterator[Callable[..., RunningServer]]:
    """Start extra servers for one test: `start_server(data_dir=..., extra_args=[...])`; all stopped after."""
    started: list[RunningServer] = []

    def _start(data_dir: Path | None = None, extra_args: list[str] | None = None) -> RunningServer:
        running = start(data_dir, extra_args)
        started.append(running)
        return running

    yield _start
    for running in started:
        if running.process is not None:
            running.stop()


def make_client(endpoint_url: str, region: str = REGION, *, validate: bool = True) -> Any:
    """A boto3 kinesisvideo client for `endpoint_url`: dummy credentials, no retries."""
    config = botocore.config.Config(retries={"max_attempts": 1}, parameter_validation=validate)
    return boto3.client("kinesisvideo", endpoint_url=endpoint_url, region_name=region, config=config, **CREDENTIALS)


@pytest.fixture(scope="session")
def make_kv() -> Callable[..., Any]:
    """`make_kv(endpoint_url, region="us-west-2", validate=True)`: a client of any server."""
    return make_client


@pytest.fixture(scope="session")
def client_for(server: RunningServer) -> Callable[..., Any]:
    """`client_for(region="us-east-1", validate=False)`: another client of the shared server."""
    return lambda region=REGION, validate=True: make_client(server.endpoint_url, region, validate=validate)


@pytest.fixture(scope="session")
def kv(server: RunningServer) -> Any:
    """boto3 kinesisvideo client of the shared server, region us-west-2."""
    return make_client(server.endpoint_url)


@pytest.fixture(scope="session")
def kv_raw(server: RunningServer) -> Any:
    """Like `kv` but without botocore's client-side checks (`min`, required, types), to reach the server."""
    return make_client(server.endpoint_url, validate=False)


class Names:
    """Unique resource names for one test: `names()` -> `<prefix>-1`, `names("cam")` -> `<prefix>-cam`."""

    def __init__(self, test_name: str) -> None:
        slug = re.sub(r"[^a-zA-Z0-9_.-]+", "-", test_name)[:60].strip("-")
        self.prefix = f"{slug}-{uuid.uuid4().hex[:8]}"
        self._count = 0

    def __call__(self, label: str | None = None) -> str:
        if label is None:
            self._count += 1
            label = str(self._count)
        return f"{self.prefix}-{label}"


@pytest.fixture
def names(request: pytest.FixtureRequest) -> Names:
    return Names(request.node.name)


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Any:
    """On failure, attach the tail of the shared server's log to the report."""
    report = yield
    if report.failed and "server" in getattr(item, "fixturenames", ()):
        running = item.funcargs.get("server") if hasattr(item, "funcargs") else None
        if isinstance(running, RunningServer):
            report.sections.append(("signalite server log (tail)", running.drain.text(80)))
    return report
