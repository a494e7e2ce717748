"""Test-wide isolation: no test reads or writes the user's calibration cache (~/.cache/mfu-monitor)."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest


@pytest.fixture(autouse=True, scope="session")
def _isolated_cache(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A fresh cache folder for the session (subprocesses such as torchrun workers inherit it)."""
    cache = tmp_path_factory.mktemp("mfu-cache")
    old = os.environ.get("MFU_MONITOR_CACHE_DIR")
    os.environ["MFU_MONITOR_CACHE_DIR"] = str(cache)
    yield cache
    if old is None:
        os.environ.pop("MFU_MONITOR_CACHE_DIR", None)
    else:
        os.environ["MFU_MONITOR_CACHE_DIR"] = old
