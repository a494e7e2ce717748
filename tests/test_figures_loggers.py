"""Figures for the trainers' loggers: names, the run against the device, unknown figures left out; and the
``on_figures`` hook of a custom loop, on a real CPU training loop."""

from __future__ import annotations

from typing import Any

import pytest
import torch
from prometheus_client import CollectorRegistry
from test_live_units import _snap
from torch import nn

from monitor.errors import InputError
from monitor.figures.loggers import hf_names, lightning_names, logger_figures
from monitor.figures.snapshot import WorldFigures
from monitor.live.monitor import MFUMonitor


def _world(**over: Any) -> WorldFigures:
    fields: dict[str, Any] = dict(as_of_step=10, world_size=4, tokens_total=0, model_flops_total=0.0,
                                  tokens_per_second=4000.0, model_flops_per_second=4e12,
                                  peak_flops_per_second=16e12, mfu=0.25, max_step_seconds=1.0)  # fmt: skip
    return WorldFigures(**(fields | over))


def test_one_process_the_run_is_the_device() -> None:
    snap = _snap(mfu=0.4, hfu=0.5, tokens_per_second=1000.0, model_flops_per_second=2.5e12)
    assert logger_figures(snap) == {
        "mfu": 0.4, "tokens_per_second": 1000.0, "device_mfu": 0.4, "device_hfu": 0.5,
        "device_tokens_per_second": 1000.0, "device_model_tflops_per_second": 2.5,
    }  # fmt: skip


def test_several_ranks_take_the_run_from_the_all_reduce() -> None:
    snap = _snap(world_size=4, mfu=0.3, tokens_per_second=900.0, world=_world())
    figures = logger_figures(snap)
    assert (figures["mfu"], figures["tokens_per_second"]) == (0.25, 4000.0)
    assert (figures["device_mfu"], figures["device_tokens_per_second"]) == (0.3, 900.0)


def test_unknown_figures_are_left_out_never_zero() -> None:
    # several ranks before the first all-reduce, no peak: no MFU anywhere, no run figures
    snap = _snap(world_size=4, tokens_per_second=900.0, model_flops_per_second=1e12)
    assert logger_figures(snap) == {"device_tokens_per_second": 900.0, "device_model_tflops_per_second": 1.0}
    assert logger_figures(_snap()) == {}


def test_framework_names() -> None:
    figures = logger_figures(_snap(mfu=0.4, hfu=0.5, tokens_per_second=1000.0, model_flops_per_second=2.5e12))
    assert hf_names(figures) == figures
    assert lightning_names(figures) == {
        "train/mfu": 0.4, "train/tokens_per_sec": 1000.0, "train/device/mfu": 0.4, "train/device/hfu": 0.5,
        "train/device/tokens_per_sec": 1000.0, "train/device/model_tflops_per_sec": 2.5,
    }  # fmt: skip


class TinyLM(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.emb = nn.Embedding(50, 16)
        self.head = nn.Linear(16, 50)

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        return self.head(self.emb(input_ids))


def test_on_figures_hands_each_log_tick_to_a_callable() -> None:
    torch.set_num_threads(1)
    model = TinyLM()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    seen: list[tuple[dict[str, float], int]] = []
    mon = MFUMonitor(
        model, opt, flops_per_token=1000.0, peak_flops=1e12, registry=CollectorRegistry(), warmup_steps=2,
        tick_seconds=0, handle_sigterm=False, on_figures=lambda figures, step: seen.append((figures, step)),
    )  # fmt: skip
    with mon:
        for _ in range(6):
            model(input_ids=torch.randint(0, 50, (2, 8))).sum().backward()
            opt.step()
            opt.zero_grad()
    # a tick after every step (tick_seconds=0); nothing is known during the two warm-up steps
    assert [step for _, step in seen] == [2, 3, 4, 5]
    for figures, _ in seen:
        assert 0 < figures["mfu"] < 1
        assert figures["device_model_tflops_per_second"] == pytest.approx(
            figures["device_tokens_per_second"] * 1000.0 / 1e12
        )


def test_a_failing_on_figures_is_counted_and_training_goes_on(caplog: pytest.LogCaptureFixture) -> None:
    model = TinyLM()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)

    def broken(figures: dict[str, float], step: int) -> None:
        raise RuntimeError("tracker down")

    mon = MFUMonitor(
        model, opt, flops_per_token=1000.0, peak_flops=1e12, registry=CollectorRegistry(), warmup_steps=0,
        tick_seconds=0, handle_sigterm=False, on_figures=broken,
    )  # fmt: skip
    with mon:
        for _ in range(3):
            model(input_ids=torch.randint(0, 50, (2, 8))).sum().backward()
            opt.step()
    assert mon.snapshot().steps == 3 and mon.errors == 3  # once per tick, each counted
    warned = [r.getMessage() for r in caplog.records if "tracker down" in r.getMessage()]
    assert len(warned) == 1 and "on_figures" in warned[0]  # reported once


def test_on_figures_must_be_callable() -> None:
    with pytest.raises(InputError, match="on_figures"):
        MFUMonitor(on_figures="print", registry=CollectorRegistry(), handle_sigterm=False)
