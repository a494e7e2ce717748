"""The lean step path keeps its promises: log ticks on the same steps as before, an exact duration histogram.

The hot path counts down to the next multiple of ``log_every`` (instead of a modulo) and a log tick files a
batch of step durations into the histogram from its extremes or its sorted durations (instead of one
bisection per step); these tests derive the expected steps and bucket counts independently.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import CollectorRegistry
from prometheus_client.utils import floatToGoString

from monitor.figures.window import STEP_BUCKETS
from monitor.live.alert import AlertEvent
from monitor.live.monitor import MFUMonitor


@pytest.mark.parametrize("first_step", [0, 7])
def test_a_log_tick_comes_at_a_multiple_of_log_every_once_enough_steps_wait(first_step: int) -> None:
    # One process, no time-based tick: a tick is due at a step index that is a multiple of log_every once
    # 1000 steps wait (monitor._MAX_PENDING). The alert (below 50% for 0 s) fires at the first tick.
    log_every, waiting = 50, 1000
    closed = 0
    fired_after: list[int] = []

    def on_alert(event: AlertEvent) -> None:
        fired_after.append(closed)

    mon = MFUMonitor(
        flops_per_token=1.0,
        peak_flops=1e30,
        handle_sigterm=False,
        warmup_steps=0,
        log_every=log_every,
        tick_seconds=1e9,
        alert_below=0.5,
        alert_after=0.0,
        on_alert=on_alert,
        first_step=first_step,
    )
    try:
        for _ in range(1200):
            closed += 1
            mon.step(tokens=8, seq_len=8)
    finally:
        mon.close()
    # Step index after the k-th closed step is first_step + k; the first k with that index a multiple of
    # log_every and k >= waiting:
    expected = next(k for k in range(1, 1201) if (first_step + k) % log_every == 0 and k >= waiting)
    assert fired_after[:1] == [expected]


def _busy(seconds: float) -> None:
    end = time.perf_counter() + seconds
    while time.perf_counter() < end:
        pass


def test_step_duration_histogram_counts_every_duration_in_its_bucket(tmp_path: Path) -> None:
    # Real durations on both sides of the 1 ms and 2.5 ms bounds (a batch whose steps span buckets) and a run
    # of near-free steps (a batch whose steps share a bucket); each batch is filed at a scrape.
    registry = CollectorRegistry()
    log = tmp_path / "run.jsonl"
    kw: dict[str, Any] = {"handle_sigterm": False, "warmup_steps": 0, "tick_seconds": 1e9}
    mon = MFUMonitor(flops_per_token=1.0, peak_flops=1e30, registry=registry, log_path=log, run="h", **kw)
    try:
        for i in range(24):
            _busy(0.004 if i % 3 == 0 else 0.0015 if i % 3 == 1 else 0.0)
            mon.step(tokens=4, seq_len=4)
        registry.get_sample_value("training_steps_total", {"run": "h", "rank": "0"})  # a scrape: one batch
        for _ in range(200):
            mon.step(tokens=4, seq_len=4)
        labels = {"run": "h", "rank": "0"}
        bucket = "training_step_duration_seconds_bucket"
        # the exposition writes a bound as floatToGoString does
        got = {
            b: registry.get_sample_value(bucket, {**labels, "le": floatToGoString(b)}) for b in STEP_BUCKETS
        }
        inf = registry.get_sample_value(bucket, {**labels, "le": "+Inf"})
        total = registry.get_sample_value("training_step_duration_seconds_sum", labels)
    finally:
        mon.close()
    durations = [
        r["step_seconds"] for r in map(json.loads, log.read_text().splitlines()) if r["event"] == "step"
    ]
    assert len(durations) == 224
    assert got == {b: sum(1 for d in durations if d <= b) for b in STEP_BUCKETS}
    assert len({sum(1 for d in durations if d <= b) for b in STEP_BUCKETS}) >= 3  # several buckets in use
    assert inf == len(durations)
    assert total == pytest.approx(sum(durations), rel=1e-9)
