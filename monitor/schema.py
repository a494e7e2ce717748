"""The JSONL run log's records: one JSON object a line, told apart by ``event`` (``run_start``, ``step``,
``alert``, ``run_end``).

Every field the monitor writes is declared here once; the writer builds its records from these models (the
step records through :func:`step_record`, which checks its keys against :class:`StepRecord` in the tests) and
the readers validate through them. Extra fields are allowed and kept, so that later versions can add to a
record without breaking older readers, and older logs (without the later optional fields) still read.
"""

from __future__ import annotations

from typing import Annotated, Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field

SCHEMA_VERSION = 1


class _Record(BaseModel):
    model_config = ConfigDict(extra="allow")

    time: float = Field(description="unix seconds")
    run: str
    rank: int = Field(0, ge=0)

    # Optional fields added after the first version: written only when the writer sets them, so that a
    # writer that knows nothing of them (an importer) writes the records it always wrote.
    LATER_FIELDS: ClassVar[frozenset[str]] = frozenset()


class RunStart(_Record):
    event: Literal["run_start"] = "run_start"
    world_size: int = Field(1, ge=1)
    model: str | None = None
    params: int | None = Field(None, ge=0)
    flops_per_token: float | None = Field(None, ge=0, description="training model FLOPs per token")
    peak_flops_per_second: float | None = Field(None, gt=0, description="per device; null if unknown")
    device: str | None = None
    dtype: str | None = None
    seq_len: int | None = Field(None, ge=1)
    schema_version: int = SCHEMA_VERSION
    peak_source: str | None = Field(None, description="where the peak came from: catalogue, override, ...")
    flops_method: str | None = Field(None, description="given, analytic (ModelSpec) or measured (meta)")
    hardware_flops_per_token: float | None = Field(
        None, ge=0, description="FLOPs per token the hardware does (recomputation included)"
    )
    warmup_steps: int | None = Field(None, ge=0, description="steps left out of rates and MFU")
    local_rank: int | None = Field(None, ge=0)
    timer: str | None = Field(None, description="the step clock: host perf_counter or CUDA events")
    parallel: dict[str, Any] | None = Field(
        None, description="the parallel layout: sizes, this rank's coords, its token weight and FLOP share"
    )
    bf16_peak_flops_per_second: float | None = Field(
        None,
        gt=0,
        description="an FP8 run's BF16 peak (its peak_flops_per_second is FLOP-weighted over FP8 and BF16)",
    )

    LATER_FIELDS: ClassVar[frozenset[str]] = frozenset(
        (
            "bf16_peak_flops_per_second",
            "peak_source",
            "flops_method",
            "hardware_flops_per_token",
            "warmup_steps",
            "local_rank",
            "timer",
            "parallel",
        )
    )


class StepRecord(_Record):
    event: Literal["step"] = "step"
    step: int = Field(ge=0)
    tokens: int = Field(ge=0, description="tokens this rank processed in this step")
    step_seconds: float = Field(ge=0)
    model_flops: float = Field(ge=0, description="model FLOPs this rank did in this step")
    mfu: float | None = Field(None, ge=0, description="this step's MFU on this rank; null without a peak")
    hardware_flops: float | None = Field(None, ge=0, description="hardware FLOPs (recomputation included)")
    real_tokens: int | None = Field(None, ge=0, description="non-padding tokens, when known")
    seq_len: int | None = Field(None, ge=1, description="the attention length the FLOPs were counted at")
    forward_start_time: float | None = Field(None, description="unix seconds of the step's first forward")
    input_wait_seconds: float | None = Field(
        None, ge=0, description="host seconds from the previous step's end to this step's first forward"
    )
    warmup: bool = Field(False, description="a warm-up step: left out of rates and MFU")
    pre_backward_seconds: float | None = Field(
        None, ge=0, description="host seconds from the first forward to the start of the last backward"
    )
    sm_clock_ratio: float | None = Field(
        None, ge=0, description="SM clock / max SM clock (NVML) at the log tick that wrote this step"
    )
    documents: int | None = Field(
        None, ge=0, description="packed documents this step (null: no packing marker, one per row)"
    )
    mean_document_length: float | None = Field(None, ge=0, description="mean tokens per packed document")
    tensor_active: float | None = Field(
        None,
        ge=0,
        le=1,
        description="tensor-core activity (NVML GPM, busiest GPU of the rank) between the log tick that "
        "wrote this step and the one before; null where GPM is unavailable",
    )

    LATER_FIELDS: ClassVar[frozenset[str]] = frozenset(
        (
            "hardware_flops", "real_tokens", "seq_len", "forward_start_time", "input_wait_seconds", "warmup",
            "pre_backward_seconds", "sm_clock_ratio", "documents", "mean_document_length", "tensor_active",
        )
    )  # fmt: skip


class AlertRecord(_Record):
    event: Literal["alert"] = "alert"
    kind: str = "mfu_low"
    state: Literal["firing", "resolved"] = "firing"
    mfu: float | None = None
    threshold: float | None = None
    since: float | None = Field(None, description="unix seconds the episode began")
    message: str = ""


class RunEnd(_Record):
    event: Literal["run_end"] = "run_end"
    steps: int | None = None
    tokens: int | None = None
    seconds: float | None = None
    reason: str = "closed"
    errors: int = 0
    mfu_cumulative: float | None = Field(None, ge=0, description="MFU over every post-warm-up step")
    tokens_per_second: float | None = Field(None, ge=0, description="the last windowed rate")

    LATER_FIELDS: ClassVar[frozenset[str]] = frozenset(("mfu_cumulative", "tokens_per_second"))


LogRecord = Annotated[RunStart | StepRecord | AlertRecord | RunEnd, Field(discriminator="event")]

# The keys of a step record, in the order the monitor writes them.
STEP_KEYS = ("event", *(k for k in StepRecord.model_fields if k != "event"))


def step_record(
    *,
    time: float,
    run: str,
    rank: int,
    step: int,
    tokens: int,
    step_seconds: float,
    model_flops: float,
    mfu: float | None,
    hardware_flops: float | None,
    real_tokens: int | None,
    seq_len: int | None,
    forward_start_time: float | None,
    input_wait_seconds: float | None,
    warmup: bool,
    pre_backward_seconds: float | None,
    sm_clock_ratio: float | None,
    documents: int | None = None,
    mean_document_length: float | None = None,
    tensor_active: float | None = None,
) -> dict[str, Any]:
    """A step record as a plain dict with exactly :class:`StepRecord`'s fields (built once per step at log
    time, where a validated model per step would cost more than the step itself)."""
    return {
        "event": "step",
        "time": time,
        "run": run,
        "rank": rank,
        "step": step,
        "tokens": tokens,
        "step_seconds": step_seconds,
        "model_flops": model_flops,
        "mfu": mfu,
        "hardware_flops": hardware_flops,
        "real_tokens": real_tokens,
        "seq_len": seq_len,
        "forward_start_time": forward_start_time,
        "input_wait_seconds": input_wait_seconds,
        "warmup": warmup,
        "pre_backward_seconds": pre_backward_seconds,
        "sm_clock_ratio": sm_clock_ratio,
        "documents": documents,
        "mean_document_length": mean_document_length,
        "tensor_active": tensor_active,
    }


def record_to_json(record: BaseModel) -> dict[str, Any]:
    """The record as a JSON object; later optional fields the writer did not set are left out."""
    later: frozenset[str] = getattr(record, "LATER_FIELDS", frozenset())
    return record.model_dump(mode="json", exclude=set(later - record.model_fields_set) or None)
