from hypothesis import given
from hypothesis import strategies as st

from signalite.model.arn import arn_owner, make_arn, parse_arn


def test_make_and_parse_round_trip() -> None:
    arn = make_arn("channel", "us-west-2", "111122223333", "demo", 1700000000.1234)
    assert arn == "arn:aws:kinesisvideo:us-west-2:111122223333:channel/demo/1700000000123"
    parsed = parse_arn(arn)
    assert parsed is not None
    assert (parsed.region, parsed.account, parsed.kind, parsed.name) == ("us-west-2", "111122223333", "channel", "demo")
    assert str(parsed) == arn


def test_parse_rejects_other_shapes() -> None:
    assert parse_arn("arn:aws:kinesisvideo:us-west-2:1:channel/demo") is None
    assert parse_arn("arn:aws:s3:us-west-2:1:channel/demo/1") is None
    assert parse_arn("arn:aws:kinesisvideo:us-west-2:1:channel/de mo/1") is None


def test_arn_owner_agrees_with_parse_arn() -> None:
    samples = [
        "arn:aws:kinesisvideo:us-west-2:111122223333:channel/demo/1700000000123",
        "arn:aws:kinesisvideo:us-west-2:111122223333:stream/demo/1",
        "arn:aws-cn:kinesisvideo:cn-north-1:1:channel/a.b_c-d/0",
        "arn:aws:kinesisvideo:US-WEST-2:111122223333:channel/demo/1",
        "arn:aws:kinesisvideo:us-west-2:111122223333:channel/demo",
        "arn:aws:kinesisvideo:us-west-2:111122223333:channel/demo/1/2",
        "arn:aws:kinesisvideo:us-west-2:1111x:channel/demo/1",
        "arn:aws:kinesisvideo:us-west-2:111122223333:channel/de mo/1",
        "arn:aws:kinesisvideo:us-west-2:111122223333:channel/demo/1\n",
        "",
        "arn",
    ]
    for text in samples:
        parsed = parse_arn(text)
        expected = None if parsed is None else (parsed.kind, parsed.region, parsed.account)
        assert arn_owner(text) == expected, text


@given(
    st.from_regex(r"arn:[a-z0-9-]{0,4}:kinesisvideo:[a-zA-Z0-9-]{0,4}:[0-9x]{0,3}:[a-z]{0,7}/[a-z .]{0,3}/[0-9]{0,2}")
)
def test_arn_owner_agrees_with_parse_arn_on_generated_text(text: str) -> None:
    parsed = parse_arn(text)
    assert arn_owner(text) == (None if parsed is None else (parsed.kind, parsed.region, parsed.account))
