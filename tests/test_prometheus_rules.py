"""dashboards/prometheus: rules and scrape config pass promtool; its unit tests (fires, silent, pending) pass.

The unit tests live in dashboards/prometheus/tests/*.yml; their expectations are derived from the inputs
in comments there. Here we also check that they would catch a wrong rule (a mean of per-rank ratios).
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
PROM = ROOT / "dashboards" / "prometheus"
PROMTOOL = shutil.which("promtool")
needs_promtool = pytest.mark.skipif(
    PROMTOOL is None, reason="promtool not installed (apt-get install prometheus; .ci/run does)"
)


def promtool(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    assert PROMTOOL is not None
    return subprocess.run([PROMTOOL, *args], capture_output=True, text=True, timeout=120, cwd=cwd)


def rules() -> list[dict[str, Any]]:
    doc = yaml.safe_load((PROM / "rules.yml").read_text(encoding="utf-8"))
    return [rule for group in doc["groups"] for rule in group["rules"]]


def alert(name: str) -> dict[str, Any]:
    (found,) = [rule for rule in rules() if rule.get("alert") == name]
    return found


@needs_promtool
def test_promtool_check_rules() -> None:
    result = promtool("check", "rules", str(PROM / "rules.yml"))
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"SUCCESS: {len(rules())} rules found" in result.stdout


@needs_promtool
def test_promtool_check_config_of_the_scrape_example() -> None:
    result = promtool("check", "config", "prometheus.yml", cwd=PROM)
    assert result.returncode == 0, result.stdout + result.stderr
    config = yaml.safe_load((PROM / "prometheus.yml").read_text(encoding="utf-8"))
    kinds = {key for job in config["scrape_configs"] for key in job if key.endswith("_configs")}
    assert {"static_configs", "file_sd_configs"} <= kinds


@needs_promtool
def test_promtool_unit_tests_pass() -> None:
    files = sorted(str(p) for p in (PROM / "tests").glob("*.yml"))
    assert len(files) >= 2
    result = promtool("test", "rules", *files)
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.count("SUCCESS") == len(files)


@needs_promtool
def test_unit_tests_catch_a_mean_of_per_rank_ratios(tmp_path: Path) -> None:
    """Replace run MFU by the (wrong) mean of per-rank ratios: the unit tests must fail."""
    text = (PROM / "rules.yml").read_text(encoding="utf-8")
    right = "expr: job_run:training_model_flops:rate1m / job_run:training_peak_flops_per_second:sum"
    wrong = (
        "expr: avg by (job, run) (rate(training_model_flops_total[1m])"
        " / on (job, instance, run, rank) training_peak_flops_per_second)"
    )
    assert right in text
    (tmp_path / "rules.yml").write_text(text.replace(right, wrong), encoding="utf-8")
    (tmp_path / "tests").mkdir()
    shutil.copy(PROM / "tests" / "mfu_low.yml", tmp_path / "tests" / "mfu_low.yml")
    result = promtool("test", "rules", str(tmp_path / "tests" / "mfu_low.yml"))
    assert result.returncode != 0
    assert 'run="weighted"' in result.stdout + result.stderr


def test_training_mfu_low_matches_the_contract() -> None:
    rule = alert("TrainingMFULow")
    assert rule["for"] == "10m"
    assert rule["labels"] == {"severity": "warning"}
    assert re.fullmatch(r"job_run:training_mfu:ratio_rate1m < 0\.25", rule["expr"].strip())
    (mfu,) = [r for r in rules() if r.get("record") == "job_run:training_mfu:ratio_rate1m"]
    assert "/" in mfu["expr"] and "avg" not in mfu["expr"]


def test_stalled_and_straggler_alerts_exist() -> None:
    stalled = alert("TrainingStalled")
    assert "> 300" in stalled["expr"] and "up == 1" in stalled["expr"]
    straggler = alert("TrainingStraggler")
    assert straggler["labels"]["severity"] == "warning"


def test_recording_rule_names_follow_level_metric_operations() -> None:
    records = [rule["record"] for rule in rules() if "record" in rule]
    assert records
    for name in records:
        level, metric, operations = name.split(":")
        assert re.fullmatch(r"[a-z]+(_[a-z]+)*", level), name
        assert metric.startswith("training_") and not metric.endswith("_total"), name  # rate() drops _total
        assert re.fullmatch(r"[a-z0-9_]+", operations), name
        labels = set(level.split("_"))
        assert {"job", "run"} <= labels, f"{name}: every record keeps job and run"
