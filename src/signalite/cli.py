"""The `signalite` command: `signalite serve [flags]`."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import logging
import signal
import sys
from collections.abc import Sequence

from signalite import __version__
from signalite.app import Server
from signalite.auth.credentials import load_credentials
from signalite.config import Settings, add_arguments, load_settings
from signalite.log import configure, event


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="signalite",
        description="A self-hostable server that speaks the AWS KVS WebRTC signaling API.",
    )
    parser.add_argument("--version", action="version", version=f"signalite {__version__}")
    commands = parser.add_subparsers(dest="command", required=True)
    serve = commands.add_parser(
        "serve",
        help="run the server",
        description="Run the server. Every flag can also be set as SIGNALITE_<FLAG> (e.g. SIGNALITE_PORT).",
    )
    add_arguments(serve)
    return parser


def banner(server: Server) -> str:
    """What a person needs to start using the server (printed on start-up)."""
    s = server.settings
    url = server.url
    mode = (
        f"strict (SigV4 verified; credentials from {s.credentials})"
        if s.credentials
        else "open (any credentials accepted)"
    )
    return "\n".join(
        [
            f"signalite {__version__} listening on {url}",
            f"  data:      {'PostgreSQL (--database)' if s.database else s.database_path.resolve()}",
            f"  auth mode: {mode}",
            f"  region:    {s.region} (when a request carries no SigV4 scope), account {s.account_id}",
            f"  limits:    {s.limits}",
            *(
                [f"  TLS CA:    {server.ca_path}  (trust it: NODE_EXTRA_CA_CERTS, browser, aws --ca-bundle)"]
                if server.ca_path
                else []
            ),
            f"  console:   {url}/console/",
            "  try it:",
            "    AWS_ACCESS_KEY_ID=test AWS_SECRET_ACCESS_KEY=test AWS_DEFAULT_REGION=us-east-1 \\",
            f"    aws kinesisvideo create-signaling-channel --channel-name demo --endpoint-url {url}",
        ]
    )


async def _serve(settings: Settings) -> None:
    server = Server(settings)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    loop.add_signal_handler(signal.SIGHUP, lambda: asyncio.ensure_future(server.request_reload()))
    await server.start()
    # Everything loaded so far (botocore's service models above all: ~100k objects) lives as long as
    # the process. Frozen, the collector stops re-scanning it: a full collection drops from ~30 ms,
    # a stall every client would see, to well under a millisecond.
    gc.collect()
    gc.freeze()
    print(banner(server), flush=True)
    event(logging.INFO, "server.started", url=server.url, pid=_pid())
    try:
        await stop.wait()
        event(logging.INFO, "server.stopping")
    finally:
        await server.stop()
    event(logging.INFO, "server.stopped")


def _pid() -> int:
    import os

    return os.getpid()


def _without_flags(argv: list[str], flags: tuple[str, ...]) -> list[str]:
    """`argv` less the given flags, in both `--flag value` and `--flag=value` forms."""
    out: list[str] = []
    skip = False
    for arg in argv:
        if skip:
            skip = False
            continue
        name = arg.split("=", 1)[0]
        if name in flags:
            skip = "=" not in arg and name != "--reuse-port"
            continue
        out.append(arg)
    return out


def _run_workers(settings: Settings, argv: list[str]) -> int:
    """`--workers N`: N `signalite serve` processes sharing the port (SO_REUSEPORT) and the bus.

    The parent only supervises: it forwards SIGINT/SIGTERM/SIGHUP to every worker and exits when
    they all have (with the first non-zero status, if any).
    """
    import os
    import subprocess

    if settings.tls == "self-signed":
        # Create the CA and certificate once, before the workers race to do it.
        from signalite.tls import ensure_self_signed

        ensure_self_signed(settings.data_dir)
    base = settings.node_id or f"{__import__('socket').gethostname()}:{settings.port}"
    children = []
    for i in range(settings.workers):
        env = {**os.environ, "SIGNALITE_WORKERS": "1", "SIGNALITE_REUSE_PORT": "1", "SIGNALITE_NODE_ID": f"{base}/{i}"}
        args = _without_flags(argv, ("--workers", "--node-id", "--reuse-port"))
        children.append(subprocess.Popen([sys.executable, "-m", "signalite", *args], env=env))
    pids = " ".join(str(c.pid) for c in children)
    print(f"signalite: {settings.workers} workers on port {settings.port} (pids {pids})", flush=True)

    def forward(signum: int, _frame: object) -> None:
        for child in children:
            with contextlib.suppress(ProcessLookupError):
                child.send_signal(signum)

    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, forward)
    codes = [child.wait() for child in children]
    return next((c for c in codes if c), 0)


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    flags = {k: v for k, v in vars(args).items() if k != "command"}
    try:
        settings = load_settings(flags)
    except (ValueError, OSError) as e:
        print(f"signalite: {e}", file=sys.stderr)
        return 2
    if settings.credentials is not None:
        try:
            load_credentials(settings.credentials)  # fail fast, before binding the port
        except ValueError as e:
            print(f"signalite: {e}", file=sys.stderr)
            return 2
    configure(settings.log_level, settings.log_format)
    if settings.workers > 1:
        return _run_workers(settings, list(argv if argv is not None else sys.argv[1:]))
    try:
        import uvloop
    except ImportError:  # pragma: no cover - platforms without uvloop
        uvloop = None  # type: ignore[assignment]
    with contextlib.suppress(KeyboardInterrupt):
        if uvloop is not None:
            uvloop.run(_serve(settings))
        else:  # pragma: no cover
            asyncio.run(_serve(settings))
    return 0
