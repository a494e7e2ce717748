"""The live path's units, each built alone (no monitor, no hooks): the capture, the resolver, the run setup,
the sinks and the pure world figures. Inputs are exact (hand-built step tuples and snapshots), so the figures
are derived independently of the code under test."""

from __future__ import annotations

import json
from collections import deque
from pathlib import Path
from typing import Any

import pytest
import torch
from torch import nn

from monitor.errors import InputError
from monitor.export.runlog import RunLogWriter
from monitor.export.runlog_sink import RunLogSink
from monitor.export.sinks import NullSink, Sink, SinkFanOut
from monitor.figures.alert import AlertEvent
from monitor.figures.snapshot import Snapshot
from monitor.figures.steps import RAW_FIELDS, STEP, TOKENS, StepBatch, window_mfu
from monitor.figures.window import STEP_BUCKETS
from monitor.figures.world import rank_contribution, world_figures
from monitor.live.capture import StepCapture
from monitor.live.flops import FlopsPerToken, FlopsSource
from monitor.live.resolver import StepResolver
from monitor.live.setup import resolve_run_setup
from monitor.live.timing import HostTimer
from monitor.schema import STEP_KEYS, RunStart


def _snap(**over: Any) -> Snapshot:
    """A snapshot with every figure unknown or zero, then ``over``."""
    fields: dict[str, Any] = {name: None for name in Snapshot.__dataclass_fields__}
    fields |= dict(run="u", rank=0, local_rank=0, world_size=1, device="cpu", steps=0, resolved_steps=0,
                   tokens_total=0, model_flops_total=0.0, hardware_flops_total=0.0, warmup_steps=0,
                   window_steps=0, window_seconds=0.0, mfu_suspect=False, elapsed_seconds=0.0,
                   alert_firing=False, errors=0, recent=(), step_duration_buckets=(), step_duration_sum=0.0,
                   step_duration_count=0)  # fmt: skip
    return Snapshot(**(fields | over))


def _raw(index: int, start: float, seconds: float, tokens: int, seq: int | None = 8) -> tuple[Any, ...]:
    end = start + seconds
    return (index, start, end, end, start, start, tokens, seq, None, None, None, None, None)


def _resolver(steps: list[tuple[Any, ...]], **kw: Any) -> StepResolver:
    flops = FlopsPerToken(FlopsSource("fixed", 10.0))
    return StepResolver(
        deque(steps),
        flops=flops,
        timer=HostTimer(),
        host_timer=True,
        first_counted_step=2,
        window_steps=20,
        **kw,
    )


def test_the_resolver_alone_turns_raw_steps_into_totals_and_a_histogram() -> None:
    durations = [0.0005, 0.002, 0.02, 0.3, 0.002]
    raws, t = [], 100.0
    for i, d in enumerate(durations):
        raws.append(_raw(i, t, d, tokens=16))
        t += d
    assert all(len(r) == RAW_FIELDS for r in raws)
    res = _resolver(raws)
    with res.lock:
        res.resolve(True)
    assert not res.pending and res.resolved == 5
    assert res.tokens_total == 80 and res.model_flops_total == pytest.approx(800.0)
    # post-warm-up sums: steps 2, 3, 4
    assert res.post_tokens == 48
    assert res.post_seconds == pytest.approx(0.02 + 0.3 + 0.002)
    # every duration in the bucket whose bound is the first at or above it (Prometheus' "le")
    expected = [0] * (len(STEP_BUCKETS) + 1)
    for d in durations:
        expected[next((i for i, b in enumerate(STEP_BUCKETS) if d <= b), len(STEP_BUCKETS))] += 1
    assert res.bucket_counts == expected
    samples = res.samples(wall_offset=1000.0)
    assert [s.step for s in samples] == [0, 1, 2, 3, 4]
    assert [s.warmup for s in samples] == [True, True, False, False, False]
    assert samples[-1].end_time == pytest.approx(1000.0 + t)


def test_the_resolver_keeps_steps_for_the_run_log_only_when_asked() -> None:
    res = _resolver([_raw(i, float(i), 1.0, tokens=4) for i in range(3)])
    res.keep_for_log = True
    with res.lock:
        res.resolve(True)
    taken = res.take_unlogged()
    assert [rec[0][STEP] for rec in taken] == [0, 1, 2] and res.take_unlogged() == []


def test_window_mfu_counts_post_warmup_steps_within_the_window() -> None:
    recs = [(_raw(i, float(i), 1.0, tokens=10), 1.0, (5.0, 5.0)) for i in range(6)]
    # newest first; steps 2..5 count (first_counted_step=2): 4 steps x 50 FLOPs in 4 s over a peak of 100
    got = window_mfu(
        reversed(recs), now_perf=6.0, first_counted_step=2, max_steps=10, max_age_seconds=60,
        peak_flops_per_second=100.0,
    )  # fmt: skip
    assert got == pytest.approx(200.0 / 4.0 / 100.0)
    two = window_mfu(
        reversed(recs), now_perf=6.0, first_counted_step=2, max_steps=2, max_age_seconds=60,
        peak_flops_per_second=100.0,
    )  # fmt: skip
    assert two == pytest.approx(100.0 / 2.0 / 100.0)
    assert window_mfu(reversed(recs), now_perf=6.0, first_counted_step=2, max_steps=2, max_age_seconds=60,
                      peak_flops_per_second=None) is None  # fmt: skip


def test_the_capture_alone_closes_steps_and_schedules_ticks() -> None:
    ticks: list[bool] = []
    errors: list[str] = []
    cap = StepCapture(
        timer=HostTimer(), first_step=5, log_every=4, tick_seconds=1e9, seq_len_override=None,
        on_tick=ticks.append, on_error=lambda where, exc: errors.append(where),
        on_seq_len=lambda n: None, seq_len_hint=lambda: 16,
    )  # fmt: skip
    for _ in range(3):
        cap.step(tokens=32)
    assert [r[STEP] for r in cap.pending] == [5, 6, 7] and [r[TOKENS] for r in cap.pending] == [32, 32, 32]
    # index 8 is a multiple of log_every, but one process ticks only when a tick is due by time (or when
    # 1000 steps wait): none yet; once due, the next step ticks, without an all-reduce
    assert ticks == []
    cap.next_tick = 0.0
    cap.step(tokens=32)
    assert ticks == [False] and cap.next_tick > 0.0
    with pytest.raises(InputError, match="tokens"):
        cap.step(tokens=-1)
    assert errors == []


def test_run_setup_alone_resolves_flops_source_peak_and_identity() -> None:
    warned: list[str] = []
    model = nn.Linear(4, 4)
    setup = resolve_run_setup(
        model, flops_per_token=12.0, peak_flops=5e12, warn=lambda k, m: warned.append(k),
        on_error=lambda w, e: None,
    )  # fmt: skip
    assert setup.flops_source == FlopsSource("fixed", 12.0)
    assert setup.peak.flops_per_second == 5e12 and setup.peak.source == "override"
    assert setup.model_name == "Linear" and setup.params == 20 and setup.device == torch.device("cpu")
    assert setup.gpu_indices == [] and warned == []
    measured = resolve_run_setup(model, warn=lambda k, m: warned.append(k), on_error=lambda w, e: None)
    assert measured.flops_source == FlopsSource("measured")
    assert measured.peak.flops_per_second is None and "peak" in warned  # no calibration cached in tests
    with pytest.raises(InputError) as err:
        resolve_run_setup(None, spec="no-such-preset", warn=lambda k, m: None, on_error=lambda w, e: None)
    assert err.value.field == "spec"


class _Recorder(Sink):
    def __init__(self, name: str, log: list[str], fail: bool = False) -> None:
        self.name, self.log, self.fail = name, log, fail

    def on_steps(self, batch: StepBatch) -> None:
        self.log.append(f"{self.name}:steps:{len(batch.steps)}")
        if self.fail:
            raise RuntimeError("sink down")

    def on_alert(self, event: AlertEvent) -> None:
        self.log.append(f"{self.name}:alert:{event.state}")


def _batch(steps: list[Any], **kw: Any) -> StepBatch:
    return StepBatch(steps=steps, run="u", rank=0, wall_offset=1000.0, first_counted_step=1,
                     peak_flops_per_second=kw.pop("peak", 100.0), **kw)  # fmt: skip


def test_the_fan_out_reaches_every_sink_and_reports_a_failing_one() -> None:
    log: list[str] = []
    errors: list[str] = []
    fan = SinkFanOut([_Recorder("a", log, fail=True), NullSink(), _Recorder("b", log)],
                     on_error=lambda where, exc: errors.append(where))  # fmt: skip
    fan.on_steps(_batch([]))
    fan.on_alert(AlertEvent("firing", 0.1, 0.25, 1.0, 2.0, "low"))
    assert log == ["a:steps:0", "b:steps:0", "a:alert:firing", "b:alert:firing"]
    assert errors == ["a"]


def test_the_run_log_sink_alone_writes_schema_records(tmp_path: Path) -> None:
    path = tmp_path / "u.jsonl"
    start = RunStart(time=1.0, run="u", flops_per_token=5.0, peak_flops_per_second=100.0)
    sink = RunLogSink(RunLogWriter(path), lambda: start, run="u", rank=0)
    # step 0 (warm-up) and step 1: 10 tokens x 5 FLOPs in 2 s over a peak of 100 = MFU 0.25
    recs = [(_raw(i, 2.0 * i, 2.0, tokens=10), 2.0, (5.0, 6.0)) for i in range(2)]
    sink.on_steps(_batch(recs, sm_clock_ratio=0.9))
    sink.on_alert(AlertEvent("firing", 0.1, 0.25, 1.0, 2.0, "low"))
    final = _snap(resolved_steps=2, tokens_total=20)
    sink.close(final, "closed")
    lines = [json.loads(x) for x in path.read_text().splitlines()]
    assert [x["event"] for x in lines] == ["run_start", "step", "step", "alert", "run_end"]
    step = lines[2]
    assert tuple(step) == STEP_KEYS
    assert step["mfu"] == pytest.approx(0.25) and step["hardware_flops"] == 60.0
    assert step["time"] == pytest.approx(1000.0 + 4.0) and step["sm_clock_ratio"] == 0.9
    assert [x["warmup"] for x in lines[1:3]] == [True, False]
    assert lines[-1]["steps"] == 2 and lines[-1]["tokens"] == 20


def test_world_figures_wait_for_every_rank() -> None:
    # two ranks: each adds its own contribution; a rate exists only when both have one
    sums = {"tokens_total": 30.0, "model_flops_total": 300.0, "tokens_per_second": 5.0,
            "model_flops_per_second": 50.0, "peak": 200.0, "known": 2.0, "pre_backward_seconds": 0.0,
            "pre_backward_known": 0.0, "tokens_rated": 1.0, "flops_rated": 1.0}  # fmt: skip
    maxes = {"step_seconds": 0.5, "pre_backward_seconds": 0.0}
    w = world_figures(sums, maxes, world_size=2, as_of_step=10)
    assert w.tokens_total == 30 and w.peak_flops_per_second == 200.0
    assert w.tokens_per_second is None and w.mfu is None and w.max_pre_backward_seconds is None
    both = world_figures(sums | {"tokens_rated": 2.0, "flops_rated": 2.0}, maxes, world_size=2, as_of_step=10)
    assert both.tokens_per_second == 5.0 and both.mfu == pytest.approx(50.0 / 200.0)


def test_a_rank_contribution_marks_unknown_figures() -> None:
    snap = _snap(tokens_total=7, model_flops_total=70.0)
    sums, maxes = rank_contribution(snap)
    assert sums["tokens_total"] == 7.0 and sums["known"] == 0.0 and sums["tokens_rated"] == 0.0
    assert maxes == {"step_seconds": 0.0, "pre_backward_seconds": 0.0}
