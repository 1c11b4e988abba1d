"""Generic validation against the botocore models."""

from __future__ import annotations

from typing import Any

import pytest

from signalite.model.errors import InvalidArgumentException
from signalite.model.service import load_service, route_table
from signalite.model.validate import validate_input

CREATE = route_table()["/createSignalingChannel"]
TAG = route_table()["/TagResource"]
CREATE_STREAM = route_table()["/createStream"]
ARN = "arn:aws:kinesisvideo:us-west-2:111122223333:channel/demo/1700000000000"


def refused(op: Any, params: dict[str, Any]) -> str:
    with pytest.raises(InvalidArgumentException) as e:
        validate_input(op, params)
    return e.value.message


def test_route_table_has_every_path_exactly_as_modeled() -> None:
    table = route_table()
    assert table["/TagResource"].name == "TagResource"
    assert table["/ListTagsForResource"].name == "ListTagsForResource"
    assert "/tagResource" not in table
    assert table["/v1/get-ice-server-config"].service == "kinesis-video-signaling"
    assert table["/joinStorageSession"].service == "kinesis-video-webrtc-storage"


def test_error_status_comes_from_the_model() -> None:
    assert load_service("kinesisvideo").error_status["AccessDeniedException"] == 401
    assert load_service("kinesisvideo").error_status["ResourceNotFoundException"] == 404


def test_valid_request_passes() -> None:
    validate_input(CREATE, {"ChannelName": "a.b-c_1", "SingleMasterConfiguration": {"MessageTtlSeconds": 120}})


def test_required_member_is_named() -> None:
    assert "Value null at 'channelName' failed to satisfy constraint: Member must not be null" in refused(CREATE, {})


@pytest.mark.parametrize(
    ("params", "fragment"),
    [
        ({"ChannelName": "bad name"}, "at 'channelName'"),
        ({"ChannelName": ""}, "length greater than or equal to 1"),
        ({"ChannelName": "x" * 257}, "length less than or equal to 256"),
        ({"ChannelName": "x", "ChannelType": "STAR"}, "enum value set"),
        ({"ChannelName": "x", "SingleMasterConfiguration": {"MessageTtlSeconds": 4}}, "greater than or equal to 5"),
        ({"ChannelName": "x", "SingleMasterConfiguration": {"MessageTtlSeconds": 121}}, "less than or equal to 120"),
        ({"ChannelName": "x", "SingleMasterConfiguration": {"MessageTtlSeconds": "60"}}, "must be an integer"),
        ({"ChannelName": "x", "SingleMasterConfiguration": {"MessageTtlSeconds": True}}, "must be an integer"),
        ({"ChannelName": "x", "SingleMasterConfiguration": {"MessageTtlSeconds": 6.5}}, "must be an integer"),
        ({"ChannelName": 5}, "must be a string"),
        ({"ChannelName": "x", "Tags": {"k": "v"}}, "must be a list"),
        ({"ChannelName": "x", "Tags": [{"Key": "k", "Value": "v"}] * 51}, "less than or equal to 50"),
        ({"ChannelName": "x", "Tags": [{"Key": "<", "Value": "v"}]}, "'tags.1.member.key'"),
        ({"ChannelName": "x", "Tags": [{"Value": "v"}]}, "Value null at 'tags.1.member.key'"),
        ({"ChannelName": "x", "SingleMasterConfiguration": []}, "must be a structure"),
    ],
)
def test_each_constraint_is_enforced(params: dict[str, Any], fragment: str) -> None:
    assert fragment in refused(CREATE, params)


def test_tag_patterns_accept_unicode_letters_and_separators() -> None:
    validate_input(TAG, {"ResourceARN": ARN, "Tags": [{"Key": "étiquette 名前", "Value": "ça va=+-@:/"}]})


def test_map_shapes_check_keys_and_values() -> None:
    message = refused(CREATE_STREAM, {"StreamName": "s", "Tags": {"ok": "<bad>"}})
    assert "tags.ok" in message


def test_unknown_members_are_ignored() -> None:
    validate_input(CREATE, {"ChannelName": "x", "SomethingNew": {"nested": [1, 2]}})


def test_message_counts_and_caps_the_violations() -> None:
    message = refused(CREATE, {"ChannelName": "", "ChannelType": "X", "Tags": 3,
                               "SingleMasterConfiguration": {"MessageTtlSeconds": 1}})  # fmt: skip
    assert message.startswith("4 validation errors detected: ")
    assert message.count("failed to satisfy constraint") == 3


def test_long_values_are_shortened_in_messages() -> None:
    message = refused(CREATE, {"ChannelName": "é" * 300})
    assert "..." in message and len(message) < 300
