"""The wheel a self-hoster installs holds the whole server, and a server run from it works.

The rest of the suite runs signalite from the source tree (an editable install), which would not
notice a file the wheel leaves out: a console page, a module added to a new subpackage, `py.typed`.
This builds the wheel with pip (as `pip install signalite` would), unpacks it, and starts
`python -m signalite serve` from the unpacked copy alone, with the source tree out of reach.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import sysconfig
import urllib.request
import zipfile
from collections.abc import Iterator
from pathlib import Path

import boto3
import pytest

from signalite.testing import free_port, wait_healthy

ROOT = Path(__file__).resolve().parents[2]
PACKAGE = ROOT / "src" / "signalite"


def _shipped_sources() -> set[str]:
    """What the wheel must hold: every module and data file of the package, as wheel paths."""
    out = set()
    for path in PACKAGE.rglob("*"):
        if path.is_file() and "__pycache__" not in path.parts and path.suffix != ".pyc":
            out.add(path.relative_to(PACKAGE.parent).as_posix())
    return out


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    # Built from a copy of what a source release holds: a build in the checkout would leave build/
    # behind and read the editable install's *.egg-info, whose file list can hide a missing rule.
    source = tmp_path_factory.mktemp("source")
    shutil.copytree(ROOT / "src", source / "src", ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(ROOT / name, source / name)
    out = tmp_path_factory.mktemp("wheel")
    # Build isolation fetches the build backend from PyPI, exactly as a user's `pip install` does.
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--quiet", "--wheel-dir", str(out), str(source)],
        check=True, timeout=300, capture_output=True,
    )  # fmt: skip
    (built,) = out.glob("signalite-*.whl")
    return built


@pytest.fixture(scope="module")
def unpacked(wheel: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    target = tmp_path_factory.mktemp("site")
    with zipfile.ZipFile(wheel) as archive:
        archive.extractall(target)
    return target


def _wheel_env(unpacked: Path) -> dict[str, str]:
    # -S (below) skips site processing, so the editable install's path hook cannot bring the source
    # tree back; the unpacked wheel comes first, the test environment's packages give the dependencies.
    site_packages = sysconfig.get_paths()["purelib"]
    return {**os.environ, "PYTHONPATH": os.pathsep.join([str(unpacked), site_packages])}


def test_the_wheel_holds_every_module_and_data_file(wheel: Path) -> None:
    with zipfile.ZipFile(wheel) as archive:
        names = set(archive.namelist())
    missing = sorted(_shipped_sources() - names)
    assert not missing, f"left out of the wheel: {missing}"
    assert "signalite/py.typed" in names
    assert "signalite/console/index.html" in names
    (metadata,) = [n for n in names if n.endswith(".dist-info/entry_points.txt")]
    with zipfile.ZipFile(wheel) as archive:
        entry_points = archive.read(metadata).decode()
    assert "signalite = signalite.cli:main" in entry_points  # the `signalite` command


def test_the_package_imported_is_the_wheels(unpacked: Path, tmp_path: Path) -> None:
    found = subprocess.run(
        [sys.executable, "-S", "-c", "import signalite; print(signalite.__file__)"],
        env=_wheel_env(unpacked), cwd=tmp_path, capture_output=True, text=True, check=True, timeout=60,
    ).stdout.strip()  # fmt: skip
    assert Path(found).is_relative_to(unpacked), found
    assert not Path(found).is_relative_to(ROOT)


@pytest.fixture
def server_from_wheel(unpacked: Path, tmp_path: Path) -> Iterator[str]:
    port = free_port()
    log = tmp_path / "server.log"
    with log.open("wb") as out:  # a file, not a pipe: nothing has to drain it
        argv = [sys.executable, "-S", "-m", "signalite", "serve", "--port", str(port), "--data-dir", str(tmp_path)]
        proc = subprocess.Popen(
            argv, env=_wheel_env(unpacked), cwd=tmp_path, stdout=out, stderr=subprocess.STDOUT,
        )  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    try:
        wait_healthy(url, proc, output=lambda: log.read_text(errors="replace"))
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def test_a_server_run_from_the_wheel_serves_the_api_and_the_console(server_from_wheel: str) -> None:
    kv = boto3.client(
        "kinesisvideo", endpoint_url=server_from_wheel, region_name="us-west-2",
        aws_access_key_id="test", aws_secret_access_key="test",
    )  # fmt: skip
    arn = kv.create_signaling_channel(ChannelName="from-the-wheel")["ChannelARN"]
    endpoints = kv.get_signaling_channel_endpoint(
        ChannelARN=arn, SingleMasterChannelEndpointConfiguration={"Protocols": ["WSS", "HTTPS"], "Role": "MASTER"}
    )["ResourceEndpointList"]
    assert {e["Protocol"] for e in endpoints} == {"WSS", "HTTPS"}
    with urllib.request.urlopen(f"{server_from_wheel}/console/") as page:
        assert page.status == 200
        assert b"<html" in page.read().lower()
    with urllib.request.urlopen(f"{server_from_wheel}/console/console.js") as script:
        assert script.status == 200
