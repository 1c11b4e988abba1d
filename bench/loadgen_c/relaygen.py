"""Start the C load generator (relaygen.c) with a loadgen.mjs relay- or sessions-mode config.

    python bench/loadgen_c/relaygen.py '<loadgen.mjs json config>'

Takes the same JSON as bench/loadgen/loadgen.mjs in relay and sessions modes (plus
loadgen_cluster/split.mjs's `split: {masterPort, viewerPort}`), presigns every KVS URL the way the
KVS SDKs do (what loadgen.mjs does in Node; for sessions, a pool of URLs with a new ClientId each,
signed here before the run rather than during it), writes relaygen.c's line config into a temporary file, compiles
relaygen.c when its binary is missing or older than the source (gcc -O2, into build/ here), and
replaces itself with the binary: the process that runs the workload is C alone. Its stdout is
loadgen.mjs's JSON events.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from urllib.parse import quote

HERE = Path(__file__).resolve().parent
SOURCE = HERE / "relaygen.c"
BINARY = HERE / "build" / "relaygen"


def build() -> Path:
    """The compiled generator, (re)built when the source is newer."""
    if BINARY.exists() and BINARY.stat().st_mtime >= SOURCE.stat().st_mtime:
        return BINARY
    cc = shutil.which("cc") or shutil.which("gcc")
    if cc is None:
        raise SystemExit("relaygen.py: needs a C compiler (Debian: apt-get install -y gcc)")
    BINARY.parent.mkdir(exist_ok=True)
    tmp = BINARY.with_suffix(f".{os.getpid()}")
    subprocess.run([cc, "-O2", "-Wall", "-o", str(tmp), str(SOURCE)], check=True)
    tmp.replace(BINARY)  # atomic: two runs building at once both end with a whole binary
    return BINARY


def config_lines(cfg: dict) -> list[str]:
    """relaygen.c's config for a loadgen.mjs relay or sessions config."""
    mode = cfg.get("mode")
    if mode not in ("relay", "sessions"):
        raise SystemExit("relaygen.py: relay and sessions modes only (idle stays on loadgen.mjs)")
    kvs = cfg["proto"] == "kvs"
    host = f"{cfg['host']}:{cfg['port']}"
    split = cfg.get("split") or {}
    lines = [
        f"proto {cfg['proto']}",
        f"host {cfg['host']}",
        f"master_port {split.get('masterPort', cfg['port'])}",
        f"viewer_port {split.get('viewerPort', cfg['port'])}",
        f"rate {cfg.get('rate') or 0}",
        f"window {cfg.get('window', 16)}",
        f"warmup {cfg.get('warmup', 1)}",
        f"duration {cfg.get('duration', 5)}",
        f"payload_len {cfg.get('payloadLen', 300)}",
        f"deadline {cfg.get('deadline', 120)}",
        f"mode {mode}",
        f"tag {cfg.get('tag') or 'x'}",
        f"concurrency {cfg.get('concurrency', 50)}",
        f"offer_len {cfg.get('offerLen', 2000)}",
    ]
    if kvs:
        sys.path.insert(0, str(HERE.parent.parent / "src"))
        from signalite.auth.sigv4 import Credential, presign_url

        key = cfg["credentials"]
        credential = Credential(key["accessKeyId"], key["secretAccessKey"], "000000000000", key.get("sessionToken"))
        now = time.time()

        def url(query: str) -> str:
            signed = presign_url(f"ws://{host}/?{query}", credential, key["region"], now)
            return signed.split(host, 1)[1]

    channels = cfg["channels"]
    for c, arn in enumerate(channels):
        path = url(f"X-Amz-ChannelARN={quote(arn, safe='')}") if kvs else f"/peerjs?key=peerjs&id=m{c}&token=t"
        lines.append(f"master {c} {path}")
    if mode == "sessions":
        if kvs:
            # Enough new ClientIds for ~6k sessions/s over the run (past that, they are reused in turn,
            # each long after its previous session closed).
            pool = min(60_000, int(6_000 * (cfg.get("warmup", 1) + cfg.get("duration", 5) + 0.5)))
            for i in range(pool):
                c = i % len(channels)
                cid = f"s{cfg.get('tag') or ''}x{i}"
                lines.append(
                    f"session {c} {url(f'X-Amz-ChannelARN={quote(channels[c], safe=str())}&X-Amz-ClientId={cid}')}"
                )
        return lines
    for c, arn in enumerate(channels):
        for v in range(cfg["viewers"]):
            # A fresh ClientId per run (the tag), as loadgen.mjs: nothing buffered for an earlier
            # run's viewer can reach this one.
            cid = f"v{cfg.get('tag') or ''}{c}x{v}"
            path = (
                url(f"X-Amz-ChannelARN={quote(arn, safe='')}&X-Amz-ClientId={quote(cid, safe='')}")
                if kvs
                else f"/peerjs?key=peerjs&id={cid}&token=t"
            )
            lines.append(f"viewer {c} {cid} {path}")
    return lines


def main() -> None:
    cfg = json.loads(sys.argv[1])
    binary = build()
    fd, name = tempfile.mkstemp(prefix="relaygen-", suffix=".conf")
    with os.fdopen(fd, "w") as f:
        f.write("\n".join(config_lines(cfg)) + "\n")
    if cfg.get("startAt"):  # several generators started together (relay.py --together) begin together
        time.sleep(max(0.0, min(30.0, float(cfg["startAt"]) - time.time())))
    os.execv(binary, [str(binary), name, "--unlink"])  # it removes the file once it has read it


if __name__ == "__main__":
    main()
