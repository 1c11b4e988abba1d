"""Choose the ChannelStore from the settings: SQLite in the data dir, or PostgreSQL with --database."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from signalite.store.base import ChannelStore
from signalite.store.sqlite import SqliteStore

POSTGRES_SCHEMES = ("postgresql://", "postgres://")


def is_postgres_url(url: str) -> bool:
    return url.lower().startswith(POSTGRES_SCHEMES)


async def open_store(settings: Any) -> ChannelStore:
    """Open (and migrate) the store the settings ask for.

    `settings.database` = a `postgresql://` (or `postgres://`) URL selects PostgreSQL; unset selects
    the SQLite file in the data directory. Raises StoreUnavailable when PostgreSQL cannot be reached,
    ValueError for any other kind of URL.
    """
    url: str | None = getattr(settings, "database", None)
    if url:
        if not is_postgres_url(url):
            raise ValueError("--database must be a postgresql:// URL (leave it unset for SQLite in the data dir)")
        from signalite.store.postgres import PostgresStore  # asyncpg is imported only when it is used

        return await PostgresStore.open(url)
    path: Path = getattr(settings, "database_path", None) or Path(settings.data_dir) / "signalite.db"
    # Channels can be cached in memory only when this process is the file's one writer.
    exclusive = getattr(settings, "workers", 1) == 1 and not getattr(settings, "redis", None)
    return SqliteStore(path, exclusive=exclusive)
