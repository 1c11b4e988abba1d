"""IAM-style policy evaluation (`signalite.auth.policy`): pure, no server.

The rules checked here are IAM's: an explicit Deny that matches wins whatever the statement order; an
Allow that matches allows; anything else is an implicit deny. `*` and `?` are wildcards in actions and
resources; actions compare case-insensitively, resources case-sensitively. No policy at all means full
access (account isolation is enforced elsewhere). The server-side consequences (401/403 and the error
names) are tested in tests/integration/test_strict_policy.py.
"""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from signalite.auth.policy import (
    CONNECT_AS_MASTER,
    CONNECT_AS_VIEWER,
    Policy,
    PolicyError,
    action_name,
    compile_policy,
    evaluate,
)

ACCOUNT = "111122223333"
CAM = f"arn:aws:kinesisvideo:us-west-2:{ACCOUNT}:channel/cam-1/1700000000000"
CAM12 = f"arn:aws:kinesisvideo:us-west-2:{ACCOUNT}:channel/cam-12/1700000000001"
DOOR = f"arn:aws:kinesisvideo:us-west-2:{ACCOUNT}:channel/door/1700000000002"
OTHER_REGION = f"arn:aws:kinesisvideo:eu-west-1:{ACCOUNT}:channel/cam-1/1700000000003"
STREAM = f"arn:aws:kinesisvideo:us-west-2:{ACCOUNT}:stream/cam-1/1700000000004"

# Every action a signalite policy can name (kvs-protocol.md §7.5 and the op-name convention).
ACTIONS = [
    "ConnectAsMaster",
    "ConnectAsViewer",
    "CreateSignalingChannel",
    "DeleteSignalingChannel",
    "DescribeSignalingChannel",
    "DescribeMediaStorageConfiguration",
    "GetSignalingChannelEndpoint",
    "GetIceServerConfig",
    "SendAlexaOfferToMaster",
    "ListSignalingChannels",
    "ListTagsForResource",
    "TagResource",
    "UntagResource",
    "UpdateSignalingChannel",
    "UpdateMediaStorageConfiguration",
]


def policy(*statements: dict[str, Any]) -> Policy:
    return compile_policy({"Version": "2012-10-17", "Statement": list(statements)})


def allow(action: Any, resource: Any = "*") -> dict[str, Any]:
    return {"Effect": "Allow", "Action": action, "Resource": resource}


def deny(action: Any, resource: Any = "*") -> dict[str, Any]:
    return {"Effect": "Deny", "Action": action, "Resource": resource}


def kv(op: str) -> str:
    return f"kinesisvideo:{op}"


# ----------------------------------------------------------------------------- names


def test_action_names_follow_the_kinesisvideo_prefix() -> None:
    assert action_name("DescribeSignalingChannel") == "kinesisvideo:DescribeSignalingChannel"
    assert action_name(CONNECT_AS_MASTER) == "kinesisvideo:ConnectAsMaster"
    assert action_name(CONNECT_AS_VIEWER) == "kinesisvideo:ConnectAsViewer"


# ----------------------------------------------------------------------------- allow / deny


def test_no_policy_allows_everything() -> None:
    for op in ACTIONS:
        assert evaluate(None, kv(op), [CAM, DOOR, "*"])


@pytest.mark.parametrize("granted", ACTIONS)
def test_single_action_grant_allows_exactly_that_action(granted: str) -> None:
    p = policy(allow(kv(granted)))
    for op in ACTIONS:
        assert p.allows(kv(op), CAM) is (op == granted), op


@pytest.mark.parametrize("denied", ACTIONS)
def test_explicit_deny_of_one_action_under_a_star_allow(denied: str) -> None:
    for statements in ((allow("*"), deny(kv(denied))), (deny(kv(denied)), allow("*"))):  # order is irrelevant
        p = policy(*statements)
        for op in ACTIONS:
            assert p.allows(kv(op), CAM) is (op != denied), (op, statements)


def test_implicit_deny_when_nothing_matches() -> None:
    p = policy(allow(kv("DescribeSignalingChannel"), CAM))
    assert p.allows(kv("DescribeSignalingChannel"), CAM)
    assert not p.allows(kv("DescribeSignalingChannel"), DOOR)  # other resource
    assert not p.allows(kv("ListSignalingChannels"), "*")  # other action
    assert not p.allows("s3:GetObject", CAM)  # other service


def test_deny_wins_over_any_number_of_allows() -> None:
    p = policy(allow("*"), allow(kv("ConnectAsViewer"), CAM), allow("kinesisvideo:Connect*"), deny("*", CAM))
    assert not p.allows(kv("ConnectAsViewer"), CAM)
    assert p.allows(kv("ConnectAsViewer"), DOOR)


def test_deny_only_policy_allows_nothing() -> None:
    p = policy(deny(kv("DeleteSignalingChannel")))
    for op in ACTIONS:
        assert not p.allows(kv(op), CAM)


def test_deny_on_other_resource_does_not_affect_this_one() -> None:
    p = policy(allow("kinesisvideo:*"), deny("kinesisvideo:*", "arn:aws:kinesisvideo:*:*:channel/door/*"))
    assert p.allows(kv("DescribeSignalingChannel"), CAM)
    assert not p.allows(kv("DescribeSignalingChannel"), DOOR)


# ----------------------------------------------------------------------------- wildcards


@pytest.mark.parametrize(
    ("pattern", "expected"),
    [
        ("*", set(ACTIONS)),
        ("kinesisvideo:*", set(ACTIONS)),
        ("kinesisvideo:Describe*", {"DescribeSignalingChannel", "DescribeMediaStorageConfiguration"}),
        ("kinesisvideo:List*", {"ListSignalingChannels", "ListTagsForResource"}),
        ("kinesisvideo:Update*", {"UpdateSignalingChannel", "UpdateMediaStorageConfiguration"}),
        ("kinesisvideo:*Tag*", {"ListTagsForResource", "TagResource", "UntagResource"}),
        ("kinesisvideo:ConnectAs*", {"ConnectAsMaster", "ConnectAsViewer"}),
        ("kinesisvideo:ConnectAs??????", {"ConnectAsMaster", "ConnectAsViewer"}),
        ("kinesisvideo:ConnectAs?????", set()),  # `?` is exactly one character
        ("kinesisvideo:Get*", {"GetSignalingChannelEndpoint", "GetIceServerConfig"}),
        (
            "kinesisvideo:*SignalingChannel",
            {
                "CreateSignalingChannel",
                "DeleteSignalingChannel",
                "DescribeSignalingChannel",
                "UpdateSignalingChannel",
            },
        ),
        ("kinesisvideo:Delete*", {"DeleteSignalingChannel"}),
        ("kinesisvideo:Send*", {"SendAlexaOfferToMaster"}),
        ("kinesisvideo:Create*", {"CreateSignalingChannel"}),
        ("kinesisvideo:Tag*", {"TagResource"}),
        ("kinesisvideo", set()),  # a prefix alone names no action
        ("kinesisvideo:", set()),
        ("kinesis*:Describe*", {"DescribeSignalingChannel", "DescribeMediaStorageConfiguration"}),
    ],
)
def test_action_wildcards(pattern: str, expected: set[str]) -> None:
    p = policy(allow(pattern))
    assert {op for op in ACTIONS if p.allows(kv(op), CAM)} == expected


def test_actions_match_case_insensitively() -> None:
    for pattern in ("KINESISVIDEO:CONNECTASVIEWER", "KinesisVideo:connectasviewer", "kinesisVIDEO:Connect*"):
        p = policy(allow(pattern))
        assert p.allows(kv("ConnectAsViewer"), CAM), pattern
        assert p.allows("KinesisVideo:ConnectAsViewer", CAM), pattern


def test_action_list_matches_any_member() -> None:
    p = policy(allow([kv("DescribeSignalingChannel"), kv("ConnectAsMaster")]))
    assert p.allows(kv("DescribeSignalingChannel"), CAM)
    assert p.allows(kv("ConnectAsMaster"), CAM)
    assert not p.allows(kv("ConnectAsViewer"), CAM)


@pytest.mark.parametrize(
    ("resource", "matches"),
    [
        ("*", {CAM, CAM12, DOOR, OTHER_REGION, STREAM, "*"}),
        ("arn:aws:kinesisvideo:*:*:channel/*", {CAM, CAM12, DOOR, OTHER_REGION}),
        (f"arn:aws:kinesisvideo:us-west-2:{ACCOUNT}:channel/*", {CAM, CAM12, DOOR}),
        (f"arn:aws:kinesisvideo:us-west-2:{ACCOUNT}:channel/cam-*", {CAM, CAM12}),
        (f"arn:aws:kinesisvideo:*:{ACCOUNT}:channel/cam-*/*", {CAM, CAM12, OTHER_REGION}),
        (f"arn:aws:kinesisvideo:us-west-2:{ACCOUNT}:channel/cam-?/*", {CAM}),
        (f"arn:aws:kinesisvideo:us-west-2:{ACCOUNT}:channel/cam-??/*", {CAM12}),
        (CAM, {CAM}),
        (f"arn:aws:kinesisvideo:us-west-2:{ACCOUNT}:stream/*", {STREAM}),
        ("arn:aws:kinesisvideo:us-west-2:999999999999:channel/*", set()),  # another account
        (f"arn:aws:kinesisvideo:us-west-2:{ACCOUNT}:channel/CAM-*", set()),  # resources are case-sensitive
        (f"ARN:AWS:KINESISVIDEO:us-west-2:{ACCOUNT}:channel/*", set()),
        (f"arn:aws:kinesisvideo:us-west-2:{ACCOUNT}:channel/cam-1", set()),  # no implicit trailing wildcard
    ],
)
def test_resource_wildcards(resource: str, matches: set[str]) -> None:
    p = policy(allow("kinesisvideo:*", resource))
    for candidate in (CAM, CAM12, DOOR, OTHER_REGION, STREAM, "*"):
        assert p.allows(kv("DescribeSignalingChannel"), candidate) is (candidate in matches), (resource, candidate)


def test_resource_list_and_missing_resource() -> None:
    p = policy(allow("kinesisvideo:*", [CAM, DOOR]))
    assert p.allows(kv("TagResource"), CAM) and p.allows(kv("TagResource"), DOOR)
    assert not p.allows(kv("TagResource"), CAM12)
    no_resource = compile_policy({"Statement": [{"Effect": "Allow", "Action": "kinesisvideo:*"}]})
    assert no_resource.allows(kv("TagResource"), CAM12)  # missing Resource means "*"


def test_list_action_needs_a_star_resource() -> None:
    # ListSignalingChannels has no resource (checked against "*"), as in IAM.
    scoped = policy(allow("kinesisvideo:*", "arn:aws:kinesisvideo:*:*:channel/*"))
    assert not scoped.allows(kv("ListSignalingChannels"), "*")
    assert policy(allow(kv("ListSignalingChannels"), "*")).allows(kv("ListSignalingChannels"), "*")


def test_regex_metacharacters_in_patterns_are_literal() -> None:
    p = policy(allow("kinesisvideo:Describe.*", "arn:aws:kinesisvideo:us-west-2:1+:channel/[a]/(x)|y"))
    assert not p.allows(kv("DescribeSignalingChannel"), "arn:aws:kinesisvideo:us-west-2:1+:channel/[a]/(x)|y")
    assert p.allows("kinesisvideo:Describe.Anything", "arn:aws:kinesisvideo:us-west-2:1+:channel/[a]/(x)|y")
    assert not p.allows("kinesisvideo:Describe.Anything", "arn:aws:kinesisvideo:us-west-2:11:channel/a/x")


def test_wildcards_span_slashes_and_newlines() -> None:
    p = policy(allow("kinesisvideo:*", "arn:aws:kinesisvideo:*:channel/*"))
    assert p.allows(kv("TagResource"), "arn:aws:kinesisvideo:us-west-2:1:channel/a/b/c")
    assert p.allows(kv("TagResource"), "arn:aws:kinesisvideo:x\ny:channel/z")


# ----------------------------------------------------------------------------- NotAction


def test_not_action_allows_everything_else() -> None:
    p = compile_policy({"Statement": [{"Effect": "Allow", "NotAction": "kinesisvideo:Delete*", "Resource": "*"}]})
    assert not p.allows(kv("DeleteSignalingChannel"), CAM)
    assert p.allows(kv("DescribeSignalingChannel"), CAM)
    assert p.allows(kv("ConnectAsMaster"), CAM)


def test_not_action_deny() -> None:
    p = compile_policy(
        {
            "Statement": [
                {"Effect": "Allow", "Action": "*", "Resource": "*"},
                {"Effect": "Deny", "NotAction": ["kinesisvideo:Describe*", "kinesisvideo:List*"], "Resource": "*"},
            ]
        }
    )
    assert p.allows(kv("DescribeSignalingChannel"), CAM)
    assert p.allows(kv("ListSignalingChannels"), "*")
    assert not p.allows(kv("CreateSignalingChannel"), CAM)
    assert not p.allows(kv("ConnectAsViewer"), CAM)


# ----------------------------------------------------------------------------- evaluate()


def test_evaluate_needs_every_resource() -> None:
    p = policy(allow("kinesisvideo:*", "arn:aws:kinesisvideo:*:*:channel/cam-*"))
    assert evaluate(p, kv("TagResource"), [CAM, CAM12])
    assert not evaluate(p, kv("TagResource"), [CAM, DOOR])


def test_single_statement_object_is_accepted() -> None:
    p = compile_policy({"Statement": {"Effect": "Allow", "Action": "kinesisvideo:ConnectAsViewer"}})
    assert p.allows(kv("ConnectAsViewer"), CAM)
    assert not p.allows(kv("ConnectAsMaster"), CAM)


# ----------------------------------------------------------------------------- malformed documents


@pytest.mark.parametrize(
    "document",
    [
        [],
        "Allow everything",
        {},
        {"Statement": []},
        {"Statement": "Allow"},
        {"Statement": [42]},
        {"Statement": [{"Action": "*", "Resource": "*"}]},  # no Effect
        {"Statement": [{"Effect": "allow", "Action": "*"}]},  # Effect is case-sensitive in IAM
        {"Statement": [{"Effect": "Maybe", "Action": "*"}]},
        {"Statement": [{"Effect": "Allow", "Resource": "*"}]},  # neither Action nor NotAction
        {"Statement": [{"Effect": "Allow", "Action": "*", "NotAction": "x"}]},  # both
        {"Statement": [{"Effect": "Allow", "Action": []}]},
        {"Statement": [{"Effect": "Allow", "Action": [1, 2]}]},
        {"Statement": [{"Effect": "Allow", "Action": None}]},
        {"Statement": [{"Effect": "Allow", "Action": "*", "Resource": []}]},
        {"Statement": [{"Effect": "Allow", "Action": "*", "Resource": 7}]},
        {"Statement": [{"Effect": "Allow", "Action": "*"}, {"Effect": "Deny"}]},  # a later bad statement
    ],
)
def test_malformed_policies_are_refused(document: Any) -> None:
    with pytest.raises(PolicyError):
        compile_policy(document)


def test_policy_error_names_the_statement() -> None:
    with pytest.raises(PolicyError, match="statement 2"):
        compile_policy({"Statement": [allow("*"), {"Effect": "Perhaps", "Action": "*"}]})


# ----------------------------------------------------------------------------- properties


def _reference_glob(pattern: str, text: str, *, ignore_case: bool) -> bool:
    """IAM glob semantics, by dynamic programming (no regular expressions): `*` any run, `?` one character."""
    if ignore_case:
        pattern, text = pattern.lower(), text.lower()
    # reachable[j]: the pattern prefix consumed so far can match text[:j]
    reachable = [True] + [False] * len(text)
    for ch in pattern:
        if ch == "*":
            for j in range(1, len(text) + 1):
                reachable[j] = reachable[j] or reachable[j - 1]
        else:
            reachable = [False] + [reachable[j] and (ch == "?" or ch == text[j]) for j in range(len(text))]
    return reachable[-1]


_text = st.text(alphabet=st.sampled_from("ab:/-*?.[]()+\\^$|{}Aé\n"), max_size=12)


@settings(max_examples=400, deadline=None)
@given(pattern=_text, action=_text, resource=_text)
def test_glob_matches_a_reference_implementation(pattern: str, action: str, resource: str) -> None:
    p = policy(allow(pattern, pattern))
    expected = _reference_glob(pattern, action, ignore_case=True) and _reference_glob(
        pattern, resource, ignore_case=False
    )
    assert p.allows(action, resource) is expected


_statement = st.fixed_dictionaries(
    {
        "Effect": st.sampled_from(["Allow", "Deny"]),
        "Action": st.sampled_from(
            [
                "*",
                "kinesisvideo:*",
                "kinesisvideo:Connect*",
                kv("ConnectAsViewer"),
                kv("DescribeSignalingChannel"),
                "kinesisvideo:*Tag*",
            ]
        ),
        "Resource": st.sampled_from(["*", CAM, "arn:aws:kinesisvideo:*:*:channel/cam-*", DOOR]),
    }
)


@settings(max_examples=400, deadline=None)
@given(statements=st.lists(_statement, min_size=1, max_size=6), order=st.randoms(use_true_random=False))
def test_outcome_is_independent_of_statement_order_and_deny_wins(statements: list[dict[str, Any]], order: Any) -> None:
    shuffled = list(statements)
    order.shuffle(shuffled)
    p, q = policy(*statements), policy(*shuffled)
    for op in ACTIONS:
        for resource in (CAM, CAM12, DOOR):
            verdict = p.allows(kv(op), resource)
            assert verdict == q.allows(kv(op), resource)
            hits = _matches(statements, op, resource)
            matched_deny = any(s["Effect"] == "Deny" and hit for s, hit in zip(statements, hits, strict=True))
            matched_allow = any(s["Effect"] == "Allow" and hit for s, hit in zip(statements, hits, strict=True))
            assert verdict is (matched_allow and not matched_deny)


def _matches(statements: list[dict[str, Any]], op: str, resource: str) -> list[bool]:
    """Whether each statement matches (action and resource), judged by turning it into an Allow."""
    return [policy({**s, "Effect": "Allow"}).allows(kv(op), resource) for s in statements]
