"""Make a PostgreSQL server available to tests, and give each test session a database of its own.

Where the server comes from, first that answers:

1. `$SIGNALITE_TEST_DATABASE_URL` (any database on the server; its user needs CREATEDB) — if it is
   set and does not answer, that is a failure, not a fallback; the value `throwaway` skips straight
   to 3;
2. 127.0.0.1:5432 as user `postgres` without a password (trust auth, as on the development machine);
3. a throwaway cluster: `initdb` + `pg_ctl` from /usr/lib/postgresql/<version>/bin into a temporary
   directory, listening on 127.0.0.1 on a free port (as the `postgres` user when running as root),
   stopped and removed when the Python process exits. This is what a fresh machine uses after
   `./scripts/test` has installed the Debian `postgresql` package (whose own cluster, if running,
   does not trust TCP connections).

If PostgreSQL is not installed at all the calling test fails, saying that `./scripts/test` installs it.

Usage (tests put this directory on `sys.path`, there is no package):

    sys.path.insert(0, str(Path(__file__).resolve().parents[N]))   # N so that this is tests/
    import pg
    url = pg.create_database()      # a fresh, uniquely named database; returns its URL
    ...
    pg.drop_database(url)           # terminates leftover connections, then drops it

or `with pg.temporary_database() as url: ...`. All functions are synchronous (they run asyncpg on a
private event loop in a thread), so they work from sync fixtures, async tests and subprocesses alike.
"""

from __future__ import annotations

import asyncio
import atexit
import glob
import os
import pwd
import re
import shutil
import socket
import subprocess
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Coroutine, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import pytest

ENV = "SIGNALITE_TEST_DATABASE_URL"
DEFAULT_URL = "postgresql://postgres@127.0.0.1:5432/postgres"
INSTALL_HINT = "PostgreSQL is not installed: ./scripts/test installs it (Debian package `postgresql`)."

T = TypeVar("T")
_lock = threading.Lock()
_server_url: str | None = None
_server_failure: str | None = None


def _run(factory: Callable[[], Coroutine[Any, Any, T]]) -> T:
    """Run a coroutine to completion on a fresh event loop in a thread (safe inside a running loop)."""
    result: list[T] = []
    error: list[BaseException] = []

    def target() -> None:
        try:
            result.append(asyncio.run(factory()))
        except BaseException as e:
            error.append(e)

    thread = threading.Thread(target=target, name="pg-helper")
    thread.start()
    thread.join()
    if error:
        raise error[0]
    return result[0]


def with_database(url: str, database: str) -> str:
    """`url` pointing at another database on the same server."""
    parts = urlsplit(url)
    return urlunsplit(parts._replace(path="/" + database))


async def _answers(url: str) -> str | None:
    """None if `url` accepts a connection and a query, else why not."""
    try:
        conn = await asyncpg.connect(url, timeout=5)
    except (OSError, TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError) as e:
        return f"{type(e).__name__}: {e}"
    try:
        await conn.fetchval("SELECT 1")
    finally:
        await conn.close()
    return None


def server_url() -> str:
    """An admin URL (on database `postgres` or the one given) of a PostgreSQL server that answers."""
    global _server_url, _server_failure
    with _lock:
        if _server_url is None and _server_failure is None:
            try:
                _server_url = _find_or_start_server()
            except _Unavailable as e:
                _server_failure = str(e)
        if _server_failure is not None:
            pytest.fail(_server_failure, pytrace=False)
        assert _server_url is not None
        return _server_url


class _Unavailable(Exception):
    pass


def _find_or_start_server() -> str:
    explicit = os.environ.get(ENV)
    if explicit == "throwaway":
        return _start_throwaway_cluster()
    if explicit:
        why = _run(lambda: _answers(explicit))
        if why is not None:
            shown = re.sub(r"://([^:/@]*):[^@]*@", r"://\1:***@", explicit)
            raise _Unavailable(f"${ENV}={shown} does not answer: {why}")
        return explicit
    if _run(lambda: _answers(DEFAULT_URL)) is None:
        return DEFAULT_URL
    return _start_throwaway_cluster()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def _pg_bin() -> Path:
    candidates = sorted(
        glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=lambda p: int(Path(p).parent.parent.name or 0)
    )
    if candidates:
        return Path(candidates[-1]).parent
    initdb = shutil.which("initdb")
    if initdb:
        return Path(initdb).parent
    raise _Unavailable(INSTALL_HINT)


def _start_throwaway_cluster() -> str:
    bindir = _pg_bin()
    datadir = Path(tempfile.mkdtemp(prefix="signalite-pg-"))
    as_user: list[str] = []
    if os.geteuid() == 0:  # initdb and postgres refuse to run as root
        try:
            pw = pwd.getpwnam("postgres")
        except KeyError:
            raise _Unavailable(f"{INSTALL_HINT} (no `postgres` user to run a throwaway cluster as)") from None
        os.chown(datadir, pw.pw_uid, pw.pw_gid)
        as_user = ["runuser", "-u", "postgres", "--"]
    port = _free_port()
    log = datadir / "server.log"

    def run(*cmd: str) -> None:
        done = subprocess.run([*as_user, *cmd], capture_output=True, text=True, timeout=120, check=False)
        if done.returncode != 0:
            tail = log.read_text(errors="replace")[-2000:] if log.exists() else ""
            raise _Unavailable(
                f"could not start a throwaway PostgreSQL cluster in {datadir}: {' '.join(cmd)} exited "
                f"{done.returncode}\n{done.stdout}{done.stderr}{tail}"
            )

    run(
        str(bindir / "initdb"), "-D", str(datadir / "data"), "-U", "postgres", "--auth=trust",
        "-E", "UTF8", "--locale=C.UTF-8", "--no-sync",
    )  # fmt: skip
    options = f"-h 127.0.0.1 -p {port} -k {datadir} -c fsync=off -c synchronous_commit=off -c max_connections=200"
    run(str(bindir / "pg_ctl"), "-D", str(datadir / "data"), "-o", options, "-l", str(log), "-w", "-t", "60", "start")

    def stop() -> None:
        subprocess.run(
            [*as_user, str(bindir / "pg_ctl"), "-D", str(datadir / "data"), "-m", "immediate", "-w", "stop"],
            capture_output=True,
            timeout=60,
            check=False,
        )
        shutil.rmtree(datadir, ignore_errors=True)

    atexit.register(stop)
    url = f"postgresql://postgres@127.0.0.1:{port}/postgres"
    deadline = time.monotonic() + 30
    while (why := _run(lambda: _answers(url))) is not None:
        if time.monotonic() > deadline:
            raise _Unavailable(f"the throwaway PostgreSQL cluster on port {port} does not answer: {why}")
        time.sleep(0.2)
    return url


def create_database(prefix: str = "signalite_test", *, icu_locale: str | None = None) -> str:
    """Create a fresh, uniquely named database on the test server; return its URL.

    `icu_locale` (e.g. "en-US") makes the database's default collation a natural-language one, where
    "a-b" and "A" sort differently than by code point; where the server has no ICU (before
    PostgreSQL 15, or built without it) the database gets the server's default instead.
    """
    admin = server_url()
    name = f"{prefix}_{os.getpid()}_{uuid.uuid4().hex[:12]}"

    async def create() -> None:
        conn = await asyncpg.connect(admin, timeout=10)
        try:
            sql = f"CREATE DATABASE \"{name}\" TEMPLATE template0 ENCODING 'UTF8'"
            if icu_locale is not None:
                try:
                    await conn.execute(f"{sql} LOCALE_PROVIDER icu ICU_LOCALE '{icu_locale}'")
                    return
                except asyncpg.PostgresError:
                    pass
            await conn.execute(sql)
        finally:
            await conn.close()

    _run(create)
    return with_database(admin, name)


def drop_database(url: str) -> None:
    """Drop a database made by `create_database`, disconnecting whoever is still connected."""
    name = urlsplit(url).path.lstrip("/")
    admin = server_url()

    async def drop() -> None:
        conn = await asyncpg.connect(admin, timeout=10)
        try:
            await conn.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = $1 AND pid <> pg_backend_pid()",
                name,
            )
            await conn.execute(f'DROP DATABASE IF EXISTS "{name}"')
        finally:
            await conn.close()

    _run(drop)


def execute(url: str, sql: str, *args: Any) -> list[Any]:
    """Run one statement on `url` over a connection of its own; return the rows (as tuples)."""

    async def run() -> list[Any]:
        conn = await asyncpg.connect(url, timeout=10)
        try:
            return [tuple(row) for row in await conn.fetch(sql, *args)]
        finally:
            await conn.close()

    return _run(run)


@contextmanager
def temporary_database(prefix: str = "signalite_test") -> Iterator[str]:
    url = create_database(prefix)
    try:
        yield url
    finally:
        drop_database(url)


def address(url: str) -> tuple[str, int]:
    """(host, port) of a PostgreSQL URL."""
    parts = urlsplit(url)
    return parts.hostname or "127.0.0.1", parts.port or 5432


def with_address(url: str, host: str, port: int) -> str:
    """`url` reaching the same database through another host and port (e.g. a test proxy)."""
    parts = urlsplit(url)
    userinfo = parts.netloc.rsplit("@", 1)[0] + "@" if "@" in parts.netloc else ""
    return urlunsplit(parts._replace(netloc=f"{userinfo}{host}:{port}"))
