"""The AWS SDK for JavaScript v3 (`@aws-sdk/client-kinesis-video`) against a real signalite server.

`tests/js/controlplane.mjs` does create, describe, get-endpoint, an error by name and delete, and prints
one JSON object. Node and the npm packages are required: this test fails (it never skips) without them;
the README's test command installs them (`cd tests/js && npm install --no-audit --no-fund`).
"""

from __future__ import annotations

import json
import shutil
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest

JS_DIR = Path(__file__).resolve().parents[1] / "js"
SCRIPT = JS_DIR / "controlplane.mjs"
INSTALL_HINT = f"install it with: cd {JS_DIR} && npm install --no-audit --no-fund"


def node() -> str:
    found = shutil.which("node")
    assert found, "node is not on PATH: the JS SDK tests need Node.js (>= 18)"
    return found


def test_js_sdk_is_installed() -> None:
    package = JS_DIR / "node_modules" / "@aws-sdk" / "client-kinesis-video" / "package.json"
    assert package.exists(), f"@aws-sdk/client-kinesis-video is not installed; {INSTALL_HINT}"


def test_js_sdk_control_plane(server: Any, kv: Any, names: Any) -> None:
    name = names()
    before_ms = time.time() * 1000
    done = subprocess.run(
        [node(), str(SCRIPT), server.endpoint_url, name],
        cwd=JS_DIR, capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert done.returncode == 0, f"node failed ({done.returncode}); {INSTALL_HINT}\n{done.stderr}"
    result = json.loads(done.stdout.strip().splitlines()[-1])

    arn = result["create"]["ChannelARN"]
    assert result["create"]["httpStatusCode"] == 200
    assert arn.startswith(f"arn:aws:kinesisvideo:us-west-2:000000000000:channel/{name}/")

    d = result["describe"]
    assert d["ChannelName"] == name and d["ChannelARN"] == arn
    assert d["ChannelType"] == "SINGLE_MASTER" and d["ChannelStatus"] == "ACTIVE"
    assert d["MessageTtlSeconds"] == 45
    assert d["Version"]
    assert d["creationTimeIsDate"] is True
    assert d["creationTimeMs"] == int(arn.rsplit("/", 1)[1])
    assert abs(d["creationTimeMs"] - before_ms) < 60_000
    assert d["requestId"]

    assert sorted(result["endpoints"], key=lambda e: e["Protocol"]) == [
        {"Protocol": "HTTPS", "ResourceEndpoint": f"http://127.0.0.1:{server.port}"},
        {"Protocol": "WSS", "ResourceEndpoint": f"ws://127.0.0.1:{server.port}"},
    ]

    missing = result["missing"]
    assert missing["error"] == "ResourceNotFoundException"
    assert missing["isModeledClass"] is True
    assert missing["httpStatusCode"] == 404
    assert missing["fault"] == "client"
    assert missing["message"]

    assert result["afterDelete"] == {"error": "ResourceNotFoundException"}
    # The script's delete reached this server.
    with pytest.raises(kv.exceptions.ResourceNotFoundException):
        kv.describe_signaling_channel(ChannelARN=arn)
