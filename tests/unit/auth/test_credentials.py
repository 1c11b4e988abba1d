"""The credentials file (`--credentials FILE`, JSON or TOML): `signalite.auth.credentials.load_credentials`.

A good file becomes access key id -> Identity (credential, account, optional token, compiled policy). A bad
one is refused as a whole with a message that names the entry (and, where known, the access key id) but
never echoes a secret or a session token. The CLI's fail-fast (exit 2, nothing bound) is checked too.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from signalite.auth.credentials import CredentialsError, Identity, load_credentials
from signalite.auth.policy import Policy
from signalite.auth.sigv4 import Credential

SECRET = "wJalrXUtnFEMI/K7MDENG+bPxRfiCYzzSECRETzz"
TOKEN = "IQoJb3JpZ2luX2VjTOKENzzz//with+slashes=="
OTHER_SECRET = "second-secret-QQQQQQQQQQQQ"

POLICY = {
    "Version": "2012-10-17",
    "Statement": [
        {"Effect": "Allow", "Action": "kinesisvideo:ConnectAsViewer", "Resource": "arn:aws:kinesisvideo:*:*:channel/*"},
        {"Effect": "Deny", "Action": "kinesisvideo:Delete*", "Resource": "*"},
    ],
}


def write_json(tmp_path: Path, data: Any, name: str = "creds.json") -> Path:
    path = tmp_path / name
    path.write_text(json.dumps(data))
    return path


def entry(**overrides: Any) -> dict[str, Any]:
    base: dict[str, Any] = {"access_key_id": "AKIDEXAMPLE1", "secret_access_key": SECRET, "account_id": "123456789012"}
    base.update(overrides)
    return {k: v for k, v in base.items() if v is not ...}


def refused(tmp_path: Path, data: Any, name: str = "creds.json") -> str:
    path = write_json(tmp_path, data, name) if not isinstance(data, str | bytes) else _raw(tmp_path, data, name)
    with pytest.raises(CredentialsError) as info:
        load_credentials(path)
    message = str(info.value)
    for secret in (SECRET, TOKEN, OTHER_SECRET):
        assert secret not in message
    assert "\n" not in message.strip()
    return message


def _raw(tmp_path: Path, data: str | bytes, name: str) -> Path:
    path = tmp_path / name
    path.write_bytes(data.encode() if isinstance(data, str) else data)
    return path


# ----------------------------------------------------------------------------- good files


def test_json_file_with_all_fields(tmp_path: Path) -> None:
    path = write_json(
        tmp_path,
        {
            "credentials": [
                entry(session_token=TOKEN, policy=POLICY),
                entry(access_key_id="AKIDSECOND", secret_access_key=OTHER_SECRET, account_id="210987654321"),
            ]
        },
    )
    identities = load_credentials(path)
    assert set(identities) == {"AKIDEXAMPLE1", "AKIDSECOND"}
    first = identities["AKIDEXAMPLE1"]
    assert isinstance(first, Identity)
    assert first.credential == Credential("AKIDEXAMPLE1", SECRET, "123456789012", TOKEN)
    assert isinstance(first.policy, Policy)
    assert first.policy.allows("kinesisvideo:ConnectAsViewer", "arn:aws:kinesisvideo:us-east-1:1:channel/a/1")
    assert not first.policy.allows("kinesisvideo:ConnectAsMaster", "arn:aws:kinesisvideo:us-east-1:1:channel/a/1")
    second = identities["AKIDSECOND"]
    assert second.credential.account_id == "210987654321"
    assert second.credential.session_token is None
    assert second.policy is None  # no policy: full access within the account


def test_toml_file(tmp_path: Path) -> None:
    path = tmp_path / "creds.toml"
    path.write_text(
        f"""
[[credentials]]
access_key_id = "AKIDTOML1"
secret_access_key = "{SECRET}"
account_id = "111122223333"
session_token = "{TOKEN}"

[credentials.policy]
Version = "2012-10-17"

[[credentials.policy.Statement]]
Effect = "Allow"
Action = ["kinesisvideo:Describe*", "kinesisvideo:List*"]
Resource = "*"

[[credentials]]
access_key_id = "AKIDTOML2"
secret_access_key = "{OTHER_SECRET}"
account_id = "444455556666"
"""
    )
    identities = load_credentials(path)
    one = identities["AKIDTOML1"]
    assert one.credential == Credential("AKIDTOML1", SECRET, "111122223333", TOKEN)
    assert one.policy is not None
    assert one.policy.allows("kinesisvideo:ListSignalingChannels", "*")
    assert not one.policy.allows("kinesisvideo:CreateSignalingChannel", "*")
    assert identities["AKIDTOML2"].credential.account_id == "444455556666"
    assert identities["AKIDTOML2"].policy is None


def test_a_json_file_is_not_read_as_toml_by_content(tmp_path: Path) -> None:
    # Only the `.toml` suffix selects TOML: TOML text in a .json file is a JSON error.
    path = tmp_path / "creds.json"
    path.write_text(f'[[credentials]]\naccess_key_id = "AKIDX1"\nsecret_access_key = "{SECRET}"\n')
    with pytest.raises(CredentialsError) as info:
        load_credentials(path)
    assert SECRET not in str(info.value)


def test_account_defaults_to_twelve_zeros(tmp_path: Path) -> None:
    identities = load_credentials(write_json(tmp_path, {"credentials": [entry(account_id=...)]}))
    assert identities["AKIDEXAMPLE1"].credential.account_id == "000000000000"


def test_null_policy_and_token_mean_none(tmp_path: Path) -> None:
    identities = load_credentials(write_json(tmp_path, {"credentials": [entry(policy=None, session_token=None)]}))
    assert identities["AKIDEXAMPLE1"].policy is None
    assert identities["AKIDEXAMPLE1"].credential.session_token is None


def test_secrets_stay_out_of_repr(tmp_path: Path) -> None:
    identities = load_credentials(write_json(tmp_path, {"credentials": [entry(session_token=TOKEN, policy=POLICY)]}))
    text = repr(identities) + str(identities) + repr(identities["AKIDEXAMPLE1"].credential)
    assert "AKIDEXAMPLE1" in text
    assert SECRET not in text
    assert TOKEN not in text


# ----------------------------------------------------------------------------- bad files


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(CredentialsError, match="cannot read"):
        load_credentials(tmp_path / "nope.json")


@pytest.mark.parametrize(
    "content",
    [
        "",
        "{",
        f'{{"credentials": [{{"access_key_id": "AKIDX1", "secret_access_key": "{SECRET}"',  # truncated
        b"\xff\xfe\x00garbage",
    ],
)
def test_unparseable_json_never_echoes_content(tmp_path: Path, content: str | bytes) -> None:
    message = refused(tmp_path, content)
    assert "cannot read" in message


def test_unparseable_toml_never_echoes_content(tmp_path: Path) -> None:
    message = refused(tmp_path, f'[[credentials]]\nsecret_access_key = "{SECRET}\n', name="c.toml")
    assert "cannot read" in message


@pytest.mark.parametrize(
    "data",
    [
        [],
        ["x"],
        {},
        {"credentials": []},
        {"credentials": {"access_key_id": "AKIDX1", "secret_access_key": SECRET}},
        {"Credentials": [entry()]},
        "just a string",
        42,
    ],
)
def test_wrong_top_level_shape(tmp_path: Path, data: Any) -> None:
    message = refused(tmp_path, data if not isinstance(data, str) else json.dumps(data))
    assert "credentials" in message


@pytest.mark.parametrize(
    ("bad", "expected"),
    [
        ("not-an-object", "entry 2 must be an object"),
        (entry(access_key_id=...), "access_key_id"),
        (entry(access_key_id=""), "access_key_id"),
        (entry(access_key_id="abc"), "access_key_id"),  # shorter than 4
        (entry(access_key_id="AKID/WITH/SLASH"), "access_key_id"),
        (entry(access_key_id="AKID WITH SPACE"), "access_key_id"),
        (entry(access_key_id="A" * 129), "access_key_id"),
        (entry(access_key_id=1234567), "access_key_id"),
        (entry(secret_access_key=...), "secret_access_key"),
        (entry(secret_access_key=""), "secret_access_key"),
        (entry(secret_access_key=12345), "secret_access_key"),
        (entry(account_id="12345"), "account_id"),
        (entry(account_id="12345678901a"), "account_id"),
        (entry(account_id=123456789012), "account_id"),
        (entry(account_id="1234567890123"), "account_id"),
        (entry(session_token=""), "session_token"),
        (entry(session_token=12345), "session_token"),
        (entry(policy={"Statement": []}), "policy"),
        (entry(policy={"Statement": [{"Effect": "Allow"}]}), "policy"),
        (entry(policy="kinesisvideo:*"), "policy"),
    ],
)
def test_bad_entry_is_named_without_its_secret(tmp_path: Path, bad: Any, expected: str) -> None:
    good = entry(access_key_id="AKIDGOOD", secret_access_key=OTHER_SECRET, session_token=TOKEN)
    message = refused(tmp_path, {"credentials": [good, bad]})
    assert "entry 2" in message
    assert expected in message


def test_duplicate_access_key(tmp_path: Path) -> None:
    message = refused(
        tmp_path,
        {"credentials": [entry(), entry(secret_access_key=OTHER_SECRET, account_id="999999999999")]},
    )
    assert "AKIDEXAMPLE1" in message and "twice" in message


def test_bad_toml_entry_is_named(tmp_path: Path) -> None:
    message = refused(
        tmp_path,
        f'[[credentials]]\naccess_key_id = "AKIDT1"\nsecret_access_key = "{SECRET}"\naccount_id = "12"\n',
        name="creds.toml",
    )
    assert "entry 1" in message and "account_id" in message


# ----------------------------------------------------------------------------- the CLI fails fast


def test_cli_refuses_a_bad_credentials_file_before_binding(tmp_path: Path) -> None:
    path = write_json(tmp_path, {"credentials": [entry(session_token=TOKEN), entry(secret_access_key=OTHER_SECRET)]})
    done = subprocess.run(
        [sys.executable, "-m", "signalite", "serve", "--port", "1", "--data-dir", str(tmp_path / "data"),
         "--credentials", str(path)],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert done.returncode == 2, (done.returncode, done.stdout, done.stderr)
    output = done.stdout + done.stderr
    assert "twice" in output
    for secret in (SECRET, TOKEN, OTHER_SECRET):
        assert secret not in output
    assert not (tmp_path / "data" / "signalite.db").exists()


def test_cli_refuses_a_missing_credentials_file(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "signalite", "serve", "--port", "1", "--data-dir", str(tmp_path / "data"),
         "--credentials", str(tmp_path / "absent.json")],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert done.returncode == 2, (done.returncode, done.stdout, done.stderr)
    assert "absent.json" in done.stderr
