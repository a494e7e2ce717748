"""The layout of a step as the hot path records it, and the pure arithmetic on recorded steps.

A closed step is a plain tuple (the cheapest thing to build once per training step); its fields are read
through the index constants below, never by bare position. A resolved step adds its duration and its FLOPs
per token: ``(raw, seconds, (training, hardware) FLOPs per token)``.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from monitor.figures.window import utilization

# Fields of a raw step (a tuple). ``TOKENS`` were seen at ``SEQ_LEN``; micro-batches of other lengths are in
# ``OTHER_LENGTHS`` ({length: tokens}); ``MASKS`` are attention masks whose non-padding count is read later;
# ``BACKWARD_PERF`` is the host time the step's last backward started (host timer only).
STEP = 0  # the step's index
PREV_MARKER = 1  # the timer's marker where the step started (the previous step's end)
MARKER = 2  # the timer's marker where the step ended
END_PERF = 3  # perf_counter at the step's end
PREV_END_PERF = 4  # perf_counter at the previous step's end (None for the first)
FORWARD_PERF = 5  # perf_counter at the step's first forward (None: no forward seen)
TOKENS = 6
SEQ_LEN = 7
OTHER_LENGTHS = 8
MASKS = 9
REAL_TOKENS = 10  # non-padding tokens given by hand, or counted from MASKS at resolve time
BACKWARD_PERF = 11
# Packed rows: deferred documents (``live/documents.py``) on a raw step; once resolved, ``(documents, their
# tokens)`` of the step, or None when no forward carried a packing marker (each row is then one document).
DOCUMENTS = 12
RAW_FIELDS = 13

# Fields of a resolved step.
RAW = 0
SECONDS = 1
FLOPS_PER_TOKEN = 2  # (training, hardware)

RawStep = tuple[Any, ...]
ResolvedStep = tuple[RawStep, float, tuple[float, float]]
NO_FLOPS = (0.0, 0.0)


def document_fields(raw: RawStep) -> dict[str, Any]:
    """``documents`` and ``mean_document_length`` of a resolved step (None for both without packing)."""
    docs = raw[DOCUMENTS] if len(raw) > DOCUMENTS else None
    if not docs or not docs[0]:
        return {"documents": None, "mean_document_length": None}
    count, tokens = docs
    return {"documents": count, "mean_document_length": tokens / count}


def input_wait(prev_end_perf: float | None, forward_perf: float | None) -> float | None:
    """Host seconds from the previous step's end to this step's first forward: waiting for input."""
    if forward_perf is None or prev_end_perf is None:
        return None
    return max(0.0, forward_perf - prev_end_perf)


def pre_backward(forward_perf: float | None, backward_perf: float | None) -> float | None:
    """Host seconds from a step's first forward to the start of its last backward (None if not seen)."""
    if forward_perf is None or backward_perf is None or backward_perf < forward_perf:
        return None
    return backward_perf - forward_perf


def window_mfu(
    resolved: Iterable[ResolvedStep],
    *,
    now_perf: float,
    first_counted_step: int,
    max_steps: int,
    max_age_seconds: float,
    peak_flops_per_second: float | None,
) -> float | None:
    """Windowed MFU straight from resolved steps, newest first (cheaper than a snapshot, for log ticks).

    The same window as ``window.select_window``: the last ``max_steps`` steps at or after
    ``first_counted_step`` (warm-up excluded) that ended within ``max_age_seconds``, at least the latest one.
    MFU = model FLOPs / seconds / peak (PaLM, appendix B).
    """
    if not peak_flops_per_second:
        return None
    seconds = flops = 0.0
    taken = 0
    for raw, sec, fpt in resolved:
        if raw[STEP] < first_counted_step:
            break  # warm-up steps come first: nothing older is in the window
        if taken and now_perf - raw[END_PERF] > max_age_seconds:
            break
        seconds += sec
        flops += raw[TOKENS] * fpt[0]
        taken += 1
        if taken >= max_steps:
            break
    if not taken or seconds <= 0 or not flops:
        return None
    return utilization(flops / seconds, peak_flops_per_second)


@dataclass(frozen=True)
class StepBatch:
    """What a log tick hands to the sinks: the steps resolved since the last tick and the figures of the tick.

    Built once per tick (never per step). Unix time of a step = ``wall_offset`` + its perf_counter reading.
    """

    steps: list[ResolvedStep]
    run: str
    rank: int
    wall_offset: float
    first_counted_step: int  # steps below it are warm-up
    peak_flops_per_second: float | None
    sm_clock_ratio: float | None = None  # the NVML reading of this tick: the same for the steps of the batch
    tensor_active: float | None = None  # GPM tensor activity since the previous tick: the same for the batch
    window_mfu: float | None = None
    mfu_cumulative: float | None = None
    token_weight: int = 1  # the run counts this rank's tokens × token_weight (parallel layouts)
