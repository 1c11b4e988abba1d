"""`Policy.allows` remembers, per action, which statements cover it: the verdicts must not change.

Checked against the statements evaluated one by one (`_Statement.matches`, IAM's rule: a matching
Deny wins, else a matching Allow allows), asked twice so the second answer comes from the memo,
with actions in any order and case, NotAction statements, and more actions than the memo holds.
"""

from __future__ import annotations

from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from signalite.auth import policy as policy_module
from signalite.auth.policy import Policy, compile_policy

ACCOUNT = "111122223333"
CAM = f"arn:aws:kinesisvideo:us-west-2:{ACCOUNT}:channel/cam-1/1700000000000"
DOOR = f"arn:aws:kinesisvideo:us-west-2:{ACCOUNT}:channel/door/1700000000002"
RESOURCES = [CAM, DOOR, "*", f"arn:aws:kinesisvideo:eu-west-1:{ACCOUNT}:channel/cam-1/1", "arn:x"]
ACTIONS = [
    "kinesisvideo:ConnectAsMaster",
    "kinesisvideo:ConnectAsViewer",
    "kinesisvideo:DescribeSignalingChannel",
    "KINESISVIDEO:describesignalingchannel",
    "kinesisvideo:GetSignalingChannelEndpoint",
    "kinesisvideo:TagResource",
    "s3:GetObject",
    "",
]


def reference(policy: Policy, action: str, resource: str) -> bool:
    """IAM's rule over the compiled statements, one by one, with no memo."""
    hits = [
        st
        for st in policy.statements
        if any(p.fullmatch(action) for p in st.actions) != st.negate_actions
        and any(p.fullmatch(resource) for p in st.resources)
    ]
    return bool(hits) and all(st.allow for st in hits)


_statement = st.builds(
    lambda effect, key, action, resource: {"Effect": effect, key: action, "Resource": resource},
    st.sampled_from(["Allow", "Deny"]),
    st.sampled_from(["Action", "NotAction"]),
    st.sampled_from(
        [
            "*",
            "kinesisvideo:*",
            "kinesisvideo:Connect*",
            "kinesisvideo:ConnectAsViewer",
            ["kinesisvideo:DescribeSignalingChannel", "kinesisvideo:Get*"],
            "kinesisvideo:*Tag*",
            "KinesisVideo:describe?ignalingChannel",
        ]
    ),
    st.sampled_from(["*", CAM, "arn:aws:kinesisvideo:*:*:channel/cam-*", [DOOR, CAM], "arn:?"]),
)


@settings(max_examples=300, deadline=None)
@given(
    statements=st.lists(_statement, min_size=1, max_size=5),
    asks=st.lists(st.tuples(st.sampled_from(ACTIONS), st.sampled_from(RESOURCES)), min_size=1, max_size=30),
)
def test_memoised_verdicts_equal_statement_by_statement(statements: list[dict[str, Any]], asks: Any) -> None:
    policy = compile_policy({"Statement": statements})
    for action, resource in asks + asks:
        assert policy.allows(action, resource) is reference(policy, action, resource)


def test_the_memo_is_bounded_and_not_part_of_equality() -> None:
    document = {"Statement": [{"Effect": "Allow", "Action": "kinesisvideo:Get*", "Resource": CAM}]}
    policy, twin = compile_policy(document), compile_policy(document)
    for i in range(policy_module._MAX_ACTIONS * 2 + 5):
        assert policy.allows(f"kinesisvideo:Get{i}", CAM)
        assert not policy.allows(f"kinesisvideo:Put{i}", CAM)
        assert len(policy._by_action) <= policy_module._MAX_ACTIONS
    assert policy == twin and hash(policy) == hash(twin)
    assert "_by_action" not in repr(policy)
