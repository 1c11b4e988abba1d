"""The AWS CLI (`aws kinesisvideo ...`, PyPI awscli) against a real signalite server.

Three ways to point the CLI at signalite: `--endpoint-url`, the service-specific
`AWS_ENDPOINT_URL_KINESIS_VIDEO` variable alone, and the global `AWS_ENDPOINT_URL` alone.
No config or credentials file is read (`/dev/null`), so nothing on the machine can interfere.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

AWS = Path(sys.executable).parent / "aws"


def cli_env(extra: dict[str, str]) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    env.update(
        {
            "AWS_ACCESS_KEY_ID": "AKIDSIGNALITECLI",
            "AWS_SECRET_ACCESS_KEY": "signalite-cli-secret",
            "AWS_DEFAULT_REGION": "us-west-2",
            "AWS_CONFIG_FILE": os.devnull,
            "AWS_SHARED_CREDENTIALS_FILE": os.devnull,
            "AWS_PAGER": "",
            "AWS_MAX_ATTEMPTS": "1",
        }
    )
    env.update(extra)
    return env


class Cli:
    def __init__(self, flags: list[str], env: dict[str, str]) -> None:
        self.flags = flags
        self.env = cli_env(env)

    def run(self, *args: str) -> subprocess.CompletedProcess[str]:
        cmd = [str(AWS), "kinesisvideo", *args, *self.flags, "--output", "json"]
        return subprocess.run(cmd, env=self.env, capture_output=True, text=True, timeout=60, check=False)

    def json(self, *args: str) -> Any:
        done = self.run(*args)
        assert done.returncode == 0, f"aws {' '.join(args)} failed ({done.returncode}):\n{done.stderr}"
        return json.loads(done.stdout) if done.stdout.strip() else {}

    def fails(self, *args: str) -> str:
        done = self.run(*args)
        assert done.returncode != 0, done.stdout
        return done.stderr


def make_cli(mode: str, endpoint_url: str) -> Cli:
    if mode == "flag":
        return Cli(["--endpoint-url", endpoint_url], {})
    if mode == "service-env":
        return Cli([], {"AWS_ENDPOINT_URL_KINESIS_VIDEO": endpoint_url})
    assert mode == "global-env"
    return Cli([], {"AWS_ENDPOINT_URL": endpoint_url})


def test_aws_cli_is_installed() -> None:
    assert AWS.exists(), f"{AWS} is missing: install the test extras (awscli)"


@pytest.mark.parametrize("mode", ["flag", "service-env", "global-env"])
def test_cli_channel_lifecycle(mode: str, server: Any, kv: Any, names: Any) -> None:
    cli = make_cli(mode, server.endpoint_url)
    name = names()

    created = cli.json(
        "create-signaling-channel", "--channel-name", name,
        "--single-master-configuration", "MessageTtlSeconds=30", "--tags", "Key=made-by,Value=cli",
    )  # fmt: skip
    arn = created["ChannelARN"]
    assert arn.startswith("arn:aws:kinesisvideo:us-west-2:000000000000:channel/" + name + "/")
    # It really reached this server: boto3 sees it too.
    assert kv.describe_signaling_channel(ChannelARN=arn)["ChannelInfo"]["ChannelName"] == name

    info = cli.json("describe-signaling-channel", "--channel-name", name)["ChannelInfo"]
    assert info["ChannelARN"] == arn
    assert info["ChannelStatus"] == "ACTIVE"
    assert info["ChannelType"] == "SINGLE_MASTER"
    assert info["SingleMasterConfiguration"] == {"MessageTtlSeconds": 30}
    assert info["CreationTime"]
    assert cli.json("describe-signaling-channel", "--channel-arn", arn)["ChannelInfo"]["Version"] == info["Version"]

    listed = cli.json(
        "list-signaling-channels",
        "--channel-name-condition", f"ComparisonOperator=BEGINS_WITH,ComparisonValue={names.prefix}",
    )  # fmt: skip
    assert [c["ChannelARN"] for c in listed["ChannelInfoList"]] == [arn]

    found = cli.json(
        "get-signaling-channel-endpoint", "--channel-arn", arn,
        "--single-master-channel-endpoint-configuration", "Protocols=WSS,HTTPS,Role=MASTER",
    )["ResourceEndpointList"]  # fmt: skip
    assert {e["Protocol"]: e["ResourceEndpoint"] for e in found} == {
        "WSS": f"ws://127.0.0.1:{server.port}",
        "HTTPS": f"http://127.0.0.1:{server.port}",
    }

    stderr = cli.fails("create-signaling-channel", "--channel-name", name)
    assert "ResourceInUseException" in stderr

    cli.json("delete-signaling-channel", "--channel-arn", arn, "--current-version", info["Version"])
    stderr = cli.fails("describe-signaling-channel", "--channel-name", name)
    assert "ResourceNotFoundException" in stderr
