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


# End-to-end tests: they start servers, torchrun/spawned processes, browsers or external tools. Every ``slow``
# test is one too. ``pytest -m "not e2e"`` runs the unit tests alone; ``pytest -m e2e`` the rest.
_E2E_FILES = {"test_prometheus_e2e.py", "test_prometheus_rules.py", "test_attribution_dist.py"}
_E2E_TESTS = {
    "test_report_renders_in_headless_chromium",  # a headless browser
    "test_every_query_parses_as_promql",  # promtool
    "test_serves_metrics_over_http_on_localhost",  # a /metrics server on loopback
    "test_port_in_use_is_counted_and_training_finishes",
    "test_catalog_imports_without_torch",  # a fresh interpreter
    "test_gpu_check_without_a_gpu_says_so_and_exits_0",
    "test_supported_path_does_not_import_torch_or_transformers",
}


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        name = getattr(item, "originalname", None) or item.name
        if item.get_closest_marker("slow") is not None or item.path.name in _E2E_FILES or name in _E2E_TESTS:
            item.add_marker(pytest.mark.e2e)
