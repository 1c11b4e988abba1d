"""The SQLite `ChannelStore`: one file in the data directory, WAL mode, one transaction per write.

Reads run inline on the event loop over their own connection: primary-key lookups take
microseconds, far less than a thread hop, and WAL lets them proceed while a write is committing.
Writes run on one dedicated thread (SQLite has a single writer anyway), each in one
`BEGIN IMMEDIATE ... COMMIT`, with `synchronous=FULL` so an answered write is on disk before the
client hears 200 — it survives `kill -9` and power loss alike.
"""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

import orjson

from signalite.store.base import (
    AlreadyExists,
    Channel,
    QuotaExceeded,
    Stream,
    StreamAlreadyMapped,
    TooManyTags,
)

T = TypeVar("T")

# Versioned schema migrations, applied in order at start-up; PRAGMA user_version records progress.
MIGRATIONS: tuple[str, ...] = (
    """
    CREATE TABLE channels (
        arn TEXT PRIMARY KEY,
        account TEXT NOT NULL,
        region TEXT NOT NULL,
        name TEXT NOT NULL,
        channel_type TEXT NOT NULL,
        status TEXT NOT NULL,
        message_ttl_seconds INTEGER NOT NULL,
        version TEXT NOT NULL,
        creation_time REAL NOT NULL,
        tags TEXT NOT NULL,
        storage_status TEXT NOT NULL,
        storage_stream_arn TEXT,
        UNIQUE (account, region, name)
    );
    CREATE UNIQUE INDEX channels_storage_stream ON channels (storage_stream_arn)
        WHERE storage_stream_arn IS NOT NULL;
    CREATE TABLE streams (
        arn TEXT PRIMARY KEY,
        account TEXT NOT NULL,
        region TEXT NOT NULL,
        name TEXT NOT NULL,
        device_name TEXT,
        media_type TEXT,
        kms_key_id TEXT NOT NULL,
        version TEXT NOT NULL,
        status TEXT NOT NULL,
        creation_time REAL NOT NULL,
        data_retention_hours INTEGER NOT NULL,
        tags TEXT NOT NULL,
        UNIQUE (account, region, name)
    );
    """,
)

_CHANNEL_COLUMNS = (
    "arn, account, region, name, channel_type, status, message_ttl_seconds, version, creation_time, "
    "tags, storage_status, storage_stream_arn"
)
_STREAM_COLUMNS = (
    "arn, account, region, name, device_name, media_type, kms_key_id, version, status, creation_time, "
    "data_retention_hours, tags"
)


def _connect(path: Path) -> sqlite3.Connection:
    conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=FULL")
    conn.execute("PRAGMA busy_timeout=10000")
    return conn


def migrate(conn: sqlite3.Connection) -> int:
    """Apply the migrations this database has not seen yet; return the schema version."""
    while True:
        conn.execute("BEGIN IMMEDIATE")
        # Read the version under the write lock: several processes (--workers) may start at once,
        # and only one of them may apply a given migration.
        (current,) = conn.execute("PRAGMA user_version").fetchone()
        if current >= len(MIGRATIONS):
            conn.execute("COMMIT")
            return len(MIGRATIONS)
        number, script = current + 1, MIGRATIONS[current]
        try:
            for statement in filter(str.strip, script.split(";")):
                conn.execute(statement)
            conn.execute(f"PRAGMA user_version={number}")
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise


def _channel(row: Sequence[Any]) -> Channel:
    return Channel(
        arn=row[0], account=row[1], region=row[2], name=row[3], channel_type=row[4], status=row[5],
        message_ttl_seconds=row[6], version=row[7], creation_time=row[8], tags=orjson.loads(row[9]),
        storage_status=row[10], storage_stream_arn=row[11],
    )  # fmt: skip


def _channel_row(c: Channel) -> tuple[Any, ...]:
    return (
        c.arn, c.account, c.region, c.name, c.channel_type, c.status, c.message_ttl_seconds, c.version,
        c.creation_time, orjson.dumps(dict(c.tags)).decode(), c.storage_status, c.storage_stream_arn,
    )  # fmt: skip


def _stream(row: Sequence[Any]) -> Stream:
    return Stream(
        arn=row[0], account=row[1], region=row[2], name=row[3], device_name=row[4], media_type=row[5],
        kms_key_id=row[6], version=row[7], status=row[8], creation_time=row[9],
        data_retention_hours=row[10], tags=orjson.loads(row[11]),
    )  # fmt: skip


def _stream_row(s: Stream) -> tuple[Any, ...]:
    return (
        s.arn, s.account, s.region, s.name, s.device_name, s.media_type, s.kms_key_id, s.version,
        s.status, s.creation_time, s.data_retention_hours, orjson.dumps(dict(s.tags)).decode(),
    )  # fmt: skip


class SqliteStore:
    """`ChannelStore` over one SQLite file."""

    def __init__(self, path: Path, *, exclusive: bool = False) -> None:
        """`exclusive`: this process is the file's only writer, so channels may be cached in memory.

        GetSignalingChannelEndpoint and DescribeSignalingChannel read a channel on every call; a
        dictionary hit costs well under a microsecond where a SQLite read costs ~30. The cache is
        emptied on every channel write made here, which is correct only while no other process
        writes the file — not with `--workers` or several nodes sharing a data dir.
        """
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)
        self._writer = _connect(path)
        self.schema_version = migrate(self._writer)
        self._reader = _connect(path)
        # A bigger page cache and memory-mapped reads keep the hot pages of the database in memory.
        self._reader.execute("PRAGMA cache_size=-65536")
        self._reader.execute("PRAGMA mmap_size=268435456")
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="sqlite-writer")
        self._cache: dict[object, Channel] | None = {} if exclusive else None

    def _forget_channels(self) -> None:
        if self._cache is not None:
            self._cache.clear()

    async def _write(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        def run() -> T:
            conn = self._writer
            conn.execute("BEGIN IMMEDIATE")
            try:
                result = fn(conn)
            except BaseException:
                conn.execute("ROLLBACK")
                raise
            conn.execute("COMMIT")
            return result

        return await asyncio.get_running_loop().run_in_executor(self._executor, run)

    # -- channels ------------------------------------------------------------------------------

    async def create_channel(self, channel: Channel, max_per_region: int | None) -> None:
        def insert(conn: sqlite3.Connection) -> None:
            if max_per_region is not None:
                (count,) = conn.execute(
                    "SELECT count(*) FROM channels WHERE account = ? AND region = ?",
                    (channel.account, channel.region),
                ).fetchone()
                if count >= max_per_region:
                    raise QuotaExceeded(channel.name)
            try:
                conn.execute(
                    f"INSERT INTO channels ({_CHANNEL_COLUMNS}) VALUES (?,?,?,?,?,?,?,?,?,?,?,?)",
                    _channel_row(channel),
                )
            except sqlite3.IntegrityError as e:
                raise AlreadyExists(channel.name) from e

        await self._write(insert)
        self._forget_channels()

    def cached_channel(self, arn: str) -> Channel | None:
        return self._cache.get(arn) if self._cache is not None else None

    async def get_channel(self, arn: str) -> Channel | None:
        cache = self._cache
        if cache is not None and (hit := cache.get(arn)) is not None:
            return hit
        row = self._reader.execute(f"SELECT {_CHANNEL_COLUMNS} FROM channels WHERE arn = ?", (arn,)).fetchone()
        if row is None:
            return None
        channel = _channel(row)
        if cache is not None:
            cache[arn] = channel
        return channel

    async def find_channel(self, account: str, region: str, name: str) -> Channel | None:
        cache = self._cache
        key = (account, region, name)
        if cache is not None and (hit := cache.get(key)) is not None:
            return hit
        row = self._reader.execute(
            f"SELECT {_CHANNEL_COLUMNS} FROM channels WHERE account = ? AND region = ? AND name = ?",
            (account, region, name),
        ).fetchone()
        if row is None:
            return None
        channel = _channel(row)
        if cache is not None:
            cache[key] = channel
        return channel

    async def list_channels(
        self, account: str, region: str, *, prefix: str | None, after: str | None, limit: int
    ) -> Sequence[Channel]:
        sql, args = _list_query("channels", _CHANNEL_COLUMNS, account, region, prefix, after, limit)
        return [_channel(row) for row in self._reader.execute(sql, args)]

    async def replace_channel(self, expected_version: str, channel: Channel) -> bool:
        def update(conn: sqlite3.Connection) -> bool:
            try:
                cur = conn.execute(
                    "UPDATE channels SET channel_type = ?, status = ?, message_ttl_seconds = ?, version = ?, "
                    "tags = ?, storage_status = ?, storage_stream_arn = ? WHERE arn = ? AND version = ?",
                    (
                        channel.channel_type, channel.status, channel.message_ttl_seconds, channel.version,
                        orjson.dumps(dict(channel.tags)).decode(), channel.storage_status,
                        channel.storage_stream_arn, channel.arn, expected_version,
                    ),
                )  # fmt: skip
            except sqlite3.IntegrityError as e:
                raise StreamAlreadyMapped(channel.storage_stream_arn or "") from e
            return cur.rowcount == 1

        try:
            return await self._write(update)
        finally:
            self._forget_channels()

    async def delete_channel(self, arn: str, expected_version: str | None) -> bool:
        def delete(conn: sqlite3.Connection) -> bool:
            if expected_version is None:
                cur = conn.execute("DELETE FROM channels WHERE arn = ?", (arn,))
            else:
                cur = conn.execute("DELETE FROM channels WHERE arn = ? AND version = ?", (arn, expected_version))
            return cur.rowcount == 1

        try:
            return await self._write(delete)
        finally:
            self._forget_channels()

    async def channel_for_stream(self, stream_arn: str) -> Channel | None:
        row = self._reader.execute(
            f"SELECT {_CHANNEL_COLUMNS} FROM channels WHERE storage_stream_arn = ?", (stream_arn,)
        ).fetchone()
        return None if row is None else _channel(row)

    # -- streams -------------------------------------------------------------------------------

    async def create_stream(self, stream: Stream, max_per_region: int | None) -> None:
        def insert(conn: sqlite3.Connection) -> None:
            if max_per_region is not None:
                (count,) = conn.execute(
                    "SELECT count(*) FROM streams WHERE account = ? AND region = ?",
                    (stream.account, stream.region),
                ).fetchone()
                if count >= max_per_region:
                    raise QuotaExceeded(stream.name)
            try:
                conn.execute(
                    f"INSERT INTO streams ({_STREAM_COLUMNS}) VALUES (?,?,?,?,?,?,?,?,?,?,?,?)",
                    _stream_row(stream),
                )
            except sqlite3.IntegrityError as e:
                raise AlreadyExists(stream.name) from e

        await self._write(insert)

    async def get_stream(self, arn: str) -> Stream | None:
        row = self._reader.execute(f"SELECT {_STREAM_COLUMNS} FROM streams WHERE arn = ?", (arn,)).fetchone()
        return None if row is None else _stream(row)

    async def find_stream(self, account: str, region: str, name: str) -> Stream | None:
        row = self._reader.execute(
            f"SELECT {_STREAM_COLUMNS} FROM streams WHERE account = ? AND region = ? AND name = ?",
            (account, region, name),
        ).fetchone()
        return None if row is None else _stream(row)

    async def list_streams(
        self, account: str, region: str, *, prefix: str | None, after: str | None, limit: int
    ) -> Sequence[Stream]:
        sql, args = _list_query("streams", _STREAM_COLUMNS, account, region, prefix, after, limit)
        return [_stream(row) for row in self._reader.execute(sql, args)]

    async def replace_stream(self, expected_version: str, stream: Stream) -> bool:
        def update(conn: sqlite3.Connection) -> bool:
            cur = conn.execute(
                "UPDATE streams SET device_name = ?, media_type = ?, version = ?, status = ?, "
                "data_retention_hours = ?, tags = ? WHERE arn = ? AND version = ?",
                (
                    stream.device_name, stream.media_type, stream.version, stream.status,
                    stream.data_retention_hours, orjson.dumps(dict(stream.tags)).decode(), stream.arn,
                    expected_version,
                ),
            )  # fmt: skip
            return cur.rowcount == 1

        return await self._write(update)

    async def delete_stream(self, arn: str, expected_version: str | None) -> bool:
        def delete(conn: sqlite3.Connection) -> bool:
            if expected_version is None:
                cur = conn.execute("DELETE FROM streams WHERE arn = ?", (arn,))
            else:
                cur = conn.execute("DELETE FROM streams WHERE arn = ? AND version = ?", (arn, expected_version))
            return cur.rowcount == 1

        return await self._write(delete)

    async def update_tags(
        self, arn: str, add: Mapping[str, str], remove: Sequence[str], max_tags: int
    ) -> Mapping[str, str] | None:
        table = "streams" if ":stream/" in arn else "channels"

        def update(conn: sqlite3.Connection) -> Mapping[str, str] | None:
            row = conn.execute(f"SELECT tags FROM {table} WHERE arn = ?", (arn,)).fetchone()
            if row is None:
                return None
            tags: dict[str, str] = orjson.loads(row[0])
            tags.update(add)
            for key in remove:
                tags.pop(key, None)
            if len(tags) > max_tags:
                raise TooManyTags(arn)
            conn.execute(f"UPDATE {table} SET tags = ? WHERE arn = ?", (orjson.dumps(tags).decode(), arn))
            return tags

        try:
            return await self._write(update)
        finally:
            self._forget_channels()

    async def ping(self) -> None:
        self._reader.execute("SELECT 1").fetchone()

    async def close(self) -> None:
        self._executor.shutdown(wait=True)
        self._reader.close()
        self._writer.close()


def _list_query(
    table: str, columns: str, account: str, region: str, prefix: str | None, after: str | None, limit: int
) -> tuple[str, tuple[Any, ...]]:
    sql = f"SELECT {columns} FROM {table} WHERE account = ? AND region = ?"
    args: list[Any] = [account, region]
    if prefix:
        # Names are [a-zA-Z0-9_.-]+, so a range scan is an exact BEGINS_WITH (no LIKE escaping needed);
        # chr(0x10FFFF) sorts after every character a name can hold.
        sql += " AND name >= ? AND name < ?"
        args += [prefix, prefix + "\U0010ffff"]
    if after is not None:
        sql += " AND name > ?"
        args.append(after)
    sql += " ORDER BY name LIMIT ?"
    args.append(limit)
    return sql, tuple(args)
