"""The credentials file that turns on strict mode (`--credentials FILE`, JSON or TOML).

    {"credentials": [
        {"access_key_id": "AKIDEXAMPLE", "secret_access_key": "...", "account_id": "123456789012",
         "session_token": "optional", "policy": {"Statement": [...]}}
    ]}

Each entry is one identity: its key pair (and, optionally, the session token it must present), the
account its resources live in, and an optional IAM-style policy. Reading the file validates it whole
and compiles the policies; errors name the entry but never echo a secret.
"""

from __future__ import annotations

import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

from signalite.auth.policy import Policy, PolicyError, compile_policy
from signalite.auth.sigv4 import Credential

_ACCESS_KEY = re.compile(r"[A-Za-z0-9]{4,128}")


@dataclass(frozen=True, slots=True)
class Identity:
    """A credential and what it may do."""

    credential: Credential
    policy: Policy | None


class CredentialsError(ValueError):
    """The credentials file is unreadable or malformed."""


def load_credentials(path: Path) -> Mapping[str, Identity]:
    """Access key id -> Identity, from a JSON or TOML file."""
    try:
        raw = path.read_bytes()
        data: Any = tomllib.loads(raw.decode()) if path.suffix == ".toml" else orjson.loads(raw)
    except (OSError, ValueError) as e:
        raise CredentialsError(f"cannot read credentials file {path}: {type(e).__name__}") from None
    entries = data.get("credentials") if isinstance(data, dict) else None
    if not isinstance(entries, list) or not entries:
        raise CredentialsError(f'{path}: expected {{"credentials": [ ... ]}} with at least one entry')
    identities: dict[str, Identity] = {}
    for i, entry in enumerate(entries, start=1):
        if not isinstance(entry, dict):
            raise CredentialsError(f"{path}: entry {i} must be an object")
        akid = entry.get("access_key_id")
        secret = entry.get("secret_access_key")
        account = entry.get("account_id", "000000000000")
        token = entry.get("session_token")
        if not isinstance(akid, str) or not _ACCESS_KEY.fullmatch(akid):
            raise CredentialsError(f"{path}: entry {i}: access_key_id must be 4-128 letters or digits")
        if not isinstance(secret, str) or not secret:
            raise CredentialsError(f"{path}: entry {i} ({akid}): secret_access_key is required")
        if not isinstance(account, str) or not re.fullmatch(r"[0-9]{12}", account):
            raise CredentialsError(f"{path}: entry {i} ({akid}): account_id must be 12 digits")
        if token is not None and (not isinstance(token, str) or not token):
            raise CredentialsError(f"{path}: entry {i} ({akid}): session_token must be a non-empty string")
        if akid in identities:
            raise CredentialsError(f"{path}: access key {akid} appears twice")
        policy = None
        if entry.get("policy") is not None:
            try:
                policy = compile_policy(entry["policy"])
            except PolicyError as e:
                raise CredentialsError(f"{path}: entry {i} ({akid}): policy: {e}") from None
        identities[akid] = Identity(Credential(akid, secret, account, token), policy)
    return identities
