"""MFUMonitor(parallel=...) / (mesh=...) on one process with a known answer: the same model and data give the
run's tokens once (tensor-parallel peers count none) and each rank its share of the model FLOPs."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch
from model_configs import TINY_CONFIGS, build_model

from monitor.errors import InputError
from monitor.export.prometheus import snapshot_metrics
from monitor.live.monitor import MFUMonitor

ROWS, SEQ, STEPS = 2, 16, 3


def _train(tmp_path: Path, **kwargs: Any) -> tuple[Any, list[dict[str, Any]]]:
    torch.manual_seed(0)
    model = build_model(TINY_CONFIGS["llama"])
    opt = torch.optim.SGD(model.parameters(), lr=1e-3)
    log = tmp_path / f"run{len(list(tmp_path.iterdir()))}.jsonl"
    mon = MFUMonitor(
        model, opt, handle_sigterm=False, warmup_steps=0, peak_flops=1e12, log_path=str(log), **kwargs
    )
    try:
        for _ in range(STEPS):
            ids = torch.randint(3, 97, (ROWS, SEQ))
            model(input_ids=ids, labels=ids).loss.backward()
            opt.step()
            opt.zero_grad()
        snap = mon.snapshot()
    finally:
        mon.close()
    return snap, [json.loads(line) for line in log.read_text().splitlines()]


def test_tensor_parallel_peers_count_tokens_once_and_share_flops(tmp_path: Path) -> None:
    one, one_log = _train(tmp_path)
    ranks = [
        _train(tmp_path, parallel={"dp": 2, "tp": 2, "coords": {"dp": dp, "tp": tp}}, rank=2 * dp + tp,
               world_size=4)
        for dp in (0, 1) for tp in (0, 1)
    ]  # fmt: skip
    fed = ROWS * SEQ * STEPS
    assert one.tokens_total == fed
    # Two replicas, each fed the same batch here: the run counts each replica's batch once.
    assert sum(s.tokens_total for s, _ in ranks) == 2 * fed
    assert [s.tokens_total for s, _ in ranks] == [fed, 0, fed, 0]
    # Each tp rank charges itself half of its replica's FLOPs: Σ over the run = 2 replicas × one rank's.
    assert sum(s.model_flops_total for s, _ in ranks) == pytest.approx(2 * one.model_flops_total)
    assert ranks[1][0].model_flops_total == pytest.approx(one.model_flops_total / 2)
    start = ranks[1][1][0]
    assert start["event"] == "run_start"
    assert start["parallel"]["sizes"] == {"dp": 2, "tp": 2} and start["parallel"]["token_weight"] == 0
    assert start["parallel"]["flop_share"] == 0.5
    logged = [r for r in ranks[1][1] if r["event"] == "step"]
    assert sum(r["tokens"] for r in logged) == 0
    assert sum(r["model_flops"] for r in logged) == pytest.approx(one.model_flops_total / 2)
    assert "parallel" not in one_log[0] or one_log[0]["parallel"] is None
    info = {m.name: m for m in snapshot_metrics(ranks[1][0])}["training_run"]
    assert info.samples[0].labels["parallel"] == "dp=2,tp=2"


def test_context_parallel_charges_attention_at_the_global_length(tmp_path: Path) -> None:
    """cp=2: each rank holds half of each sequence; FLOPs per token at 2× the local length, halved."""
    whole, _ = _train(tmp_path, seq_len=2 * SEQ)
    cp, _ = _train(tmp_path, parallel={"cp": 2, "coords": {"cp": 0}}, rank=0, world_size=2)
    assert cp.tokens_total == whole.tokens_total
    assert cp.model_flops_total == pytest.approx(whole.model_flops_total)


def test_a_layout_that_is_not_the_world_names_the_field() -> None:
    with pytest.raises(InputError, match="parallel"):
        MFUMonitor(None, None, parallel={"dp": 2, "tp": 2}, rank=0, world_size=8, handle_sigterm=False)
    with pytest.raises(InputError, match="mesh"):
        MFUMonitor(None, None, mesh=object(), parallel={"dp": 1}, handle_sigterm=False)


def test_context_parallel_slices_need_explicit_documents(caplog: pytest.LogCaptureFixture) -> None:
    """Under cp, position_ids of a slice are not the documents: one warning, the row convention, no error;
    mon.step(documents=...) is still priced per document."""
    model = build_model(TINY_CONFIGS["llama"])
    mon = MFUMonitor(
        model, None, parallel={"cp": 2, "coords": {"cp": 1}}, rank=1, world_size=2, handle_sigterm=False,
        warmup_steps=0, peak_flops=1e12,
    )  # fmt: skip
    positions = torch.cat([torch.arange(5), torch.arange(11)]).unsqueeze(0)
    try:
        for explicit in (None, [10, 22]):
            ids = torch.randint(3, 97, (1, 16))
            model(input_ids=ids, labels=ids, position_ids=positions, use_cache=False).loss.backward()
            mon.step(documents=explicit)
        snap = mon.snapshot()
    finally:
        mon.close()
    assert snap.errors == 0
    assert "context parallelism" in caplog.text
    assert snap.documents_total == 2 and snap.mean_document_length == 16
