from signalite.model.arn import make_arn, parse_arn


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
