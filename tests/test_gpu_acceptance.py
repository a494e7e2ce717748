"""The GPU acceptance script without a GPU (as in CI): it says so and exits 0 with a JSON verdict."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_without_a_gpu_it_says_so_and_exits_0() -> None:
    proc = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "gpu_acceptance.py"), "--train-seconds", "5"],
        capture_output=True, text=True, timeout=120, cwd=ROOT,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.strip().splitlines()
    assert lines[0].startswith("no GPU: ")
    verdict = json.loads(lines[-1])
    assert verdict["verdict"] == "no GPU" and verdict["checks"] == [] and verdict["reason"]


def test_bad_arguments_are_refused() -> None:
    proc = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "gpu_acceptance.py"), "--train-seconds", "inf"],
        capture_output=True, text=True, timeout=120, cwd=ROOT,
    )  # fmt: skip
    assert proc.returncode == 2 and "--train-seconds" in proc.stderr
