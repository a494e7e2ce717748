"""A writer of realistic run logs for the analysis tests: ranks, warm-up, a slow episode, a stall, a
straggler.

Every figure a test expects is derived here from the spec by plain arithmetic (``expected_*``),
independently of
``monitor.analysis``: the analysis has to arrive at the same numbers from the log alone.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from monitor.schema import AlertRecord, RunEnd, RunStart, StepRecord, record_to_json


@dataclass
class RunSpec:
    run: str = "llama-test"
    world: int = 2
    steps: int = 100  # step indices 0 .. steps-1
    base_seconds: float = 1.0  # step_seconds of a normal rank on a normal step
    tokens_per_rank: int = 4096
    # model FLOPs per token chosen so that a normal step's MFU is 0.5 with the straggler setting below:
    # MFU = W * T * F / (t_step * W * P) with t_step = 1.2 s, T = 4096, P = 1e12 -> F = 0.5 * 1.2e12 / 4096
    flops_per_token: float = 0.5 * 1.2e12 / 4096
    peak: float = 1e12  # per device
    t0: float = 1_700_000_000.0
    warmup_seconds: float = 20.0  # step 0 (compile) takes this long
    slow: tuple[int, int] = (40, 49)  # inclusive step range running `slow_factor` x slower
    slow_factor: float = 4.0
    stall_before: int | None = 71  # idle gap inserted before this step ends
    stall_seconds: float = 60.0
    straggler: int | None = 1  # this rank's step time is x straggler_factor
    straggler_factor: float = 1.2
    alerts: int = 1  # alert records (firing) written during the slow episode
    peaks: dict[int, float] = field(default_factory=dict)  # per-rank peak overrides

    def rank_seconds(self, step: int, rank: int) -> float:
        seconds = self.base_seconds
        if step == 0:
            seconds = self.warmup_seconds
        elif self.slow[0] <= step <= self.slow[1]:
            seconds *= self.slow_factor
        if rank == self.straggler:
            seconds *= self.straggler_factor
        return seconds

    def step_seconds(self, step: int) -> float:
        return max(self.rank_seconds(step, r) for r in range(self.world))

    def peak_of(self, rank: int) -> float:
        return self.peaks.get(rank, self.peak)

    # --- expectations, from the spec alone
    # -------------------------------------------------------------------
    def expected_step_mfu(self, step: int) -> float:
        flops = self.world * self.tokens_per_rank * self.flops_per_token
        return flops / (self.step_seconds(step) * sum(self.peak_of(r) for r in range(self.world)))

    def expected_tokens(self) -> int:
        return self.steps * self.world * self.tokens_per_rank


def records(spec: RunSpec) -> list[dict[str, Any]]:
    """All records of the run in time order (ranks interleaved), as the writer would emit them."""
    out: list[dict[str, Any]] = []
    for rank in range(spec.world):
        out.append(
            record_to_json(
                RunStart(
                    time=spec.t0,
                    run=spec.run,
                    rank=rank,
                    world_size=spec.world,
                    model="tiny-llama",
                    params=1_000_000,
                    flops_per_token=spec.flops_per_token,
                    peak_flops_per_second=spec.peak_of(rank),
                    device="Fake GPU",
                    dtype="bf16",
                    seq_len=512,
                )
            )
        )
    end = spec.t0
    for step in range(spec.steps):
        step_time = spec.step_seconds(step)
        if step == spec.stall_before:
            end += spec.stall_seconds
        start = end
        end = start + step_time
        for rank in range(spec.world):
            secs = spec.rank_seconds(step, rank)
            flops = spec.tokens_per_rank * spec.flops_per_token
            out.append(
                record_to_json(
                    StepRecord(
                        time=start + secs,
                        run=spec.run,
                        rank=rank,
                        step=step,
                        tokens=spec.tokens_per_rank,
                        step_seconds=secs,
                        model_flops=flops,
                        mfu=flops / (secs * spec.peak_of(rank)),
                    )
                )
            )
        if spec.alerts and step == spec.slow[0] + 5:
            out.append(
                record_to_json(
                    AlertRecord(
                        time=end,
                        run=spec.run,
                        rank=0,
                        state="firing",
                        mfu=0.125,
                        threshold=0.25,
                        since=end - 5,
                        message="MFU 12.5% below 25% for 5 steps",
                    )
                )
            )
    for rank in range(spec.world):
        out.append(
            record_to_json(RunEnd(time=end, run=spec.run, rank=rank, steps=spec.steps, reason="closed"))
        )
    return out


def write_run(
    path: Path,
    spec: RunSpec,
    *,
    rank: int | None = None,
    torn: bool = False,
    extra_lines: list[str] | None = None,
) -> Path:
    """Write the run's records (only ``rank``'s when given) as JSONL; optionally bad lines and a torn last
    line."""
    lines = [
        json.dumps(r, separators=(",", ":")) for r in records(spec) if rank is None or r.get("rank") == rank
    ]
    if extra_lines:
        middle = len(lines) // 2
        lines[middle:middle] = extra_lines
    text = "\n".join(lines) + "\n"
    if torn:
        text += '{"time":1700009999.0,"run":"' + spec.run + '","rank":0,"event":"st'
    path.write_text(text, encoding="utf-8")
    return path


def test_writer_emits_what_the_spec_says(tmp_path: Path) -> None:
    spec = RunSpec()
    path = write_run(tmp_path / "run.jsonl", spec)
    rows = [json.loads(line) for line in path.read_text().splitlines()]
    steps = [r for r in rows if r["event"] == "step"]
    assert len(steps) == spec.steps * spec.world
    assert sum(r["tokens"] for r in steps) == spec.expected_tokens()
    # a normal step's MFU is 0.5 by construction, a slow one 0.125
    assert abs(spec.expected_step_mfu(20) - 0.5) < 1e-12
    assert abs(spec.expected_step_mfu(45) - 0.125) < 1e-12
