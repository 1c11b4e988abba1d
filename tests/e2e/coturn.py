"""Start and stop a throw-away coturn (`turnserver`, Debian package coturn) on 127.0.0.1.

Meant to run inside the private network namespace of `netns.py`, next to signalite and the peers.
coturn checks TURN REST credentials (`use-auth-secret`): username `<expiry>:<id>`, password
base64(HMAC-SHA1(static-auth-secret, username)) — what signalite's GetIceServerConfig mints.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
from pathlib import Path
from types import TracebackType

INSTALL_HINT = "turnserver (Debian package coturn) is not installed: ./scripts/test installs it"


def free_udp_tcp_port(host: str = "127.0.0.1") -> int:
    """A port that was free for both TCP and UDP a moment ago (coturn listens on both)."""
    for _ in range(50):
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as tcp:
            tcp.bind((host, 0))
            port = int(tcp.getsockname()[1])
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
                try:
                    udp.bind((host, port))
                except OSError:
                    continue
                return port
    raise RuntimeError("no port free for both TCP and UDP")


class Coturn:
    """`with Coturn(workdir, secret) as turn:` — coturn on `turn.port` (UDP and TCP), logging to `turn.log_path`."""

    def __init__(self, workdir: Path, secret: str, *, realm: str = "signalite", host: str = "127.0.0.1") -> None:
        self.workdir = Path(workdir)
        self.secret = secret
        self.realm = realm
        self.host = host
        self.port = 0
        self.log_path = self.workdir / "turnserver.log"
        self.process: subprocess.Popen[bytes] | None = None

    def config(self) -> str:
        return "\n".join(
            [
                f"listening-port={self.port}",
                f"listening-ip={self.host}",
                f"relay-ip={self.host}",
                "use-auth-secret",
                f"static-auth-secret={self.secret}",
                f"realm={self.realm}",
                # The peers' relayed addresses are on 127.0.0.1; coturn refuses loopback peers without this.
                "allow-loopback-peers",
                "no-cli",
                "no-tls",
                "no-dtls",
                "fingerprint",
                # Logs every request with its user (ALLOCATE success / 401): the test reads them.
                "verbose",
                f"log-file={self.log_path}",
                "simple-log",  # exactly log-file, no date suffix
                f"pidfile={self.workdir / 'turnserver.pid'}",
                f"userdb={self.workdir / 'turndb'}",  # not the system's /var/lib/turn/turndb
                "",
            ]
        )

    def start(self, timeout: float = 10.0) -> Coturn:
        binary = shutil.which("turnserver")
        if binary is None:
            raise RuntimeError(INSTALL_HINT)
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.port = free_udp_tcp_port(self.host)
        conf = self.workdir / "turnserver.conf"
        conf.write_text(self.config())
        self.process = subprocess.Popen(
            [binary, "-c", str(conf)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"turnserver exited with {self.process.returncode}:\n{self.log()[-4000:]}")
            # Ready once the TCP listener accepts (UDP and TCP listeners are set up together).
            try:
                with socket.create_connection((self.host, self.port), timeout=0.5):
                    return self
            except OSError:
                time.sleep(0.05)
        self.stop()
        raise TimeoutError(f"turnserver did not listen on {self.host}:{self.port}:\n{self.log()[-4000:]}")

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def lines_for_user(self, username: str) -> list[str]:
        """Log lines naming `username` (coturn writes `user <name>` on each authenticated request)."""
        return [line for line in self.log().splitlines() if username in line]

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(5)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(5)
        self.process = None

    def __enter__(self) -> Coturn:
        return self.start()

    def __exit__(self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None) -> None:
        self.stop()
