from pathlib import Path

import pytest

from signalite.config import load_settings, reload_settings


def test_defaults() -> None:
    s = load_settings({}, environ={})
    assert (s.host, s.port, s.region, s.account_id, s.limits) == ("127.0.0.1", 4567, "us-east-1", "000000000000", "aws")
    assert s.base_url == "http://127.0.0.1:4567"
    assert s.wss_url == "ws://127.0.0.1:4567"
    assert s.database_path == Path(".signalite/signalite.db")


def test_environment_then_flags_override() -> None:
    env = {"SIGNALITE_PORT": "9000", "SIGNALITE_REGION": "eu-west-1", "SIGNALITE_TURN_URI": "turn:a:3478, turn:b:3478"}
    s = load_settings({}, environ=env)
    assert (s.port, s.region, s.turn_uri) == (9000, "eu-west-1", ("turn:a:3478", "turn:b:3478"))
    assert load_settings({"port": "9100"}, environ=env).port == 9100


def test_public_url_and_tls_shape_the_endpoints() -> None:
    s = load_settings({"public_url": "https://signal.example.com/kvs/"}, environ={})
    assert s.base_url == "https://signal.example.com/kvs"
    assert s.wss_url == "wss://signal.example.com/kvs"
    assert load_settings({"tls": "self-signed", "port": "8443"}, environ={}).wss_url == "wss://127.0.0.1:8443"
    assert load_settings({"host": "0.0.0.0"}, environ={}).base_url == "http://127.0.0.1:4567"


@pytest.mark.parametrize(
    "flags",
    [{"limits": "some"}, {"port": "0x"}, {"turn_ttl": "30"}, {"account_id": "12"}, {"tls": "yes"},
     {"tls_cert": "a.pem"}, {"public_url": "ftp://x"}, {"public_url": "https://h:port"},
     {"public_url": "https://h:70000"}, {"public_url": "https://"}, {"public_url": "https://h/?x=1"},
     {"log_level": "loud"}],
)  # fmt: skip
def test_invalid_settings_are_refused(flags: dict[str, str]) -> None:
    with pytest.raises(ValueError):
        load_settings(flags, environ={})


def test_config_file_and_reload(tmp_path: Path) -> None:
    config = tmp_path / "signalite.toml"
    config.write_text('turn_uri = ["turn:one:3478"]\nturn_secret = "s1"\nport = 5000\n')
    s = load_settings({"config": str(config)}, environ={})
    assert (s.port, s.turn_uri, s.turn_secret) == (5000, ("turn:one:3478",), "s1")
    config.write_text('turn_uri = ["turn:two:3478"]\nturn_secret = "s2"\nport = 6000\n')
    reloaded = reload_settings(s)
    assert (reloaded.turn_uri, reloaded.turn_secret) == (("turn:two:3478",), "s2")
    assert reloaded.port == 5000  # the listening port cannot change while running


def test_secret_not_in_repr() -> None:
    assert "hunter2" not in repr(load_settings({"turn_secret": "hunter2"}, environ={}))


@pytest.mark.parametrize(
    ("given", "base", "wss"),
    [
        ({"tls": "self-signed", "port": "443"}, "https://127.0.0.1", "wss://127.0.0.1"),
        ({"port": "80"}, "http://127.0.0.1", "ws://127.0.0.1"),
        ({"port": "443"}, "http://127.0.0.1:443", "ws://127.0.0.1:443"),  # 443 is not http's own port
        ({"tls": "self-signed", "port": "80"}, "https://127.0.0.1:80", "wss://127.0.0.1:80"),
        (
            {"public_url": "https://signal.example.com:443/kvs/"},
            "https://signal.example.com/kvs",
            "wss://signal.example.com/kvs",
        ),
        ({"public_url": "https://[::1]:443"}, "https://[::1]", "wss://[::1]"),
        (
            {"public_url": "https://signal.example.com:8443"},
            "https://signal.example.com:8443",
            "wss://signal.example.com:8443",
        ),
    ],
)
def test_endpoints_carry_no_port_that_repeats_the_schemes_own(given: dict[str, str], base: str, wss: str) -> None:
    # The KVS WebRTC C SDK always connects to 443 and refuses any URL with a port in it.
    settings = load_settings(given, environ={})
    assert settings.base_url == base
    assert settings.wss_url == wss
