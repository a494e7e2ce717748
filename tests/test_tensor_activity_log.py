"""GPM tensor activity in the run log at log ticks, and in ``mfu analyze`` beside MFU (through the fake NVML
backend: the only part that cannot run here)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch
from fakes import FakeGpuBackend, fake_device
from torch import nn

from monitor.analysis.summary import AnalyzeOptions, analyze
from monitor.hardware.nvml import Telemetry
from monitor.live.monitor import MFUMonitor


def _run(log: Path, gpu: FakeGpuBackend, peak: float, steps: int = 12) -> list[dict[str, Any]]:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Embedding(30, 8), nn.Linear(8, 30))
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    mon = MFUMonitor(
        model, opt, handle_sigterm=False, warmup_steps=1, flops_per_token=1000.0, peak_flops=peak,
        gpu_backend=gpu, gpu_index=0, log_path=log, tick_seconds=0.0, run="gpm",
    )  # fmt: skip
    for _ in range(steps):
        model(torch.randint(0, 30, (2, 8))).float().mean().backward()
        opt.step()
        opt.zero_grad()
    mon.close()
    return [json.loads(line) for line in log.read_text().splitlines()]


def _h100(**kw: Any) -> FakeGpuBackend:
    return FakeGpuBackend(
        [fake_device("NVIDIA H100 80GB HBM3")], telemetry={0: Telemetry(power_watts=500.0)}, **kw
    )


def test_log_ticks_write_tensor_activity_and_analyze_reads_it(tmp_path: Path) -> None:
    gpu = _h100()
    gpu.set_tensor_activity(0, 0.4, hmma=0.4)
    records = _run(tmp_path / "ok.jsonl", gpu, peak=1e15)
    steps = [r for r in records if r["event"] == "step"]
    ticks = [c for c in gpu.calls if c[0] == "tensor_activity"]
    assert (
        len(steps) == 12 and len(ticks) <= 1 + 12 + 1
    )  # at start, at each log tick (here: each step), at close
    # GPM's first sample is taken when the monitor starts: every tick, the first included, has a figure.
    assert [r["tensor_active"] for r in steps] == [pytest.approx(0.4)] * 12
    run = analyze([tmp_path / "ok.jsonl"], AnalyzeOptions(warmup=2)).analysis.runs[0]
    assert run.tensor_active is not None
    assert run.tensor_active.records == 10 and run.tensor_active.median == pytest.approx(0.4)
    assert run.tensor_active.mfu_above_records == 0 and not run.tensor_active.suspect  # MFU ~1e-9
    assert not any("tensor-core activity" in note for note in run.notes)


def test_analyze_flags_mfu_above_tensor_activity(tmp_path: Path) -> None:
    gpu = _h100()
    gpu.set_tensor_activity(0, 0.3)
    _run(tmp_path / "high.jsonl", gpu, peak=1e3)  # a peak far too low: MFU far above what the cores did
    run = analyze([tmp_path / "high.jsonl"], AnalyzeOptions(warmup=2)).analysis.runs[0]
    assert run.tensor_active is not None and run.tensor_active.suspect
    assert run.tensor_active.mfu_above_records == run.tensor_active.records == 10
    assert any("above the tensor-core activity 30.0%" in note for note in run.notes)


def test_no_gpm_no_figure_in_the_log_nor_in_analyze(tmp_path: Path) -> None:
    records = _run(tmp_path / "old.jsonl", _h100(gpm_unsupported="GPM unsupported (fake)"), peak=1e15)
    assert all(r["tensor_active"] is None for r in records if r["event"] == "step")
    run = analyze([tmp_path / "old.jsonl"], AnalyzeOptions(warmup=2)).analysis.runs[0]
    assert run.tensor_active is None and run.mfu.median is not None
