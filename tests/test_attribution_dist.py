"""Stragglers with a known answer: two torchrun ranks (gloo, DDP on CPU), rank 1 sleeping a known time before
each backward. Rank 0 then waits that long in the gradient all-reduce each step: its straggler share is
delay / step time, rank 1's is zero, and the run's (offline, per step) is their mean."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from monitor.analysis.summary import AnalyzeOptions, analyze
from monitor.figures.attribution import GAP_PARTS

ROOT = Path(__file__).resolve().parents[1]
WORKER = Path(__file__).resolve().parent / "attribution_dist_worker.py"
DELAY = 0.05


@pytest.fixture(scope="module")
def straggler_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("straggler")
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node=2", str(WORKER)]
    done = subprocess.run(
        [*cmd, str(out), str(DELAY)], env=env, cwd=ROOT, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return out


def _rank(out: Path, rank: int) -> dict:  # type: ignore[type-arg]
    return dict(json.loads((out / f"rank{rank}.json").read_text()))


def test_live_straggler_share_per_rank(straggler_run: Path) -> None:
    fast, slow = _rank(straggler_run, 0), _rank(straggler_run, 1)
    # rank 0 waited DELAY per step of its window: the test's own figure, over the monitor's step time
    expected = DELAY * fast["window_steps"] / fast["window_seconds"]
    assert fast["mfu_loss"]["stragglers"] == pytest.approx(expected, abs=0.03)
    assert slow["mfu_loss"]["stragglers"] == pytest.approx(0.0, abs=0.03)
    for loss in (fast["mfu_loss"], slow["mfu_loss"]):
        assert sum(loss[c] or 0.0 for c in GAP_PARTS) == pytest.approx(1 - loss["mfu"], abs=1e-9)
    assert slow["world"]["max_pre_backward_seconds"] >= DELAY


def test_offline_straggler_share_is_the_ranks_mean(straggler_run: Path) -> None:
    logs = [straggler_run / "rank0.jsonl", straggler_run / "rank1.jsonl"]
    run = analyze(logs, AnalyzeOptions(warmup=5)).analysis.runs[0]
    loss = run.mfu_loss
    assert loss is not None and loss.stragglers is not None and run.mfu.overall is not None
    assert loss.mfu == pytest.approx(run.mfu.overall, rel=1e-12)
    # half of the run's rank-time (rank 0's) waits DELAY per step for rank 1
    assert run.measured is not None
    expected = 0.5 * DELAY * run.measured.steps / run.measured.step_seconds
    assert loss.stragglers == pytest.approx(expected, abs=0.03)
    assert loss.largest == "stragglers"
    parts = [loss.input_wait, loss.stragglers, loss.throttling, loss.recomputation, loss.unexplained]
    assert sum(p or 0.0 for p in parts) == pytest.approx(1 - loss.mfu, abs=1e-9)


def test_offline_split_is_the_same_a_chunk_at_a_time(
    straggler_run: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from monitor.analysis import summary

    logs = [straggler_run / "rank0.jsonl", straggler_run / "rank1.jsonl"]
    whole = analyze(logs, AnalyzeOptions(warmup=5)).analysis.runs[0].mfu_loss
    monkeypatch.setattr(summary._LossInputs, "CHUNK", 3)  # chunks cut at step boundaries: 2 ranks a step
    chunked = analyze(logs, AnalyzeOptions(warmup=5)).analysis.runs[0].mfu_loss
    assert whole is not None and chunked is not None
    for key, value in whole.model_dump().items():
        if isinstance(value, float):
            assert getattr(chunked, key) == pytest.approx(value, rel=1e-12, abs=1e-15), key
