"""Pure parts of the live monitor: windows and rates, the low-MFU alert, token counting from shapes."""

from __future__ import annotations

import pytest
import torch

from monitor.figures.window import StepSample, eta_seconds, rates, select_window, utilization
from monitor.live.alert import LowMfuAlert
from monitor.live.tokens import DeferredCount, tokens_in


def _s(step: int, tokens: int, seconds: float, end: float, warm: bool = False) -> StepSample:
    return StepSample(step, tokens, None, 8, seconds, end, None, None, tokens * 10.0, tokens * 12.0, warm)


def test_rates_are_sums_over_durations_not_means_of_rates() -> None:
    r = rates([_s(0, 100, 1.0, 1.0), _s(1, 100, 3.0, 4.0)])
    assert r.tokens_per_second == pytest.approx(200 / 4.0)  # a mean of per-step rates would say 66.7
    assert r.model_flops_per_second == pytest.approx(2000 / 4.0)
    assert r.hardware_flops_per_second == pytest.approx(2400 / 4.0)
    assert r.step_seconds == pytest.approx(2.0)
    assert rates([]).tokens_per_second is None


def test_window_leaves_out_warmup_keeps_last_steps_and_recent_ones() -> None:
    samples = [_s(i, 10, 1.0, float(i), warm=i < 2) for i in range(10)]
    assert [s.step for s in select_window(samples, max_steps=3, max_age_seconds=100, now=10)] == [7, 8, 9]
    assert [s.step for s in select_window(samples, max_steps=50, max_age_seconds=2.5, now=10)] == [8, 9]
    # steps longer than the time window: the latest one is still a rate
    assert [s.step for s in select_window(samples, max_steps=5, max_age_seconds=0.1, now=100)] == [9]
    assert select_window(samples[:2], max_steps=5, max_age_seconds=10, now=2) == []


def test_utilization_and_eta() -> None:
    assert utilization(5e14, 1e15) == 0.5
    assert utilization(None, 1e15) is None and utilization(1.0, None) is None
    assert utilization(1.0, 0.0) is None
    assert eta_seconds(1000, 3000, 100.0) == 20.0
    assert eta_seconds(1000, None, 100.0) is None and eta_seconds(1000, 3000, None) is None


def test_alert_fires_once_per_episode_after_the_hold_time_and_resolves() -> None:
    alert = LowMfuAlert(threshold=0.25, hold_seconds=60)
    assert alert.update(0.1, now=0) is None
    assert alert.update(None, now=30) is None  # unknown MFU changes nothing
    fired = alert.update(0.1, now=61)
    assert fired is not None and fired.state == "firing" and fired.since == 0
    assert alert.update(0.05, now=200) is None  # still the same episode
    resolved = alert.update(0.4, now=210)
    assert resolved is not None and resolved.state == "resolved"
    assert alert.update(0.1, now=300) is None  # a new episode starts its own hold time
    assert alert.update(0.1, now=359) is None
    again = alert.update(0.1, now=361)
    assert again is not None and again.state == "firing" and again.since == 300
    assert LowMfuAlert(0.25, 60).update(0.3, now=0) is None


def test_tokens_from_ids_embeddings_and_plain_features() -> None:
    assert tokens_in((), {"input_ids": torch.zeros(4, 7, dtype=torch.long)}) == (28, 7)
    assert tokens_in((), {"inputs_embeds": torch.zeros(2, 5, 16)}) == (10, 5)
    assert tokens_in((torch.zeros(3, 9, dtype=torch.long),), {}) == (27, 9)
    assert tokens_in((torch.zeros(2, 6, 32),), {}) == (12, 6)
    assert tokens_in(("text", torch.zeros(8, 3)), {}) == (8, 1)
    assert tokens_in(("no tensors",), {}) is None


def test_real_tokens_from_a_mask() -> None:
    mask = torch.tensor([[1, 1, 0], [1, 0, 0]])
    assert DeferredCount(mask).read() == 3
    assert DeferredCount(mask.bool()).read() == 3
