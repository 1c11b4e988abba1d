"""The console and the test page in headless chromium against signalite; run INSIDE a loopback-only namespace.

    python tests/e2e/console_scenario.py [--out DIR] [--timeout SECONDS]   # normally via test_console.py

Starts coturn and signalite in strict mode (a credentials file, TURN configured with coturn's secret), then
runs node/console_session.mjs, which uses only what signalite serves at /console/: it signs in, creates
channels, filters, updates a TTL, opens the test page as master (from the console) and as viewer (another
browser context), waits for video both ways and for the live view to list both, then deletes the channel and
waits for GO_AWAY. Afterwards /metrics is scraped. Prints one JSON object: the driver's report, the metrics
lines of interest and the tail of the server log.
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from coturn import Coturn

from signalite.testing import free_port, wait_healthy

E2E = Path(__file__).resolve().parent
NODE_DIR = E2E / "node"
REPO = E2E.parent.parent
ACCOUNT = "111122223333"
CREDENTIALS = {"accessKeyId": "AKIDCONSOLEE2E", "secretAccessKey": "console-e2e-" + secrets.token_hex(8)}


def metrics_lines(url: str) -> list[str]:
    with urllib.request.urlopen(f"{url}/metrics", timeout=5) as response:
        text = response.read().decode()
    wanted = ("signalite_go_aways", "signalite_connections", "signalite_connects", "signalite_messages_relayed",
              "signalite_requests_total", "signalite_auth_failures", "signalite_connect_refusals")  # fmt: skip
    return [line for line in text.splitlines() if line.startswith(wanted)]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=str(REPO / "test-output" / "console"), help="screenshots and logs go here")
    parser.add_argument("--timeout", type=float, default=60.0, help="seconds the driver may take")
    opts = parser.parse_args()
    out = Path(opts.out)
    out.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="signalite-console-"))
    report: dict[str, Any] = {}
    server: subprocess.Popen[bytes] | None = None
    server_log = (out / "signalite.log").open("wb")
    turn = Coturn(work / "turn", secret=secrets.token_hex(16))
    try:
        turn.start()
        credentials_file = work / "credentials.json"
        credentials_file.write_text(json.dumps({"credentials": [{
            "access_key_id": CREDENTIALS["accessKeyId"],
            "secret_access_key": CREDENTIALS["secretAccessKey"],
            "account_id": ACCOUNT,
        }]}))  # fmt: skip
        port = free_port()
        server = subprocess.Popen(
            [sys.executable, "-m", "signalite", "serve", "--port", str(port), "--data-dir", str(work / "data"),
             "--credentials", str(credentials_file), "--node-id", "console-e2e", "--shutdown-grace", "2",
             "--log-level", "debug",  # WebSocket connects and refusals in the log tail when a step fails
             "--turn-uri", f"turn:127.0.0.1:{turn.port}?transport=udp", "--turn-secret", turn.secret],
            stdout=server_log, stderr=subprocess.STDOUT,
        )  # fmt: skip
        base_url = f"http://127.0.0.1:{port}"
        wait_healthy(base_url, server)
        suffix = secrets.token_hex(3)
        config = {
            "baseUrl": base_url,
            "credentials": CREDENTIALS,
            "channelName": f"console-e2e-{suffix}",
            "otherChannelName": f"zz-other-{suffix}",
            "viewerClientId": f"viewer-{suffix}",
            "screenshotsDir": str(out),
            "timeoutMs": int(opts.timeout * 1000),
            "viewerRelayOnly": True,
        }
        report["config"] = {k: v for k, v in config.items() if k != "credentials"}
        report["account"] = ACCOUNT
        report["turnPort"] = turn.port
        started = time.monotonic()
        driver = subprocess.run(
            ["node", str(NODE_DIR / "console_session.mjs"), json.dumps(config)],
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
        report["metrics"] = metrics_lines(base_url)
        report["turnAllocations"] = len([line for line in turn.log().splitlines() if "ALLOCATE" in line])
    except Exception as e:  # report, don't hide: the test prints this JSON when it asserts
        report["error"] = f"{type(e).__name__}: {e}"
    finally:
        if server is not None:
            server.terminate()
            try:
                server.wait(10)
            except subprocess.TimeoutExpired:
                server.kill()
        turn.stop()
        server_log.close()
        log_text = (out / "signalite.log").read_text(errors="replace")
        report["serverLogTail"] = log_text.splitlines()[-60:]
        report["secretInServerLog"] = CREDENTIALS["secretAccessKey"] in log_text
        shutil.rmtree(work, ignore_errors=True)
        (out / "report.json").write_text(json.dumps(report, indent=2))
    print(json.dumps(report))
    return 0


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    sys.exit(main())
