"""The codebase's own standards, checked with every run of the suite: `ruff` clean (lint and format)
and `mypy --strict` on the package, so a change that breaks them fails CI rather than a later review."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent


@pytest.mark.parametrize(
    "argv",
    [
        ["ruff", "check", "src", "tests", "bench"],
        ["ruff", "format", "--check", "src", "tests", "bench"],
        ["mypy", "--strict", "src/signalite"],
    ],
    ids=["ruff-check", "ruff-format", "mypy-strict"],
)
def test_the_code_meets_its_checks(argv: list[str], tmp_path: Path) -> None:
    # mypy's cache goes to a temporary directory: a stale cache must not hide an error.
    extra = ["--cache-dir", str(tmp_path / "mypy")] if argv[0] == "mypy" else []
    done = subprocess.run(
        [str(BIN / argv[0]), *argv[1:], *extra], cwd=ROOT, capture_output=True, text=True, timeout=600
    )
    assert done.returncode == 0, f"{' '.join(argv)}:\n{done.stdout}{done.stderr}"
