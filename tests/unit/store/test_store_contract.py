"""The `ChannelStore` contract, run against every backend: SQLite (a file in tmp_path) and PostgreSQL.

PostgreSQL: a fresh, uniquely named database (tests/pg.py finds or starts a server) created for this
module and dropped afterwards; each test starts from empty tables. The database is created with an
ICU en-US default collation where the server has one, so the listing-order tests prove the store
orders names by code point (as SQLite and AWS do) whatever the database's locale.
"""

from __future__ import annotations

import asyncio
import sys
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import replace
from pathlib import Path

import pytest

from signalite.store.base import (
    AlreadyExists,
    Channel,
    ChannelStore,
    QuotaExceeded,
    Stream,
    StreamAlreadyMapped,
    TooManyTags,
)
from signalite.store.postgres import PostgresStore
from signalite.store.sqlite import SqliteStore

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
import pg

ACCOUNT = "111122223333"
REGION = "us-west-2"

Opener = Callable[[], Awaitable[ChannelStore]]


@pytest.fixture(scope="module")
def pg_url() -> Iterator[str]:
    url = pg.create_database("signalite_contract", icu_locale="en-US")
    yield url
    pg.drop_database(url)


@pytest.fixture(params=["sqlite", "sqlite-cached", "postgresql"])
def backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def opener(backend: str, request: pytest.FixtureRequest, tmp_path: Path) -> Opener:
    """Opens a store on this test's (initially empty) database; call again to reopen it."""
    if backend.startswith("sqlite"):
        path = tmp_path / "signalite.db"

        async def open_sqlite() -> ChannelStore:
            # sqlite-cached: the in-memory channel cache of a process that owns the file.
            return SqliteStore(path, exclusive=backend == "sqlite-cached")

        return open_sqlite
    url: str = request.getfixturevalue("pg_url")
    emptied = False

    async def open_postgres() -> ChannelStore:
        nonlocal emptied
        store = await PostgresStore.open(url, timeout=10)
        if not emptied:
            pg.execute(url, "TRUNCATE channels, streams")
            emptied = True
        return store

    return open_postgres


@pytest.fixture
async def store(opener: Opener) -> AsyncIterator[ChannelStore]:
    s = await opener()
    yield s
    await s.close()


def channel(name: str = "cam", **changes: object) -> Channel:
    account = str(changes.pop("account", ACCOUNT))
    region = str(changes.pop("region", REGION))
    created = 1700000000.123
    c = Channel(
        arn=f"arn:aws:kinesisvideo:{region}:{account}:channel/{name}/1700000000123",
        account=account,
        region=region,
        name=name,
        channel_type="SINGLE_MASTER",
        status="ACTIVE",
        message_ttl_seconds=60,
        version="v1",
        creation_time=created,
        tags={},
    )
    return replace(c, **changes)  # type: ignore[arg-type]


def stream(name: str = "vid", **changes: object) -> Stream:
    account = str(changes.pop("account", ACCOUNT))
    region = str(changes.pop("region", REGION))
    s = Stream(
        arn=f"arn:aws:kinesisvideo:{region}:{account}:stream/{name}/1700000000456",
        account=account,
        region=region,
        name=name,
        device_name=None,
        media_type=None,
        kms_key_id=f"arn:aws:kms:{region}:{account}:alias/aws/kinesisvideo",
        version="s1",
        status="ACTIVE",
        creation_time=1700000000.456,
        data_retention_hours=24,
        tags={},
    )
    return replace(s, **changes)  # type: ignore[arg-type]


# -- channels ----------------------------------------------------------------------------------


async def test_channel_round_trips_every_field(store: ChannelStore) -> None:
    c = channel(
        "cam-1",
        message_ttl_seconds=120,
        creation_time=round(1700000123.4567891, 3),
        tags={"owner": "ops", "Ünïcødé": "välue ✓ 🎥", "empty": ""},
        storage_status="DISABLED",
    )
    await store.create_channel(c, None)
    got = await store.get_channel(c.arn)
    assert got == c
    assert got is not None and got.creation_time == 1700000123.457  # the exact float, not a neighbour
    assert await store.find_channel(ACCOUNT, REGION, "cam-1") == c
    assert await store.get_channel(c.arn + "0") is None
    assert await store.find_channel(ACCOUNT, REGION, "CAM-1") is None  # names are case-sensitive


@pytest.mark.parametrize("t", [0.0, 0.1 + 0.2, 1700000000.999, 1699999999.001, 2**53 / 1000, 4102444800.5])
async def test_creation_time_is_stored_exactly(store: ChannelStore, t: float) -> None:
    await store.create_channel(channel(creation_time=t), None)
    await store.create_stream(stream(creation_time=t), None)
    c = await store.find_channel(ACCOUNT, REGION, "cam")
    s = await store.find_stream(ACCOUNT, REGION, "vid")
    assert c is not None and s is not None
    assert c.creation_time.hex() == t.hex() and s.creation_time.hex() == t.hex()


async def test_duplicate_channel_name_is_already_exists(store: ChannelStore) -> None:
    await store.create_channel(channel("cam"), None)
    with pytest.raises(AlreadyExists):
        await store.create_channel(channel("cam", arn="arn:other", version="v2"), None)
    # the same name elsewhere is a different channel
    await store.create_channel(channel("cam", region="eu-west-1"), None)
    await store.create_channel(channel("cam", account="444455556666"), None)
    assert (await store.find_channel(ACCOUNT, REGION, "cam")) == channel("cam")


async def test_channel_quota_per_account_and_region(store: ChannelStore) -> None:
    for name in ("a", "b"):
        await store.create_channel(channel(name), 2)
    with pytest.raises(QuotaExceeded):
        await store.create_channel(channel("c"), 2)
    assert await store.find_channel(ACCOUNT, REGION, "c") is None
    await store.create_channel(channel("c", region="eu-west-1"), 2)  # other region, own count
    await store.create_channel(channel("c", account="444455556666"), 2)  # other account, own count
    await store.create_channel(channel("c"), None)  # None = unlimited
    assert await store.delete_channel(channel("a").arn, None)
    await store.create_channel(channel("d"), 3)  # b, c, d: at the limit again, allowed
    with pytest.raises(QuotaExceeded):
        await store.create_channel(channel("e"), 3)


async def test_duplicate_beats_quota_check_order_is_consistent(store: ChannelStore) -> None:
    await store.create_channel(channel("a"), 1)
    with pytest.raises((AlreadyExists, QuotaExceeded)):
        await store.create_channel(channel("a"), 1)
    assert len(await store.list_channels(ACCOUNT, REGION, prefix=None, after=None, limit=10)) == 1


async def test_list_channels_orders_by_code_point_and_pages(store: ChannelStore) -> None:
    names = ["b", "B", "a_1", "a-1", "a.1", "A", "a0", "_x", "a", "Z9", "z", "a-", "aa"]
    for n in names:
        await store.create_channel(channel(n), None)
    await store.create_channel(channel("a", region="eu-west-1"), None)
    listed = [c.name for c in await store.list_channels(ACCOUNT, REGION, prefix=None, after=None, limit=100)]
    assert listed == sorted(names)  # Python sorts str by code point
    pages: list[str] = []
    after: str | None = None
    while True:
        page = await store.list_channels(ACCOUNT, REGION, prefix=None, after=after, limit=4)
        pages += [c.name for c in page]
        if len(page) < 4:
            break
        after = page[-1].name
    assert pages == sorted(names)


async def test_list_channels_prefix_is_exact_begins_with(store: ChannelStore) -> None:
    names = ["a", "a-", "a-1", "a.1", "a0", "a_1", "aa", "A", "ab-c", "b"]
    for n in names:
        await store.create_channel(channel(n), None)

    async def names_with(prefix: str, after: str | None = None, limit: int = 100) -> list[str]:
        return [c.name for c in await store.list_channels(ACCOUNT, REGION, prefix=prefix, after=after, limit=limit)]

    assert await names_with("a") == sorted(n for n in names if n.startswith("a"))
    assert await names_with("a-") == ["a-", "a-1"]
    assert await names_with("A") == ["A"]
    assert await names_with("ab") == ["ab-c"]
    assert await names_with("x") == []
    assert await names_with("a", after="a0", limit=2) == ["a_1", "aa"]


async def test_replace_channel_is_compare_and_set(store: ChannelStore) -> None:
    c = channel(tags={"k": "v"})
    await store.create_channel(c, None)
    new = replace(c, message_ttl_seconds=300, version="v2")
    assert not await store.replace_channel("wrong", new)
    assert await store.get_channel(c.arn) == c
    assert await store.replace_channel("v1", new)
    assert await store.get_channel(c.arn) == new
    assert not await store.replace_channel("v1", replace(new, version="v3"))  # v1 is gone now
    assert await store.get_channel(c.arn) == new
    assert not await store.replace_channel("v1", channel("ghost"))  # absent


async def test_replace_channel_keeps_identity_fields(store: ChannelStore) -> None:
    c = channel()
    await store.create_channel(c, None)
    assert await store.replace_channel("v1", replace(c, version="v2", creation_time=1.0, name="renamed"))
    got = await store.get_channel(c.arn)
    assert got is not None and got.name == "cam" and got.creation_time == c.creation_time and got.version == "v2"


async def test_a_stream_serves_at_most_one_channel(store: ChannelStore) -> None:
    s = stream()
    await store.create_stream(s, None)
    a, b = channel("a"), channel("b")
    await store.create_channel(a, None)
    await store.create_channel(b, None)
    assert await store.channel_for_stream(s.arn) is None
    mapped_a = replace(a, storage_status="ENABLED", storage_stream_arn=s.arn, version="a2")
    assert await store.replace_channel("v1", mapped_a)
    assert await store.channel_for_stream(s.arn) == mapped_a
    with pytest.raises(StreamAlreadyMapped):
        await store.replace_channel("v1", replace(b, storage_status="ENABLED", storage_stream_arn=s.arn, version="b2"))
    assert await store.get_channel(b.arn) == b  # unchanged
    # the mapping can move once released
    assert await store.replace_channel("a2", replace(mapped_a, storage_status="DISABLED", storage_stream_arn=None))
    assert await store.channel_for_stream(s.arn) is None
    mapped_b = replace(b, storage_status="ENABLED", storage_stream_arn=s.arn, version="b2")
    assert await store.replace_channel("v1", mapped_b)
    assert await store.channel_for_stream(s.arn) == mapped_b
    # a new channel cannot be created already mapped to a taken stream
    with pytest.raises((StreamAlreadyMapped, AlreadyExists)):
        await store.create_channel(channel("c", storage_status="ENABLED", storage_stream_arn=s.arn), None)
    assert await store.find_channel(ACCOUNT, REGION, "c") is None


async def test_delete_channel(store: ChannelStore) -> None:
    c = channel()
    await store.create_channel(c, None)
    assert not await store.delete_channel(c.arn, "wrong")
    assert await store.get_channel(c.arn) == c
    assert await store.delete_channel(c.arn, "v1")
    assert await store.get_channel(c.arn) is None
    assert not await store.delete_channel(c.arn, None)
    await store.create_channel(c, None)  # the name is free again
    assert await store.delete_channel(c.arn, None)


# -- streams -----------------------------------------------------------------------------------


async def test_stream_round_trip_and_rules(store: ChannelStore) -> None:
    s = stream("vid", device_name="camera-1", media_type="video/h264", tags={"a": "1"}, data_retention_hours=0)
    await store.create_stream(s, None)
    assert await store.get_stream(s.arn) == s
    assert await store.find_stream(ACCOUNT, REGION, "vid") == s
    bare = stream("bare")
    await store.create_stream(bare, None)
    assert await store.get_stream(bare.arn) == bare  # None device_name / media_type survive
    with pytest.raises(AlreadyExists):
        await store.create_stream(stream("vid", arn="arn:x"), None)
    with pytest.raises(QuotaExceeded):
        await store.create_stream(stream("third"), 2)
    await store.create_stream(stream("third", region="eu-west-1"), 2)
    listed = await store.list_streams(ACCOUNT, REGION, prefix=None, after=None, limit=10)
    assert [x.name for x in listed] == ["bare", "vid"]
    assert [x.name for x in await store.list_streams(ACCOUNT, REGION, prefix="v", after=None, limit=10)] == ["vid"]
    assert [x.name for x in await store.list_streams(ACCOUNT, REGION, prefix=None, after="bare", limit=10)] == ["vid"]

    new = replace(s, device_name=None, media_type="video/h265", data_retention_hours=48, version="s2")
    assert not await store.replace_stream("wrong", new)
    assert await store.replace_stream("s1", new)
    assert await store.get_stream(s.arn) == new
    assert not await store.delete_stream(s.arn, "s1")
    assert await store.delete_stream(s.arn, "s2")
    assert await store.get_stream(s.arn) is None
    assert not await store.delete_stream(s.arn, None)
    assert await store.delete_stream(bare.arn, None)


async def test_channels_and_streams_are_separate_namespaces(store: ChannelStore) -> None:
    await store.create_channel(channel("same"), 1)
    await store.create_stream(stream("same"), 1)  # neither a duplicate nor over the other's quota
    assert await store.find_stream(ACCOUNT, REGION, "same") is not None


# -- tags --------------------------------------------------------------------------------------


async def test_update_tags_on_channels_and_streams(store: ChannelStore) -> None:
    c, s = channel(tags={"a": "1"}), stream(tags={"x": "1"})
    await store.create_channel(c, None)
    await store.create_stream(s, None)
    assert await store.update_tags(c.arn, {"b": "2", "a": "changed"}, [], 50) == {"a": "changed", "b": "2"}
    assert await store.update_tags(c.arn, {"c": "3"}, ["a", "not-there"], 50) == {"b": "2", "c": "3"}
    assert await store.update_tags(c.arn, {"d": "4"}, ["d"], 50) == {"b": "2", "c": "3"}  # add, then remove
    got = await store.get_channel(c.arn)
    assert got is not None and dict(got.tags) == {"b": "2", "c": "3"}
    assert got.version == "v1"  # tags are not part of the Version
    assert await store.update_tags(s.arn, {"y": "ü"}, ["x"], 50) == {"y": "ü"}
    got_s = await store.get_stream(s.arn)
    assert got_s is not None and dict(got_s.tags) == {"y": "ü"} and got_s.version == "s1"
    assert await store.update_tags(c.arn.replace("/cam/", "/nope/"), {"a": "1"}, [], 50) is None
    assert await store.update_tags(s.arn.replace("/vid/", "/nope/"), {"a": "1"}, [], 50) is None


async def test_too_many_tags_changes_nothing(store: ChannelStore) -> None:
    c = channel(tags={f"k{i}": str(i) for i in range(3)})
    await store.create_channel(c, None)
    with pytest.raises(TooManyTags):
        await store.update_tags(c.arn, {"k3": "3", "k4": "4"}, [], 4)
    got = await store.get_channel(c.arn)
    assert got is not None and dict(got.tags) == dict(c.tags)
    # replacing and removing in the same call counts the result, not the request
    assert len(await store.update_tags(c.arn, {"k3": "3", "k4": "4"}, ["k0", "k1"], 4) or {}) == 3


# -- concurrency (within one store; across stores and processes: tests/integration/test_postgres_store.py) --


async def test_concurrent_creates_of_one_name_admit_exactly_one(store: ChannelStore) -> None:
    attempts = [channel("race", arn=f"arn:race:{i}", version=f"v{i}") for i in range(20)]
    results = await asyncio.gather(*(store.create_channel(c, 100) for c in attempts), return_exceptions=True)
    winners = [c for c, r in zip(attempts, results, strict=True) if r is None]
    assert len(winners) == 1, results
    assert all(isinstance(r, AlreadyExists) for r in results if r is not None), results
    assert await store.find_channel(ACCOUNT, REGION, "race") == winners[0]


async def test_concurrent_replaces_with_one_version_admit_exactly_one(store: ChannelStore) -> None:
    await store.create_channel(channel(), None)
    news = [channel(version=f"next{i}", message_ttl_seconds=100 + i) for i in range(20)]
    results = await asyncio.gather(*(store.replace_channel("v1", n) for n in news))
    assert results.count(True) == 1, results
    winner = news[results.index(True)]
    assert await store.get_channel(winner.arn) == winner


async def test_concurrent_creates_respect_the_quota(store: ChannelStore) -> None:
    results = await asyncio.gather(
        *(store.create_channel(channel(f"q{i}"), 5) for i in range(25)), return_exceptions=True
    )
    assert sum(r is None for r in results) == 5, results
    assert all(isinstance(r, QuotaExceeded) for r in results if r is not None), results
    assert len(await store.list_channels(ACCOUNT, REGION, prefix=None, after=None, limit=100)) == 5


# -- lifecycle ---------------------------------------------------------------------------------


async def test_data_and_schema_survive_reopening(opener: Opener) -> None:
    first = await opener()
    version = first.schema_version  # type: ignore[attr-defined]
    assert version >= 1
    await first.create_channel(channel(tags={"t": "1"}), None)
    await first.create_stream(stream(), None)
    await first.ping()
    await first.close()
    second = await opener()  # migrations already applied: a no-op, not an error
    try:
        assert second.schema_version == version  # type: ignore[attr-defined]
        assert await second.get_channel(channel().arn) == channel(tags={"t": "1"})
        assert await second.get_stream(stream().arn) == stream()
        await second.ping()
    finally:
        await second.close()
