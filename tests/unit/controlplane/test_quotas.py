"""REST request-rate quotas (`signalite.controlplane.quotas`): AWS's values, token buckets, pure `now`.

The integration side (real requests, the injected clock, per-account / per-channel keys as the web layer
chooses them) is tests/integration/test_strict_quotas.py.
"""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from signalite.controlplane import quotas as quotas_module
from signalite.controlplane.quotas import AWS_RATES, RateTable, RequestQuotas
from signalite.model.errors import ClientLimitExceededException

T = 1_700_000_000.0
ACCOUNT = "111122223333"
OTHER_ACCOUNT = "444455556666"
CH1 = "arn:aws:kinesisvideo:us-west-2:111122223333:channel/one/1"
CH2 = "arn:aws:kinesisvideo:us-west-2:111122223333:channel/two/2"

# kvs-protocol.md §5.7: (per-account TPS, per-channel TPS).
EXPECTED_AWS = {
    "CreateSignalingChannel": (50, None),
    "DeleteSignalingChannel": (50, 5),
    "DescribeMediaStorageConfiguration": (50, 5),
    "DescribeSignalingChannel": (300, 5),
    "GetSignalingChannelEndpoint": (300, None),
    "ListSignalingChannels": (50, None),
    "ListTagsForResource": (50, 5),
    "TagResource": (50, 5),
    "UntagResource": (50, 5),
    "UpdateMediaStorageConfiguration": (10, 5),
    "UpdateSignalingChannel": (50, 5),
    "SendAlexaOfferToMaster": (100, 5),
}


def passes(q: RequestQuotas, op: str, account: str, channel: str | None, now: float) -> bool:
    try:
        q.check(op, account, channel, now)
    except ClientLimitExceededException:
        return False
    return True


def count_passing(q: RequestQuotas, op: str, account: str, channel: str | None, now: float, tries: int) -> int:
    return sum(passes(q, op, account, channel, now) for _ in range(tries))


def test_aws_table_has_the_documented_values() -> None:
    assert dict(AWS_RATES) == EXPECTED_AWS
    assert dict(RateTable.for_mode("aws").rates) == EXPECTED_AWS


def test_relaxed_is_ten_times_aws_and_off_is_empty() -> None:
    relaxed = RateTable.for_mode("relaxed").rates
    assert set(relaxed) == set(EXPECTED_AWS)
    for op, (account, channel) in EXPECTED_AWS.items():
        assert relaxed[op] == (account * 10, None if channel is None else channel * 10)
    assert dict(RateTable.for_mode("off").rates) == {}


@pytest.mark.parametrize(("op", "rates"), sorted(EXPECTED_AWS.items()))
def test_each_operation_allows_its_burst_then_refuses(op: str, rates: tuple[int, int | None]) -> None:
    account_rate, channel_rate = rates
    q = RequestQuotas(RateTable.for_mode("aws"))
    limit = channel_rate if channel_rate is not None else account_rate
    assert count_passing(q, op, ACCOUNT, CH1, T, limit) == limit
    with pytest.raises(ClientLimitExceededException) as info:
        q.check(op, ACCOUNT, CH1, T)
    assert info.value.status == 400
    assert info.value.code == "ClientLimitExceededException"
    assert op in info.value.message


def test_per_channel_bucket_refills_at_the_rate() -> None:
    q = RequestQuotas(RateTable.for_mode("aws"))
    op = "DescribeSignalingChannel"
    assert count_passing(q, op, ACCOUNT, CH1, T, 10) == 5
    assert count_passing(q, op, ACCOUNT, CH1, T + 0.1, 10) == 0  # half a token
    assert count_passing(q, op, ACCOUNT, CH1, T + 0.2, 10) == 1  # 1/5 s per token
    assert count_passing(q, op, ACCOUNT, CH1, T + 1.2, 10) == 5
    assert count_passing(q, op, ACCOUNT, CH1, T + 100, 10) == 5  # never more than the burst


def test_channels_accounts_and_operations_have_separate_buckets() -> None:
    q = RequestQuotas(RateTable.for_mode("aws"))
    assert count_passing(q, "DescribeSignalingChannel", ACCOUNT, CH1, T, 6) == 5
    assert count_passing(q, "DescribeSignalingChannel", ACCOUNT, CH2, T, 6) == 5  # another channel
    assert count_passing(q, "TagResource", ACCOUNT, CH1, T, 6) == 5  # another operation
    assert count_passing(q, "ListTagsForResource", ACCOUNT, CH1, T, 6) == 5
    assert count_passing(q, "CreateSignalingChannel", ACCOUNT, None, T, 51) == 50
    assert count_passing(q, "CreateSignalingChannel", OTHER_ACCOUNT, None, T, 51) == 50  # another account


def test_account_bucket_spans_channels() -> None:
    q = RequestQuotas(RateTable.for_mode("aws"))
    op = "UpdateMediaStorageConfiguration"  # 10 per account, 5 per channel
    channels = [f"arn:aws:kinesisvideo:us-west-2:{ACCOUNT}:channel/c{i}/1" for i in range(4)]
    results = [passes(q, op, ACCOUNT, channels[i % 4], T) for i in range(12)]
    assert sum(results) == 10
    assert results[:10] == [True] * 10
    # another account is not affected
    assert passes(q, op, OTHER_ACCOUNT, channels[0], T)


def test_refusal_by_one_bucket_spends_nothing_from_the_other() -> None:
    q = RequestQuotas(RateTable.for_mode("aws"))
    op = "UpdateMediaStorageConfiguration"  # 10 per account, 5 per channel
    assert count_passing(q, op, ACCOUNT, CH1, T, 20) == 5  # the channel bucket stops it at 5 ...
    # ... and the 15 refused calls took nothing from the account bucket: 5 more fit on another channel.
    assert count_passing(q, op, ACCOUNT, CH2, T, 20) == 5


def test_refusal_by_the_account_bucket_spends_nothing_from_the_channel_bucket() -> None:
    q = RequestQuotas(RateTable.for_mode("aws"))
    op = "UpdateMediaStorageConfiguration"
    others = [f"arn:aws:kinesisvideo:us-west-2:{ACCOUNT}:channel/o{i}/1" for i in range(2)]
    assert count_passing(q, op, ACCOUNT, others[0], T, 5) == 5
    assert count_passing(q, op, ACCOUNT, others[1], T, 5) == 5
    assert count_passing(q, op, ACCOUNT, CH1, T, 5) == 0  # account bucket empty
    # one second later the account has 10 tokens again and CH1's bucket is still full (5)
    assert count_passing(q, op, ACCOUNT, CH1, T + 1, 10) == 5


def test_operation_without_channel_skips_the_channel_bucket() -> None:
    q = RequestQuotas(RateTable.for_mode("aws"))
    assert count_passing(q, "DescribeSignalingChannel", ACCOUNT, None, T, 400) == 300


def test_unknown_operations_and_off_mode_are_unlimited() -> None:
    q = RequestQuotas(RateTable.for_mode("aws"))
    assert count_passing(q, "GetIceServerConfig", ACCOUNT, CH1, T, 1000) == 1000  # no quota of its own
    off = RequestQuotas(RateTable.for_mode("off"))
    for op in EXPECTED_AWS:
        assert count_passing(off, op, ACCOUNT, CH1, T, 200) == 200


def test_relaxed_mode_limits_at_ten_times() -> None:
    q = RequestQuotas(RateTable.for_mode("relaxed"))
    assert count_passing(q, "DescribeSignalingChannel", ACCOUNT, CH1, T, 60) == 50
    assert count_passing(q, "CreateSignalingChannel", ACCOUNT, None, T, 600) == 500


def test_time_running_backwards_mints_no_tokens() -> None:
    q = RequestQuotas(RateTable.for_mode("aws"))
    op = "DescribeSignalingChannel"
    assert count_passing(q, op, ACCOUNT, CH1, T, 5) == 5
    assert count_passing(q, op, ACCOUNT, CH1, T - 50, 5) == 0
    assert count_passing(q, op, ACCOUNT, CH1, T, 5) == 0


def test_fractional_rates_still_allow_one_call() -> None:
    q = RequestQuotas(RateTable({"Op": (0.5, 0.25)}))
    assert passes(q, "Op", ACCOUNT, CH1, T)
    assert not passes(q, "Op", ACCOUNT, CH1, T)
    assert not passes(q, "Op", ACCOUNT, CH1, T + 2)  # channel bucket: 0.5 token
    assert passes(q, "Op", ACCOUNT, CH1, T + 4)


def test_bucket_memory_is_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(quotas_module, "_MAX_BUCKETS", 100)
    q = RequestQuotas(RateTable.for_mode("aws"))
    for i in range(1000):
        q.check("DescribeSignalingChannel", ACCOUNT, f"arn:aws:kinesisvideo:us-west-2:1:channel/c{i}/1", T)
    assert len(q._buckets) <= 100
    # a pruned bucket comes back full: never a wrongful refusal
    assert count_passing(q, "DescribeSignalingChannel", ACCOUNT, CH1, T, 5) == 5


@settings(max_examples=200, deadline=None)
@given(gaps=st.lists(st.floats(min_value=0, max_value=0.5, allow_nan=False), min_size=1, max_size=80))
def test_never_more_than_burst_plus_rate_times_elapsed(gaps: list[float]) -> None:
    q = RequestQuotas(RateTable.for_mode("aws"))
    now, passed = T, 0
    for gap in gaps:
        now += gap
        passed += passes(q, "DescribeSignalingChannel", ACCOUNT, CH1, now)
    assert passed <= 5 + 5 * (now - T) + 1e-9
    assert passed >= min(len(gaps), 5)  # the first five always pass
