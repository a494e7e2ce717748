"""The GPM tensor-activity meter shared by log ticks and scrapes: each reader gets the time-weighted activity
of every interval sampled since its own last reading, whoever took the samples."""

from __future__ import annotations

import logging

import pytest
from fakes import FakeGpuBackend, fake_device

from monitor.hardware.activity import TensorActivityMeter


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def _meter(gpm_unsupported: str = "") -> tuple[FakeGpuBackend, Clock, TensorActivityMeter]:
    h100 = fake_device("NVIDIA H100 80GB HBM3")
    gpu = FakeGpuBackend([h100, h100], gpm_unsupported=gpm_unsupported)
    clock = Clock()
    return gpu, clock, TensorActivityMeter(gpu, [0, 1], clock=clock)


def test_two_readers_each_get_the_time_weighted_activity_since_their_own_last_reading() -> None:
    gpu, clock, meter = _meter()
    log, scrape = meter.window(), meter.window()
    assert log.take() == []  # the first sample of each GPU: no interval yet
    clock.now += 10.0
    gpu.set_tensor_activity(0, 0.2, hmma=0.2)
    gpu.set_tensor_activity(1, 0.1)
    [(i0, a0), (i1, a1)] = scrape.take()  # the scrape closes the interval [100, 110]
    assert (i0, a0.any_ratio, a0.hmma_ratio, i1, a1.any_ratio, a1.hmma_ratio) == (0, 0.2, 0.2, 1, 0.1, None)
    clock.now += 30.0
    gpu.set_tensor_activity(0, 0.6, hmma=0.6)
    gpu.set_tensor_activity(1, 0.5)
    # The log reader was not asked at 110: it gets both intervals, weighted by their lengths (10 s and 30 s).
    readings = dict(log.take())
    assert readings[0].any_ratio == pytest.approx((0.2 * 10 + 0.6 * 30) / 40)
    assert readings[0].hmma_ratio == pytest.approx((0.2 * 10 + 0.6 * 30) / 40)
    assert readings[1].any_ratio == pytest.approx((0.1 * 10 + 0.5 * 30) / 40)
    assert readings[1].hmma_ratio is None
    # The scrape's next reading covers only [110, 140] plus the empty interval the log's sample just closed.
    assert dict(scrape.take())[0].any_ratio == pytest.approx(0.6)
    assert log.busiest() == pytest.approx(0.6)  # the busiest GPU of the rank


def test_no_gpm_means_no_figure_and_one_line_per_gpu(caplog: pytest.LogCaptureFixture) -> None:
    _, clock, meter = _meter(gpm_unsupported="GPM unsupported (fake)")
    window = meter.window()
    with caplog.at_level(logging.INFO, logger="monitor.hardware.activity"):
        for _ in range(3):
            clock.now += 1.0
            assert window.take() == [] and window.busiest() is None
    lines = [r.getMessage() for r in caplog.records if "GPM unsupported (fake)" in r.getMessage()]
    assert lines == ["GPU 0: no tensor-activity figure: GPM unsupported (fake)",
                     "GPU 1: no tensor-activity figure: GPM unsupported (fake)"]  # fmt: skip


def test_a_gpu_failing_mid_run_drops_out_and_the_other_keeps_its_figure() -> None:
    gpu, clock, meter = _meter()
    window = meter.window()
    window.take()
    clock.now += 5.0
    gpu.set_tensor_activity(0, 0.3)
    gpu.set_tensor_activity(1, 0.4)
    assert [i for i, _ in window.take()] == [0, 1]
    gpu.fail_gpm.add(1)
    clock.now += 5.0
    assert [(i, a.any_ratio) for i, a in window.take()] == [(0, 0.3)]


def test_no_backend_or_no_gpu_never_samples() -> None:
    assert TensorActivityMeter(None, [0]).window().take() == []
    gpu = FakeGpuBackend([fake_device("NVIDIA H100 80GB HBM3")])
    assert TensorActivityMeter(gpu, []).window().busiest() is None
    assert gpu.calls == []
