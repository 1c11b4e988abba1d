"""One `Settings` object, built once at start-up from flags, `SIGNALITE_*` variables and a config file.

Precedence: command-line flag > environment variable > `--config` TOML file > built-in default.
Every flag `--some-thing` has the variable `SIGNALITE_SOME_THING` and the file key `some_thing`;
list-valued settings take a comma-separated variable. SIGHUP re-reads the config file (see app.py),
which is how a running server picks up a new TURN secret or TURN URIs.
"""

from __future__ import annotations

import argparse
import os
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

LIMIT_MODES = ("aws", "relaxed", "off")
LOG_LEVELS = ("debug", "info", "warning", "error")
WEBSOCKET_STACKS = ("auto", "aiohttp")


@dataclass(frozen=True)
class Settings:
    """Every knob of a signalite server."""

    host: str = "127.0.0.1"
    port: int = 4567
    data_dir: Path = Path(".signalite")
    public_url: str | None = None
    region: str = "us-east-1"
    account_id: str = "000000000000"
    log_level: str = "info"
    log_format: str = "text"
    config: Path | None = None
    credentials: Path | None = None
    limits: str = "aws"
    max_channels: int = 10_000
    max_body_bytes: int = 1024 * 1024
    max_connections: int = 20_000
    max_connections_per_address: int = 1_000
    header_timeout: float = 10.0
    first_request_timeout: float = 60.0
    websocket_stack: str = "auto"
    turn_uri: tuple[str, ...] = ()
    turn_secret: str | None = field(default=None, repr=False)
    turn_ttl: int = 300
    tls: str | None = None  # "self-signed" or None
    tls_cert: Path | None = None
    tls_key: Path | None = None
    shutdown_grace: float = 30.0
    node_id: str | None = None
    database: str | None = field(default=None, repr=False)
    redis: str | None = field(default=None, repr=False)
    cluster_name: str = "signalite"
    workers: int = 1
    reuse_port: bool = False

    @property
    def tls_enabled(self) -> bool:
        return self.tls == "self-signed" or self.tls_cert is not None

    @property
    def base_url(self) -> str:
        """The public base URL (http or https), no trailing slash, no port when it is the scheme's own."""
        if self.public_url:
            return _without_default_port(self.public_url.rstrip("/"))
        scheme = "https" if self.tls_enabled else "http"
        host = self.host
        if host in ("0.0.0.0", "::", ""):
            host = "127.0.0.1"  # a wildcard bind is not an address a client can use
        if ":" in host:
            host = f"[{host}]"
        return _without_default_port(f"{scheme}://{host}:{self.port}")

    @property
    def wss_url(self) -> str:
        """The WebSocket base GetSignalingChannelEndpoint hands out for WSS."""
        parts = urlsplit(self.base_url)
        scheme = "wss" if parts.scheme == "https" else "ws"
        return parts._replace(scheme=scheme).geturl()

    @property
    def database_path(self) -> Path:
        return self.data_dir / "signalite.db"


_DEFAULT_PORTS = {"http": 80, "https": 443}


def _check_public_url(url: str) -> None:
    """Refuse a --public-url no client could use as an endpoint base."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https"):
        raise ValueError("--public-url must start with http:// or https://")
    try:
        _ = parts.port  # parsing it is the check
    except ValueError:
        raise ValueError(f"--public-url has a bad port: {url!r}") from None
    if not parts.hostname or parts.query or parts.fragment:
        raise ValueError(f"--public-url must be http(s)://host[:port][/path], got {url!r}")


def _without_default_port(url: str) -> str:
    """`url` without an explicit port that only repeats its scheme's default (`https://h:443` -> `https://h`).

    The endpoints AWS hands out carry no port, and the KVS WebRTC C SDK depends on it: it always
    connects to port 443 and refuses a URL with any `:port` in it (kvs-protocol.md, open question
    12: `lwsCompleteSync` fails on a host that ends at a colon). So a server on 443 must hand out
    `https://host` and `wss://host` for that SDK to reach it; every other client reads both forms.
    """
    parts = urlsplit(url)
    try:
        port = parts.port
    except ValueError:
        return url  # not a port at all: load_settings refuses such a URL
    if port is None or _DEFAULT_PORTS.get(parts.scheme) != port:
        return url
    netloc = parts.netloc.rsplit(":", 1)[0]
    return parts._replace(netloc=netloc).geturl()


# (flag, help, type) for each setting; the dataclass default is the default.
_HELP: Mapping[str, str] = {
    "host": "address to listen on (default 127.0.0.1: loopback only)",
    "port": "port to listen on (default 4567)",
    "data_dir": "directory for the SQLite database and generated TLS files (default ./.signalite)",
    "public_url": "base URL of the endpoints handed out (default: from --host and --port)",
    "region": "region used when a request carries no SigV4 credential scope (default us-east-1)",
    "account_id": "account id of every caller in open mode (default 000000000000)",
    "log_level": "debug, info, warning or error (default info)",
    "log_format": "text (key=value) or json (default text)",
    "config": "TOML file with any of these settings; re-read on SIGHUP",
    "credentials": "JSON or TOML credentials file: turns on strict mode (SigV4 verified, policies enforced)",
    "limits": "aws (AWS's quotas), relaxed (10x) or off (default aws)",
    "max_channels": "signaling channels per account and region (default 10000)",
    "max_body_bytes": "largest accepted request body (default 1048576)",
    "max_connections": "open connections in total (default 20000; not enforced with --limits off)",
    "max_connections_per_address": "open connections per client address (default 1000; not with --limits off)",
    "header_timeout": "seconds a request's headers may take from their first byte (default 10)",
    "first_request_timeout": "seconds a new connection may stay silent before its first request (default 60)",
    "websocket_stack": "auto (default): ordinary WebSocket handshakes are served by picows, the rest by "
    "aiohttp; aiohttp: every WebSocket by aiohttp",
    "turn_uri": "a TURN URI handed out by GetIceServerConfig (repeatable; variable: comma-separated)",
    "turn_secret": "coturn static-auth-secret used to mint TURN credentials",
    "turn_ttl": "lifetime of TURN credentials in seconds (default 300)",
    "tls": "'self-signed': create a local CA and a localhost certificate in the data dir",
    "tls_cert": "PEM certificate (chain) to serve HTTPS and WSS",
    "tls_key": "PEM private key for --tls-cert",
    "shutdown_grace": "seconds to wait for clients to leave after GO_AWAY on shutdown (default 30)",
    "node_id": "this node's name in metrics, logs and the cluster registry (default: <hostname>:<port>)",
    "database": "postgresql://user:pass@host/db to keep channels in PostgreSQL (default: SQLite in the data dir)",
    "redis": "redis://host:port/db: share presence and delivery with other nodes (a cluster)",
    "cluster_name": "prefix of every Redis key and pub/sub channel (default signalite)",
    "workers": "processes serving the one port (SO_REUSEPORT); more than 1 needs --redis",
    "reuse_port": "bind with SO_REUSEPORT (set by --workers for its processes)",
}


def _convert(name: str, value: Any) -> Any:
    kind = {f.name: f.type for f in fields(Settings)}[name]
    if value is None:
        return None
    if "tuple" in str(kind):
        if isinstance(value, str):
            return tuple(v.strip() for v in value.split(",") if v.strip())
        return tuple(str(v) for v in value)
    if "Path" in str(kind):
        return Path(value)
    if kind == "int":
        return int(value)
    if kind == "float":
        return float(value)
    if kind == "bool":
        return value if isinstance(value, bool) else str(value).lower() in ("1", "true", "yes", "on")
    return str(value)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add one flag per setting; defaults are resolved later so env and file can fill gaps."""
    for f in fields(Settings):
        flag = "--" + f.name.replace("_", "-")
        if f.name == "turn_uri":
            parser.add_argument(flag, action="append", default=None, help=_HELP[f.name])
        elif f.type == "bool":
            parser.add_argument(flag, action="store_const", const=True, default=None, help=_HELP[f.name])
        else:
            parser.add_argument(flag, default=None, help=_HELP[f.name])


def load_settings(flags: Mapping[str, Any] | None = None, environ: Mapping[str, str] | None = None) -> Settings:
    """Merge flags, environment and config file over the defaults; raise ValueError when invalid."""
    flags = dict(flags or {})
    environ = os.environ if environ is None else environ
    values: dict[str, Any] = {}
    env_values = {
        f.name: environ[f"SIGNALITE_{f.name.upper()}"]
        for f in fields(Settings)
        if f"SIGNALITE_{f.name.upper()}" in environ
    }
    config_path = flags.get("config") or env_values.get("config")
    if config_path:
        values.update(read_config_file(Path(config_path)))
    values.update(env_values)
    values.update({k: v for k, v in flags.items() if v is not None})
    settings = Settings(**{k: _convert(k, v) for k, v in values.items() if k in _HELP})
    _check(settings)
    return settings


def read_config_file(path: Path) -> dict[str, Any]:
    """The settings in a TOML file (keys as the flags, with underscores)."""
    with path.open("rb") as fh:
        data = tomllib.load(fh)
    unknown = set(data) - set(_HELP)
    if unknown:
        raise ValueError(f"unknown settings in {path}: {', '.join(sorted(unknown))}")
    return data


def reload_settings(settings: Settings) -> Settings:
    """Settings with the config file re-read (SIGHUP); other sources cannot change while running."""
    if settings.config is None:
        return settings
    updated = {k: _convert(k, v) for k, v in read_config_file(settings.config).items()}
    new = replace(settings, **{k: v for k, v in updated.items() if k in ("turn_uri", "turn_secret", "turn_ttl")})
    _check(new)
    return new


def _check(s: Settings) -> None:
    if s.limits not in LIMIT_MODES:
        raise ValueError(f"--limits must be one of {', '.join(LIMIT_MODES)}")
    if s.log_level not in LOG_LEVELS:
        raise ValueError(f"--log-level must be one of {', '.join(LOG_LEVELS)}")
    if s.websocket_stack not in WEBSOCKET_STACKS:
        raise ValueError(f"--websocket-stack must be one of {', '.join(WEBSOCKET_STACKS)}")
    if s.log_format not in ("text", "json"):
        raise ValueError("--log-format must be text or json")
    if not 0 <= s.port < 65536:
        raise ValueError("--port must be 0..65535 (0: any free port)")
    if not 30 < s.turn_ttl <= 86400:
        raise ValueError("--turn-ttl must be in 31..86400 (the KVS C SDK refuses 30 s or less)")
    if s.tls not in (None, "self-signed"):
        raise ValueError("--tls takes only 'self-signed' (use --tls-cert/--tls-key for your own)")
    if (s.tls_cert is None) != (s.tls_key is None):
        raise ValueError("--tls-cert and --tls-key go together")
    if s.public_url:
        _check_public_url(s.public_url)
    if s.workers < 1:
        raise ValueError("--workers must be at least 1")
    if s.workers > 1 and not s.redis:
        raise ValueError(
            "--workers above 1 needs --redis: each worker is its own process, and a master and a viewer on "
            "different workers can only reach each other through a shared bus"
        )
    if s.database and not s.database.startswith(("postgresql://", "postgres://")):
        raise ValueError("--database takes a postgresql:// URL")
    if s.redis and not s.redis.startswith(("redis://", "rediss://", "unix://")):
        raise ValueError("--redis takes a redis:// URL")
    if len(s.account_id) != 12 or not s.account_id.isdigit():
        raise ValueError("--account-id must be 12 digits")
