"""The JSONL run log's records (CONTRACTS.md, "Run log"): one JSON object a line, told apart by ``event``.

Shared by the writer (``monitor.export.runlog``) and the readers (``monitor.analysis``). Extra fields are
allowed and kept, so that later versions can add to a record without breaking older readers.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field

SCHEMA_VERSION = 1


class _Record(BaseModel):
    model_config = ConfigDict(extra="allow")

    time: float = Field(description="unix seconds")
    run: str
    rank: int = Field(0, ge=0)


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


class StepRecord(_Record):
    event: Literal["step"] = "step"
    step: int = Field(ge=0)
    tokens: int = Field(ge=0, description="tokens this rank processed in this step")
    step_seconds: float = Field(ge=0)
    model_flops: float = Field(ge=0, description="model FLOPs this rank did in this step")
    mfu: float | None = Field(None, ge=0, description="this step's MFU on this rank; null without a peak")


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


LogRecord = Annotated[RunStart | StepRecord | AlertRecord | RunEnd, Field(discriminator="event")]


def record_to_json(record: BaseModel) -> dict[str, Any]:
    return record.model_dump(mode="json")
