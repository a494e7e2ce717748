"""The Grafana dashboards: committed JSON equals the generator's output, and the JSON is sound.

Queries are also checked by a real PromQL parser (promtool) here, and against a live Prometheus scraping a
real training run in tests/test_prometheus_e2e.py.
"""

from __future__ import annotations

import importlib.util
import json
import re
import shutil
import subprocess
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
DASHBOARDS = ROOT / "dashboards"
GRAFANA = DASHBOARDS / "grafana"

# CONTRACTS.md, "Prometheus metrics" (the histogram exposes _bucket, _sum and _count series).
CONTRACT_METRICS = {
    "training_tokens_total",
    "training_steps_total",
    "training_model_flops_total",
    "training_peak_flops_per_second",
    "training_mfu_ratio",
    "training_tokens_per_second",
    "training_last_step_timestamp_seconds",
    "training_step_duration_seconds_bucket",
    "training_step_duration_seconds_sum",
    "training_step_duration_seconds_count",
    "training_run_info",
    "training_gpu_utilization_ratio",
    "training_gpu_memory_used_bytes",
    "training_gpu_power_watts",
    "training_gpu_energy_joules_total",
    "training_gpu_sm_clock_hertz",
    "training_gpu_temperature_celsius",
    "training_monitor_errors_total",
}
# Beyond the contract, metrics of this monitor that docs/monitor.md documents (the MFU-loss split, issue 9)
MONITOR_METRICS = {
    "training_mfu_loss_ratio",
    "training_gpu_tensor_active_ratio",
    "training_mfu_suspect_reason",
}
REQUIRED_VARIABLES = {"datasource", "job", "run", "rank"}


def load_build() -> ModuleType:
    pytest.importorskip("grafana_foundation_sdk", reason="grafana-foundation-sdk not installed (test extra)")
    spec = importlib.util.spec_from_file_location("dashboards_build", DASHBOARDS / "build.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def committed() -> dict[str, dict[str, Any]]:
    paths = sorted(GRAFANA.glob("*.json"))
    return {path.name: json.loads(path.read_text(encoding="utf-8")) for path in paths}


def panels(board: dict[str, Any]) -> list[dict[str, Any]]:
    out = []
    for panel in board.get("panels", []):
        out.append(panel)
        out.extend(panel.get("panels", []))  # a collapsed row holds its panels
    return out


def targets(board: dict[str, Any]) -> list[tuple[dict[str, Any], dict[str, Any]]]:
    return [(panel, target) for panel in panels(board) for target in panel.get("targets", [])]


def test_committed_json_equals_generator_output() -> None:
    build = load_build()
    files = committed()
    assert sorted(files) == sorted(spec.filename for spec in build.DASHBOARDS), "a dashboard missing or extra"
    for spec in build.DASHBOARDS:
        text = (GRAFANA / spec.filename).read_text(encoding="utf-8")
        assert text == build.render(spec), f"{spec.filename} is stale: run python dashboards/build.py"


def test_check_mode_reports_a_stale_file(tmp_path: Path) -> None:
    build = load_build()
    assert build.main(["--out", str(tmp_path)]) == 0
    assert build.main(["--check", "--out", str(tmp_path)]) == 0
    victim = tmp_path / build.DASHBOARDS[0].filename
    victim.write_text(victim.read_text(encoding="utf-8").replace("Run MFU", "Run mfu"), encoding="utf-8")
    assert build.main(["--check", "--out", str(tmp_path)]) == 1


def test_the_four_dashboards_exist_with_unique_uids() -> None:
    files = committed()
    assert set(files) == {"mfu-overview.json", "mfu-ranks.json", "mfu-gpus.json", "mfu-monitor-health.json"}
    uids = [board["uid"] for board in files.values()]
    assert len(set(uids)) == len(uids)


@pytest.mark.parametrize("name", sorted(committed()))
def test_dashboard_variables_datasource_and_ids(name: str) -> None:
    board = committed()[name]
    variables = {v["name"]: v for v in board["templating"]["list"]}
    assert set(variables) >= REQUIRED_VARIABLES
    assert variables["datasource"]["type"] == "datasource"
    assert variables["datasource"]["query"] == "prometheus"
    for var in ("job", "run", "rank"):
        assert variables[var]["type"] == "query"
        assert variables[var]["datasource"]["uid"] == "${datasource}"
        assert variables[var]["allValue"] == ".*"  # "All" must be a regex: the queries match with =~
    annotations = board["annotations"]["list"]
    assert any(a.get("builtIn") == 1 for a in annotations), "Grafana's built-in annotation query"
    for annotation in annotations:
        if "expr" in annotation:
            assert 'job=~"$job"' in annotation["expr"] and 'run=~"$run"' in annotation["expr"]
    ids = [panel["id"] for panel in panels(board)]
    assert len(ids) == len(set(ids)), "panel ids must be unique"
    for panel in panels(board):
        if panel["type"] == "row":
            continue
        assert panel["datasource"] == {"type": "prometheus", "uid": "${datasource}"}, panel["title"]
        assert panel["targets"], f"{panel['title']} has no query"
        assert 0 < panel["gridPos"]["w"] <= 24


@pytest.mark.parametrize("name", sorted(committed()))
def test_queries_filter_by_job_and_run_and_use_contract_metrics(name: str) -> None:
    for panel, target in targets(committed()[name]):
        expr = target["expr"]
        for metric, selector in re.findall(r"\b(training_\w+)\{([^}]*)\}", expr):
            assert metric in CONTRACT_METRICS | MONITOR_METRICS, f"{panel['title']}: {metric} is not ours"
            assert 'job=~"$job"' in selector and 'run=~"$run"' in selector, f"{panel['title']}: {expr}"
        bare = re.findall(r"\b(training_\w+)\b(?![{\w])", expr)
        assert not bare, f"{panel['title']}: unfiltered selector(s) {bare}"


def test_monitor_metrics_the_dashboards_use_are_documented() -> None:
    docs = (Path(__file__).resolve().parents[1] / "docs" / "monitor.md").read_text(encoding="utf-8")
    for metric in MONITOR_METRICS:
        assert f"`{metric}`" in docs


def test_gpu_panels_are_marked_and_only_they() -> None:
    build = load_build()
    seen_gpu = 0
    for board in committed().values():
        for panel in panels(board):
            if panel["type"] == "row":
                continue
            uses_gpu = any("training_gpu_" in t["expr"] for t in panel["targets"])
            marked = build.GPU_MARK in panel.get("description", "")
            assert uses_gpu == marked, panel["title"]
            seen_gpu += uses_gpu
    assert seen_gpu >= 5  # power, energy per token, memory, clocks, utilisation next to MFU


def test_required_panels_exist() -> None:
    titles = {panel["title"] for board in committed().values() for panel in panels(board)}
    for title in (
        "Run MFU",
        "Tokens / s",
        "Step time quantiles",
        "Tokens so far",
        "ETA",
        "Slowest rank / median rank",
        "Power",
        "Energy per token",
        "Memory used",
        "SM clock",
        "GPU busy vs MFU",
        "Monitor errors",
        "Targets up",
    ):
        assert title in titles


def test_run_mfu_is_a_ratio_of_sums_not_a_mean_of_ratios() -> None:
    board = committed()["mfu-overview.json"]
    exprs = [t["expr"] for p, t in targets(board) if p["title"] == "Run MFU"]
    assert exprs
    for expr in exprs:
        assert "training_mfu_ratio" not in expr and "avg" not in expr
        numerator, denominator = expr.split(" / ")
        assert numerator.startswith("sum by (job, run) (rate(training_model_flops_total")
        assert denominator.startswith("sum by (job, run) (training_peak_flops_per_second")


def substitute(expr: str) -> str:
    """Grafana's template variables -> values a PromQL parser or a live server accepts."""
    return (
        expr.replace("$__rate_interval", "1m")
        .replace("$__range", "1h")
        .replace("$target_tokens", "1e12")
        .replace("$job", ".*")
        .replace("$run", ".*")
        .replace("$rank", ".*")
    )


def test_every_query_parses_as_promql(tmp_path: Path) -> None:
    """promtool parses each expression (as a recording rule): no server needed, a syntax error fails here."""
    promtool = shutil.which("promtool")
    if promtool is None:
        pytest.skip("promtool not installed (apt-get install prometheus; .ci/run does)")
    rules = []
    for name, board in committed().items():
        exprs = [target["expr"] for _, target in targets(board)]
        exprs += [a["expr"] for a in board["annotations"]["list"] if "expr" in a]
        for index, expr in enumerate(exprs):
            record = f"dashboard:{re.sub(r'[^a-z]', '_', name[:-5])}:q{index}"
            rules.append({"record": record, "expr": substitute(expr)})
    path = tmp_path / "dashboard-queries.yml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "dashboards", "rules": rules}]}), encoding="utf-8")
    command = [promtool, "check", "rules", str(path)]
    result = subprocess.run(command, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"{len(rules)} rules found" in result.stdout


def test_provisioning_points_at_the_dashboards() -> None:
    provisioning = GRAFANA / "provisioning"
    datasources = yaml.safe_load((provisioning / "datasources/prometheus.yml").read_text(encoding="utf-8"))
    (source,) = datasources["datasources"]
    assert source["type"] == "prometheus" and source["url"].startswith("http")
    providers = yaml.safe_load((provisioning / "dashboards/mfu-monitor.yml").read_text(encoding="utf-8"))
    (provider,) = providers["providers"]
    assert provider["type"] == "file"
    compose = yaml.safe_load((DASHBOARDS / "docker-compose.yml").read_text(encoding="utf-8"))
    mounts = compose["services"]["grafana"]["volumes"]
    assert f"./grafana:{provider['options']['path']}:ro" in mounts
    home = compose["services"]["grafana"]["environment"]["GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH"]
    assert home == f"{provider['options']['path']}/mfu-overview.json"
    prom_mounts = compose["services"]["prometheus"]["volumes"]
    assert "./prometheus:/etc/prometheus:ro" in prom_mounts


def test_file_sd_sample_is_a_valid_target_list() -> None:
    groups = json.loads((DASHBOARDS / "prometheus/targets/example.json.sample").read_text(encoding="utf-8"))
    assert groups and all(group["targets"] and isinstance(group.get("labels", {}), dict) for group in groups)
    for group in groups:
        for target in group["targets"]:
            host, _, port = target.rpartition(":")
            assert host and port.isdigit()
        # run and rank come from the metrics; as target labels they would clash (exported_run, exported_rank)
        assert not {"run", "rank"} & set(group.get("labels", {}))
