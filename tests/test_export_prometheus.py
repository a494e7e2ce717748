"""Prometheus export: samples from a fresh registry and over HTTP, GPU telemetry, port faults, file_sd."""

from __future__ import annotations

import json
import socket
import urllib.request
from typing import Any

import pytest
import torch
from fakes import FakeGpuBackend, fake_device, no_gpu
from prometheus_client import CollectorRegistry
from prometheus_client.parser import text_string_to_metric_families
from torch import nn

from monitor.hardware.nvml import Telemetry
from monitor.live.monitor import MFUMonitor

torch.set_num_threads(1)


def _train(mon_kwargs: dict[str, Any], steps: int = 6, batch: tuple[int, int] = (2, 8)) -> MFUMonitor:
    model = nn.Sequential(nn.Embedding(30, 8), nn.Linear(8, 30))
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    kw: dict[str, Any] = {"handle_sigterm": False, "warmup_steps": 1, "flops_per_token": 1000.0}
    kw.update(mon_kwargs)
    mon = MFUMonitor(model, opt, **kw)
    for _ in range(steps):
        model(torch.randint(0, 30, batch)).float().mean().backward()
        opt.step()
        opt.zero_grad()
    return mon


def test_samples_from_a_fresh_registry() -> None:
    registry = CollectorRegistry()
    mon = _train({"registry": registry, "peak_flops": 1e12, "run": "r1"}, steps=6)
    labels = {"run": "r1", "rank": "0"}
    snap = mon.snapshot()
    assert registry.get_sample_value("training_tokens_total", labels) == 6 * 16
    assert registry.get_sample_value("training_steps_total", labels) == 6
    assert registry.get_sample_value("training_model_flops_total", labels) == 6 * 16 * 1000.0
    assert registry.get_sample_value("training_peak_flops_per_second", labels) == 1e12
    mfu = registry.get_sample_value("training_mfu_ratio", labels)
    tps = registry.get_sample_value("training_tokens_per_second", labels)
    assert mfu is not None and tps is not None
    assert mfu == pytest.approx(tps * 1000.0 / 1e12, rel=0.05)  # the same window, read at a later scrape
    assert registry.get_sample_value("training_mfu_suspect", labels) == 0.0  # beside MFU, any run
    assert registry.get_sample_value("training_mfu_bf16_ratio", labels) is None  # FP8 runs only
    assert registry.get_sample_value("training_step_duration_seconds_count", labels) == 6
    assert registry.get_sample_value("training_step_duration_seconds_sum", labels) == pytest.approx(
        sum(s.seconds for s in snap.recent)
    )
    inf = registry.get_sample_value("training_step_duration_seconds_bucket", {**labels, "le": "+Inf"})
    assert inf == 6
    assert registry.get_sample_value("training_monitor_errors_total", labels) == 0
    assert registry.get_sample_value("training_last_step_timestamp_seconds", labels) == pytest.approx(
        snap.last_step_time
    )
    info = registry.get_sample_value(
        "training_run_info",
        {**labels, "device": snap.device, "dtype": "fp32", "model": "Sequential", "peak_source": "override",
         "flops_method": "given (flops_per_token)", "world_size": "1"},
    )  # fmt: skip
    assert info == 1
    mon.close()
    assert registry.get_sample_value("training_tokens_total", labels) is None  # unregistered at close


def test_mfu_is_absent_while_the_peak_is_unknown(monkeypatch: pytest.MonkeyPatch, tmp_path: Any) -> None:
    monkeypatch.setenv("MFU_MONITOR_CACHE_DIR", str(tmp_path))
    mon = _train({"run": "r2"}, steps=3)
    labels = {"run": "r2", "rank": "0"}
    assert mon.registry.get_sample_value("training_tokens_total", labels) == 48
    assert mon.registry.get_sample_value("training_mfu_ratio", labels) is None
    assert mon.registry.get_sample_value("training_peak_flops_per_second", labels) is None
    mon.close()


def test_world_rate_is_absent_while_no_rank_has_one() -> None:
    import dataclasses

    from monitor.export.prometheus import snapshot_metrics
    from monitor.figures.snapshot import WorldFigures

    mon = _train({"peak_flops": 1e12, "run": "w"}, steps=3)
    snap = mon.snapshot()
    mon.close()
    world = WorldFigures(
        as_of_step=3, world_size=2, tokens_total=96, model_flops_total=96e3, tokens_per_second=None,
        model_flops_per_second=None, peak_flops_per_second=2e12, mfu=None, max_step_seconds=None,
    )  # fmt: skip
    for rate in (None, 1234.5):
        families = {
            f.name: f
            for f in snapshot_metrics(
                dataclasses.replace(snap, world=dataclasses.replace(world, tokens_per_second=rate))
            )
        }
        assert families["training_world_tokens"].samples[0].value == 96
        if rate is None:
            assert "training_world_tokens_per_second" not in families  # unknown, not 0 tokens/s
        else:
            assert families["training_world_tokens_per_second"].samples[0].value == rate


def test_two_monitors_in_one_process_do_not_collide() -> None:
    a = _train({"run": "a", "peak_flops": 1e12}, steps=2)
    b = _train({"run": "b", "peak_flops": 1e12}, steps=3)
    assert a.registry is not b.registry
    assert a.registry.get_sample_value("training_steps_total", {"run": "a", "rank": "0"}) == 2
    assert b.registry.get_sample_value("training_steps_total", {"run": "b", "rank": "0"}) == 3
    a.close()
    b.close()


def test_gpu_telemetry_at_scrape_time_not_per_step() -> None:
    gpu = FakeGpuBackend(
        [fake_device("NVIDIA H100 80GB HBM3", pci_device_id=0x2330)],
        telemetry={
            0: Telemetry(
                utilization_ratio=0.93,
                memory_used_bytes=40 * 2**30,
                power_watts=612.5,
                energy_joules=123456.0,
                sm_clock_hz=1.98e9,
                temperature_celsius=61.0,
            )
        },
    )
    mon = _train({"run": "g", "peak_flops": 1e12, "gpu_backend": gpu, "gpu_index": 0}, steps=5)
    calls_after_training = [c for c in gpu.calls if c[0] == "telemetry"]
    assert calls_after_training == []  # no NVML call on the training path
    g = {"run": "g", "rank": "0", "gpu": "0"}
    reg = mon.registry
    assert reg.get_sample_value("training_gpu_utilization_ratio", g) == 0.93
    assert reg.get_sample_value("training_gpu_memory_used_bytes", g) == 40 * 2**30
    assert reg.get_sample_value("training_gpu_power_watts", g) == 612.5
    assert reg.get_sample_value("training_gpu_energy_joules_total", g) == 123456.0
    assert reg.get_sample_value("training_gpu_sm_clock_hertz", g) == 1.98e9
    assert reg.get_sample_value("training_gpu_temperature_celsius", g) == 61.0
    assert mon.errors == 0
    mon.close()


def test_nvml_missing_or_failing_is_counted_once_and_training_goes_on(
    caplog: pytest.LogCaptureFixture,
) -> None:
    failing = FakeGpuBackend([fake_device("NVIDIA A100-SXM4-80GB")], fail_telemetry={0})
    mon = _train({"run": "f", "peak_flops": 1e12, "gpu_backend": failing, "gpu_index": 0}, steps=4)
    labels = {"run": "f", "rank": "0"}
    first = mon.registry.get_sample_value("training_monitor_errors_total", labels)
    second = mon.registry.get_sample_value("training_monitor_errors_total", labels)
    assert first is not None and second is not None and second > first >= 1  # counted at every failed read
    assert mon.registry.get_sample_value("training_gpu_power_watts", {**labels, "gpu": "0"}) is None
    assert mon.snapshot().steps == 4
    assert sum("NVML" in r.getMessage() for r in caplog.records) == 1
    mon.close()

    missing = _train({"run": "m", "peak_flops": 1e12, "gpu_backend": no_gpu(), "gpu_index": 0}, steps=2)
    assert missing.registry.get_sample_value("training_steps_total", {"run": "m", "rank": "0"}) == 2
    assert (
        missing.registry.get_sample_value("training_gpu_power_watts", {"run": "m", "rank": "0", "gpu": "0"})
        is None
    )
    missing.close()


def _scrape(port: int) -> dict[str, float]:
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10).read().decode()
    out: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if not sample.labels.get("le"):
                out[sample.name] = sample.value
    return out


def test_serves_metrics_over_http_on_localhost(tmp_path: Any) -> None:
    mon = _train({"run": "h", "peak_flops": 1e12, "port": 0, "file_sd_dir": tmp_path}, steps=4)
    assert mon.port
    values = _scrape(mon.port)
    assert values["training_tokens_total"] == 64
    assert values["training_steps_total"] == 4
    assert "training_mfu_ratio" in values
    assert mon._server.server_address[0] == "127.0.0.1"
    target = json.loads((tmp_path / "h-rank0.json").read_text())
    assert target == [{"targets": [f"127.0.0.1:{mon.port}"], "labels": {"job": "training"}}]
    mon.close()
    assert not (tmp_path / "h-rank0.json").exists()


def test_port_in_use_is_counted_and_training_finishes(caplog: pytest.LogCaptureFixture) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen(1)
        port = busy.getsockname()[1]
        mon = _train({"run": "p", "peak_flops": 1e12, "port": port}, steps=3)
        assert mon.port is None
        assert mon.snapshot().steps == 3
        assert mon.errors == 1
        assert mon.registry.get_sample_value("training_monitor_errors_total", {"run": "p", "rank": "0"}) == 1
        assert sum("serving /metrics" in r.getMessage() for r in caplog.records) == 1
        mon.close()


@pytest.mark.slow
def test_tls_options_are_passed_to_the_server(tmp_path: Any) -> None:
    import shutil
    import ssl
    import subprocess

    if shutil.which("openssl") is None:
        pytest.skip("openssl is needed to make a test certificate")
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=localhost",
         "-keyout", str(key), "-out", str(cert)],
        check=True, capture_output=True, timeout=60,
    )  # fmt: skip
    mon = _train(
        {"run": "tls", "peak_flops": 1e12, "port": 0, "tls": {"certfile": cert, "keyfile": key}}, steps=2
    )
    assert mon.port
    context = ssl.create_default_context(cafile=str(cert))
    context.check_hostname = False
    body = urllib.request.urlopen(f"https://127.0.0.1:{mon.port}/metrics", context=context, timeout=10).read()
    assert b'training_steps_total{rank="0",run="tls"} 2.0' in body
    with pytest.raises(OSError):  # plain HTTP is not served
        urllib.request.urlopen(f"http://127.0.0.1:{mon.port}/metrics", timeout=5).read()
    mon.close()


def test_tensor_activity_at_scrape_time_and_the_mfu_check(caplog: pytest.LogCaptureFixture) -> None:
    gpu = FakeGpuBackend(
        [fake_device("NVIDIA H100 80GB HBM3", pci_device_id=0x2330)],
        telemetry={0: Telemetry(power_watts=500.0)},
    )
    g = {"run": "t", "rank": "0", "gpu": "0"}
    low = _train({"run": "t", "peak_flops": 1e15, "gpu_backend": gpu, "gpu_index": 0}, steps=5)
    # GPM's first sample at start, then nothing per step (5 steps, no log tick yet)
    assert [c for c in gpu.calls if c[0] == "tensor_activity"] == [("tensor_activity", 0)]
    reg = low.registry
    gpu.set_tensor_activity(0, 0.5, hmma=0.5, imma=0.0, dfma=0.0)
    assert reg.get_sample_value("training_gpu_tensor_active_ratio", {**g, "kind": "any"}) == pytest.approx(
        0.5
    )  # the first scrape already has a figure
    reason = {"run": "t", "rank": "0", "reason": "above_tensor_activity"}
    assert reg.get_sample_value("training_mfu_suspect_reason", reason) == 0.0  # MFU ~1e-9 on CPU
    low.close()
    # A peak far too low makes MFU exceed what the tensor cores did: flagged with its reason.
    gpu2 = FakeGpuBackend([fake_device("NVIDIA H100 80GB HBM3")], telemetry={0: Telemetry(power_watts=500.0)})
    high = _train({"run": "t", "peak_flops": 1e3, "gpu_backend": gpu2, "gpu_index": 0}, steps=5)
    gpu2.set_tensor_activity(0, 0.3)
    assert high.registry.get_sample_value("training_mfu_suspect_reason", reason) == 1.0
    high.close()
    # Unsupported GPM: the figure is absent and one line says why, once.
    old = FakeGpuBackend(
        [fake_device("NVIDIA A100-SXM4-80GB")],
        gpm_unsupported="GPM unsupported (fake)",
        telemetry={0: Telemetry(power_watts=500.0)},
    )
    with caplog.at_level("INFO"):
        mon = _train({"run": "t", "peak_flops": 1e15, "gpu_backend": old, "gpu_index": 0}, steps=3)
        for _ in range(3):
            assert (
                mon.registry.get_sample_value("training_gpu_tensor_active_ratio", {**g, "kind": "any"})
                is None
            )
    assert sum("GPM unsupported (fake)" in r.getMessage() for r in caplog.records) == 1
    assert mon.errors == 0
    mon.close()
