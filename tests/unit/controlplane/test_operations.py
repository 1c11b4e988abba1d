"""Control-plane rules, run against the real SQLite store in a temporary directory."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from signalite.controlplane.operations import OPERATIONS, Endpoints, Quotas, RequestContext
from signalite.model.errors import (
    InvalidArgumentException,
    ResourceInUseException,
    ResourceNotFoundException,
    VersionMismatchException,
)
from signalite.store.base import Channel
from signalite.store.sqlite import SqliteStore

ENDPOINTS = Endpoints(wss="wss://signal.test", https="https://signal.test", webrtc="https://signal.test")


class Recorder:
    def __init__(self) -> None:
        self.deleted: list[str] = []
        self.updated: list[Channel] = []

    def channel_deleted(self, arn: str) -> None:
        self.deleted.append(arn)

    def channel_updated(self, channel: Channel) -> None:
        self.updated.append(channel)


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[SqliteStore]:
    s = SqliteStore(tmp_path / "db.sqlite")
    yield s
    await s.close()


def ctx(
    store: SqliteStore,
    events: Recorder | None = None,
    region: str = "us-west-2",
    now: float = 1700000000.5,
    quotas: Quotas | None = None,
) -> RequestContext:
    return RequestContext(
        account="111122223333",
        region=region,
        now=now,
        store=store,
        endpoints=ENDPOINTS,
        quotas=quotas or Quotas(),
        events=events or Recorder(),
    )


async def call(c: RequestContext, op: str, **params: Any) -> dict[str, Any]:
    return await OPERATIONS[op](c, params)


async def test_create_describe_round_trip(store: SqliteStore) -> None:
    c = ctx(store)
    arn = (await call(c, "CreateSignalingChannel", ChannelName="cam"))["ChannelARN"]
    assert arn == "arn:aws:kinesisvideo:us-west-2:111122223333:channel/cam/1700000000500"
    info = (await call(c, "DescribeSignalingChannel", ChannelARN=arn))["ChannelInfo"]
    assert info["ChannelStatus"] == "ACTIVE" and info["ChannelType"] == "SINGLE_MASTER"
    assert info["CreationTime"] == 1700000000.5
    assert info["SingleMasterConfiguration"] == {"MessageTtlSeconds": 60}
    assert info == (await call(c, "DescribeSignalingChannel", ChannelName="cam"))["ChannelInfo"]


async def test_regions_are_isolated(store: SqliteStore) -> None:
    arn = (await call(ctx(store), "CreateSignalingChannel", ChannelName="cam"))["ChannelARN"]
    other = ctx(store, region="eu-west-1")
    with pytest.raises(ResourceNotFoundException):
        await call(other, "DescribeSignalingChannel", ChannelARN=arn)
    # The same name is free in another region.
    await call(other, "CreateSignalingChannel", ChannelName="cam")


async def test_concurrent_updates_with_one_version_let_exactly_one_win(store: SqliteStore) -> None:
    events = Recorder()
    c = ctx(store, events)
    arn = (await call(c, "CreateSignalingChannel", ChannelName="cam"))["ChannelARN"]
    version = (await call(c, "DescribeSignalingChannel", ChannelARN=arn))["ChannelInfo"]["Version"]
    results = await asyncio.gather(
        *(
            call(
                c,
                "UpdateSignalingChannel",
                ChannelARN=arn,
                CurrentVersion=version,
                SingleMasterConfiguration={"MessageTtlSeconds": 10 + i},
            )
            for i in range(8)
        ),
        return_exceptions=True,
    )
    assert sum(r == {} for r in results) == 1
    assert all(isinstance(r, VersionMismatchException) for r in results if r != {})
    assert len(events.updated) == 1


async def test_delete_notifies_and_checks_version(store: SqliteStore) -> None:
    events = Recorder()
    c = ctx(store, events)
    arn = (await call(c, "CreateSignalingChannel", ChannelName="cam"))["ChannelARN"]
    with pytest.raises(VersionMismatchException):
        await call(c, "DeleteSignalingChannel", ChannelARN=arn, CurrentVersion="nope")
    await call(c, "DeleteSignalingChannel", ChannelARN=arn)
    assert events.deleted == [arn]
    with pytest.raises(ResourceNotFoundException):
        await call(c, "DeleteSignalingChannel", ChannelARN=arn)


async def test_list_pages_by_name_with_prefix(store: SqliteStore) -> None:
    c = ctx(store)
    for name in ["b2", "a1", "b1", "b3", "c1"]:
        await call(c, "CreateSignalingChannel", ChannelName=name)
    page = await call(
        c,
        "ListSignalingChannels",
        MaxResults=2,
        ChannelNameCondition={"ComparisonOperator": "BEGINS_WITH", "ComparisonValue": "b"},
    )
    assert [i["ChannelName"] for i in page["ChannelInfoList"]] == ["b1", "b2"]
    rest = await call(
        c,
        "ListSignalingChannels",
        MaxResults=2,
        NextToken=page["NextToken"],
        ChannelNameCondition={"ComparisonOperator": "BEGINS_WITH", "ComparisonValue": "b"},
    )
    assert [i["ChannelName"] for i in rest["ChannelInfoList"]] == ["b3"]
    assert "NextToken" not in rest
    with pytest.raises(InvalidArgumentException):
        await call(c, "ListSignalingChannels", NextToken="bm9wZQ==")


async def test_channel_quota(store: SqliteStore) -> None:
    from signalite.model.errors import AccountChannelLimitExceededException

    c = ctx(store, quotas=Quotas(max_channels=2))
    await call(c, "CreateSignalingChannel", ChannelName="a")
    await call(c, "CreateSignalingChannel", ChannelName="b")
    with pytest.raises(AccountChannelLimitExceededException):
        await call(c, "CreateSignalingChannel", ChannelName="c")


async def test_media_storage_maps_a_stream_to_one_channel(store: SqliteStore) -> None:
    from signalite.model.errors import NoDataRetentionException

    c = ctx(store)
    a = (await call(c, "CreateSignalingChannel", ChannelName="a"))["ChannelARN"]
    b = (await call(c, "CreateSignalingChannel", ChannelName="b"))["ChannelARN"]
    empty = (await call(c, "CreateStream", StreamName="empty"))["StreamARN"]
    kept = (await call(c, "CreateStream", StreamName="kept", DataRetentionInHours=24))["StreamARN"]
    with pytest.raises(NoDataRetentionException):
        await call(
            c,
            "UpdateMediaStorageConfiguration",
            ChannelARN=a,
            MediaStorageConfiguration={"Status": "ENABLED", "StreamARN": empty},
        )
    with pytest.raises(InvalidArgumentException):
        await call(
            c,
            "GetSignalingChannelEndpoint",
            ChannelARN=a,
            SingleMasterChannelEndpointConfiguration={"Protocols": ["WEBRTC"], "Role": "MASTER"},
        )
    await call(
        c,
        "UpdateMediaStorageConfiguration",
        ChannelARN=a,
        MediaStorageConfiguration={"Status": "ENABLED", "StreamARN": kept},
    )
    with pytest.raises(ResourceInUseException):
        await call(
            c,
            "UpdateMediaStorageConfiguration",
            ChannelARN=b,
            MediaStorageConfiguration={"Status": "ENABLED", "StreamARN": kept},
        )
    endpoints = await call(
        c,
        "GetSignalingChannelEndpoint",
        ChannelARN=a,
        SingleMasterChannelEndpointConfiguration={"Protocols": ["WSS", "WEBRTC", "WSS"]},
    )
    assert endpoints["ResourceEndpointList"] == [
        {"Protocol": "WSS", "ResourceEndpoint": "wss://signal.test"},
        {"Protocol": "WEBRTC", "ResourceEndpoint": "https://signal.test"},
    ]
    mapped = await call(c, "DescribeMappedResourceConfiguration", StreamARN=kept)
    assert mapped["MappedResourceConfigurationList"] == [{"Type": "SIGNALING_CHANNEL", "ARN": a}]
    with pytest.raises(ResourceInUseException):
        await call(c, "DeleteStream", StreamARN=kept)


async def test_tags_are_capped_at_fifty(store: SqliteStore) -> None:
    from signalite.model.errors import TagsPerResourceExceededLimitException

    c = ctx(store)
    arn = (
        await call(
            c, "CreateSignalingChannel", ChannelName="a", Tags=[{"Key": f"k{i}", "Value": "v"} for i in range(40)]
        )
    )["ChannelARN"]
    with pytest.raises(TagsPerResourceExceededLimitException):
        await call(c, "TagResource", ResourceARN=arn, Tags=[{"Key": f"n{i}", "Value": "v"} for i in range(11)])
    await call(c, "TagResource", ResourceARN=arn, Tags=[{"Key": f"n{i}", "Value": "v"} for i in range(10)])
    await call(c, "UntagResource", ResourceARN=arn, TagKeyList=["k0", "n0", "absent"])
    tags = (await call(c, "ListTagsForResource", ResourceARN=arn))["Tags"]
    assert len(tags) == 48 and "k0" not in tags and "n1" in tags
