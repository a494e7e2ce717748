"""The rich terminal view renders what the snapshot says, including the peak's source and a suspect MFU."""

from __future__ import annotations

import torch
from rich.console import Console
from torch import nn

from monitor.export.terminal import duration, render, si
from monitor.live.monitor import MFUMonitor


def _text(table: object) -> str:
    console = Console(record=True, width=120)
    console.print(table)
    return console.export_text()


def test_view_shows_rates_mfu_peak_source_and_eta() -> None:
    model = nn.Sequential(nn.Embedding(10, 4), nn.Linear(4, 10))
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    kw = {"flops_per_token": 1e3, "peak_flops": 1e12, "peak_source": "calibrated", "warmup_steps": 0}
    with MFUMonitor(model, opt, token_budget=1000, handle_sigterm=False, run="view", **kw) as mon:
        for _ in range(3):
            model(torch.randint(0, 10, (2, 5))).sum().backward()
            opt.step()
            opt.zero_grad()
        snap = mon.snapshot()
    text = _text(render(snap))
    assert "run view" in text and "calibrated" in text and "1 TFLOP/s" in text
    assert f"{snap.mfu:.1%}" in text
    assert "of 1 k" in text and "ETA" in text


def test_suspect_mfu_is_marked() -> None:
    model = nn.Linear(2, 2)
    with MFUMonitor(flops_per_token=1e9, peak_flops=1.0, handle_sigterm=False, warmup_steps=0) as mon:
        for _ in range(3):
            model(torch.randn(1, 2)).sum().backward()
            mon.step(tokens=10)
        text = _text(render(mon.snapshot()))
    assert "peak or FLOPs model wrong" in text


def test_number_formats() -> None:
    assert si(None) == "—" and si(1.5e12, "FLOP/s") == "1.5 TFLOP/s" and si(950.0) == "950"
    assert duration(0.0123) == "12.3 ms" and duration(75) == "75.0 s" and duration(3700) == "1h01m"
