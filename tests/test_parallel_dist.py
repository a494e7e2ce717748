"""Known answer for parallel runs on CPU (torchrun, gloo): the same model and global batches on one rank and
on N ranks give the same run tokens and model FLOPs per step, once each rank weighs what it sees by its
layout.

- FSDP2 (dp_shard=2) x tensor parallel (tp=2), four ranks: every rank's hook sees its replica's 32 tokens; the
  tp peers see the same ones. FlopCounterMode on a tp rank counts DTensor operations at their global shapes,
  i.e. its whole replica's FLOPs — so the naive sums are 2x the truth; the layout's weights make them exact.
- A 2-stage ``torch.distributed.pipelining`` schedule (GPipe, two micro-batches): both stages' hooks see every
  token (stage 1 as hidden states); stage 0 counts them. The schedule's first step runs one extra forward per
  stage to infer shapes (a real forward with grad enabled), which a forward hook cannot tell from training.
- Context parallel needs CUDA SDPA kernels in PyTorch; its known answer is checked on ``parallel=`` layouts in
  test_parallel_layout.py.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

WORKER = Path(__file__).with_name("parallel_worker.py")
ROWS, SEQ, STEPS = 4, 16, 3  # as in the worker


def _run(mode: str, ranks: int, out: Path) -> list[dict[str, Any]]:
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(ranks)]
    cmd += [str(WORKER), mode, str(out)]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return [json.loads((out / f"{mode}-rank{k}.json").read_text()) for k in range(ranks)]


@pytest.fixture(scope="module")
def single(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    (record,) = _run("single", 1, tmp_path_factory.mktemp("single"))
    return record


@pytest.mark.slow
def test_fsdp2_by_tensor_parallel_matches_one_rank(single: dict[str, Any], tmp_path: Path) -> None:
    ranks = _run("fsdp_tp", 4, tmp_path)
    assert [r["layout"]["sizes"] for r in ranks] == [{"dp_shard": 2, "tp": 2}] * 4
    for step in range(STEPS):
        truth_tokens = single["steps"][step]["tokens"]
        truth_flops = single["steps"][step]["flops"]
        assert truth_tokens == ROWS * SEQ
        seen = [r["steps"][step]["tokens"] for r in ranks]
        assert sum(seen) == 2 * truth_tokens  # the bug a plain hook has: tp peers count the same batch
        assert sum(r["token_weight"] * t for r, t in zip(ranks, seen, strict=True)) == truth_tokens
        # Each rank's FlopCounterMode count is its replica's FLOPs (global DTensor shapes) ...
        replica_flops = [r["steps"][step]["flops"] for r in ranks]
        assert sum(replica_flops) == 2 * truth_flops
        # ... and the layout's shares charge each rank its part: the sum is the one-rank truth.
        assert sum(r["flop_share"] * f for r, f in zip(ranks, replica_flops, strict=True)) == truth_flops


@pytest.mark.slow
def test_pipeline_stages_match_one_rank(single: dict[str, Any], tmp_path: Path) -> None:
    ranks = _run("pp", 2, tmp_path)
    assert [r["token_weight"] for r in ranks] == [1, 0]
    assert sum(r["flop_share"] for r in ranks) == pytest.approx(1.0)
    assert ranks[1]["flop_share"] > ranks[0]["flop_share"]  # the last stage also holds the LM head
    for step in range(1, STEPS):
        truth = single["steps"][step]["tokens"]
        seen = [r["steps"][step]["tokens"] for r in ranks]
        assert seen == [truth, truth]  # both stages see every token ...
        assert (
            sum(r["token_weight"] * t for r, t in zip(ranks, seen, strict=True)) == truth
        )  # ... once counted
    # The first step: the schedule's shape inference ran one more forward (one micro-batch) on each stage ...
    first = [r["steps"][0]["tokens"] for r in ranks]
    assert first == [single["steps"][0]["tokens"] + ROWS * SEQ // 2] * 2
    # ... which MFUMonitor(parallel=...) on the same stages does not count: its run log (stage 0 counts the
    # tokens, stage 1 weighs them 0) holds exactly the tokens fed, the first step included.
    logged = [[r["tokens"] for r in rank["monitor_steps"]] for rank in ranks]
    assert logged[0] == [s["tokens"] for s in single["steps"]]
    assert logged[1] == [0] * STEPS


@pytest.mark.slow
def test_monitor_with_mesh_counts_run_tokens_once(tmp_path: Path) -> None:
    """MFUMonitor(mesh=...) on FSDP2 dp=2 x tp=2: the run's tokens equal the tokens fed; the run MFU (the live
    world figure and ``mfu analyze`` over the run logs) within 5% of the wall-clock truth. Both leave out the
    first step (the monitor's warm-up; the wall clock starts at its end)."""
    ranks = _run("monitor", 4, tmp_path)
    got = [r["steps"][0] for r in ranks]
    n = got[0]["steps_run"]
    fed = ROWS * SEQ * n
    assert sum(g["tokens"] for g in got) == fed
    assert all(g["world_tokens"] == fed for g in got)
    fpt, peak = got[0]["fpt"], got[0]["peak"]
    timed = ROWS * SEQ * (n - 1)  # the steps after the first
    truth = timed * fpt / (max(g["wall"] for g in got) * 4 * peak)  # the model's FLOPs over the wall clock
    assert sum(g["flops"] for g in got) == pytest.approx(fed * fpt)
    assert got[0]["world_mfu"] == pytest.approx(truth, rel=0.05)
    logs = sorted(str(p) for p in tmp_path.glob("monitor-rank*.jsonl"))
    proc = subprocess.run(
        [str(Path(sys.executable).with_name("mfu")), "analyze", "--json", "--warmup", "1", *logs],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-2000:]
    summary = json.loads(proc.stdout)
    found = _find(summary, "mfu")
    assert found is not None and found == pytest.approx(truth, rel=0.05)
    # The MFU-loss split under the layout: each rank's (live) and the run's (analyze) causes sum to the gap.
    gap_parts = ("input_wait", "stragglers", "throttling", "recomputation", "unexplained")
    for g in got:
        loss = g["loss"]
        assert loss is not None and loss["mfu"] == pytest.approx(g["mfu"], rel=1e-9)
        assert loss["mfu"] + sum(loss[p] or 0.0 for p in gap_parts) == pytest.approx(1.0, abs=1e-9)
        assert all(loss[p] is None or loss[p] >= -1e-9 for p in gap_parts)
    run = summary["runs"][0]
    split = run["mfu_loss"]
    assert split is not None and split["mfu"] == pytest.approx(run["mfu"]["overall"], rel=1e-9)
    assert split["mfu"] + sum(split[p] or 0.0 for p in gap_parts) == pytest.approx(1.0, abs=1e-9)
    assert all(split[p] is None or split[p] >= -1e-9 for p in gap_parts)


def _find(obj: Any, key: str) -> Any:
    """The first value of ``key`` in a nested JSON object."""
    if isinstance(obj, dict):
        if key in obj and isinstance(obj[key], (int, float)):
            return obj[key]
        obj = list(obj.values())
    if isinstance(obj, list):
        for item in obj:
            found = _find(item, key)
            if found is not None:
                return found
    return None
