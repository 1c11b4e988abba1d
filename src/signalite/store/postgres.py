"""The PostgreSQL `ChannelStore` (`--database postgresql://...`): several nodes share one database.

Same logical schema as the SQLite store; every rule that must hold across nodes is the database's:

- one channel (stream) per name per account and region: a UNIQUE constraint; a stream serves at most
  one channel: a partial unique index. Violations come back as `AlreadyExists` / `StreamAlreadyMapped`.
- compare-and-set on Version: `UPDATE ... WHERE arn = $1 AND version = $2`. Under READ COMMITTED a
  second writer blocks on the row lock, then re-checks the WHERE against the committed row, so of N
  racing writers with one expected version exactly one updates a row.
- the per account-region quota: the inserting transaction first takes a transaction-scoped advisory
  lock on (kind, hashtext(account/region)), then counts, then inserts. Creates in one account-region
  therefore serialize (each one's count sees every earlier committed insert, because under READ
  COMMITTED the count statement takes its snapshot after the lock is granted), while other
  account-regions and all reads and updates proceed in parallel. Chosen over a counter table
  because there is no second copy of the count that could drift, and over SERIALIZABLE because
  nothing has to be retried. A hash collision only serializes two account-regions: harmless.
- tags are JSONB, merged in one `UPDATE ... SET tags = (tags || $add) - $remove RETURNING tags`.
- CreationTime is double precision (asyncpg moves float8 in binary: the exact float round-trips).
- names are `COLLATE "C"`: listing orders by code point like SQLite (and AWS), whatever the
  database's locale, which also makes the BEGINS_WITH range scan exact.

Versioned migrations run at start-up under a session advisory lock, recorded in `schema_migrations`,
so nodes starting together apply each one exactly once.

Availability: every call runs under one deadline (`timeout`, default 5 s, which also bounds connecting
and each statement). Connection errors, timeouts and "server shutting down" answers become
`StoreUnavailable` (a 5xx to clients) and expire the pool's connections, so the next call opens fresh
ones: the store recovers by itself when the server is back. A call that fails on a dead pooled
connection *before its transaction began* (the BEGIN, or any read) is retried once on a fresh
connection, so the first call after an outage succeeds; a write is never retried once its
transaction has started (it might have committed).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, TypeAlias, TypeVar
from urllib.parse import urlsplit

import asyncpg
import orjson

from signalite.store.base import (
    AlreadyExists,
    Channel,
    QuotaExceeded,
    StoreUnavailable,
    Stream,
    StreamAlreadyMapped,
    TooManyTags,
)

if TYPE_CHECKING:
    from asyncpg.pool import PoolConnectionProxy

    Connection: TypeAlias = PoolConnectionProxy[asyncpg.Record]

T = TypeVar("T")

# Versioned schema migrations, applied in order at start-up; `schema_migrations` records progress.
MIGRATIONS: tuple[str, ...] = (
    """
    CREATE TABLE channels (
        arn text PRIMARY KEY,
        account text NOT NULL,
        region text NOT NULL,
        name text COLLATE "C" NOT NULL,
        channel_type text NOT NULL,
        status text NOT NULL,
        message_ttl_seconds integer NOT NULL,
        version text NOT NULL,
        creation_time double precision NOT NULL,
        tags jsonb NOT NULL,
        storage_status text NOT NULL,
        storage_stream_arn text,
        CONSTRAINT channels_name_key UNIQUE (account, region, name)
    );
    CREATE UNIQUE INDEX channels_storage_stream ON channels (storage_stream_arn)
        WHERE storage_stream_arn IS NOT NULL;
    CREATE TABLE streams (
        arn text PRIMARY KEY,
        account text NOT NULL,
        region text NOT NULL,
        name text COLLATE "C" NOT NULL,
        device_name text,
        media_type text,
        kms_key_id text NOT NULL,
        version text NOT NULL,
        status text NOT NULL,
        creation_time double precision NOT NULL,
        data_retention_hours integer NOT NULL,
        tags jsonb NOT NULL,
        CONSTRAINT streams_name_key UNIQUE (account, region, name)
    );
    """,
)

# Advisory lock keys. The migration lock uses the one-bigint key space, the quota locks the
# (int4, int4) key space, so they can never collide with each other.
_MIGRATION_LOCK = 0x7369676E616C6974  # "signalit"
_QUOTA_LOCK_CHANNELS = 0x53470001
_QUOTA_LOCK_STREAMS = 0x53470002

_CHANNEL_COLUMNS = (
    "arn, account, region, name, channel_type, status, message_ttl_seconds, version, creation_time, "
    "tags, storage_status, storage_stream_arn"
)
_STREAM_COLUMNS = (
    "arn, account, region, name, device_name, media_type, kms_key_id, version, status, creation_time, "
    "data_retention_hours, tags"
)

# Failures that mean "the database cannot be reached / is going away right now" (a 5xx, retry later).
_UNAVAILABLE: tuple[type[BaseException], ...] = (
    OSError,  # refused, reset, unreachable (ConnectionError is an OSError)
    TimeoutError,  # the call's deadline, asyncpg's connect/command timeouts (asyncio.TimeoutError)
    asyncpg.PostgresConnectionError,  # SQLSTATE class 08, incl. "closed in the middle of operation"
    asyncpg.InterfaceError,  # "connection is closed", protocol state lost
    asyncpg.exceptions.OperatorInterventionError,  # 57: admin shutdown, crash recovery, cannot connect now
    asyncpg.exceptions.InsufficientResourcesError,  # 53: too many connections, disk full
    asyncpg.exceptions.TransactionRollbackError,  # 40: deadlock / serialization failure: retryable
)
# Failures after which the connection in hand is not used again (CancelledError: the call's deadline).
_ABANDON: tuple[type[BaseException], ...] = (asyncio.CancelledError, *_UNAVAILABLE)
# Failures of a connection itself: worth one retry on a fresh connection when nothing was sent yet.
_STALE_CONNECTION: tuple[type[BaseException], ...] = (
    OSError,
    asyncpg.PostgresConnectionError,
    asyncpg.InterfaceError,
    asyncpg.exceptions.AdminShutdownError,
)


class _NotStarted(Exception):
    """A write's transaction could not even begin, because of `error` (a connection failure)."""

    def __init__(self, error: BaseException) -> None:
        super().__init__(error)
        self.error = error


def redact(url: str) -> str:
    """The URL without its password, for messages and logs."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.rsplit("@", 1)[1]
    return parts._replace(netloc=f"{parts.username}:***@{netloc}").geturl()


def _affected(status: str) -> int:
    """Rows touched, from a command tag such as "UPDATE 1" / "DELETE 0"."""
    return int(status.rsplit(" ", 1)[-1])


def _channel(row: asyncpg.Record) -> Channel:
    return Channel(
        arn=row[0], account=row[1], region=row[2], name=row[3], channel_type=row[4], status=row[5],
        message_ttl_seconds=row[6], version=row[7], creation_time=row[8], tags=row[9],
        storage_status=row[10], storage_stream_arn=row[11],
    )  # fmt: skip


def _stream(row: asyncpg.Record) -> Stream:
    return Stream(
        arn=row[0], account=row[1], region=row[2], name=row[3], device_name=row[4], media_type=row[5],
        kms_key_id=row[6], version=row[7], status=row[8], creation_time=row[9],
        data_retention_hours=row[10], tags=row[11],
    )  # fmt: skip


def _dumps(value: Any) -> str:
    return orjson.dumps(value).decode()


async def _init_connection(conn: asyncpg.Connection[asyncpg.Record]) -> None:
    await conn.set_type_codec("jsonb", encoder=_dumps, decoder=orjson.loads, schema="pg_catalog")


async def migrate(conn: Connection) -> int:
    """Apply the migrations this database has not seen yet; return the schema version.

    Holds a session advisory lock throughout, so concurrent start-ups apply each migration once.
    """
    await conn.execute("SELECT pg_advisory_lock($1)", _MIGRATION_LOCK)
    try:
        await conn.execute(
            "CREATE TABLE IF NOT EXISTS schema_migrations ("
            " version integer PRIMARY KEY,"
            " applied_at timestamptz NOT NULL DEFAULT now())"
        )
        current = await conn.fetchval("SELECT coalesce(max(version), 0) FROM schema_migrations")
        for number, script in enumerate(MIGRATIONS[current:], start=current + 1):
            async with conn.transaction():
                await conn.execute(script)
                await conn.execute("INSERT INTO schema_migrations (version) VALUES ($1)", number)
    finally:
        await conn.execute("SELECT pg_advisory_unlock($1)", _MIGRATION_LOCK)
    return len(MIGRATIONS)


class PostgresStore:
    """`ChannelStore` over a PostgreSQL database, through an asyncpg connection pool."""

    def __init__(self, pool: asyncpg.Pool[asyncpg.Record], url: str, timeout: float, schema_version: int) -> None:
        self._pool = pool
        self.url = redact(url)
        self.timeout = timeout
        self.schema_version = schema_version

    @classmethod
    async def open(cls, url: str, *, timeout: float = 5.0, min_size: int = 1, max_size: int = 10) -> PostgresStore:
        """Connect, migrate, and return the store; StoreUnavailable if the server cannot be reached."""
        pool: asyncpg.Pool[asyncpg.Record] | None = None
        try:
            async with asyncio.timeout(timeout * 3):
                pool = await asyncpg.create_pool(
                    url,
                    min_size=min_size,
                    max_size=max_size,
                    timeout=timeout,  # connecting
                    command_timeout=timeout,  # each statement
                    init=_init_connection,
                    server_settings={"application_name": "signalite"},
                )
                async with pool.acquire() as conn:
                    version = await migrate(conn)
        except _UNAVAILABLE as e:
            if pool is not None:
                pool.terminate()
            raise StoreUnavailable(f"cannot reach PostgreSQL at {redact(url)}: {_describe(e)}") from e
        except BaseException:
            if pool is not None:
                pool.terminate()
            raise
        return cls(pool, url, timeout, version)

    # -- plumbing ------------------------------------------------------------------------------

    @contextlib.asynccontextmanager
    async def _guard(self) -> AsyncIterator[None]:
        """One deadline for the whole call; unavailability becomes StoreUnavailable."""
        try:
            async with asyncio.timeout(self.timeout):
                yield
        except _UNAVAILABLE as e:
            if not isinstance(e, asyncpg.exceptions.TransactionRollbackError):
                # Whatever connections the pool holds may be dead or stuck: open fresh ones next time.
                await self._pool.expire_connections()
            raise StoreUnavailable(f"PostgreSQL at {self.url}: {_describe(e)}") from e

    async def _read(self, fn: Callable[[Connection], Awaitable[T]]) -> T:
        """Run `fn` (reads only: safe to repeat) on a pooled connection."""
        async with self._guard():
            for attempt in range(2):
                try:
                    return await self._attempt(fn, write=False)
                except _STALE_CONNECTION:
                    if attempt:
                        raise
            raise AssertionError("unreachable")

    async def _write(self, fn: Callable[[Connection], Awaitable[T]]) -> T:
        """Run `fn` in one transaction (committed when it returns, rolled back when it raises)."""
        async with self._guard():
            for attempt in range(2):
                try:
                    return await self._attempt(fn, write=True)
                except _NotStarted as e:  # nothing reached the database: safe to try a fresh connection
                    if attempt:
                        raise e.error from None
            raise AssertionError("unreachable")

    async def _attempt(self, fn: Callable[[Connection], Awaitable[T]], *, write: bool) -> T:
        async with self._pool.acquire(timeout=self.timeout) as conn:
            try:
                if not write:
                    return await fn(conn)
                transaction = conn.transaction()
                try:
                    await transaction.start()
                except _STALE_CONNECTION as e:
                    conn.terminate()
                    raise _NotStarted(e) from e
                try:
                    result = await fn(conn)
                except _ABANDON:
                    raise
                except BaseException:
                    await transaction.rollback()  # a StoreError from `fn`: the connection is healthy
                    raise
                await transaction.commit()
                return result
            except _ABANDON:
                # Timed out or broken: never wait on this connection again (a graceful release would
                # ROLLBACK and wait for the cancellation, past the caller's deadline). The server rolls
                # back whatever was open when the connection drops.
                conn.terminate()
                raise

    # -- channels ------------------------------------------------------------------------------

    async def create_channel(self, channel: Channel, max_per_region: int | None) -> None:
        async def insert(conn: Connection) -> None:
            if max_per_region is not None:
                count = await _locked_count(conn, "channels", _QUOTA_LOCK_CHANNELS, channel.account, channel.region)
                if count >= max_per_region:
                    raise QuotaExceeded(channel.name)
            try:
                await conn.execute(
                    f"INSERT INTO channels ({_CHANNEL_COLUMNS}) VALUES ($1,$2,$3,$4,$5,$6,$7,$8,$9,$10,$11,$12)",
                    channel.arn, channel.account, channel.region, channel.name, channel.channel_type,
                    channel.status, channel.message_ttl_seconds, channel.version, channel.creation_time,
                    dict(channel.tags), channel.storage_status, channel.storage_stream_arn,
                )  # fmt: skip
            except asyncpg.UniqueViolationError as e:
                if e.constraint_name == "channels_storage_stream":
                    raise StreamAlreadyMapped(channel.storage_stream_arn or "") from e
                raise AlreadyExists(channel.name) from e

        await self._write(insert)

    def cached_channel(self, arn: str) -> Channel | None:
        return None  # other nodes write the same tables: only the database knows

    async def get_channel(self, arn: str) -> Channel | None:
        row = await self._read(lambda c: c.fetchrow(f"SELECT {_CHANNEL_COLUMNS} FROM channels WHERE arn = $1", arn))
        return None if row is None else _channel(row)

    async def find_channel(self, account: str, region: str, name: str) -> Channel | None:
        row = await self._read(
            lambda c: c.fetchrow(
                f"SELECT {_CHANNEL_COLUMNS} FROM channels WHERE account = $1 AND region = $2 AND name = $3",
                account,
                region,
                name,
            )
        )
        return None if row is None else _channel(row)

    async def list_channels(
        self, account: str, region: str, *, prefix: str | None, after: str | None, limit: int
    ) -> Sequence[Channel]:
        sql, args = _list_query("channels", _CHANNEL_COLUMNS, account, region, prefix, after, limit)
        rows = await self._read(lambda c: c.fetch(sql, *args))
        return [_channel(row) for row in rows]

    async def replace_channel(self, expected_version: str, channel: Channel) -> bool:
        async def update(conn: Connection) -> bool:
            try:
                status = await conn.execute(
                    "UPDATE channels SET channel_type = $1, status = $2, message_ttl_seconds = $3, version = $4, "
                    "tags = $5, storage_status = $6, storage_stream_arn = $7 WHERE arn = $8 AND version = $9",
                    channel.channel_type, channel.status, channel.message_ttl_seconds, channel.version,
                    dict(channel.tags), channel.storage_status, channel.storage_stream_arn, channel.arn,
                    expected_version,
                )  # fmt: skip
            except asyncpg.UniqueViolationError as e:
                raise StreamAlreadyMapped(channel.storage_stream_arn or "") from e
            return _affected(status) == 1

        return await self._write(update)

    async def delete_channel(self, arn: str, expected_version: str | None) -> bool:
        return await self._write(lambda c: _delete(c, "channels", arn, expected_version))

    async def channel_for_stream(self, stream_arn: str) -> Channel | None:
        row = await self._read(
            lambda c: c.fetchrow(f"SELECT {_CHANNEL_COLUMNS} FROM channels WHERE storage_stream_arn = $1", stream_arn)
        )
        return None if row is None else _channel(row)

    # -- streams -------------------------------------------------------------------------------

    async def create_stream(self, stream: Stream, max_per_region: int | None) -> None:
        async def insert(conn: Connection) -> None:
            if max_per_region is not None:
                count = await _locked_count(conn, "streams", _QUOTA_LOCK_STREAMS, stream.account, stream.region)
                if count >= max_per_region:
                    raise QuotaExceeded(stream.name)
            try:
                await conn.execute(
                    f"INSERT INTO streams ({_STREAM_COLUMNS}) VALUES ($1,$2,$3,$4,$5,$6,$7,$8,$9,$10,$11,$12)",
                    stream.arn, stream.account, stream.region, stream.name, stream.device_name, stream.media_type,
                    stream.kms_key_id, stream.version, stream.status, stream.creation_time,
                    stream.data_retention_hours, dict(stream.tags),
                )  # fmt: skip
            except asyncpg.UniqueViolationError as e:
                raise AlreadyExists(stream.name) from e

        await self._write(insert)

    async def get_stream(self, arn: str) -> Stream | None:
        row = await self._read(lambda c: c.fetchrow(f"SELECT {_STREAM_COLUMNS} FROM streams WHERE arn = $1", arn))
        return None if row is None else _stream(row)

    async def find_stream(self, account: str, region: str, name: str) -> Stream | None:
        row = await self._read(
            lambda c: c.fetchrow(
                f"SELECT {_STREAM_COLUMNS} FROM streams WHERE account = $1 AND region = $2 AND name = $3",
                account,
                region,
                name,
            )
        )
        return None if row is None else _stream(row)

    async def list_streams(
        self, account: str, region: str, *, prefix: str | None, after: str | None, limit: int
    ) -> Sequence[Stream]:
        sql, args = _list_query("streams", _STREAM_COLUMNS, account, region, prefix, after, limit)
        rows = await self._read(lambda c: c.fetch(sql, *args))
        return [_stream(row) for row in rows]

    async def replace_stream(self, expected_version: str, stream: Stream) -> bool:
        async def update(conn: Connection) -> bool:
            status = await conn.execute(
                "UPDATE streams SET device_name = $1, media_type = $2, version = $3, status = $4, "
                "data_retention_hours = $5, tags = $6 WHERE arn = $7 AND version = $8",
                stream.device_name, stream.media_type, stream.version, stream.status, stream.data_retention_hours,
                dict(stream.tags), stream.arn, expected_version,
            )  # fmt: skip
            return _affected(status) == 1

        return await self._write(update)

    async def delete_stream(self, arn: str, expected_version: str | None) -> bool:
        return await self._write(lambda c: _delete(c, "streams", arn, expected_version))

    async def update_tags(
        self, arn: str, add: Mapping[str, str], remove: Sequence[str], max_tags: int
    ) -> Mapping[str, str] | None:
        table = "streams" if ":stream/" in arn else "channels"

        async def update(conn: Connection) -> Mapping[str, str] | None:
            tags: dict[str, str] | None = await conn.fetchval(
                f"UPDATE {table} SET tags = (tags || $2::jsonb) - $3::text[] WHERE arn = $1 RETURNING tags",
                arn, dict(add), list(remove),
            )  # fmt: skip
            if tags is not None and len(tags) > max_tags:
                raise TooManyTags(arn)  # rolls the update back
            return tags

        return await self._write(update)

    async def ping(self) -> None:
        await self._read(lambda c: c.fetchval("SELECT 1"))

    async def close(self) -> None:
        try:
            await asyncio.wait_for(self._pool.close(), self.timeout)
        except TimeoutError:
            self._pool.terminate()


async def _locked_count(conn: Connection, table: str, lock_space: int, account: str, region: str) -> int:
    """Serialize creates in this account-region (until commit) and count what is there."""
    await conn.execute("SELECT pg_advisory_xact_lock($1, hashtext($2))", lock_space, f"{account}/{region}")
    count: int = await conn.fetchval(
        f"SELECT count(*) FROM {table} WHERE account = $1 AND region = $2", account, region
    )
    return count


async def _delete(conn: Connection, table: str, arn: str, expected_version: str | None) -> bool:
    if expected_version is None:
        status = await conn.execute(f"DELETE FROM {table} WHERE arn = $1", arn)
    else:
        status = await conn.execute(f"DELETE FROM {table} WHERE arn = $1 AND version = $2", arn, expected_version)
    return _affected(status) == 1


def _list_query(
    table: str, columns: str, account: str, region: str, prefix: str | None, after: str | None, limit: int
) -> tuple[str, tuple[Any, ...]]:
    sql = f"SELECT {columns} FROM {table} WHERE account = $1 AND region = $2"
    args: list[Any] = [account, region]
    if prefix:
        # Names are [a-zA-Z0-9_.-]+ and compare in "C" order, so a range scan is an exact BEGINS_WITH;
        # chr(0x10FFFF) sorts after every character a name can hold.
        sql += f" AND name >= ${len(args) + 1} AND name < ${len(args) + 2}"
        args += [prefix, prefix + "\U0010ffff"]
    if after is not None:
        sql += f" AND name > ${len(args) + 1}"
        args.append(after)
    sql += f" ORDER BY name LIMIT ${len(args) + 1}"
    args.append(limit)
    return sql, tuple(args)


def _describe(e: BaseException) -> str:
    text = str(e)
    return f"{type(e).__name__}: {text}" if text else type(e).__name__
