"""The PostgreSQL store under concurrency and failure: several "nodes" (pools, processes) on one database.

Each "node" is a `PostgresStore` with its own connection pool; the subprocess test runs real separate
processes. Every rule must hold through database constraints and transactions alone: one channel per
name, one winner per expected Version, the per-region quota, one channel per stream, no lost tag update.

Failures are simulated without touching the machine's shared PostgreSQL: the store under test reaches
the database through a TCP proxy started by the test, which can refuse connections ("down": existing
connections reset, new ones refused) or swallow bytes ("blackhole": connections stay open, nothing
answers). Either way calls must raise `StoreUnavailable` within the store's timeout, and the same store
object must work again as soon as the proxy forwards again.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import textwrap
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import replace
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from signalite.store.base import (
    AlreadyExists,
    Channel,
    QuotaExceeded,
    StoreUnavailable,
    Stream,
    StreamAlreadyMapped,
    TooManyTags,
)
from signalite.store.factory import open_store
from signalite.store.postgres import MIGRATIONS, PostgresStore
from signalite.store.sqlite import SqliteStore

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import pg

ACCOUNT = "111122223333"
REGION = "us-west-2"


@pytest.fixture(scope="module")
def db_url() -> Iterator[str]:
    url = pg.create_database("signalite_pgstore")
    yield url
    pg.drop_database(url)


@pytest.fixture
async def nodes(db_url: str) -> AsyncIterator[tuple[PostgresStore, PostgresStore]]:
    """Two stores with separate pools on one (emptied) database: two signalite nodes."""
    a = await PostgresStore.open(db_url, max_size=10)
    b = await PostgresStore.open(db_url, max_size=10)
    pg.execute(db_url, "TRUNCATE channels, streams")
    yield a, b
    await a.close()
    await b.close()


def channel(name: str, **changes: Any) -> Channel:
    c = Channel(
        arn=f"arn:aws:kinesisvideo:{REGION}:{ACCOUNT}:channel/{name}/1700000000123",
        account=ACCOUNT,
        region=REGION,
        name=name,
        channel_type="SINGLE_MASTER",
        status="ACTIVE",
        message_ttl_seconds=60,
        version="v1",
        creation_time=1700000000.123,
        tags={},
    )
    return replace(c, **changes)


def stream(name: str) -> Stream:
    return Stream(
        arn=f"arn:aws:kinesisvideo:{REGION}:{ACCOUNT}:stream/{name}/1700000000456",
        account=ACCOUNT,
        region=REGION,
        name=name,
        device_name=None,
        media_type=None,
        kms_key_id="k",
        version="s1",
        status="ACTIVE",
        creation_time=1700000000.456,
        data_retention_hours=24,
        tags={},
    )


def count_rows(url: str, sql: str, *args: Any) -> int:
    rows = pg.execute(url, sql, *args)
    return int(rows[0][0])


# -- races between two nodes ----------------------------------------------------------------------


async def test_same_name_created_on_two_nodes_exactly_one_wins(
    nodes: tuple[PostgresStore, PostgresStore], db_url: str
) -> None:
    a, b = nodes
    attempts = [channel("race", arn=f"arn:race/{i}", version=f"v{i}") for i in range(40)]
    results = await asyncio.gather(
        *((a if i % 2 else b).create_channel(c, 10_000) for i, c in enumerate(attempts)), return_exceptions=True
    )
    winners = [c for c, r in zip(attempts, results, strict=True) if r is None]
    assert len(winners) == 1, results
    assert all(isinstance(r, AlreadyExists) for r in results if r is not None), results
    assert count_rows(db_url, "SELECT count(*) FROM channels WHERE name = 'race'") == 1
    assert await a.find_channel(ACCOUNT, REGION, "race") == winners[0]
    assert await b.find_channel(ACCOUNT, REGION, "race") == winners[0]


async def test_replace_with_one_expected_version_on_two_nodes_exactly_one_wins(
    nodes: tuple[PostgresStore, PostgresStore],
) -> None:
    a, b = nodes
    await a.create_channel(channel("cas"), None)
    news = [channel("cas", version=f"next{i}", message_ttl_seconds=100 + i) for i in range(30)]
    results = await asyncio.gather(*((a if i % 2 else b).replace_channel("v1", n) for i, n in enumerate(news)))
    assert results.count(True) == 1, results
    winner = news[results.index(True)]
    assert await b.get_channel(winner.arn) == winner
    assert await a.get_channel(winner.arn) == winner


async def test_delete_and_update_racing_on_one_version(nodes: tuple[PostgresStore, PostgresStore]) -> None:
    a, b = nodes
    for round_ in range(10):
        c = channel(f"dr{round_}")
        await a.create_channel(c, None)
        deleted, replaced = await asyncio.gather(
            a.delete_channel(c.arn, "v1"), b.replace_channel("v1", replace(c, version="v2"))
        )
        assert deleted != replaced, (deleted, replaced)  # exactly one of them
        assert (await b.get_channel(c.arn) is None) == deleted


async def test_quota_holds_across_two_nodes(nodes: tuple[PostgresStore, PostgresStore], db_url: str) -> None:
    a, b = nodes
    results = await asyncio.gather(
        *((a if i % 2 else b).create_channel(channel(f"q{i:02}"), 7) for i in range(40)), return_exceptions=True
    )
    assert sum(r is None for r in results) == 7, results
    assert all(isinstance(r, QuotaExceeded) for r in results if r is not None), results
    assert count_rows(db_url, "SELECT count(*) FROM channels WHERE account = $1 AND region = $2", ACCOUNT, REGION) == 7
    # another region has its own quota, untouched by the race
    await a.create_channel(channel("q", region="eu-west-1", arn="arn:eu/q"), 7)


async def test_one_stream_one_channel_across_nodes(nodes: tuple[PostgresStore, PostgresStore]) -> None:
    a, b = nodes
    s = stream("media")
    await a.create_stream(s, None)
    channels = [channel(f"m{i}") for i in range(12)]
    for c in channels:
        await a.create_channel(c, None)

    async def enable(i: int, c: Channel) -> bool | BaseException:
        store = a if i % 2 else b
        try:
            return await store.replace_channel(
                "v1", replace(c, storage_status="ENABLED", storage_stream_arn=s.arn, version="v2")
            )
        except StreamAlreadyMapped as e:
            return e

    results = await asyncio.gather(*(enable(i, c) for i, c in enumerate(channels)))
    assert results.count(True) == 1, results
    assert all(isinstance(r, StreamAlreadyMapped) for r in results if r is not True), results
    mapped = await b.channel_for_stream(s.arn)
    assert mapped is not None and mapped.name == channels[results.index(True)].name


async def test_tag_updates_on_two_nodes_lose_nothing_and_respect_the_limit(
    nodes: tuple[PostgresStore, PostgresStore],
) -> None:
    a, b = nodes
    c = channel("tagged")
    await a.create_channel(c, None)
    await asyncio.gather(*((a if i % 2 else b).update_tags(c.arn, {f"k{i}": str(i)}, [], 50) for i in range(30)))
    got = await b.get_channel(c.arn)
    assert got is not None and dict(got.tags) == {f"k{i}": str(i) for i in range(30)}

    d = channel("limited")
    await a.create_channel(d, None)
    results = await asyncio.gather(
        *((a if i % 2 else b).update_tags(d.arn, {f"t{i}": "x"}, [], 5) for i in range(20)), return_exceptions=True
    )
    assert sum(isinstance(r, dict) for r in results) == 5, results
    assert all(isinstance(r, TooManyTags) for r in results if not isinstance(r, dict)), results
    got = await a.get_channel(d.arn)
    assert got is not None and len(got.tags) == 5


_CHILD = textwrap.dedent(
    """
    import asyncio, json, sys, time
    from dataclasses import replace
    from signalite.store.base import Channel
    from signalite.store.postgres import PostgresStore

    url, start_at, index = sys.argv[1], float(sys.argv[2]), int(sys.argv[3])
    base = Channel(arn="", account="111122223333", region="us-west-2", name="", channel_type="SINGLE_MASTER",
                   status="ACTIVE", message_ttl_seconds=60, version="v1", creation_time=1.0, tags={})

    async def outcome(coro):
        try:
            await coro
            return "ok"
        except Exception as e:
            return type(e).__name__

    async def main():
        store = await PostgresStore.open(url, max_size=8)
        await asyncio.sleep(max(0.0, start_at - time.time()))
        same = [store.create_channel(replace(base, arn=f"arn:p{index}/{i}", name="proc-race"), None)
                for i in range(8)]
        quota = [store.create_channel(replace(base, arn=f"arn:q{index}/{i}", name=f"pq-{index}-{i}",
                                              region="eu-central-1"), 6) for i in range(8)]
        results = await asyncio.gather(*(outcome(c) for c in same + quota))
        await store.close()
        print(json.dumps({"same": results[:8], "quota": results[8:]}))

    asyncio.run(main())
    """
)


async def test_races_between_processes(db_url: str) -> None:
    """Three OS processes, each its own pool, fire at the same instant."""
    await (await PostgresStore.open(db_url)).close()  # migrated, whichever test runs first
    pg.execute(db_url, "TRUNCATE channels, streams")
    start_at = time.time() + 2.0
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", _CHILD, db_url, str(start_at), str(i)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for i in range(3)
    ]
    reports = []
    for p in procs:
        out, err = p.communicate(timeout=60)
        assert p.returncode == 0, err
        reports.append(json.loads(out))
    same = [r for rep in reports for r in rep["same"]]
    quota = [r for rep in reports for r in rep["quota"]]
    assert same.count("ok") == 1 and same.count("AlreadyExists") == len(same) - 1, same
    assert quota.count("ok") == 6 and quota.count("QuotaExceeded") == len(quota) - 6, quota
    assert count_rows(db_url, "SELECT count(*) FROM channels WHERE name = 'proc-race'") == 1
    assert count_rows(db_url, "SELECT count(*) FROM channels WHERE region = 'eu-central-1'") == 6


# -- migrations -----------------------------------------------------------------------------------


async def test_nodes_starting_together_migrate_once() -> None:
    with pg.temporary_database("signalite_migrate") as url:
        stores = await asyncio.gather(*(PostgresStore.open(url, min_size=1, max_size=2) for _ in range(6)))
        try:
            assert {s.schema_version for s in stores} == {len(MIGRATIONS)}
            rows = pg.execute(url, "SELECT version FROM schema_migrations ORDER BY version")
            assert [r[0] for r in rows] == list(range(1, len(MIGRATIONS) + 1))
            await stores[0].create_channel(channel("after-migration"), None)
            assert await stores[5].find_channel(ACCOUNT, REGION, "after-migration") is not None
        finally:
            await asyncio.gather(*(s.close() for s in stores))
        again = await PostgresStore.open(url)  # nothing left to apply; the data is untouched
        try:
            assert count_rows(url, "SELECT count(*) FROM schema_migrations") == len(MIGRATIONS)
            assert await again.find_channel(ACCOUNT, REGION, "after-migration") is not None
        finally:
            await again.close()


# -- the factory ----------------------------------------------------------------------------------


async def test_open_store_chooses_the_backend(db_url: str, tmp_path: Path) -> None:
    for url in (db_url, db_url.replace("postgresql://", "postgres://", 1)):
        store = await open_store(SimpleNamespace(database=url, data_dir=tmp_path))
        try:
            assert isinstance(store, PostgresStore)
            await store.ping()
        finally:
            await store.close()
    for settings in (SimpleNamespace(database=None, data_dir=tmp_path), SimpleNamespace(data_dir=tmp_path)):
        store = await open_store(settings)
        try:
            assert isinstance(store, SqliteStore) and store.path == tmp_path / "signalite.db"
        finally:
            await store.close()
    with pytest.raises(ValueError, match="postgresql://"):
        await open_store(SimpleNamespace(database="mysql://x/y", data_dir=tmp_path))


# -- unavailability -------------------------------------------------------------------------------


class Proxy:
    """A TCP proxy on 127.0.0.1 in front of PostgreSQL that a test can cut, blackhole and restore."""

    def __init__(self, target: tuple[str, int]) -> None:
        self.target = target
        self.port = 0
        self.mode = "up"
        self._server: asyncio.Server | None = None
        self._transports: set[asyncio.WriteTransport] = set()
        self._tasks: set[asyncio.Task[None]] = set()

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", self.port)
        self.port = self._server.sockets[0].getsockname()[1]
        self.mode = "up"

    async def cut(self) -> None:
        """Down: refuse new connections and reset every open one."""
        assert self._server is not None
        self._server.close()
        await self._server.wait_closed()
        self._server = None
        self.mode = "down"
        self._abort_all()

    def blackhole(self) -> None:
        """Accept connections, forward nothing in either direction."""
        self.mode = "blackhole"

    async def restore(self) -> None:
        if self.mode == "blackhole":
            self._abort_all()  # whatever was in flight is lost; the clients must notice
            self.mode = "up"
        if self._server is None:
            await self.start()

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
        self._abort_all()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    def _abort_all(self) -> None:
        for transport in list(self._transports):
            transport.abort()
        self._transports.clear()

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._transports.add(writer.transport)
        upstream: asyncio.StreamWriter | None = None
        try:
            up_reader, upstream = await asyncio.open_connection(*self.target)
            self._transports.add(upstream.transport)
            await asyncio.gather(self._pipe(reader, upstream), self._pipe(up_reader, writer))
        except (OSError, asyncio.IncompleteReadError):
            pass
        finally:
            for w in (writer, upstream):
                if w is not None:
                    w.transport.abort()
                    self._transports.discard(w.transport)

    async def _pipe(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        try:
            while data := await reader.read(65536):
                if self.mode == "up":
                    writer.write(data)
                    await writer.drain()
        finally:
            self._tasks.discard(task)
            writer.transport.abort()


@pytest.fixture
async def proxy(db_url: str) -> AsyncIterator[Proxy]:
    p = Proxy(pg.address(db_url))
    await p.start()
    yield p
    await p.close()


TIMEOUT = 1.0  # the store's deadline per call in these tests (production default: 5 s)


async def bounded(call: Awaitable[Any], limit: float = TIMEOUT + 1.5) -> float:
    """Await `call`, which must raise StoreUnavailable within `limit` seconds; return how long it took."""
    started = time.monotonic()
    with pytest.raises(StoreUnavailable):
        await asyncio.wait_for(call, limit + 5)  # the outer bound only turns a hang into a failure
    elapsed = time.monotonic() - started
    assert elapsed < limit, f"StoreUnavailable took {elapsed:.2f}s"
    return elapsed


def every_call(store: PostgresStore, tag: str) -> list[Callable[[], Awaitable[Any]]]:
    during = channel(f"during-{tag}")
    before = channel("before")
    return [
        store.ping,
        lambda: store.get_channel(before.arn),
        lambda: store.find_channel(ACCOUNT, REGION, "before"),
        lambda: store.list_channels(ACCOUNT, REGION, prefix=None, after=None, limit=10),
        lambda: store.create_channel(during, 100),
        lambda: store.replace_channel("v1", replace(before, version=f"lost-{tag}")),
        lambda: store.update_tags(before.arn, {"lost": tag}, [], 50),
        lambda: store.delete_channel(before.arn, None),
        lambda: store.create_stream(stream(f"during-{tag}"), None),
        lambda: store.channel_for_stream("arn:none"),
    ]


async def assert_intact_and_working(store: PostgresStore, tag: str) -> None:
    """Nothing attempted during the outage landed; the store serves reads and writes again."""
    before = await store.find_channel(ACCOUNT, REGION, "before")
    assert before == channel("before"), before
    assert await store.find_channel(ACCOUNT, REGION, f"during-{tag}") is None
    assert await store.find_stream(ACCOUNT, REGION, f"during-{tag}") is None
    await store.create_channel(channel(f"after-{tag}"), 100)
    assert await store.replace_channel("v1", replace(channel(f"after-{tag}"), version="v2"))


async def test_down_database_fails_fast_and_the_store_recovers(db_url: str, proxy: Proxy) -> None:
    store = await PostgresStore.open(pg.with_address(db_url, "127.0.0.1", proxy.port), timeout=TIMEOUT, min_size=3)
    pg.execute(db_url, "TRUNCATE channels, streams")
    try:
        await store.create_channel(channel("before"), 100)
        for round_ in range(2):  # down, back, down again, back again: no state wears out
            tag = f"down{round_}"
            await proxy.cut()
            for call in every_call(store, tag):
                await bounded(call())
            await proxy.restore()
            # the very first call after the outage succeeds, without reopening the store
            await store.ping()
            await assert_intact_and_working(store, tag)
    finally:
        await store.close()


async def test_unresponsive_database_times_out_and_the_store_recovers(db_url: str, proxy: Proxy) -> None:
    store = await PostgresStore.open(pg.with_address(db_url, "127.0.0.1", proxy.port), timeout=TIMEOUT, min_size=2)
    pg.execute(db_url, "TRUNCATE channels, streams")
    try:
        await store.create_channel(channel("before"), 100)
        proxy.blackhole()
        calls = every_call(store, "hole")
        # in parallel too: many callers waiting on a dead server all get their answer in time
        started = time.monotonic()
        results = await asyncio.gather(*(c() for c in calls), return_exceptions=True)
        assert all(isinstance(r, StoreUnavailable) for r in results), results
        assert time.monotonic() - started < TIMEOUT + 1.5
        for call in calls[:3]:
            await bounded(call())
        await proxy.restore()
        await store.ping()
        await assert_intact_and_working(store, "hole")
    finally:
        started = time.monotonic()
        await store.close()
        assert time.monotonic() - started < TIMEOUT + 1.5


async def test_open_fails_fast_when_nothing_answers(db_url: str, proxy: Proxy) -> None:
    url = pg.with_address(db_url, "127.0.0.1", proxy.port)
    await proxy.cut()
    await bounded(PostgresStore.open(url, timeout=TIMEOUT))
    await proxy.restore()
    proxy.blackhole()
    await bounded(PostgresStore.open(url, timeout=TIMEOUT), limit=3 * TIMEOUT + 1.5)
    await proxy.restore()
    store = await PostgresStore.open(url, timeout=TIMEOUT)
    await store.ping()
    await store.close()


async def test_health_ping_reports_unavailability(db_url: str, proxy: Proxy) -> None:
    store = await PostgresStore.open(pg.with_address(db_url, "127.0.0.1", proxy.port), timeout=TIMEOUT)
    try:
        await store.ping()
        await proxy.cut()
        await bounded(store.ping())
        await proxy.restore()
        await store.ping()
    finally:
        await store.close()
