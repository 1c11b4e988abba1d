"""A client that reaches signalite the way the KVS WebRTC C SDK does; prints one JSON report.

The C SDK cannot be built here (its sources and dependencies come from GitHub), so this script
keeps to what its signaling client does on the wire, as read in its sources (`LwsApiCalls.c`,
`Signaling.c`; kvs-protocol.md, open question 12):

- every call, HTTPS or WSS, goes to **port 443**: the SDK sets the port itself and refuses a URL that
  names one, so the control-plane URL is `https://127.0.0.1` and the endpoints GetSignalingChannelEndpoint
  returns must carry no port either; they are then used verbatim;
- always TLS, checked against the CA file the application names (`ChannelInfo.pCertPath`);
- DescribeSignalingChannel must say `ACTIVE`, GetSignalingChannelEndpoint must return both HTTPS and
  WSS, GetIceServerConfig must list at least one server with a URI;
- the WebSocket upgrade offers the libwebsockets protocol name (`Sec-WebSocket-Protocol: wss`);
- frames use PascalCase members, and the viewer's SDP_OFFER carries the SDK's `IceServerList`.

Run INSIDE a private network namespace (tests/e2e/netns.py), as root (port 443): it starts signalite
there in strict mode with `--tls self-signed --port 443` and a TURN URI, and talks to 127.0.0.1 only.
Nothing is asserted here: test_c_sdk.py reads the JSON.
"""

from __future__ import annotations

import asyncio
import base64
import json
import ssl
import subprocess
import sys
import tempfile
import traceback
import urllib.parse
from pathlib import Path
from typing import Any

import aiohttp
import boto3
import botocore.config
from botocore.auth import SigV4QueryAuth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials

from signalite.testing import wait_healthy

REGION = "us-west-2"
KEY = {"aws_access_key_id": "AKIDCSDKSHAPE", "aws_secret_access_key": "c-sdk-shape-secret"}
CONTROL_PLANE_URL = "https://127.0.0.1"  # what an application sets as ChannelInfo.pControlPlaneUrl
VIEWER_ID = "c-sdk-viewer"


def presign(ws_endpoint: str, params: dict[str, str]) -> str:
    request = AWSRequest(method="GET", url=f"{ws_endpoint}?{urllib.parse.urlencode(params)}")
    credentials = Credentials(KEY["aws_access_key_id"], KEY["aws_secret_access_key"])
    SigV4QueryAuth(credentials, "kinesisvideo", REGION, expires=299).add_auth(request)
    return str(request.url)


def control_plane(ca: str) -> dict[str, Any]:
    config = botocore.config.Config(retries={"max_attempts": 1})
    kv = boto3.client(
        "kinesisvideo", endpoint_url=CONTROL_PLANE_URL, region_name=REGION, verify=ca, config=config, **KEY
    )
    arn = kv.create_signaling_channel(ChannelName="c-sdk-shape")["ChannelARN"]
    status = kv.describe_signaling_channel(ChannelARN=arn)["ChannelInfo"]["ChannelStatus"]
    out: dict[str, Any] = {"arn": arn, "status": status}
    for role in ("MASTER", "VIEWER"):
        listed = kv.get_signaling_channel_endpoint(
            ChannelARN=arn, SingleMasterChannelEndpointConfiguration={"Protocols": ["WSS", "HTTPS"], "Role": role}
        )["ResourceEndpointList"]
        endpoints = {e["Protocol"]: e["ResourceEndpoint"] for e in listed}
        signaling = boto3.client(
            "kinesis-video-signaling", endpoint_url=endpoints["HTTPS"], region_name=REGION, verify=ca,
            config=config, **KEY,
        )  # fmt: skip
        kwargs = {"ChannelARN": arn, **({"ClientId": VIEWER_ID} if role == "VIEWER" else {})}
        ice = signaling.get_ice_server_config(**kwargs)["IceServerList"]
        out[role] = {"endpoints": endpoints, "ice_uris": [uri for server in ice for uri in server["Uris"]]}
    return out


async def signaling(ca: str, cp: dict[str, Any]) -> dict[str, Any]:
    context = ssl.create_default_context(cafile=ca)  # the CA file alone, as pCertPath gives lws
    arn = cp["arn"]
    master_url = presign(cp["MASTER"]["endpoints"]["WSS"], {"X-Amz-ChannelARN": arn})
    viewer_url = presign(cp["VIEWER"]["endpoints"]["WSS"], {"X-Amz-ChannelARN": arn, "X-Amz-ClientId": VIEWER_ID})
    offer = base64.b64encode(json.dumps({"type": "offer", "sdp": "v=0\r\n"}).encode()).decode()
    answer = base64.b64encode(json.dumps({"type": "answer", "sdp": "v=0\r\n"}).encode()).decode()
    async with aiohttp.ClientSession() as session:
        master = await session.ws_connect(master_url, ssl=context, protocols=("wss",), heartbeat=None)
        viewer = await session.ws_connect(viewer_url, ssl=context, protocols=("wss",), heartbeat=None)
        # The C SDK's viewer frame: PascalCase, a placeholder recipient (ignored for a viewer), and the
        # TURN servers it was given.
        ice_list = [{"Password": "p", "Ttl": 300, "Uris": cp["VIEWER"]["ice_uris"], "Username": "u"}]
        frame = {"action": "SDP_OFFER", "RecipientClientId": "ConsumerViewer", "MessagePayload": offer,
                 "CorrelationId": "1", "IceServerList": ice_list}  # fmt: skip
        await viewer.send_str(json.dumps(frame))
        at_master = json.loads((await master.receive(timeout=10)).data)
        await master.send_str(json.dumps({"action": "SDP_ANSWER", "RecipientClientId": VIEWER_ID,
                                          "MessagePayload": answer}))  # fmt: skip
        at_viewer = json.loads((await viewer.receive(timeout=10)).data)
        out = {
            "master_protocol": master.protocol,
            "at_master": at_master,
            "at_viewer": at_viewer,
            "offer_sent": offer,
            "answer_sent": answer,
        }
        await viewer.close()
        await master.close()
    return out


def main() -> None:
    report: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="signalite-c-sdk-") as tmp:
        data = Path(tmp) / "data"
        credentials = Path(tmp) / "credentials.json"
        entry = {"access_key_id": KEY["aws_access_key_id"], "secret_access_key": KEY["aws_secret_access_key"],
                 "account_id": "111122223333"}  # fmt: skip
        credentials.write_text(json.dumps({"credentials": [entry]}))
        log = Path(tmp) / "signalite.log"
        with log.open("wb") as out:
            server = subprocess.Popen(
                [sys.executable, "-m", "signalite", "serve", "--port", "443", "--tls", "self-signed",
                 "--data-dir", str(data), "--credentials", str(credentials), "--log-level", "debug",
                 "--turn-uri", "turn:127.0.0.1:3478?transport=udp", "--turn-secret", "not-used-here"],
                stdout=out, stderr=subprocess.STDOUT,
            )  # fmt: skip
        try:
            wait_healthy(CONTROL_PLANE_URL, server, output=lambda: log.read_text(errors="replace"))
            ca = str(data / "tls" / "ca.pem")
            report["control_plane"] = cp = control_plane(ca)
            report["signaling"] = asyncio.run(signaling(ca, cp))
        except Exception:
            report["error"] = traceback.format_exc()
        finally:
            server.terminate()
            server.wait(timeout=30)
            report["signalite_log_tail"] = log.read_text(errors="replace").splitlines()[-40:]
    print(json.dumps(report))


if __name__ == "__main__":
    main()
