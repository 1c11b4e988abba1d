"""One browser WebRTC session through signalite; run INSIDE a loopback-only network namespace.

    python tests/e2e/browser_scenario.py [--out DIR]      # normally via test_browser.py (python_in_netns)

Starts signalite with `--tls self-signed`, creates a channel and resolves its ARN, the MASTER and
VIEWER endpoints and the ICE servers with boto3 (the control-plane half of the KVS SDK's example
flow), serves tests/e2e over plain HTTP on 127.0.0.1 (a secure context, so WebCrypto and getUserMedia
work), then runs node/browser_session.mjs, which drives headless chromium with a master page and a
viewer page. Prints one JSON object: the endpoints, the driver's report and a summary.
"""

from __future__ import annotations

import argparse
import base64
import functools
import hashlib
import http.server
import json
import os
import secrets
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import boto3
from botocore.config import Config
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from signalite.testing import free_port, wait_healthy
from signalite.tls import self_signed_paths

E2E = Path(__file__).resolve().parent
NODE_DIR = E2E / "node"
REPO = E2E.parent.parent
REGION = "us-west-2"
CREDENTIALS = {"accessKeyId": "AKIDBROWSERTEST", "secretAccessKey": "browser-test-secret"}


class QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        pass


def spki_hash(cert_pem: Path) -> str:
    """base64(sha256(SubjectPublicKeyInfo)): what chromium's --ignore-certificate-errors-spki-list takes."""
    cert = x509.load_pem_x509_certificate(cert_pem.read_bytes())
    der = cert.public_key().public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    return base64.b64encode(hashlib.sha256(der).digest()).decode()


def resolve_channel(endpoint_url: str, ca: Path, viewer_client_id: str) -> dict[str, Any]:
    """CreateSignalingChannel, DescribeSignalingChannel, GetSignalingChannelEndpoint x2, GetIceServerConfig."""
    common: dict[str, Any] = {
        "region_name": REGION,
        "aws_access_key_id": CREDENTIALS["accessKeyId"],
        "aws_secret_access_key": CREDENTIALS["secretAccessKey"],
        "verify": str(ca),
        "config": Config(retries={"max_attempts": 1}),
    }
    kv = boto3.client("kinesisvideo", endpoint_url=endpoint_url, **common)
    name = f"browser-{secrets.token_hex(4)}"
    kv.create_signaling_channel(ChannelName=name)
    arn = kv.describe_signaling_channel(ChannelName=name)["ChannelInfo"]["ChannelARN"]
    endpoints: dict[str, dict[str, str]] = {}
    for role in ("MASTER", "VIEWER"):
        answer = kv.get_signaling_channel_endpoint(
            ChannelARN=arn,
            SingleMasterChannelEndpointConfiguration={"Protocols": ["WSS", "HTTPS"], "Role": role},
        )
        endpoints[role] = {e["Protocol"]: e["ResourceEndpoint"] for e in answer["ResourceEndpointList"]}
    signaling = boto3.client("kinesis-video-signaling", endpoint_url=endpoints["VIEWER"]["HTTPS"], **common)
    servers = signaling.get_ice_server_config(ChannelARN=arn, ClientId=viewer_client_id)["IceServerList"]
    # Like the SDK example, minus its stun:stun.kinesisvideo.<region>.amazonaws.com entry: the namespace
    # has no route off the machine, and host candidates on 127.0.0.1 are all this session needs.
    ice_servers = [{"urls": s["Uris"], "username": s["Username"], "credential": s["Password"]} for s in servers]
    return {"channelName": name, "channelARN": arn, "endpoints": endpoints, "iceServers": ice_servers}


def summarize(session: dict[str, Any]) -> dict[str, Any]:
    reports = session.get("reports", {})
    master = reports.get("master", {})
    viewer = reports.get("viewer", {})
    viewer_pc = viewer.get("peers", {}).get("MASTER", {})
    master_pcs = list(master.get("peers", {}).values())
    master_pc = master_pcs[0] if master_pcs else {}

    def pair_types(pc: dict[str, Any]) -> dict[str, Any] | None:
        pair = pc.get("selectedCandidatePair")
        if not pair:
            return None
        return {
            "local": pair["local"].get("candidateType"),
            "remote": pair["remote"].get("candidateType"),
            "protocol": pair["local"].get("protocol"),
            "localAddress": pair["local"].get("address"),
            "remoteAddress": pair["remote"].get("address"),
        }

    return {
        "masterConnectionState": master_pc.get("connectionState"),
        "viewerConnectionState": viewer_pc.get("connectionState"),
        "masterPeers": len(master_pcs),
        "sent": viewer.get("dataChannel", {}).get("sent"),
        "echoedByMaster": master.get("dataChannel", {}).get("sent"),
        "roundTrip": viewer.get("dataChannel", {}).get("received", []),
        "roundTripMs": viewer.get("dataChannel", {}).get("roundTripMs"),
        "framesDecoded": viewer_pc.get("inboundVideo", {}).get("framesDecoded", 0),
        "videoFrameCallbacks": viewer.get("videoFrameCallbacks", 0),
        "masterFramesEncoded": master_pc.get("outboundVideo", {}).get("framesEncoded", 0),
        "viewerCandidatePair": pair_types(viewer_pc),
        "masterCandidatePair": pair_types(master_pc),
        "errors": master.get("errors", []) + viewer.get("errors", []) + session.get("pageErrors", []),
        "statusResponses": master.get("statusResponses", []) + viewer.get("statusResponses", []),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=str(REPO / "test-output" / "browser"), help="screenshots and logs go here")
    parser.add_argument("--timeout", type=float, default=45.0, help="seconds the driver waits for the session")
    opts = parser.parse_args()
    out = Path(opts.out)
    out.mkdir(parents=True, exist_ok=True)
    data_dir = Path(tempfile.mkdtemp(prefix="signalite-browser-"))
    port = free_port()
    server_log = (out / "signalite.log").open("wb")
    server = subprocess.Popen(
        [sys.executable, "-m", "signalite", "serve", "--port", str(port), "--data-dir", str(data_dir),
         "--tls", "self-signed", "--shutdown-grace", "2"],
        stdout=server_log, stderr=subprocess.STDOUT,
    )  # fmt: skip
    pages = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(QuietHandler, directory=str(E2E)))
    threading.Thread(target=pages.serve_forever, name="pages", daemon=True).start()
    report: dict[str, Any] = {}
    try:
        endpoint_url = f"https://127.0.0.1:{port}"
        wait_healthy(endpoint_url, server)
        ca, cert, _key = self_signed_paths(data_dir)
        viewer_client_id = f"viewer-{secrets.token_hex(4)}"
        channel = resolve_channel(endpoint_url, ca, viewer_client_id)
        report["channel"] = channel
        config = {
            "pageUrl": f"http://127.0.0.1:{pages.server_address[1]}/browser/peer.html",
            "channelARN": channel["channelARN"],
            "region": REGION,
            "credentials": CREDENTIALS,
            "iceServers": channel["iceServers"],
            "masterEndpoint": channel["endpoints"]["MASTER"]["WSS"],
            "viewerEndpoint": channel["endpoints"]["VIEWER"]["WSS"],
            "viewerClientId": viewer_client_id,
            "message": f"ping-{secrets.token_hex(6)}",
            "spkiHash": spki_hash(cert),
            "screenshotsDir": str(out),
            "timeoutMs": int(opts.timeout * 1000),
        }
        report["message"] = config["message"]
        report["viewerClientId"] = viewer_client_id
        started = time.monotonic()
        driver = subprocess.run(
            ["node", str(NODE_DIR / "browser_session.mjs"), json.dumps(config)],
            cwd=NODE_DIR, capture_output=True, text=True, timeout=opts.timeout + 30,
        )  # fmt: skip
        report["driverSeconds"] = round(time.monotonic() - started, 2)
        report["driverExit"] = driver.returncode
        try:
            report["session"] = json.loads(driver.stdout.strip().splitlines()[-1])
        except (IndexError, ValueError):
            report["session"] = {"error": "driver printed no JSON", "stdout": driver.stdout[-4000:]}
        if driver.stderr.strip():
            report["driverStderr"] = driver.stderr[-4000:]
        report["summary"] = summarize(report["session"])
    except Exception as e:  # report, don't hide: the test prints this JSON when it asserts
        report["error"] = f"{type(e).__name__}: {e}"
    finally:
        pages.shutdown()
        server.terminate()
        try:
            server.wait(10)
        except subprocess.TimeoutExpired:
            server.kill()
        server_log.close()
        shutil.rmtree(data_dir, ignore_errors=True)
        report["serverLogTail"] = (out / "signalite.log").read_text(errors="replace").splitlines()[-40:]
        (out / "report.json").write_text(json.dumps(report, indent=2))
    print(json.dumps(report))
    return 0


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    sys.exit(main())
