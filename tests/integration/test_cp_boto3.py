"""The kinesisvideo control plane through boto3 against a real `signalite serve` process.

Every operation's success path and each modeled error that can arise, validation from the service
model, account/region scoping, and the HTTP details (status codes, headers) checked with raw requests.
"""

from __future__ import annotations

import datetime
import http.client
import json
import re
import time
import uuid
from typing import Any
from urllib.parse import urlsplit

import pytest

ACCOUNT = "000000000000"


# -- helpers -------------------------------------------------------------------------------------


def create_channel(kv: Any, name: str, **kwargs: Any) -> str:
    return str(kv.create_signaling_channel(ChannelName=name, **kwargs)["ChannelARN"])


def describe(kv: Any, **kwargs: Any) -> dict[str, Any]:
    return dict(kv.describe_signaling_channel(**kwargs)["ChannelInfo"])


def missing_channel_arn(name: str, region: str = "us-west-2") -> str:
    return f"arn:aws:kinesisvideo:{region}:{ACCOUNT}:channel/{name}/1700000000000"


def assert_names_member(error: Any, member: str) -> None:
    """The error is InvalidArgumentException and its message names `member` (any letter case)."""
    assert error.response["Error"]["Code"] == "InvalidArgumentException"
    assert error.response["ResponseMetadata"]["HTTPStatusCode"] == 400
    message = error.response["Error"]["Message"]
    assert member.lower() in message.lower(), message


def tags_of(kv: Any, arn: str) -> dict[str, str]:
    return dict(kv.list_tags_for_resource(ResourceARN=arn)["Tags"])


def raw_request(
    port: int, method: str, path: str, body: bytes = b"", headers: dict[str, str] | None = None
) -> tuple[int, dict[str, str], bytes]:
    """One HTTP request on a fresh connection: (status, headers with lower-case names, body)."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        conn.request(method, path, body=body, headers=headers or {"Content-Type": "application/json"})
        response = conn.getresponse()
        data = response.read()
        return response.status, {k.lower(): v for k, v in response.getheaders()}, data
    finally:
        conn.close()


def sigv4_header(region: str) -> dict[str, str]:
    """An Authorization header carrying a credential scope (open mode reads the region from it)."""
    return {
        "Content-Type": "application/json",
        "Authorization": (
            f"AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20240101/{region}/kinesisvideo/aws4_request, "
            "SignedHeaders=host;x-amz-date, Signature=" + "0" * 64
        ),
        "X-Amz-Date": "20240101T000000Z",
    }


# -- CreateSignalingChannel ------------------------------------------------------------------------


def test_create_defaults_active_at_once(kv: Any, names: Any) -> None:
    name = names()
    before = time.time()
    arn = create_channel(kv, name)
    m = re.fullmatch(rf"arn:aws:kinesisvideo:us-west-2:{ACCOUNT}:channel/{re.escape(name)}/(\d+)", arn)
    assert m, arn
    assert before - 5 <= int(m.group(1)) / 1000 <= time.time() + 5

    info = describe(kv, ChannelName=name)  # no waiting: ACTIVE when create returns
    assert info["ChannelStatus"] == "ACTIVE"
    assert info["ChannelType"] == "SINGLE_MASTER"
    assert info["SingleMasterConfiguration"] == {"MessageTtlSeconds": 60}
    assert info["ChannelName"] == name
    assert info["ChannelARN"] == arn
    assert re.fullmatch(r"[a-zA-Z0-9]{1,64}", info["Version"])


def test_create_with_type_ttl_and_tags(kv: Any, names: Any) -> None:
    name = names()
    tags = [{"Key": "team", "Value": "video"}, {"Key": "env", "Value": ""}]
    arn = create_channel(
        kv, name, ChannelType="SINGLE_MASTER", SingleMasterConfiguration={"MessageTtlSeconds": 120}, Tags=tags
    )
    assert describe(kv, ChannelARN=arn)["SingleMasterConfiguration"]["MessageTtlSeconds"] == 120
    assert tags_of(kv, arn) == {"team": "video", "env": ""}


def test_create_ttl_bounds_accepted(kv: Any, names: Any) -> None:
    for ttl in (5, 120):
        arn = create_channel(kv, names(), SingleMasterConfiguration={"MessageTtlSeconds": ttl})
        assert describe(kv, ChannelARN=arn)["SingleMasterConfiguration"]["MessageTtlSeconds"] == ttl


def test_create_duplicate_is_resource_in_use(kv: Any, names: Any) -> None:
    name = names()
    arn = create_channel(kv, name)
    version = describe(kv, ChannelARN=arn)["Version"]
    with pytest.raises(kv.exceptions.ResourceInUseException) as e:
        kv.create_signaling_channel(ChannelName=name, SingleMasterConfiguration={"MessageTtlSeconds": 10})
    assert e.value.response["ResponseMetadata"]["HTTPStatusCode"] == 400
    info = describe(kv, ChannelName=name)  # the original is untouched
    assert (info["ChannelARN"], info["Version"], info["SingleMasterConfiguration"]["MessageTtlSeconds"]) == (
        arn,
        version,
        60,
    )


def test_create_full_mesh_refused(kv: Any, names: Any) -> None:
    name = names()
    with pytest.raises(kv.exceptions.InvalidArgumentException):
        kv.create_signaling_channel(ChannelName=name, ChannelType="FULL_MESH")
    with pytest.raises(kv.exceptions.ResourceNotFoundException):
        kv.describe_signaling_channel(ChannelName=name)


def test_create_recreate_after_delete_gets_new_arn(kv: Any, names: Any) -> None:
    name = names()
    first = create_channel(kv, name)
    kv.delete_signaling_channel(ChannelARN=first)
    time.sleep(0.005)  # the ARN suffix is the creation time in ms
    second = create_channel(kv, name)
    assert second != first
    with pytest.raises(kv.exceptions.ResourceNotFoundException):
        kv.describe_signaling_channel(ChannelARN=first)
    assert describe(kv, ChannelName=name)["ChannelARN"] == second


def test_account_channel_limit(start_server: Any, make_kv: Any, names: Any) -> None:
    small = start_server(extra_args=["--max-channels", "2"])
    west = make_kv(small.endpoint_url, "us-west-2")
    east = make_kv(small.endpoint_url, "us-east-1")
    first = create_channel(west, names())
    create_channel(west, names())
    with pytest.raises(west.exceptions.AccountChannelLimitExceededException) as e:
        west.create_signaling_channel(ChannelName=names())
    assert e.value.response["ResponseMetadata"]["HTTPStatusCode"] == 400
    assert len(west.list_signaling_channels()["ChannelInfoList"]) == 2
    create_channel(east, names())  # the quota is per account and region
    west.delete_signaling_channel(ChannelARN=first)
    create_channel(west, names())  # room again after a delete


def test_default_rate_limits_answer_client_limit_exceeded(start_server: Any, make_kv: Any, names: Any) -> None:
    # The shared server runs with --limits off; the default (--limits aws) has AWS's per-channel rates.
    limited = start_server()
    kv = make_kv(limited.endpoint_url)
    arn = create_channel(kv, names())
    codes = []
    for _ in range(30):  # far above the few-per-second per-channel rate, in well under a second
        try:
            kv.describe_signaling_channel(ChannelARN=arn)
            codes.append("ok")
        except kv.exceptions.ClientLimitExceededException as e:
            assert e.response["ResponseMetadata"]["HTTPStatusCode"] == 400
            codes.append("throttled")
    assert codes[0] == "ok"
    assert "throttled" in codes, codes


# -- DescribeSignalingChannel -----------------------------------------------------------------------


def test_describe_by_name_and_by_arn_agree(kv: Any, names: Any) -> None:
    name = names()
    arn = create_channel(kv, name)
    assert describe(kv, ChannelName=name) == describe(kv, ChannelARN=arn)


def test_describe_needs_exactly_one_of_name_or_arn(kv: Any, names: Any) -> None:
    name = names()
    arn = create_channel(kv, name)
    with pytest.raises(kv.exceptions.InvalidArgumentException):
        kv.describe_signaling_channel()
    with pytest.raises(kv.exceptions.InvalidArgumentException):
        kv.describe_signaling_channel(ChannelName=name, ChannelARN=arn)


def test_describe_missing_is_not_found(kv: Any, names: Any) -> None:
    with pytest.raises(kv.exceptions.ResourceNotFoundException) as e:
        kv.describe_signaling_channel(ChannelName=names("missing"))
    assert e.value.response["ResponseMetadata"]["HTTPStatusCode"] == 404
    assert e.value.response["Error"]["Code"] == "ResourceNotFoundException"
    with pytest.raises(kv.exceptions.ResourceNotFoundException):
        kv.describe_signaling_channel(ChannelARN=missing_channel_arn(names("missing")))


def test_describe_creation_time_matches_arn(kv: Any, names: Any) -> None:
    arn = create_channel(kv, names())
    created = describe(kv, ChannelARN=arn)["CreationTime"]
    assert isinstance(created, datetime.datetime)
    assert created.tzinfo is not None
    assert abs(created.timestamp() - time.time()) < 60
    assert int(arn.rsplit("/", 1)[1]) == round(created.timestamp() * 1000)


def test_creation_time_is_a_json_number(server: Any, kv: Any, names: Any) -> None:
    name = names()
    arn = create_channel(kv, name)
    status, _, body = raw_request(
        server.port, "POST", "/describeSignalingChannel", json.dumps({"ChannelARN": arn}).encode(),
        sigv4_header("us-west-2"),
    )  # fmt: skip
    assert status == 200
    info = json.loads(body)["ChannelInfo"]
    assert isinstance(info["CreationTime"], (int, float)) and not isinstance(info["CreationTime"], bool)
    assert int(arn.rsplit("/", 1)[1]) == round(info["CreationTime"] * 1000)
    assert isinstance(info["SingleMasterConfiguration"]["MessageTtlSeconds"], int)


# -- ListSignalingChannels ------------------------------------------------------------------------


def test_list_paginator_over_25_channels(kv: Any, names: Any) -> None:
    created = {create_channel(kv, names(f"c{i:02d}")) for i in range(25)}
    condition = {"ComparisonOperator": "BEGINS_WITH", "ComparisonValue": names.prefix}
    paginator = kv.get_paginator("list_signaling_channels")
    pages = list(paginator.paginate(ChannelNameCondition=condition, PaginationConfig={"PageSize": 4}))
    sizes = [len(p["ChannelInfoList"]) for p in pages]
    assert sizes == [4, 4, 4, 4, 4, 4, 1]
    listed = [c["ChannelARN"] for p in pages for c in p["ChannelInfoList"]]
    assert len(listed) == len(set(listed)) == 25
    assert set(listed) == created
    assert "NextToken" not in pages[-1]

    # Stable order: the same sequence in one page, and on a second walk.
    whole = kv.list_signaling_channels(ChannelNameCondition=condition, MaxResults=100)
    assert [c["ChannelARN"] for c in whole["ChannelInfoList"]] == listed
    assert "NextToken" not in whole
    again = paginator.paginate(ChannelNameCondition=condition, PaginationConfig={"PageSize": 7})
    assert [c["ChannelARN"] for p in again for c in p["ChannelInfoList"]] == listed

    # MaxItems cuts mid-page; botocore's resume token still leads to the rest.
    first = paginator.paginate(
        ChannelNameCondition=condition, PaginationConfig={"PageSize": 4, "MaxItems": 10}
    ).build_full_result()
    assert [c["ChannelARN"] for c in first["ChannelInfoList"]] == listed[:10]
    rest = paginator.paginate(
        ChannelNameCondition=condition, PaginationConfig={"PageSize": 4, "StartingToken": first["NextToken"]}
    ).build_full_result()
    assert [c["ChannelARN"] for c in rest["ChannelInfoList"]] == listed[10:]


def test_list_info_matches_describe(kv: Any, names: Any) -> None:
    arn = create_channel(kv, names(), SingleMasterConfiguration={"MessageTtlSeconds": 33})
    condition = {"ComparisonOperator": "BEGINS_WITH", "ComparisonValue": names.prefix}
    (info,) = kv.list_signaling_channels(ChannelNameCondition=condition)["ChannelInfoList"]
    assert info == describe(kv, ChannelARN=arn)


def test_list_prefix_condition(kv: Any, names: Any) -> None:
    a1, a2 = create_channel(kv, names("a1")), create_channel(kv, names("a2"))
    create_channel(kv, names("b1"))
    condition = {"ComparisonOperator": "BEGINS_WITH", "ComparisonValue": names("a")}
    listed = kv.list_signaling_channels(ChannelNameCondition=condition)["ChannelInfoList"]
    assert {c["ChannelARN"] for c in listed} == {a1, a2}
    nothing = {"ComparisonOperator": "BEGINS_WITH", "ComparisonValue": names("zzz")}
    assert kv.list_signaling_channels(ChannelNameCondition=nothing)["ChannelInfoList"] == []


def test_list_without_condition_includes_new_channel(kv: Any, names: Any) -> None:
    arn = create_channel(kv, names())
    paginator = kv.get_paginator("list_signaling_channels")
    arns = [c["ChannelARN"] for p in paginator.paginate(PaginationConfig={"PageSize": 500})
            for c in p["ChannelInfoList"]]  # fmt: skip
    assert arn in arns
    assert len(arns) == len(set(arns))


def test_list_token_survives_deleting_the_last_seen_channel(kv: Any, names: Any) -> None:
    arns = [create_channel(kv, names(f"c{i}")) for i in range(5)]
    condition = {"ComparisonOperator": "BEGINS_WITH", "ComparisonValue": names.prefix}
    page = kv.list_signaling_channels(ChannelNameCondition=condition, MaxResults=2)
    seen = [c["ChannelARN"] for c in page["ChannelInfoList"]]
    kv.delete_signaling_channel(ChannelARN=seen[-1])
    rest = kv.list_signaling_channels(ChannelNameCondition=condition, NextToken=page["NextToken"])
    remaining = [c["ChannelARN"] for c in rest["ChannelInfoList"]]
    assert sorted(seen + remaining) == sorted(arns)


def test_list_bad_next_token(kv_raw: Any) -> None:
    for token in ("not base64!", "abcd", "e30=", "A" * 1025):
        with pytest.raises(kv_raw.exceptions.InvalidArgumentException):
            kv_raw.list_signaling_channels(NextToken=token)


def test_list_max_results_bounds(kv_raw: Any) -> None:
    for bad in (0, 10001):
        with pytest.raises(kv_raw.exceptions.InvalidArgumentException) as e:
            kv_raw.list_signaling_channels(MaxResults=bad)
        assert_names_member(e.value, "maxResults")


# -- UpdateSignalingChannel --------------------------------------------------------------------------


def test_update_ttl_and_versions(kv: Any, names: Any) -> None:
    arn = create_channel(kv, names())
    v1 = describe(kv, ChannelARN=arn)["Version"]
    kv.update_signaling_channel(ChannelARN=arn, CurrentVersion=v1, SingleMasterConfiguration={"MessageTtlSeconds": 30})
    info = describe(kv, ChannelARN=arn)
    v2 = info["Version"]
    assert info["SingleMasterConfiguration"]["MessageTtlSeconds"] == 30
    assert v2 != v1 and re.fullmatch(r"[a-zA-Z0-9]{1,64}", v2)
    assert info["ChannelStatus"] == "ACTIVE"
    assert info["ChannelARN"] == arn  # an update keeps the ARN and CreationTime

    with pytest.raises(kv.exceptions.VersionMismatchException) as e:
        kv.update_signaling_channel(
            ChannelARN=arn, CurrentVersion=v1, SingleMasterConfiguration={"MessageTtlSeconds": 90}
        )
    assert e.value.response["ResponseMetadata"]["HTTPStatusCode"] == 400
    assert describe(kv, ChannelARN=arn)["SingleMasterConfiguration"]["MessageTtlSeconds"] == 30

    kv.update_signaling_channel(ChannelARN=arn, CurrentVersion=v2, SingleMasterConfiguration={"MessageTtlSeconds": 90})
    info = describe(kv, ChannelARN=arn)
    assert info["SingleMasterConfiguration"]["MessageTtlSeconds"] == 90
    assert info["Version"] not in (v1, v2)


def test_update_missing_channel(kv: Any, names: Any) -> None:
    with pytest.raises(kv.exceptions.ResourceNotFoundException):
        kv.update_signaling_channel(ChannelARN=missing_channel_arn(names()), CurrentVersion="abc")


def test_update_ttl_out_of_range(kv_raw: Any, names: Any) -> None:
    arn = create_channel(kv_raw, names())
    version = describe(kv_raw, ChannelARN=arn)["Version"]
    for ttl in (4, 121):
        with pytest.raises(kv_raw.exceptions.InvalidArgumentException) as e:
            kv_raw.update_signaling_channel(
                ChannelARN=arn, CurrentVersion=version, SingleMasterConfiguration={"MessageTtlSeconds": ttl}
            )
        assert_names_member(e.value, "messageTtlSeconds")
    assert describe(kv_raw, ChannelARN=arn)["Version"] == version


# -- DeleteSignalingChannel ------------------------------------------------------------------------


def test_delete_without_version(kv: Any, names: Any) -> None:
    name = names()
    arn = create_channel(kv, name)
    kv.delete_signaling_channel(ChannelARN=arn)
    with pytest.raises(kv.exceptions.ResourceNotFoundException):
        kv.describe_signaling_channel(ChannelName=name)
    with pytest.raises(kv.exceptions.ResourceNotFoundException):
        kv.delete_signaling_channel(ChannelARN=arn)


def test_delete_with_version(kv: Any, names: Any) -> None:
    arn = create_channel(kv, names())
    version = describe(kv, ChannelARN=arn)["Version"]
    with pytest.raises(kv.exceptions.VersionMismatchException):
        kv.delete_signaling_channel(ChannelARN=arn, CurrentVersion="stale0version")
    assert describe(kv, ChannelARN=arn)["Version"] == version  # still there
    kv.delete_signaling_channel(ChannelARN=arn, CurrentVersion=version)
    with pytest.raises(kv.exceptions.ResourceNotFoundException):
        kv.describe_signaling_channel(ChannelARN=arn)


def test_delete_after_update_needs_the_new_version(kv: Any, names: Any) -> None:
    arn = create_channel(kv, names())
    v1 = describe(kv, ChannelARN=arn)["Version"]
    kv.update_signaling_channel(ChannelARN=arn, CurrentVersion=v1, SingleMasterConfiguration={"MessageTtlSeconds": 20})
    with pytest.raises(kv.exceptions.VersionMismatchException):
        kv.delete_signaling_channel(ChannelARN=arn, CurrentVersion=v1)
    kv.delete_signaling_channel(ChannelARN=arn, CurrentVersion=describe(kv, ChannelARN=arn)["Version"])


def test_delete_missing(kv: Any, names: Any) -> None:
    with pytest.raises(kv.exceptions.ResourceNotFoundException) as e:
        kv.delete_signaling_channel(ChannelARN=missing_channel_arn(names()))
    assert e.value.response["ResponseMetadata"]["HTTPStatusCode"] == 404


def test_deleted_channel_leaves_the_list(kv: Any, names: Any) -> None:
    keep, gone = create_channel(kv, names()), create_channel(kv, names())
    kv.delete_signaling_channel(ChannelARN=gone)
    condition = {"ComparisonOperator": "BEGINS_WITH", "ComparisonValue": names.prefix}
    listed = kv.list_signaling_channels(ChannelNameCondition=condition)["ChannelInfoList"]
    assert [c["ChannelARN"] for c in listed] == [keep]


# -- GetSignalingChannelEndpoint -------------------------------------------------------------------


def endpoints(kv: Any, arn: str, protocols: list[str], role: str = "MASTER") -> list[dict[str, str]]:
    config = {"Protocols": protocols, "Role": role}
    result = kv.get_signaling_channel_endpoint(ChannelARN=arn, SingleMasterChannelEndpointConfiguration=config)
    return list(result["ResourceEndpointList"])


def test_get_endpoint_wss_and_https(server: Any, kv: Any, names: Any) -> None:
    arn = create_channel(kv, names())
    for role in ("MASTER", "VIEWER"):
        found = endpoints(kv, arn, ["WSS", "HTTPS"], role)
        assert len(found) == 2
        by_protocol = {e["Protocol"]: e["ResourceEndpoint"] for e in found}
        assert by_protocol == {"WSS": f"ws://127.0.0.1:{server.port}", "HTTPS": f"http://127.0.0.1:{server.port}"}
        for url in by_protocol.values():
            parts = urlsplit(url)
            assert parts.path == "" and parts.query == "" and parts.fragment == ""
            assert not url.endswith("/")


def test_get_endpoint_one_entry_per_protocol(server: Any, kv: Any, names: Any) -> None:
    arn = create_channel(kv, names())
    assert endpoints(kv, arn, ["HTTPS"]) == [
        {"Protocol": "HTTPS", "ResourceEndpoint": f"http://127.0.0.1:{server.port}"}
    ]
    assert endpoints(kv, arn, ["WSS"], "VIEWER") == [
        {"Protocol": "WSS", "ResourceEndpoint": f"ws://127.0.0.1:{server.port}"}
    ]
    found = endpoints(kv, arn, ["HTTPS", "WSS"])
    assert sorted(e["Protocol"] for e in found) == ["HTTPS", "WSS"]


def test_get_endpoint_webrtc_needs_media_storage(kv: Any, names: Any) -> None:
    arn = create_channel(kv, names())
    with pytest.raises(kv.exceptions.InvalidArgumentException):
        endpoints(kv, arn, ["WSS", "HTTPS", "WEBRTC"])
    with pytest.raises(kv.exceptions.InvalidArgumentException):
        endpoints(kv, arn, ["WEBRTC"])


def test_get_endpoint_missing_channel(kv: Any, names: Any) -> None:
    with pytest.raises(kv.exceptions.ResourceNotFoundException):
        endpoints(kv, missing_channel_arn(names()), ["WSS", "HTTPS"])


def test_get_endpoint_bad_protocols(kv_raw: Any, names: Any) -> None:
    arn = create_channel(kv_raw, names())
    for protocols in (["FTP"], [], ["WSS", "HTTPS", "WSS", "HTTPS", "WSS", "HTTPS"]):
        with pytest.raises(kv_raw.exceptions.InvalidArgumentException) as e:
            endpoints(kv_raw, arn, protocols)
        assert_names_member(e.value, "protocols")
    with pytest.raises(kv_raw.exceptions.InvalidArgumentException) as e:
        endpoints(kv_raw, arn, ["WSS"], role="OBSERVER")
    assert_names_member(e.value, "role")


# -- tags -----------------------------------------------------------------------------------------


def test_tag_untag_list(kv: Any, names: Any) -> None:
    arn = create_channel(kv, names(), Tags=[{"Key": "a", "Value": "1"}])
    kv.tag_resource(ResourceARN=arn, Tags=[{"Key": "b", "Value": "2"}, {"Key": "a", "Value": "one"}])
    assert tags_of(kv, arn) == {"a": "one", "b": "2"}
    kv.untag_resource(ResourceARN=arn, TagKeyList=["a", "not-there"])
    assert tags_of(kv, arn) == {"b": "2"}
    kv.untag_resource(ResourceARN=arn, TagKeyList=["b"])
    assert tags_of(kv, arn) == {}


def test_tags_on_missing_channel(kv: Any, names: Any) -> None:
    arn = missing_channel_arn(names())
    with pytest.raises(kv.exceptions.ResourceNotFoundException):
        kv.tag_resource(ResourceARN=arn, Tags=[{"Key": "a", "Value": "b"}])
    with pytest.raises(kv.exceptions.ResourceNotFoundException):
        kv.untag_resource(ResourceARN=arn, TagKeyList=["a"])
    with pytest.raises(kv.exceptions.ResourceNotFoundException):
        kv.list_tags_for_resource(ResourceARN=arn)


def test_more_than_50_tags(kv: Any, names: Any) -> None:
    arn = create_channel(kv, names(), Tags=[{"Key": f"k{i}", "Value": "v"} for i in range(30)])
    more = [{"Key": f"n{i}", "Value": "v"} for i in range(21)]
    with pytest.raises(kv.exceptions.TagsPerResourceExceededLimitException) as e:
        kv.tag_resource(ResourceARN=arn, Tags=more)
    assert e.value.response["ResponseMetadata"]["HTTPStatusCode"] == 400
    assert len(tags_of(kv, arn)) == 30  # nothing applied
    kv.tag_resource(ResourceARN=arn, Tags=more[:20])  # exactly 50 is fine
    assert len(tags_of(kv, arn)) == 50
    kv.tag_resource(ResourceARN=arn, Tags=[{"Key": "k0", "Value": "changed"}])  # overwriting adds nothing
    assert tags_of(kv, arn)["k0"] == "changed"
    with pytest.raises(kv.exceptions.TagsPerResourceExceededLimitException):
        kv.tag_resource(ResourceARN=arn, Tags=[{"Key": "fifty-one", "Value": "v"}])
    assert len(tags_of(kv, arn)) == 50


def test_51_tags_in_one_call_refused(kv: Any, names: Any) -> None:
    # The model caps the list itself at 50, so this is refused before counting: either error is a refusal.
    arn = create_channel(kv, names())
    refused = (kv.exceptions.InvalidArgumentException, kv.exceptions.TagsPerResourceExceededLimitException)
    with pytest.raises(refused):
        kv.tag_resource(ResourceARN=arn, Tags=[{"Key": f"k{i}", "Value": "v"} for i in range(51)])
    assert tags_of(kv, arn) == {}
    name = names()
    with pytest.raises(refused):
        kv.create_signaling_channel(ChannelName=name, Tags=[{"Key": f"k{i}", "Value": "v"} for i in range(51)])
    with pytest.raises(kv.exceptions.ResourceNotFoundException):
        kv.describe_signaling_channel(ChannelName=name)


def test_tag_patterns_use_unicode_classes(kv: Any, names: Any) -> None:
    tags = [{"Key": "étiquette", "Value": "café crème"}, {"Key": "ключ 2", "Value": "значение"},
            {"Key": "a_b.c:d/e=f+g-h@i", "Value": "日本"}]  # fmt: skip
    arn = create_channel(kv, names(), Tags=tags)
    assert tags_of(kv, arn) == {t["Key"]: t["Value"] for t in tags}


def test_tag_key_and_value_pattern_violations(kv: Any, names: Any) -> None:
    arn = create_channel(kv, names())
    with pytest.raises(kv.exceptions.InvalidArgumentException) as e:
        kv.tag_resource(ResourceARN=arn, Tags=[{"Key": "<", "Value": "v"}])
    assert_names_member(e.value, "key")
    with pytest.raises(kv.exceptions.InvalidArgumentException) as e:
        kv.tag_resource(ResourceARN=arn, Tags=[{"Key": "k", "Value": "<script>"}])
    assert_names_member(e.value, "value")
    with pytest.raises(kv.exceptions.InvalidArgumentException) as e:
        kv.tag_resource(ResourceARN=arn, Tags=[{"Key": "k" * 129, "Value": "v"}])
    assert_names_member(e.value, "key")
    with pytest.raises(kv.exceptions.InvalidArgumentException):
        kv.create_signaling_channel(ChannelName=names(), Tags=[{"Key": "<", "Value": "v"}])
    assert tags_of(kv, arn) == {}


# -- media storage ---------------------------------------------------------------------------------


def enable_storage(kv: Any, channel_arn: str, stream_arn: str) -> None:
    kv.update_media_storage_configuration(
        ChannelARN=channel_arn, MediaStorageConfiguration={"StreamARN": stream_arn, "Status": "ENABLED"}
    )


def test_media_storage_round_trip(server: Any, kv: Any, names: Any) -> None:
    name = names("chan")
    arn = create_channel(kv, name)
    assert kv.describe_media_storage_configuration(ChannelARN=arn)["MediaStorageConfiguration"] == {
        "Status": "DISABLED"
    }
    stream_name = names("stream")
    stream = kv.create_stream(StreamName=stream_name, DataRetentionInHours=24)["StreamARN"]
    assert kv.describe_mapped_resource_configuration(StreamARN=stream)["MappedResourceConfigurationList"] == []

    enable_storage(kv, arn, stream)
    for key in ({"ChannelARN": arn}, {"ChannelName": name}):
        config = kv.describe_media_storage_configuration(**key)["MediaStorageConfiguration"]
        assert config == {"Status": "ENABLED", "StreamARN": stream}
    for key in ({"StreamARN": stream}, {"StreamName": stream_name}):
        (mapped,) = kv.describe_mapped_resource_configuration(**key)["MappedResourceConfigurationList"]
        assert mapped["ARN"] == arn and isinstance(mapped["Type"], str) and mapped["Type"]

    found = endpoints(kv, arn, ["WSS", "HTTPS", "WEBRTC"])
    assert {e["Protocol"]: e["ResourceEndpoint"] for e in found} == {
        "WSS": f"ws://127.0.0.1:{server.port}",
        "HTTPS": f"http://127.0.0.1:{server.port}",
        "WEBRTC": f"http://127.0.0.1:{server.port}",
    }

    kv.update_media_storage_configuration(ChannelARN=arn, MediaStorageConfiguration={"Status": "DISABLED"})
    assert kv.describe_media_storage_configuration(ChannelARN=arn)["MediaStorageConfiguration"]["Status"] == "DISABLED"
    assert kv.describe_mapped_resource_configuration(StreamARN=stream)["MappedResourceConfigurationList"] == []
    with pytest.raises(kv.exceptions.InvalidArgumentException):
        endpoints(kv, arn, ["WEBRTC"])


def test_media_storage_needs_data_retention(kv: Any, names: Any) -> None:
    arn = create_channel(kv, names())
    stream = kv.create_stream(StreamName=names("stream"), DataRetentionInHours=0)["StreamARN"]
    with pytest.raises(kv.exceptions.NoDataRetentionException) as e:
        enable_storage(kv, arn, stream)
    assert e.value.response["ResponseMetadata"]["HTTPStatusCode"] == 400
    assert kv.describe_media_storage_configuration(ChannelARN=arn)["MediaStorageConfiguration"]["Status"] == "DISABLED"


def test_media_storage_stream_serves_one_channel(kv: Any, names: Any) -> None:
    first, second = create_channel(kv, names()), create_channel(kv, names())
    stream = kv.create_stream(StreamName=names("stream"), DataRetentionInHours=1)["StreamARN"]
    enable_storage(kv, first, stream)
    with pytest.raises(kv.exceptions.ResourceInUseException):
        enable_storage(kv, second, stream)
    assert (
        kv.describe_media_storage_configuration(ChannelARN=second)["MediaStorageConfiguration"]["Status"] == "DISABLED"
    )
    enable_storage(kv, first, stream)  # re-enabling on the same channel is fine
    # A mapped stream cannot be deleted.
    with pytest.raises(kv.exceptions.ResourceInUseException):
        kv.delete_stream(StreamARN=stream)
    kv.update_media_storage_configuration(ChannelARN=first, MediaStorageConfiguration={"Status": "DISABLED"})
    enable_storage(kv, second, stream)  # free again
    (mapped,) = kv.describe_mapped_resource_configuration(StreamARN=stream)["MappedResourceConfigurationList"]
    assert mapped["ARN"] == second


def test_media_storage_missing_things(kv: Any, names: Any) -> None:
    arn = create_channel(kv, names())
    missing_stream = f"arn:aws:kinesisvideo:us-west-2:{ACCOUNT}:stream/{names('nope')}/1700000000000"
    with pytest.raises(kv.exceptions.ResourceNotFoundException):
        enable_storage(kv, arn, missing_stream)
    stream = kv.create_stream(StreamName=names("stream"), DataRetentionInHours=1)["StreamARN"]
    with pytest.raises(kv.exceptions.ResourceNotFoundException):
        enable_storage(kv, missing_channel_arn(names()), stream)
    with pytest.raises(kv.exceptions.ResourceNotFoundException):
        kv.describe_media_storage_configuration(ChannelName=names("nope"))
    with pytest.raises(kv.exceptions.InvalidArgumentException):
        kv.describe_media_storage_configuration()
    with pytest.raises(kv.exceptions.ResourceNotFoundException):
        kv.describe_mapped_resource_configuration(StreamName=names("nope"))
    with pytest.raises(kv.exceptions.InvalidArgumentException):
        kv.describe_mapped_resource_configuration()


def test_mapped_resource_paginator(kv: Any, names: Any) -> None:
    arn = create_channel(kv, names())
    stream = kv.create_stream(StreamName=names("stream"), DataRetentionInHours=1)["StreamARN"]
    enable_storage(kv, arn, stream)
    paginator = kv.get_paginator("describe_mapped_resource_configuration")
    items = [i for p in paginator.paginate(StreamARN=stream) for i in p["MappedResourceConfigurationList"]]
    assert [i["ARN"] for i in items] == [arn]


# -- streams ---------------------------------------------------------------------------------------


def describe_stream(kv: Any, **kwargs: Any) -> dict[str, Any]:
    return dict(kv.describe_stream(**kwargs)["StreamInfo"])


def test_stream_lifecycle(kv: Any, names: Any) -> None:
    name = names("stream")
    arn = kv.create_stream(
        StreamName=name, DeviceName="camera-1", MediaType="video/h264", DataRetentionInHours=2, Tags={"a": "b"}
    )["StreamARN"]
    m = re.fullmatch(rf"arn:aws:kinesisvideo:us-west-2:{ACCOUNT}:stream/{re.escape(name)}/(\d+)", arn)
    assert m, arn
    info = describe_stream(kv, StreamName=name)
    assert info == describe_stream(kv, StreamARN=arn)
    assert info["StreamARN"] == arn and info["StreamName"] == name
    assert info["Status"] == "ACTIVE"
    assert info["DeviceName"] == "camera-1" and info["MediaType"] == "video/h264"
    assert info["DataRetentionInHours"] == 2
    assert isinstance(info["CreationTime"], datetime.datetime)
    assert int(m.group(1)) == round(info["CreationTime"].timestamp() * 1000)
    assert re.fullmatch(r"[a-zA-Z0-9]{1,64}", info["Version"])
    assert info["KmsKeyId"]

    with pytest.raises(kv.exceptions.ResourceInUseException):
        kv.create_stream(StreamName=name)

    # UpdateStream
    v1 = info["Version"]
    kv.update_stream(StreamName=name, CurrentVersion=v1, MediaType="video/h265")
    info = describe_stream(kv, StreamARN=arn)
    assert info["MediaType"] == "video/h265" and info["DeviceName"] == "camera-1"
    v2 = info["Version"]
    assert v2 != v1
    with pytest.raises(kv.exceptions.VersionMismatchException):
        kv.update_stream(StreamARN=arn, CurrentVersion=v1, DeviceName="camera-2")

    # UpdateDataRetention
    kv.update_data_retention(
        StreamARN=arn, CurrentVersion=v2, Operation="INCREASE_DATA_RETENTION", DataRetentionChangeInHours=5
    )
    info = describe_stream(kv, StreamName=name)
    assert info["DataRetentionInHours"] == 7
    v3 = info["Version"]
    assert v3 not in (v1, v2)
    with pytest.raises(kv.exceptions.VersionMismatchException):
        kv.update_data_retention(
            StreamName=name, CurrentVersion=v2, Operation="DECREASE_DATA_RETENTION", DataRetentionChangeInHours=1
        )
    kv.update_data_retention(
        StreamName=name, CurrentVersion=v3, Operation="DECREASE_DATA_RETENTION", DataRetentionChangeInHours=3
    )
    info = describe_stream(kv, StreamName=name)
    assert info["DataRetentionInHours"] == 4
    with pytest.raises(kv.exceptions.InvalidArgumentException):
        kv.update_data_retention(
            StreamName=name, CurrentVersion=info["Version"], Operation="DECREASE_DATA_RETENTION",
            DataRetentionChangeInHours=5,
        )  # fmt: skip
    assert describe_stream(kv, StreamName=name)["DataRetentionInHours"] == 4

    # DeleteStream
    with pytest.raises(kv.exceptions.VersionMismatchException):
        kv.delete_stream(StreamARN=arn, CurrentVersion=v1)
    kv.delete_stream(StreamARN=arn, CurrentVersion=info["Version"])
    with pytest.raises(kv.exceptions.ResourceNotFoundException):
        kv.describe_stream(StreamARN=arn)
    with pytest.raises(kv.exceptions.ResourceNotFoundException):
        kv.delete_stream(StreamARN=arn)


def test_stream_delete_without_version_and_missing(kv: Any, names: Any) -> None:
    arn = kv.create_stream(StreamName=names("stream"))["StreamARN"]
    kv.delete_stream(StreamARN=arn)
    with pytest.raises(kv.exceptions.ResourceNotFoundException):
        kv.describe_stream(StreamARN=arn)
    with pytest.raises(kv.exceptions.ResourceNotFoundException):
        kv.describe_stream(StreamName=names("nope"))
    with pytest.raises(kv.exceptions.ResourceNotFoundException):
        kv.update_stream(StreamName=names("nope"), CurrentVersion="abc")
    with pytest.raises(kv.exceptions.ResourceNotFoundException):
        kv.update_data_retention(
            StreamName=names("nope"), CurrentVersion="abc", Operation="INCREASE_DATA_RETENTION",
            DataRetentionChangeInHours=1,
        )  # fmt: skip
    with pytest.raises(kv.exceptions.InvalidArgumentException):
        kv.describe_stream()


def test_list_streams(kv: Any, names: Any) -> None:
    arns = [kv.create_stream(StreamName=names(f"s{i}"), DataRetentionInHours=i)["StreamARN"] for i in range(5)]
    condition = {"ComparisonOperator": "BEGINS_WITH", "ComparisonValue": names.prefix}
    listed = kv.list_streams(StreamNameCondition=condition)["StreamInfoList"]
    assert sorted(s["StreamARN"] for s in listed) == sorted(arns)
    assert {s["StreamARN"]: s["DataRetentionInHours"] for s in listed} == dict(zip(arns, range(5), strict=True))
    paginator = kv.get_paginator("list_streams")
    pages = list(paginator.paginate(StreamNameCondition=condition, PaginationConfig={"PageSize": 2}))
    assert [len(p["StreamInfoList"]) for p in pages] == [2, 2, 1]
    assert [s["StreamARN"] for p in pages for s in p["StreamInfoList"]] == [s["StreamARN"] for s in listed]


def test_stream_tags(kv: Any, names: Any) -> None:
    name = names("stream")
    arn = kv.create_stream(StreamName=name, Tags={"a": "1"})["StreamARN"]
    kv.tag_stream(StreamARN=arn, Tags={"b": "2", "étiquette": "é"})
    assert kv.list_tags_for_stream(StreamName=name)["Tags"] == {"a": "1", "b": "2", "étiquette": "é"}
    kv.untag_stream(StreamName=name, TagKeyList=["a", "étiquette"])
    assert kv.list_tags_for_stream(StreamARN=arn)["Tags"] == {"b": "2"}
    with pytest.raises(kv.exceptions.TagsPerResourceExceededLimitException):
        kv.tag_stream(StreamARN=arn, Tags={f"k{i}": "v" for i in range(50)})
    assert kv.list_tags_for_stream(StreamARN=arn)["Tags"] == {"b": "2"}
    with pytest.raises(kv.exceptions.InvalidArgumentException):
        kv.tag_stream(StreamARN=arn, Tags={"<": "v"})
    missing = names("nope")
    with pytest.raises(kv.exceptions.ResourceNotFoundException):
        kv.tag_stream(StreamName=missing, Tags={"a": "b"})
    with pytest.raises(kv.exceptions.ResourceNotFoundException):
        kv.untag_stream(StreamName=missing, TagKeyList=["a"])
    with pytest.raises(kv.exceptions.ResourceNotFoundException):
        kv.list_tags_for_stream(StreamName=missing)


def test_stream_tag_ops_refuse_a_channel_arn(kv: Any, names: Any) -> None:
    channel = create_channel(kv, names())
    refused = (kv.exceptions.InvalidResourceFormatException, kv.exceptions.ResourceNotFoundException,
               kv.exceptions.InvalidArgumentException)  # fmt: skip
    with pytest.raises(refused):
        kv.list_tags_for_stream(StreamARN=channel)
    with pytest.raises(refused):
        kv.tag_stream(StreamARN=channel, Tags={"a": "b"})
    assert tags_of(kv, channel) == {}


def test_stream_ops_answer_a_channel_arn_with_a_modeled_error(kv: Any, names: Any) -> None:
    channel = create_channel(kv, names())
    calls = {
        "describe_stream": {},
        "update_stream": {"CurrentVersion": "abc"},
        "update_data_retention": {"CurrentVersion": "abc", "Operation": "INCREASE_DATA_RETENTION",
                                  "DataRetentionChangeInHours": 1},
        "describe_mapped_resource_configuration": {},
    }  # fmt: skip
    codes = {}
    for method, kwargs in calls.items():
        with pytest.raises(kv.exceptions.ClientError) as e:
            getattr(kv, method)(StreamARN=channel, **kwargs)
        codes[method] = e.value.response["Error"]["Code"]
    assert set(codes.values()) <= {"ResourceNotFoundException", "InvalidArgumentException"}, codes


# -- validation -------------------------------------------------------------------------------------


def test_channel_name_validation(kv_raw: Any) -> None:
    for bad in ("bad name!", "x" * 257, "", "ünïcode", "a/b"):
        with pytest.raises(kv_raw.exceptions.InvalidArgumentException) as e:
            kv_raw.create_signaling_channel(ChannelName=bad)
        assert_names_member(e.value, "channelName")
    with pytest.raises(kv_raw.exceptions.InvalidArgumentException) as e:
        kv_raw.create_signaling_channel()
    assert_names_member(e.value, "channelName")


def test_channel_name_longest_accepted(kv: Any, names: Any) -> None:
    name = (names() + "-" + "x" * 256)[:256]
    arn = create_channel(kv, name)
    assert describe(kv, ChannelName=name)["ChannelARN"] == arn


def test_ttl_out_of_range_on_create(kv_raw: Any, names: Any) -> None:
    for ttl in (4, 121, 0, -1):
        name = names()
        with pytest.raises(kv_raw.exceptions.InvalidArgumentException) as e:
            kv_raw.create_signaling_channel(ChannelName=name, SingleMasterConfiguration={"MessageTtlSeconds": ttl})
        assert_names_member(e.value, "messageTtlSeconds")
        with pytest.raises(kv_raw.exceptions.ResourceNotFoundException):
            kv_raw.describe_signaling_channel(ChannelName=name)


def test_enum_and_arn_validation(kv_raw: Any, names: Any) -> None:
    with pytest.raises(kv_raw.exceptions.InvalidArgumentException) as e:
        kv_raw.create_signaling_channel(ChannelName=names(), ChannelType="NOPE")
    assert_names_member(e.value, "channelType")
    for bad_arn in ("not-an-arn", "arn:aws:kinesisvideo:us-west-2:000000000000:channel/bad name/1"):
        with pytest.raises(kv_raw.exceptions.InvalidArgumentException) as e:
            kv_raw.describe_signaling_channel(ChannelARN=bad_arn)
        assert_names_member(e.value, "channelARN")
    with pytest.raises(kv_raw.exceptions.InvalidArgumentException) as e:
        kv_raw.delete_signaling_channel(ChannelARN="x" * 1025)
    assert_names_member(e.value, "channelARN")


def test_wrong_json_types(server: Any) -> None:
    for path, body, member in [
        ("/createSignalingChannel", {"ChannelName": 123}, "channelName"),
        ("/createSignalingChannel", {"ChannelName": "ok", "Tags": "nope"}, "tags"),
        ("/createSignalingChannel", {"ChannelName": "ok", "SingleMasterConfiguration": {"MessageTtlSeconds": "60"}},
         "messageTtlSeconds"),
        ("/listSignalingChannels", {"MaxResults": True}, "maxResults"),
        ("/getSignalingChannelEndpoint", {"ChannelARN": ["x"]}, "channelARN"),
    ]:  # fmt: skip
        status, headers, data = raw_request(server.port, "POST", path, json.dumps(body).encode())
        assert status == 400, (path, body, data)
        assert headers["x-amzn-errortype"].split(":")[0] == "InvalidArgumentException"
        assert member.lower() in json.loads(data)["message"].lower()


# -- account and region scoping ---------------------------------------------------------------------


def test_region_scoping(kv: Any, client_for: Any, names: Any) -> None:
    east = client_for("us-east-1")
    name = names()
    arn = create_channel(kv, name)
    assert ":us-west-2:" in arn
    with pytest.raises(east.exceptions.ResourceNotFoundException):
        east.describe_signaling_channel(ChannelName=name)
    with pytest.raises(east.exceptions.ResourceNotFoundException):
        east.describe_signaling_channel(ChannelARN=arn)
    with pytest.raises(east.exceptions.ResourceNotFoundException):
        east.get_signaling_channel_endpoint(ChannelARN=arn)
    with pytest.raises(east.exceptions.ResourceNotFoundException):
        east.delete_signaling_channel(ChannelARN=arn)
    with pytest.raises(east.exceptions.ResourceNotFoundException):
        east.list_tags_for_resource(ResourceARN=arn)
    condition = {"ComparisonOperator": "BEGINS_WITH", "ComparisonValue": names.prefix}
    assert east.list_signaling_channels(ChannelNameCondition=condition)["ChannelInfoList"] == []

    # The same name is free in the other region, with an ARN of its own.
    east_arn = create_channel(east, name)
    assert ":us-east-1:" in east_arn and east_arn != arn
    assert describe(kv, ChannelName=name)["ChannelARN"] == arn
    assert describe(east, ChannelName=name)["ChannelARN"] == east_arn


def test_region_from_credential_scope_or_default(server: Any, names: Any) -> None:
    signed = raw_request(
        server.port, "POST", "/createSignalingChannel", json.dumps({"ChannelName": names()}).encode(),
        sigv4_header("eu-central-1"),
    )  # fmt: skip
    assert signed[0] == 200
    assert json.loads(signed[2])["ChannelARN"].startswith(f"arn:aws:kinesisvideo:eu-central-1:{ACCOUNT}:channel/")
    unsigned = raw_request(
        server.port, "POST", "/createSignalingChannel", json.dumps({"ChannelName": names()}).encode()
    )
    assert unsigned[0] == 200  # open mode; no scope -> the server's --region (default us-east-1)
    assert json.loads(unsigned[2])["ChannelARN"].startswith(f"arn:aws:kinesisvideo:us-east-1:{ACCOUNT}:channel/")


# -- raw HTTP --------------------------------------------------------------------------------------


def assert_aws_error(status: int, headers: dict[str, str], body: bytes, expected_status: int, code: str) -> None:
    assert status == expected_status, body
    assert headers["x-amzn-errortype"].split(":")[0] == code
    assert headers["content-type"].startswith("application/json")
    data = json.loads(body)
    assert data.get("__type", code).split("#")[-1] == code
    assert isinstance(data.get("message", data.get("Message")), str)


def test_malformed_json_is_serialization_exception(server: Any) -> None:
    for body in (b"{nope", b'{"ChannelName": "a",}', b"\xff\xfe\x00", b"[1, 2]", b'"a string"', b"null"):
        status, headers, data = raw_request(server.port, "POST", "/describeSignalingChannel", body)
        assert_aws_error(status, headers, data, 400, "SerializationException")


def test_unknown_path_is_unknown_operation(server: Any) -> None:
    for path in ("/nope", "/createsignalingchannel", "/CreateSignalingChannel", "/tagResource", "/"):
        status, headers, data = raw_request(server.port, "POST", path, b"{}")
        assert_aws_error(status, headers, data, 404, "UnknownOperationException")


def test_body_over_one_mib_is_413(server: Any) -> None:
    prefix, suffix = b'{"ChannelName":"', b'"}'
    exactly = prefix + b"a" * (1024 * 1024 - len(prefix) - len(suffix)) + suffix
    assert len(exactly) == 1024 * 1024
    status, headers, data = raw_request(server.port, "POST", "/createSignalingChannel", exactly)
    assert_aws_error(status, headers, data, 400, "InvalidArgumentException")  # too long a name, but read
    over = prefix + b"a" * (1024 * 1024 - len(prefix) - len(suffix) + 1) + suffix
    status, headers, data = raw_request(server.port, "POST", "/createSignalingChannel", over)
    assert status == 413
    assert "x-amzn-errortype" in headers
    status, _, _ = raw_request(server.port, "GET", "/health")
    assert status == 200


def _request_kinds(port: int, name: str) -> list[tuple[str, tuple[int, dict[str, str], bytes]]]:
    return [
        ("success", raw_request(port, "POST", "/createSignalingChannel", json.dumps({"ChannelName": name}).encode())),
        ("empty success", raw_request(port, "POST", "/listSignalingChannels", b"")),
        ("validation", raw_request(port, "POST", "/createSignalingChannel", b'{"ChannelName": "bad name"}')),
        ("duplicate", raw_request(port, "POST", "/createSignalingChannel", json.dumps({"ChannelName": name}).encode())),
        ("not found", raw_request(port, "POST", "/describeSignalingChannel", b'{"ChannelName": "nope-%s"}'
                                  % uuid.uuid4().hex.encode())),
        ("serialization", raw_request(port, "POST", "/describeSignalingChannel", b"{")),
        ("unknown", raw_request(port, "POST", "/nope", b"{}")),
        ("too large", raw_request(port, "POST", "/createSignalingChannel", b" " * (1024 * 1024 + 1))),
    ]  # fmt: skip


def test_every_response_has_request_id_and_date(server: Any, names: Any) -> None:
    seen: set[str] = set()
    for kind, (status, headers, _) in _request_kinds(server.port, names()):
        assert "date" in headers, kind
        parsed = datetime.datetime.strptime(headers["date"], "%a, %d %b %Y %H:%M:%S GMT")
        assert abs(parsed.replace(tzinfo=datetime.UTC).timestamp() - time.time()) < 300, kind
        request_id = headers.get("x-amzn-requestid", "")
        assert len(request_id) >= 8, (kind, status, request_id)
        assert request_id not in seen, kind
        seen.add(request_id)


def test_non_post_request_has_a_real_request_id(server: Any) -> None:
    ids = set()
    for method, path in (("GET", "/describeSignalingChannel"), ("PUT", "/nope"), ("DELETE", "/")):
        status, headers, data = raw_request(server.port, method, path)
        assert_aws_error(status, headers, data, 404, "UnknownOperationException")
        assert "date" in headers
        ids.add(headers.get("x-amzn-requestid", ""))
    assert len(ids) == 3 and all(len(i) >= 8 for i in ids), ids


def test_boto3_sees_request_id_and_status(kv: Any, names: Any) -> None:
    response = kv.create_signaling_channel(ChannelName=names())
    assert len(response["ResponseMetadata"]["RequestId"]) >= 8
    assert response["ResponseMetadata"]["HTTPStatusCode"] == 200
    with pytest.raises(kv.exceptions.ResourceNotFoundException) as e:
        kv.describe_signaling_channel(ChannelName=names("missing"))
    assert len(e.value.response["ResponseMetadata"]["RequestId"]) >= 8
    assert e.value.response["Error"]["Message"]
