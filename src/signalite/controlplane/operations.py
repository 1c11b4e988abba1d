"""One function per kinesisvideo operation: the AWS rules, with storage behind `ChannelStore`.

Each operation takes a `RequestContext` (who is asking, in which region, at what time, with which
store) and the already-validated request members, and returns the response members or raises a
`ServiceError`. Nothing here knows HTTP; the web adapter does the wire.

Concurrency: every change is a read, a pure computation of the new record, and a compare-and-set on
the record's Version in the store, so two nodes racing on one channel resolve exactly as AWS's
"CurrentVersion must match" promises, without in-process locks.
"""

from __future__ import annotations

import base64
import binascii
import secrets
import string
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, Protocol

import orjson

from signalite.model.arn import arn_owner, make_arn, parse_arn
from signalite.model.errors import (
    AccountChannelLimitExceededException,
    AccountStreamLimitExceededException,
    InvalidArgumentException,
    InvalidResourceFormatException,
    NoDataRetentionException,
    ResourceInUseException,
    ResourceNotFoundException,
    TagsPerResourceExceededLimitException,
    VersionMismatchException,
)
from signalite.store.base import (
    AlreadyExists,
    Channel,
    ChannelStore,
    QuotaExceeded,
    Stream,
    StreamAlreadyMapped,
    TooManyTags,
)

Params = Mapping[str, Any]
Result = dict[str, Any]

MAX_TAGS = 50
MAX_RETENTION_HOURS = 87600  # ten years, AWS's documented maximum for DataRetentionInHours


@dataclass(frozen=True, slots=True)
class Endpoints:
    """The base URLs GetSignalingChannelEndpoint hands out (no trailing slash, no query)."""

    wss: str
    https: str
    webrtc: str


class ChannelEvents(Protocol):
    """What the data plane wants to hear about (GO_AWAY on delete, new TTL on update)."""

    def channel_deleted(self, arn: str) -> None: ...

    def channel_updated(self, channel: Channel) -> None: ...


class NoEvents:
    """ChannelEvents that ignores everything (tests, tools)."""

    def channel_deleted(self, arn: str) -> None:
        pass

    def channel_updated(self, channel: Channel) -> None:
        pass


@dataclass(frozen=True, slots=True)
class Quotas:
    """Resource-count quotas (per account and region); None = unlimited."""

    max_channels: int | None = 10_000
    max_streams: int | None = 10_000


# Not frozen: one is built per request, and a frozen dataclass's __init__ (object.__setattr__ per
# field) costs twice as much. Operations treat it as read-only.
@dataclass(slots=True)
class RequestContext:
    """Everything an operation may use besides its parameters."""

    account: str
    region: str
    now: float  # epoch seconds
    store: ChannelStore
    endpoints: Endpoints
    quotas: Quotas = field(default_factory=Quotas)
    events: ChannelEvents = field(default_factory=NoEvents)


Operation = Callable[[RequestContext, Params], Awaitable[Result]]
OPERATIONS: dict[str, Operation] = {}


def operation(fn: Operation) -> Operation:
    """Register `fn` under its AWS name (snake_case function name -> CamelCase operation)."""
    OPERATIONS["".join(part.capitalize() for part in fn.__name__.split("_"))] = fn
    return fn


_VERSION_ALPHABET = string.ascii_letters + string.digits


def new_version() -> str:
    """A fresh opaque Version (alphanumeric, as the model's pattern requires)."""
    return "".join(secrets.choice(_VERSION_ALPHABET) for _ in range(20))


# -- helpers ------------------------------------------------------------------------------------


def _one_of(params: Params, name_key: str, arn_key: str) -> tuple[str | None, str | None]:
    name, arn = params.get(name_key), params.get(arn_key)
    if (name is None) == (arn is None):
        raise InvalidArgumentException(f"Exactly one of {name_key} or {arn_key} must be specified.")
    return name, arn


def _own_arn(ctx: RequestContext, arn: str, kind: str) -> bool:
    """Is `arn` a resource of this kind in the caller's account and region?"""
    parsed = parse_arn(arn)
    return parsed is not None and parsed.kind == kind and parsed.account == ctx.account and parsed.region == ctx.region


async def active_channel(store: ChannelStore, arn: str, *, account: str, region: str | None = None) -> Channel:
    """The ACTIVE channel `arn` of `account` (and `region`, when given), or ResourceNotFoundException.

    Every surface looks channels up through this: the control plane, the signaling HTTPS API and
    the WebSocket handshake, so "not found" means the same thing everywhere.
    """
    channel = await store.get_channel(arn) if _owned(arn, account, region) else None
    if channel is None or channel.status != "ACTIVE":
        raise ResourceNotFoundException("The requested channel is not found or not active.")
    return channel


def known_active_channel(store: ChannelStore, arn: str, *, account: str) -> Channel | None:
    """`active_channel` from what the store knows without I/O: None when that is not enough to tell."""
    if not _owned(arn, account, None):
        raise ResourceNotFoundException("The requested channel is not found or not active.")
    channel = store.cached_channel(arn)
    if channel is not None and channel.status != "ACTIVE":
        raise ResourceNotFoundException("The requested channel is not found or not active.")
    return channel


def _owned(arn: str, account: str, region: str | None) -> bool:
    owner = arn_owner(arn)
    if owner is None or owner[0] != "channel" or owner[2] != account:
        return False
    return region is None or owner[1] == region


async def _channel_by_arn(ctx: RequestContext, arn: str) -> Channel:
    return await active_channel(ctx.store, arn, account=ctx.account, region=ctx.region)


async def _channel(ctx: RequestContext, params: Params) -> Channel:
    name, arn = _one_of(params, "ChannelName", "ChannelARN")
    if arn is not None:
        return await _channel_by_arn(ctx, arn)
    assert name is not None
    channel = await ctx.store.find_channel(ctx.account, ctx.region, name)
    if channel is None:
        raise ResourceNotFoundException("The requested channel is not found or not active.")
    return channel


async def _stream_by_arn(ctx: RequestContext, arn: str) -> Stream:
    stream = await ctx.store.get_stream(arn) if _own_arn(ctx, arn, "stream") else None
    if stream is None:
        raise ResourceNotFoundException("The requested stream is not found or not active.")
    return stream


async def _stream(ctx: RequestContext, params: Params, *, tagging: bool = False) -> Stream:
    name, arn = _one_of(params, "StreamName", "StreamARN")
    if arn is not None:
        parsed = parse_arn(arn)
        # Only the stream tagging operations model InvalidResourceFormatException; elsewhere a
        # channel ARN simply names no stream.
        if tagging and parsed is not None and parsed.kind != "stream":
            raise InvalidResourceFormatException("The ARN does not name a stream.")
        return await _stream_by_arn(ctx, arn)
    assert name is not None
    stream = await ctx.store.find_stream(ctx.account, ctx.region, name)
    if stream is None:
        raise ResourceNotFoundException("The requested stream is not found or not active.")
    return stream


def _encode_token(after: str) -> str:
    return base64.b64encode(orjson.dumps({"after": after})).decode()


def _decode_token(token: str | None) -> str | None:
    if not token:
        return None
    try:
        after = orjson.loads(base64.b64decode(token, validate=True)).get("after")
    except (binascii.Error, ValueError, AttributeError) as e:
        raise InvalidArgumentException("The NextToken is not valid.") from e
    if not isinstance(after, str):
        raise InvalidArgumentException("The NextToken is not valid.")
    return after


def _page(member: str, infos: list[Result], found: Sequence[Channel | Stream], limit: int) -> Result:
    """One page of a List* result: `found` holds up to `limit` + 1 items (one more: there is a next page)."""
    result: Result = {member: infos}
    if len(found) > limit:
        result["NextToken"] = _encode_token(found[limit - 1].name)
    return result


def _prefix(condition: Mapping[str, Any] | None) -> str | None:
    if not condition:
        return None
    value = condition.get("ComparisonValue")
    if condition.get("ComparisonOperator", "BEGINS_WITH") != "BEGINS_WITH" or value is None:
        raise InvalidArgumentException("A name condition needs ComparisonOperator BEGINS_WITH and a value.")
    return str(value)


def channel_info(c: Channel) -> Result:
    """ChannelInfo as DescribeSignalingChannel and ListSignalingChannels return it."""
    return {
        "ChannelName": c.name,
        "ChannelARN": c.arn,
        "ChannelType": c.channel_type,
        "ChannelStatus": c.status,
        "CreationTime": c.creation_time,
        "SingleMasterConfiguration": {"MessageTtlSeconds": c.message_ttl_seconds},
        "Version": c.version,
    }


def stream_info(s: Stream) -> Result:
    """StreamInfo as DescribeStream and ListStreams return it."""
    info: Result = {
        "StreamName": s.name,
        "StreamARN": s.arn,
        "KmsKeyId": s.kms_key_id,
        "Version": s.version,
        "Status": s.status,
        "CreationTime": s.creation_time,
        "DataRetentionInHours": s.data_retention_hours,
    }
    if s.device_name is not None:
        info["DeviceName"] = s.device_name
    if s.media_type is not None:
        info["MediaType"] = s.media_type
    return info


# -- signaling channels -------------------------------------------------------------------------


@operation
async def create_signaling_channel(ctx: RequestContext, params: Params) -> Result:
    name = params["ChannelName"]
    channel_type = params.get("ChannelType", "SINGLE_MASTER")
    if channel_type != "SINGLE_MASTER":
        # The model lists FULL_MESH, but AWS documents SINGLE_MASTER as the only supported type.
        raise InvalidArgumentException("Only SINGLE_MASTER signaling channels are supported.")
    ttl = params.get("SingleMasterConfiguration", {}).get("MessageTtlSeconds", 60)
    creation_time = round(ctx.now, 3)
    channel = Channel(
        arn=make_arn("channel", ctx.region, ctx.account, name, creation_time),
        account=ctx.account,
        region=ctx.region,
        name=name,
        channel_type=channel_type,
        status="ACTIVE",  # creation is synchronous here: ACTIVE as soon as the call returns
        message_ttl_seconds=ttl,
        version=new_version(),
        creation_time=creation_time,
        tags={t["Key"]: t["Value"] for t in params.get("Tags", ())},
    )
    try:
        await ctx.store.create_channel(channel, ctx.quotas.max_channels)
    except AlreadyExists:
        raise ResourceInUseException(f"The signaling channel {name} already exists.") from None
    except QuotaExceeded:
        raise AccountChannelLimitExceededException(
            "You have reached the maximum number of signaling channels in this account and region."
        ) from None
    return {"ChannelARN": channel.arn}


@operation
async def describe_signaling_channel(ctx: RequestContext, params: Params) -> Result:
    return {"ChannelInfo": channel_info(await _channel(ctx, params))}


@operation
async def list_signaling_channels(ctx: RequestContext, params: Params) -> Result:
    limit = params.get("MaxResults", 500)
    channels = await ctx.store.list_channels(
        ctx.account,
        ctx.region,
        prefix=_prefix(params.get("ChannelNameCondition")),
        after=_decode_token(params.get("NextToken")),
        limit=limit + 1,
    )
    return _page("ChannelInfoList", [channel_info(c) for c in channels[:limit]], channels, limit)


async def _replace_channel(ctx: RequestContext, current: Channel, new: Channel) -> None:
    try:
        ok = await ctx.store.replace_channel(current.version, new)
    except StreamAlreadyMapped:
        raise ResourceInUseException("The stream is already mapped to another signaling channel.") from None
    if not ok:
        if await ctx.store.get_channel(current.arn) is None:
            raise ResourceNotFoundException("The requested channel is not found or not active.")
        raise VersionMismatchException("The channel was changed concurrently; describe it and retry.")
    ctx.events.channel_updated(new)


@operation
async def update_signaling_channel(ctx: RequestContext, params: Params) -> Result:
    channel = await _channel_by_arn(ctx, params["ChannelARN"])
    if params["CurrentVersion"] != channel.version:
        raise VersionMismatchException(
            f"The version {params['CurrentVersion']} does not match the channel's current version."
        )
    ttl = params.get("SingleMasterConfiguration", {}).get("MessageTtlSeconds", channel.message_ttl_seconds)
    await _replace_channel(ctx, channel, replace(channel, message_ttl_seconds=ttl, version=new_version()))
    return {}


@operation
async def delete_signaling_channel(ctx: RequestContext, params: Params) -> Result:
    arn = params["ChannelARN"]
    channel = await _channel_by_arn(ctx, arn)
    expected = params.get("CurrentVersion")
    if expected is not None and expected != channel.version:
        raise VersionMismatchException(f"The version {expected} does not match the channel's current version.")
    if not await ctx.store.delete_channel(arn, expected):
        if await ctx.store.get_channel(arn) is None:
            raise ResourceNotFoundException("The requested channel is not found or not active.")
        raise VersionMismatchException("The channel was changed concurrently; describe it and retry.")
    ctx.events.channel_deleted(arn)
    return {}


@operation
async def get_signaling_channel_endpoint(ctx: RequestContext, params: Params) -> Result:
    # active_channel directly (not through _channel_by_arn): one coroutine less on the hottest call.
    channel = await active_channel(ctx.store, params["ChannelARN"], account=ctx.account, region=ctx.region)
    config = params.get("SingleMasterChannelEndpointConfiguration") or {}
    protocols = list(dict.fromkeys(config.get("Protocols") or ("WSS", "HTTPS")))
    bases = {"WSS": ctx.endpoints.wss, "HTTPS": ctx.endpoints.https, "WEBRTC": ctx.endpoints.webrtc}
    if "WEBRTC" in protocols and channel.storage_status != "ENABLED":
        raise InvalidArgumentException(
            "The WEBRTC protocol is available only for channels whose media storage is ENABLED."
        )
    return {"ResourceEndpointList": [{"Protocol": p, "ResourceEndpoint": bases[p]} for p in protocols]}


# -- tags ---------------------------------------------------------------------------------------


async def _resource(ctx: RequestContext, arn: str) -> Channel | Stream:
    parsed = parse_arn(arn)
    if parsed is not None and parsed.kind == "stream":
        return await _stream_by_arn(ctx, arn)
    return await _channel_by_arn(ctx, arn)


async def _update_tags(ctx: RequestContext, arn: str, add: Mapping[str, str], remove: list[str]) -> Mapping[str, str]:
    await _resource(ctx, arn)
    try:
        tags = await ctx.store.update_tags(arn, add, remove, MAX_TAGS)
    except TooManyTags:
        raise TagsPerResourceExceededLimitException(f"A resource can have at most {MAX_TAGS} tags.") from None
    if tags is None:
        raise ResourceNotFoundException("The requested resource is not found.")
    return tags


@operation
async def tag_resource(ctx: RequestContext, params: Params) -> Result:
    await _update_tags(ctx, params["ResourceARN"], {t["Key"]: t["Value"] for t in params["Tags"]}, [])
    return {}


@operation
async def untag_resource(ctx: RequestContext, params: Params) -> Result:
    await _update_tags(ctx, params["ResourceARN"], {}, list(params["TagKeyList"]))
    return {}


@operation
async def list_tags_for_resource(ctx: RequestContext, params: Params) -> Result:
    return {"Tags": dict((await _resource(ctx, params["ResourceARN"])).tags)}


# -- media storage --------------------------------------------------------------------------------


@operation
async def describe_media_storage_configuration(ctx: RequestContext, params: Params) -> Result:
    channel = await _channel(ctx, params)
    config: Result = {"Status": channel.storage_status}
    if channel.storage_stream_arn is not None:
        config["StreamARN"] = channel.storage_stream_arn
    return {"MediaStorageConfiguration": config}


@operation
async def update_media_storage_configuration(ctx: RequestContext, params: Params) -> Result:
    channel = await _channel_by_arn(ctx, params["ChannelARN"])
    config = params["MediaStorageConfiguration"]
    status = config["Status"]
    stream_arn = config.get("StreamARN")
    if status == "ENABLED":
        if stream_arn is None:
            raise InvalidArgumentException("StreamARN is required when Status is ENABLED.")
        stream = await _stream_by_arn(ctx, stream_arn)
        if stream.data_retention_hours <= 0:
            raise NoDataRetentionException("The stream must have a data retention period greater than 0.")
    else:
        stream_arn = None
    await _replace_channel(
        ctx, channel, replace(channel, storage_status=status, storage_stream_arn=stream_arn, version=new_version())
    )
    return {}


@operation
async def describe_mapped_resource_configuration(ctx: RequestContext, params: Params) -> Result:
    stream = await _stream(ctx, params)
    _decode_token(params.get("NextToken"))
    channel = await ctx.store.channel_for_stream(stream.arn)
    items = [] if channel is None else [{"Type": "SIGNALING_CHANNEL", "ARN": channel.arn}]
    return {"MappedResourceConfigurationList": items}


# -- streams (metadata only) -------------------------------------------------------------------------


@operation
async def create_stream(ctx: RequestContext, params: Params) -> Result:
    name = params["StreamName"]
    creation_time = round(ctx.now, 3)
    retention = params.get("DataRetentionInHours", 0)
    if retention > MAX_RETENTION_HOURS:
        raise InvalidArgumentException(f"DataRetentionInHours must be at most {MAX_RETENTION_HOURS}.")
    tags = params.get("Tags", {})
    if len(tags) > MAX_TAGS:
        raise TagsPerResourceExceededLimitException(f"A resource can have at most {MAX_TAGS} tags.")
    stream = Stream(
        arn=make_arn("stream", ctx.region, ctx.account, name, creation_time),
        account=ctx.account,
        region=ctx.region,
        name=name,
        device_name=params.get("DeviceName"),
        media_type=params.get("MediaType"),
        kms_key_id=params.get("KmsKeyId", f"arn:aws:kms:{ctx.region}:{ctx.account}:alias/aws/kinesisvideo"),
        version=new_version(),
        status="ACTIVE",
        creation_time=creation_time,
        data_retention_hours=retention,
        tags=dict(tags),
    )
    try:
        await ctx.store.create_stream(stream, ctx.quotas.max_streams)
    except AlreadyExists:
        raise ResourceInUseException(f"The stream {name} already exists.") from None
    except QuotaExceeded:
        raise AccountStreamLimitExceededException(
            "You have reached the maximum number of streams in this account and region."
        ) from None
    return {"StreamARN": stream.arn}


@operation
async def describe_stream(ctx: RequestContext, params: Params) -> Result:
    return {"StreamInfo": stream_info(await _stream(ctx, params))}


@operation
async def list_streams(ctx: RequestContext, params: Params) -> Result:
    limit = params.get("MaxResults", 10_000)
    streams = await ctx.store.list_streams(
        ctx.account,
        ctx.region,
        prefix=_prefix(params.get("StreamNameCondition")),
        after=_decode_token(params.get("NextToken")),
        limit=limit + 1,
    )
    return _page("StreamInfoList", [stream_info(s) for s in streams[:limit]], streams, limit)


async def _replace_stream(ctx: RequestContext, current: Stream, new: Stream) -> None:
    if not await ctx.store.replace_stream(current.version, new):
        if await ctx.store.get_stream(current.arn) is None:
            raise ResourceNotFoundException("The requested stream is not found or not active.")
        raise VersionMismatchException("The stream was changed concurrently; describe it and retry.")


def _check_version(expected: str, actual: str) -> None:
    if expected != actual:
        raise VersionMismatchException(f"The version {expected} does not match the current version.")


@operation
async def update_stream(ctx: RequestContext, params: Params) -> Result:
    stream = await _stream(ctx, params)
    _check_version(params["CurrentVersion"], stream.version)
    new = replace(
        stream,
        device_name=params.get("DeviceName", stream.device_name),
        media_type=params.get("MediaType", stream.media_type),
        version=new_version(),
    )
    await _replace_stream(ctx, stream, new)
    return {}


@operation
async def update_data_retention(ctx: RequestContext, params: Params) -> Result:
    stream = await _stream(ctx, params)
    _check_version(params["CurrentVersion"], stream.version)
    change = params["DataRetentionChangeInHours"]
    sign = 1 if params["Operation"] == "INCREASE_DATA_RETENTION" else -1
    retention = stream.data_retention_hours + sign * change
    if not 0 <= retention <= MAX_RETENTION_HOURS:
        raise InvalidArgumentException(
            f"The data retention would become {retention} hours; it must stay within 0..{MAX_RETENTION_HOURS}."
        )
    await _replace_stream(ctx, stream, replace(stream, data_retention_hours=retention, version=new_version()))
    return {}


@operation
async def delete_stream(ctx: RequestContext, params: Params) -> Result:
    arn = params["StreamARN"]
    stream = await _stream_by_arn(ctx, arn)
    expected = params.get("CurrentVersion")
    if expected is not None:
        _check_version(expected, stream.version)
    if await ctx.store.channel_for_stream(arn) is not None:
        raise ResourceInUseException("The stream is mapped to a signaling channel's media storage.")
    if not await ctx.store.delete_stream(arn, expected):
        if await ctx.store.get_stream(arn) is None:
            raise ResourceNotFoundException("The requested stream is not found or not active.")
        raise VersionMismatchException("The stream was changed concurrently; describe it and retry.")
    return {}


@operation
async def tag_stream(ctx: RequestContext, params: Params) -> Result:
    stream = await _stream(ctx, params, tagging=True)
    await _update_tags(ctx, stream.arn, dict(params["Tags"]), [])
    return {}


@operation
async def untag_stream(ctx: RequestContext, params: Params) -> Result:
    stream = await _stream(ctx, params, tagging=True)
    await _update_tags(ctx, stream.arn, {}, list(params["TagKeyList"]))
    return {}


@operation
async def list_tags_for_stream(ctx: RequestContext, params: Params) -> Result:
    return {"Tags": dict((await _stream(ctx, params, tagging=True)).tags)}
