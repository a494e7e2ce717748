"""A ``Snapshot`` of the run now (and the run log's ``run_start``): the resolver's totals and recent steps,
windowed (``figures/window.py``), split into MFU-loss causes (``figures/world.py``) and labelled with what the
run setup knows."""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from typing import Any

from monitor.figures.snapshot import Snapshot, WorldFigures
from monitor.figures.window import STEP_BUCKETS, eta_seconds, rates, select_window, utilization
from monitor.figures.world import window_mfu_loss
from monitor.live.flops import FlopsPerToken
from monitor.live.resolver import StepResolver
from monitor.schema import RunStart


@dataclass(frozen=True)
class RunLabels:
    """What a snapshot says about the run besides its figures."""

    run: str
    rank: int
    local_rank: int
    world_size: int
    device: str
    dtype: str | None
    model: str | None
    params: int | None
    peak_flops_per_second: float | None
    peak_source: str | None
    warmup_steps: int
    token_budget: int | None
    parallel: str | None = None  # the parallel layout in short ("dp_shard=2,tp=2"); None without one
    bf16_peak_flops_per_second: float | None = None  # an FP8 run's BF16 peak (MFU against it beside MFU)


def build_snapshot(
    resolver: StepResolver,
    flops: FlopsPerToken,
    labels: RunLabels,
    *,
    now: float,
    wall0: float,
    wall_offset: float,
    steps: int,
    window_steps: int,
    window_seconds: float,
    measure: bool,
    alert_firing: bool,
    errors: int,
    world: WorldFigures | None,
    clock_ratio: float | None,
    tensor_active: float | None = None,
) -> Snapshot:
    """The figures now (call under the resolver's lock, after ``resolve``). ``measure``: whether a FLOPs model
    measured on the meta device may run now (only on the training thread)."""
    r_ = resolver
    samples = r_.samples(wall_offset)
    window = select_window(samples, max_steps=window_steps, max_age_seconds=window_seconds, now=now)
    r = rates(window)
    seq = flops.seq_len_override or (window[-1].seq_len if window else r_.last_seq_len)
    fpt = flops(seq, measure=measure) if seq else None
    flops_ok = fpt is not None and flops.source is not None
    peak = labels.peak_flops_per_second
    mfps = r.model_flops_per_second if flops_ok else None
    hfps = r.hardware_flops_per_second if flops_ok else None
    mfu = utilization(mfps, peak)
    hfu = utilization(hfps, peak)
    cum = None
    if flops_ok and r_.post_seconds > 0:
        cum = utilization(r_.post_model_flops / r_.post_seconds, peak)
    suspect = any(v is not None and v > 1.0 for v in (mfu, cum))
    padding = None
    if r_.masked_tokens > 0:
        padding = 1.0 - r_.real_total / r_.masked_tokens
    loss = window_mfu_loss(window, peak, world=world, clock_ratio=clock_ratio) if mfu is not None else None
    buckets = tuple(zip(STEP_BUCKETS, itertools.accumulate(r_.bucket_counts[:-1]), strict=True))
    last_end = None if r_.last_end_perf is None else wall_offset + r_.last_end_perf
    return Snapshot(
        run=labels.run,
        rank=labels.rank,
        local_rank=labels.local_rank,
        world_size=labels.world_size,
        device=labels.device,
        dtype=labels.dtype,
        model=labels.model,
        params=labels.params,
        steps=steps,
        resolved_steps=r_.resolved,
        tokens_total=r_.tokens_total,
        real_tokens_total=r_.real_total if r_.masked_tokens else None,
        model_flops_total=r_.model_flops_total,
        hardware_flops_total=r_.hw_flops_total,
        seq_len=seq,
        flops_per_token=fpt[0] if fpt else None,
        hardware_flops_per_token=fpt[1] if fpt else None,
        flops_method=flops.method,
        peak_flops_per_second=peak,
        peak_source=labels.peak_source,
        warmup_steps=labels.warmup_steps,
        window_steps=r.steps,
        window_seconds=r.seconds,
        tokens_per_second=r.tokens_per_second,
        model_flops_per_second=mfps,
        hardware_flops_per_second=hfps,
        step_seconds=r.step_seconds,
        last_step_seconds=r_.last_seconds,
        mfu=mfu,
        hfu=hfu,
        mfu_cumulative=cum,
        mfu_suspect=suspect,
        padding_ratio=padding,
        last_step_time=last_end,
        seconds_since_last_step=None if last_end is None else max(0.0, now - last_end),
        elapsed_seconds=max(0.0, now - wall0),
        token_budget=labels.token_budget,
        eta_seconds=eta_seconds(r_.tokens_total, labels.token_budget, r.tokens_per_second),
        alert_firing=alert_firing,
        errors=errors,
        world=world,
        recent=tuple(samples[-window_steps:]),
        step_duration_buckets=buckets,
        step_duration_sum=r_.duration_sum,
        step_duration_count=r_.resolved,
        mfu_loss=loss,
        sm_clock_ratio=clock_ratio,
        tensor_active=tensor_active,
        mfu_bf16=utilization(mfps, labels.bf16_peak_flops_per_second) if mfu is not None else None,
        parallel=labels.parallel,
        documents_total=r_.documents_total if r_.last_documents else None,
        documents_per_step=r_.last_documents[0] if r_.last_documents else None,
        mean_document_length=(r_.document_tokens_total / r_.documents_total if r_.documents_total else None),
    )


def run_start_record(
    flops: FlopsPerToken,
    labels: RunLabels,
    *,
    seq_len: int | None,
    time: float,
    timer: str,
    parallel: dict[str, Any] | None = None,
) -> RunStart:
    """The run log's ``run_start``: the run's labels and its FLOPs per token at ``seq_len`` (at length 1 for a
    given number, which does not depend on the length)."""
    fpt = flops(seq_len) if seq_len else (flops(1) if flops.fixed else None)
    return RunStart(
        time=time,
        run=labels.run,
        rank=labels.rank,
        world_size=labels.world_size,
        model=labels.model,
        params=labels.params,
        flops_per_token=fpt[0] if fpt else None,
        peak_flops_per_second=labels.peak_flops_per_second,
        device=labels.device,
        dtype=labels.dtype,
        seq_len=seq_len or None,
        peak_source=labels.peak_source,
        flops_method=flops.method,
        hardware_flops_per_token=fpt[1] if fpt else None,
        warmup_steps=labels.warmup_steps,
        local_rank=labels.local_rank,
        timer=timer,
        parallel=parallel,
        bf16_peak_flops_per_second=labels.bf16_peak_flops_per_second,  # FP8 runs only; else null
    )
