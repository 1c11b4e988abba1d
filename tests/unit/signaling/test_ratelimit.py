import pytest

from signalite.signaling.ratelimit import TokenBucket


def test_starts_full_then_refuses():
    b = TokenBucket(rate=3.0, burst=3.0)
    assert [b.take(10.0) for _ in range(4)] == [True, True, True, False]


def test_refills_at_rate():
    b = TokenBucket(rate=2.0, burst=2.0)
    assert b.take(0.0) and b.take(0.0)
    assert not b.take(0.25)  # half a token
    assert b.take(0.5)  # one token after 1/rate seconds
    assert not b.take(0.5)
    assert b.take(1.5) and b.take(1.5)
    assert not b.take(1.5)


def test_refill_is_capped_at_burst():
    b = TokenBucket(rate=5.0, burst=5.0)
    for _ in range(5):
        assert b.take(0.0)
    # a long quiet period refills at most `burst` tokens
    assert sum(b.take(1000.0) for _ in range(20)) == 5


def test_time_going_backwards_mints_nothing():
    b = TokenBucket(rate=1.0, burst=1.0)
    assert b.take(100.0)
    assert not b.take(50.0)
    assert not b.take(100.0)  # the step back did not move the reference time either
    assert b.take(101.0)


def test_peek_does_not_spend_and_retry_after():
    b = TokenBucket(rate=4.0, burst=2.0)
    assert b.peek(0.0) == 2.0
    assert b.peek(0.0) == 2.0
    assert b.retry_after(0.0) == 0.0
    assert b.take(0.0) and b.take(0.0)
    assert b.peek(0.0) == 0.0
    assert b.retry_after(0.0) == pytest.approx(0.25)
    assert b.retry_after(0.0, cost=2.0) == pytest.approx(0.5)
    assert b.peek(0.125) == pytest.approx(0.5)


def test_cost():
    b = TokenBucket(rate=1.0, burst=10.0)
    assert b.take(0.0, cost=7.0)
    assert not b.take(0.0, cost=4.0)
    assert b.take(0.0, cost=3.0)


@pytest.mark.parametrize(("rate", "burst"), [(0.0, 1.0), (-1.0, 1.0), (1.0, 0.5), (float("nan"), 1.0)])
def test_rejects_nonsense(rate: float, burst: float):
    with pytest.raises(ValueError):
        TokenBucket(rate, burst)
