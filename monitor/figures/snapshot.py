"""What the monitor knows at one moment: the only thing exporters (Prometheus, run log, terminal) read."""

from __future__ import annotations

from dataclasses import dataclass, field

from monitor.figures.attribution import MfuLoss
from monitor.figures.window import StepSample


@dataclass(frozen=True)
class WorldFigures:
    """All ranks together, from the last all-reduce at a log interval (identical on every rank)."""

    as_of_step: int  # the log-interval step the reduce was issued at
    world_size: int
    tokens_total: int
    model_flops_total: float
    tokens_per_second: float | None  # sum of ranks' windowed rates
    model_flops_per_second: float | None  # sum of ranks' windowed model FLOP rates
    peak_flops_per_second: float | None  # sum of ranks' peaks; None if any rank's peak is unknown
    mfu: float | None  # sum of model FLOP rates / sum of peaks (the run MFU the TrainingMFULow alert watches)
    max_step_seconds: float | None  # the slowest rank's windowed mean step time
    # windowed mean pre-backward time (first forward -> last backward start): the slowest rank's, the mean
    max_pre_backward_seconds: float | None = None
    mean_pre_backward_seconds: float | None = None


@dataclass(frozen=True)
class Snapshot:
    """This rank's figures. Rates are over the window (last ``window_steps`` steps within ``window_seconds``),
    warm-up steps left out; totals count every step. None means unknown, never zero."""

    run: str
    rank: int
    local_rank: int
    world_size: int
    device: str
    dtype: str | None
    model: str | None
    params: int | None
    steps: int  # optimizer steps closed (resolved or not)
    resolved_steps: int  # steps whose duration is known
    tokens_total: int
    real_tokens_total: int | None  # non-padding, over the steps that had an attention_mask
    model_flops_total: float
    hardware_flops_total: float
    seq_len: int | None
    flops_per_token: float | None  # training model FLOPs per token at seq_len
    hardware_flops_per_token: float | None
    flops_method: str | None  # where the FLOPs model came from
    peak_flops_per_second: float | None
    peak_source: str | None
    warmup_steps: int
    window_steps: int
    window_seconds: float
    tokens_per_second: float | None
    model_flops_per_second: float | None
    hardware_flops_per_second: float | None
    step_seconds: float | None  # mean over the window
    last_step_seconds: float | None
    mfu: float | None  # windowed
    hfu: float | None  # windowed, hardware FLOPs (with recomputation)
    mfu_cumulative: float | None  # since warm-up ended, this rank
    mfu_suspect: bool  # MFU > 1: the peak or the FLOPs model is wrong (physically impossible)
    padding_ratio: float | None  # 1 - real/processed over steps with a mask
    last_step_time: float | None  # unix seconds of the last resolved step end
    seconds_since_last_step: float | None
    elapsed_seconds: float
    token_budget: int | None
    eta_seconds: float | None
    alert_firing: bool
    errors: int
    world: WorldFigures | None = None
    recent: tuple[StepSample, ...] = field(default=())  # the last resolved steps, newest last
    step_duration_buckets: tuple[tuple[float, int], ...] = ()  # cumulative (le, count) for the histogram
    step_duration_sum: float = 0.0
    step_duration_count: int = 0
    mfu_loss: MfuLoss | None = None  # the window's MFU gap split into causes (monitor.figures.attribution)
    sm_clock_ratio: float | None = None  # SM clock / max SM clock at the last NVML reading
    # NVML GPM tensor-core activity (0..1, busiest GPU of this rank) between the last two log ticks;
    # None where GPM is unavailable or before the second tick
    tensor_active: float | None = None
    # An FP8 run (FP8 linear layers): the windowed MFU against the BF16 peak, so that FP8 and BF16 runs
    # compare; ``mfu`` itself is against the FLOP-weighted FP8/BF16 peak. None for other runs.
    mfu_bf16: float | None = None
    # Packed rows (forwards with position_ids restarting, cu_seq_lens_*, or mon.step(documents=...)):
    documents_total: int | None = None  # packed documents on this rank; None: no packed step yet
    documents_per_step: int | None = None  # the last packed step's documents
    mean_document_length: float | None = None  # tokens per packed document, over the run
    parallel: str | None = None  # the parallel layout, e.g. "dp_shard=2,tp=2"; None on one replica

    def as_dict(self) -> dict[str, object]:
        from dataclasses import asdict

        out = asdict(self)
        out.pop("recent")
        out.pop("step_duration_buckets")
        return out
