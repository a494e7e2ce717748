"""The run-log sink: ``run_start`` once, a ``step`` record per resolved step at each log tick, ``alert``
records, and ``run_end`` at close — every record built through ``monitor.schema`` and appended by
``RunLogWriter``."""

from __future__ import annotations

import time
from collections.abc import Callable

from monitor.export.runlog import RunLogWriter
from monitor.export.sinks import Sink
from monitor.figures.alert import AlertEvent
from monitor.figures.snapshot import Snapshot
from monitor.figures.steps import (
    BACKWARD_PERF,
    END_PERF,
    FORWARD_PERF,
    PREV_END_PERF,
    REAL_TOKENS,
    SEQ_LEN,
    STEP,
    TOKENS,
    StepBatch,
    document_fields,
    input_wait,
    pre_backward,
)
from monitor.schema import AlertRecord, RunEnd, RunStart, step_record


class RunLogSink(Sink):
    """Writes the run log through ``writer``; ``run_start()`` builds the run's first record when it is first
    needed (the first steps, or ``write_start()`` once the sequence length is known)."""

    name = "run log"

    def __init__(
        self, writer: RunLogWriter, run_start: Callable[[], RunStart], *, run: str, rank: int
    ) -> None:
        self.writer = writer
        self._run_start = run_start
        self._started = False
        self.run = run
        self.rank = rank

    @property
    def enabled(self) -> bool:
        return self.writer.enabled

    def write_start(self) -> None:
        """Write ``run_start`` (once)."""
        if self._started:
            return
        self._started = True
        self.writer.set_header(self._run_start())  # also what a recreated log file starts with

    def on_steps(self, batch: StepBatch) -> None:
        self.run, self.rank = batch.run, batch.rank
        if not self.writer.enabled:
            return
        self.write_start()
        peak = batch.peak_flops_per_second
        run, rank, counted, shift, clock = (
            batch.run,
            batch.rank,
            batch.first_counted_step,
            batch.wall_offset,
            batch.sm_clock_ratio,
        )
        records = []
        for raw, sec, fpt in batch.steps:
            tokens, fwd = raw[TOKENS], raw[FORWARD_PERF]
            model_flops = tokens * fpt[0]
            records.append(
                step_record(
                    time=shift + raw[END_PERF],
                    run=run,
                    rank=rank,
                    step=raw[STEP],
                    tokens=tokens * batch.token_weight,
                    step_seconds=sec,
                    model_flops=model_flops,
                    mfu=model_flops / sec / peak if peak and sec > 0 and model_flops else None,
                    hardware_flops=tokens * fpt[1],
                    real_tokens=raw[REAL_TOKENS],
                    seq_len=raw[SEQ_LEN],
                    forward_start_time=None if fwd is None else shift + fwd,
                    input_wait_seconds=input_wait(raw[PREV_END_PERF], fwd),
                    warmup=raw[STEP] < counted,
                    pre_backward_seconds=pre_backward(fwd, raw[BACKWARD_PERF]),
                    sm_clock_ratio=clock,
                    tensor_active=batch.tensor_active,
                    **document_fields(raw),
                )
            )
        self.writer.write_dicts(records)

    def on_alert(self, event: AlertEvent) -> None:
        self.writer.write(
            AlertRecord(
                time=event.time,
                run=self.run,
                rank=self.rank,
                state="firing" if event.state == "firing" else "resolved",
                mfu=event.mfu,
                threshold=event.threshold,
                since=event.since,
                message=event.message,
            )
        )

    def close(self, final: Snapshot, reason: str) -> None:
        self.write_start()
        self.writer.write(
            RunEnd(
                time=time.time(),
                run=final.run,
                rank=final.rank,
                steps=final.resolved_steps,
                tokens=final.tokens_total,
                seconds=final.elapsed_seconds,
                reason=reason,
                errors=final.errors,
                mfu_cumulative=final.mfu_cumulative,
                tokens_per_second=final.tokens_per_second,
            )
        )
        self.writer.close()
