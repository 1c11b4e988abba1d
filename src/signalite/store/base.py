"""The `ChannelStore` interface and the records it keeps.

Operations (controlplane/operations.py) read a record, compute the new one, and write it back with a
compare-and-set on its Version: `replace_*(expected_version, new)`. That keeps every AWS rule in the
core and lets each backend enforce atomicity with what it has (one SQLite transaction, or a
PostgreSQL `UPDATE ... WHERE version = $1`), never with in-process locks, so several nodes can share
one database. Uniqueness (one channel per name per account and region; a stream serves at most one
channel) is a database constraint, reported as `AlreadyExists` / `StreamAlreadyMapped`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Protocol


class StoreError(Exception):
    """Base of the store's own (backend-neutral) errors."""


class AlreadyExists(StoreError):
    """A record with that name already exists in the account and region."""


class QuotaExceeded(StoreError):
    """Creating the record would exceed the per account-region quota."""


class StreamAlreadyMapped(StoreError):
    """The stream already serves another channel's media storage."""


class TooManyTags(StoreError):
    """Tagging would leave the resource with more tags than allowed."""


class StoreUnavailable(StoreError):
    """The backend cannot be reached right now (answered as a 5xx, retried by clients)."""


@dataclass(frozen=True, slots=True)
class Channel:
    """A signaling channel, as DescribeSignalingChannel shows it plus its tags and storage config."""

    arn: str
    account: str
    region: str
    name: str
    channel_type: str
    status: str
    message_ttl_seconds: int
    version: str
    creation_time: float  # epoch seconds; the ARN carries the same instant in ms
    tags: Mapping[str, str] = field(default_factory=dict)
    storage_status: str = "DISABLED"
    storage_stream_arn: str | None = None


@dataclass(frozen=True, slots=True)
class Stream:
    """A Kinesis video stream's metadata (media itself is not stored)."""

    arn: str
    account: str
    region: str
    name: str
    device_name: str | None
    media_type: str | None
    kms_key_id: str
    version: str
    status: str
    creation_time: float
    data_retention_hours: int
    tags: Mapping[str, str] = field(default_factory=dict)


class ChannelStore(Protocol):
    """Where channels and streams live. All methods are safe to call concurrently."""

    async def create_channel(self, channel: Channel, max_per_region: int | None) -> None:
        """Insert; AlreadyExists on a duplicate name, QuotaExceeded past `max_per_region`."""

    async def get_channel(self, arn: str) -> Channel | None: ...

    def cached_channel(self, arn: str) -> Channel | None:
        """What `get_channel` would return, when the store knows it without I/O; else None."""
        return None

    async def find_channel(self, account: str, region: str, name: str) -> Channel | None: ...

    async def list_channels(
        self, account: str, region: str, *, prefix: str | None, after: str | None, limit: int
    ) -> Sequence[Channel]:
        """Channels ordered by name, those with name > `after`, at most `limit`."""

    async def replace_channel(self, expected_version: str, channel: Channel) -> bool:
        """Write `channel` if the stored one still has `expected_version`; False otherwise.

        StreamAlreadyMapped if its storage stream serves another channel.
        """

    async def delete_channel(self, arn: str, expected_version: str | None) -> bool:
        """Delete (only at `expected_version` when given); False if absent or version moved."""

    async def channel_for_stream(self, stream_arn: str) -> Channel | None:
        """The channel whose media storage uses this stream, if any."""

    async def create_stream(self, stream: Stream, max_per_region: int | None) -> None: ...

    async def get_stream(self, arn: str) -> Stream | None: ...

    async def find_stream(self, account: str, region: str, name: str) -> Stream | None: ...

    async def list_streams(
        self, account: str, region: str, *, prefix: str | None, after: str | None, limit: int
    ) -> Sequence[Stream]: ...

    async def replace_stream(self, expected_version: str, stream: Stream) -> bool: ...

    async def delete_stream(self, arn: str, expected_version: str | None) -> bool: ...

    async def update_tags(
        self, arn: str, add: Mapping[str, str], remove: Sequence[str], max_tags: int
    ) -> Mapping[str, str] | None:
        """Atomically merge `add` and drop `remove` on a channel's or stream's tags (chosen by the ARN).

        Returns the new tags, None if the resource does not exist; TooManyTags past `max_tags`.
        Tags are not part of the Version, so this is its own transaction rather than a replace.
        """

    async def ping(self) -> None:
        """Raise StoreUnavailable if the backend cannot answer (used by /health)."""

    async def close(self) -> None: ...
