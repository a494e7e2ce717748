"""End to end: a real Prometheus with our rules scrapes a 2-rank torchrun (gloo, CPU) run with the monitor.

Then every dashboard query returns data, the run-MFU recording rule agrees with the monitor's own figure and
with the figure the paced run was built to hold, and TrainingMFULow is pending for that run (its `for: 10m` is
tested in dashboards/prometheus/tests/ with promtool). The GPU panels get their data from a fake NVML device
at constant power behind the monitor's GpuBackend interface (tests/dist_prom_worker.py): that checks their
queries and labels, and energy per token against watts / tokens per second, not NVML itself.

One deliberate change to the shipped rules: their rate windows shrink from 1m/5m to 10s. A 1m rate() of a
series younger than a minute divides less than a minute of increase by 60 s (Prometheus' extrapolatedRate), so
with the shipped windows this test would have to train for over a minute before any figure is right. The
expressions are otherwise the shipped ones, byte for byte.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.parse
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
RULES = ROOT / "dashboards" / "prometheus" / "rules.yml"
GRAFANA = ROOT / "dashboards" / "grafana"
WORKER = Path(__file__).resolve().parent / "dist_prom_worker.py"
GPU_MARK = "Needs GPU telemetry (NVML)."  # dashboards/build.py
WINDOW = "10s"
JOB = "training"  # the job label the monitor's file_sd targets carry (monitor/export/file_sd.py)
GPU_WATTS = 300.0  # the fake NVML device's constant power draw

PROMETHEUS = shutil.which("prometheus")
pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(PROMETHEUS is None, reason="prometheus not installed (apt-get install prometheus)"),
]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def free_port_pair() -> int:
    """A base port whose successor is free too (ranks serve on base + LOCAL_RANK)."""
    for _ in range(50):
        base = free_port()
        try:
            with socket.socket() as a, socket.socket() as b:
                a.bind(("127.0.0.1", base))
                b.bind(("127.0.0.1", base + 1))
            return base
        except OSError:
            continue
    raise RuntimeError("no two consecutive free ports")


@dataclass
class Prom:
    url: str

    def get(self, path: str, **params: str) -> Any:
        query = urllib.parse.urlencode(params)
        with urllib.request.urlopen(f"{self.url}{path}?{query}", timeout=10) as response:
            body = json.loads(response.read())
        assert body["status"] == "success", body
        return body["data"]

    def query(self, expr: str) -> list[dict[str, Any]]:
        data = self.get("/api/v1/query", query=expr)
        assert data["resultType"] == "vector", (expr, data["resultType"])
        return list(data["result"])

    def value(self, expr: str) -> float:
        result = self.query(expr)
        assert len(result) == 1, (expr, result)
        return float(result[0]["value"][1])


def tail(path: Path, chars: int = 3000) -> str:
    return path.read_text(errors="replace")[-chars:] if path.exists() else ""


Procs = dict[str, tuple[subprocess.Popen[bytes], Path]]  # name -> (process, its log)


def wait_for(what: str, check: Callable[[], bool], timeout: float, procs: Procs) -> None:
    """Poll ``check`` until it holds; fail at once if one of ``procs`` exits, or after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for name, (proc, log) in procs.items():
            if proc.poll() is not None:
                code = proc.returncode
                raise AssertionError(f"{name} exited with {code} while waiting for {what}:\n{tail(log)}")
        try:
            if check():
                return
        except (OSError, AssertionError):
            pass
        time.sleep(0.25)
    logs = "\n".join(f"--- {name}:\n{tail(log)}" for name, (_, log) in procs.items())
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}\n{logs}")


def shortened_rules() -> str:
    text = RULES.read_text(encoding="utf-8")
    for window in ("[1m]", "[5m]"):
        assert window in text
        text = text.replace(window, f"[{WINDOW}]")
    return text


def dashboard_queries() -> Iterator[tuple[str, str, str, bool]]:
    """(dashboard, panel title, expr, needs GPU) for every query of the committed dashboards."""
    for path in sorted(GRAFANA.glob("*.json")):
        board = json.loads(path.read_text(encoding="utf-8"))
        for panel in board["panels"]:
            for target in panel.get("targets", []):
                yield path.name, panel["title"], target["expr"], GPU_MARK in panel.get("description", "")


def substitute(expr: str, run: str) -> str:
    return (
        expr.replace("$__rate_interval", WINDOW)
        .replace("$__range", "1m")
        .replace("$target_tokens", "1e12")
        .replace("$job", JOB)
        .replace("$run", run)
        .replace("$rank", ".*")
    )


@pytest.fixture
def stack(tmp_path: Path) -> Iterator[dict[str, Any]]:
    """Prometheus (our rules, file_sd) and a 2-rank torchrun whose monitors write the file_sd targets."""
    assert PROMETHEUS is not None
    run = f"e2e-{uuid.uuid4().hex[:8]}"
    sd_dir, logs, tsdb = tmp_path / "sd", tmp_path / "logs", tmp_path / "tsdb"
    for d in (sd_dir, logs, tsdb):
        d.mkdir()
    stop = tmp_path / "stop"
    (tmp_path / "rules.yml").write_text(shortened_rules(), encoding="utf-8")
    config = {
        "global": {"scrape_interval": "1s", "scrape_timeout": "1s", "evaluation_interval": "1s"},
        "rule_files": ["rules.yml"],
        "scrape_configs": [
            {
                "job_name": "mfu-e2e",
                "file_sd_configs": [{"files": [f"{sd_dir}/*.json"], "refresh_interval": "1s"}],
            }
        ],
    }
    (tmp_path / "prometheus.yml").write_text(yaml.safe_dump(config), encoding="utf-8")
    prom_port = free_port()
    prom_log = open(tmp_path / "prometheus.log", "wb")  # noqa: SIM115 (closed below)
    prom = subprocess.Popen(
        [
            PROMETHEUS,
            f"--config.file={tmp_path / 'prometheus.yml'}",
            f"--storage.tsdb.path={tsdb}",
            f"--web.listen-address=127.0.0.1:{prom_port}",
            "--log.level=warn",
        ],
        stdout=prom_log,
        stderr=subprocess.STDOUT,
        cwd=tmp_path,
        start_new_session=True,
    )
    base_port = free_port_pair()
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    train_log = open(tmp_path / "torchrun.log", "wb")  # noqa: SIM115 (closed below)
    train = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--standalone",
            "--nproc-per-node=2",
            str(WORKER),
            f"--run-id={run}",
            f"--base-port={base_port}",
            f"--file-sd-dir={sd_dir}",
            f"--log-dir={logs}",
            f"--stop-file={stop}",
            "--max-seconds=150",
            f"--fake-gpu-watts={GPU_WATTS}",
        ],
        stdout=train_log,
        stderr=subprocess.STDOUT,
        env=env,
        cwd=ROOT,
        start_new_session=True,
    )
    try:
        yield {
            "prom": Prom(f"http://127.0.0.1:{prom_port}"),
            "procs": {
                "prometheus": (prom, tmp_path / "prometheus.log"),
                "torchrun": (train, tmp_path / "torchrun.log"),
            },
            "train": train,
            "run": run,
            "base_port": base_port,
            "logs": logs,
            "stop": stop,
            "tmp": tmp_path,
        }
    finally:
        stop.touch()
        try:
            train.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(train.pid, signal.SIGKILL)
            train.wait()
        os.killpg(prom.pid, signal.SIGTERM)
        try:
            prom.wait(timeout=10)
        except subprocess.TimeoutExpired:
            os.killpg(prom.pid, signal.SIGKILL)
            prom.wait()
        prom_log.close()
        train_log.close()


def test_live_prometheus_scrapes_a_two_rank_run(stack: dict[str, Any]) -> None:
    prom: Prom = stack["prom"]
    procs: Procs = stack["procs"]
    run: str = stack["run"]
    sel = f'job="{JOB}", run="{run}"'

    def ready() -> bool:
        with urllib.request.urlopen(f"{prom.url}/-/ready", timeout=2) as response:
            return bool(response.status == 200)

    wait_for("Prometheus ready", ready, 30, procs)
    # Both ranks found through the monitors' file_sd targets, each with >= 12 s of scrapes (a full 10 s rate
    # window) and its windowed MFU exported (after the monitor's warm-up steps).
    wait_for(
        "a full window of scraped training",
        lambda: (
            len(prom.query(f"count_over_time(training_steps_total{{{sel}}}[1m]) >= 12")) == 2
            and len(prom.query(f"training_mfu_ratio{{{sel}}}")) == 2
            and len(prom.query(f"job_run:training_mfu:ratio_rate1m{{{sel}}}")) == 1
        ),
        90,
        procs,
    )
    plan = json.loads((stack["logs"] / "plan.json").read_text(encoding="utf-8"))

    # Targets: one per rank, on base port + LOCAL_RANK, discovered through file_sd, up.
    active = prom.get("/api/v1/targets", state="active")["activeTargets"]
    instances = sorted(t["labels"]["instance"] for t in active if t["health"] == "up")
    base = stack["base_port"]
    assert instances == [f"127.0.0.1:{base}", f"127.0.0.1:{base + 1}"]

    # Every dashboard query returns data (the GPU panels' from the fake NVML device).
    empty, gpu_queries, checked = [], 0, 0
    for dashboard, title, expr, gpu in dashboard_queries():
        checked += 1
        gpu_queries += gpu
        if not prom.query(substitute(expr, run)):
            empty.append(f"{dashboard} / {title}: {substitute(expr, run)}")
    assert not empty, "queries without data:\n" + "\n".join(empty)
    assert checked >= 30 and gpu_queries >= 5

    # The dashboards' variable queries: label_values(training_steps_total{...}, run|rank).
    series = prom.get("/api/v1/series", **{"match[]": f'training_steps_total{{job=~"{JOB}"}}'})
    assert run in {s["run"] for s in series}
    assert {s["rank"] for s in series if s["run"] == run} == {"0", "1"}

    # Run MFU: the recording rule vs the monitor's own figure vs the figure the run was paced to hold.
    rule = prom.value(f"job_run:training_mfu:ratio_rate1m{{{sel}}}")
    # The monitor's run-level figure (all ranks, all-reduced at its log intervals), where it exports one...
    own = [float(r["value"][1]) for r in prom.query(f"training_world_mfu_ratio{{{sel}}}")]
    # ... and its per-rank windowed MFU (CONTRACTS), combined the only right way: weighted by peak.
    per_rank = prom.value(
        f"sum(training_mfu_ratio{{{sel}}} * training_peak_flops_per_second{{{sel}}})"
        f" / sum(training_peak_flops_per_second{{{sel}}})"
    )
    target = plan["target_mfu"]
    for figure in (*own, per_rank):
        assert rule == pytest.approx(figure, rel=0.15), (rule, own, per_rank)
    # Pacing can only slow a step (a late wake-up), never speed it: MFU at most the target, not far below it.
    assert 0.6 * target <= rule <= 1.05 * target, (rule, target)
    peaks = prom.value(f"job_run:training_peak_flops_per_second:sum{{{sel}}}")
    assert peaks == pytest.approx(plan["world_size"] * plan["peak_flops"], rel=1e-9)
    tokens = prom.value(f"job_run:training_tokens:rate1m{{{sel}}}")
    paced = plan["world_size"] * plan["tokens_per_step"] / plan["period"]
    assert 0.6 * paced <= tokens <= 1.05 * paced, (tokens, paced)

    # Energy per token (GPUs dashboard): both ranks' constant power over the run's tokens/s.
    (energy,) = [e for d, t, e, _ in dashboard_queries() if t == "Energy per token"]
    joules_per_token = prom.value(substitute(energy, run))
    assert joules_per_token == pytest.approx(plan["world_size"] * GPU_WATTS / tokens, rel=0.05)

    # TrainingMFULow: its expression (without `for`) selects this run, and the alert is pending.
    (mfu_low,) = [
        r for g in yaml.safe_load(RULES.read_text(encoding="utf-8"))["groups"] for r in g["rules"]
        if r.get("alert") == "TrainingMFULow"
    ]  # fmt: skip
    assert [r["metric"]["run"] for r in prom.query(mfu_low["expr"]) if r["metric"]["job"] == JOB] == [run]
    wait_for(
        "TrainingMFULow pending",
        lambda: len(prom.query(f'ALERTS{{alertname="TrainingMFULow", alertstate="pending", {sel}}}')) == 1,
        10,
        procs,
    )
    alerts = prom.get("/api/v1/alerts")["alerts"]
    states = {(a["labels"]["alertname"], a["state"]) for a in alerts if a["labels"].get("run") == run}
    assert ("TrainingMFULow", "pending") in states
    assert not {name for name, _ in states} & {"TrainingStalled", "TrainingStraggler"}, states

    # A clean stop: every rank leaves at the same step and torchrun exits 0.
    stack["stop"].touch()
    assert stack["train"].wait(timeout=30) == 0, tail(stack["tmp"] / "torchrun.log")
